package rules

import (
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	topics "github.com/motemq/mote/internal/topic"
)

var jsonSeeds = []string{
	`{"a": 1, "b": [true, false, null], "c": {"d": "e"}}`,
	`[1.5, -0.25, 1e300, 12345678901234567890, -9223372036854775808, 9007199254740993]`,
	`"text with \u00e9 and \ud83d\ude00 and <html> & stuff"`,
	`{"": {"": [[], {}]}, "n": 0, "m": -0, "f": -0.0, "e": 1E-7}`,
	`3`, `null`, `true`, `[{"x": [1, [2, [3, [4]]]]}]`,
	`{"big": 18446744073709551615, "bigger": 18446744073709551616}`,
}

// sameValue compares decoded values: numbers by value whatever their Go
// type (JSON does not tell 1 from 1.0), the rest exactly.
func sameValue(a, b any) bool {
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x.Cmp(y) == 0
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func number(v any) (*big.Float, bool) {
	switch x := v.(type) {
	case int64:
		return new(big.Float).SetInt64(x), true
	case uint64:
		return new(big.Float).SetUint64(x), true
	case float64:
		if x == 0 {
			x = 0 // -0 == 0
		}
		return big.NewFloat(x), true
	}
	return nil, false
}

func roundTrip(t *testing.T, data []byte, format string) {
	v1, err := decodeJSON(data)
	if err != nil {
		return // not JSON, or a number out of float64's range
	}
	b, err := encodeAs(format, v1)
	if err != nil {
		t.Fatalf("encode %s: %v (from %q)", format, err, data)
	}
	v2, err := decodeAs(format, b)
	if err != nil {
		t.Fatalf("decode %s: %v (from %q)", format, err, data)
	}
	j, err := encodeJSON(v2)
	if err != nil {
		t.Fatalf("encode json: %v (from %q)", err, data)
	}
	v3, err := decodeJSON(j)
	if err != nil {
		t.Fatalf("decode json %q: %v (from %q)", j, err, data)
	}
	if !sameValue(v1, v2) || !sameValue(v1, v3) {
		t.Fatalf("round trip through %s changed %q: %#v → %#v → %s", format, data, v1, v2, j)
	}
}

// FuzzJSONCBORRoundTrip: JSON → CBOR → JSON keeps every value.
func FuzzJSONCBORRoundTrip(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, fmtCBOR) })
}

// FuzzJSONMsgpackRoundTrip: JSON → MessagePack → JSON keeps every value.
func FuzzJSONMsgpackRoundTrip(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, fmtMsgpack) })
}

// FuzzDecode: no input makes a decoder panic or allocate beyond reason.
func FuzzDecode(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
		v, _ := decodeJSON([]byte(s))
		if b, err := encodeCBOR(v); err == nil {
			f.Add(b)
		}
		if b, err := encodeMsgpack(v); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})       // array of 2^32-1 elements, no data
	f.Add([]byte{0xdf, 0x7f, 0xff, 0xff, 0xff})       // map of 2^31-1 pairs, no data
	f.Add([]byte{0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff}) // CBOR array with a huge length
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []string{fmtJSON, fmtCBOR, fmtMsgpack} {
			v, err := decodeAs(format, data)
			if err != nil {
				continue
			}
			if _, err := normalize(v, 0); err != nil {
				t.Fatalf("%s decoded %q to a value that is not normal: %v", format, data, err)
			}
			for _, to := range []string{fmtCBOR, fmtMsgpack} {
				if _, err := encodeAs(to, v); err != nil && format == fmtJSON {
					t.Fatalf("%s → %s: %v", format, to, err)
				}
			}
		}
	})
}

func TestMsgpackBombs(t *testing.T) {
	for _, b := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff},
		{0xdf, 0x7f, 0xff, 0xff, 0xff},
		{0xc6, 0xff, 0xff, 0xff, 0xff},
		{0x91, 0x91, 0x91},
		[]byte(strings.Repeat("\x91", 2000) + "\x01"),
	} {
		if _, err := decodeMsgpack(b); err == nil {
			t.Errorf("% x decoded", b)
		}
	}
	// The encoder's output is accepted by the checker.
	for _, v := range []any{map[string]any{"a": []any{int64(1), 2.5, "x", nil, true, []byte{1}}}, int64(math.MinInt64), uint64(math.MaxUint64)} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMsgpack(b); err != nil {
			t.Errorf("%v: %v", v, err)
		}
	}
}

func TestDecodeJSONNumbers(t *testing.T) {
	v, err := decodeJSON([]byte(`[1, 1.0, 9007199254740993, 18446744073709551615, 1e400]`))
	if err == nil {
		t.Fatalf("1e400 accepted: %v", v)
	}
	v, err = decodeJSON([]byte(`[1, 1.0, 9007199254740993, 18446744073709551615, -1]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{int64(1), 1.0, int64(9007199254740993), uint64(math.MaxUint64), int64(-1)}
	for i, w := range want {
		if v.([]any)[i] != w {
			t.Errorf("[%d] = %#v, want %#v", i, v.([]any)[i], w)
		}
	}
	if _, err := decodeJSON([]byte(`{} {}`)); err == nil {
		t.Error("two values accepted")
	}
	b, _ := encodeJSON(map[string]any{"h": "<&>"})
	if string(b) != `{"h":"<&>"}` {
		t.Errorf("encoded %s", b)
	}
	var raw json.RawMessage = b
	if p, _ := toPayload(raw); string(p) != string(b) {
		t.Error("raw JSON re-encoded")
	}
}

// FuzzMatch: the trie agrees with the filter matcher the queues and
// bridges use.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"a/+/c", "a/b/c"}, {"#", "$SYS/x"}, {"+/x", "$e/x"}, {"$events/#", "$events/a"}, {"a/#", "a"},
		{"a/+", "a/"}, {"+/+", "/"}, {"/#", "/a"}, {"a/b", "a/b/c"}, {"+", ""},
	} {
		f.Add(s[0], s[1], "x/#")
	}
	f.Fuzz(func(t *testing.T, f1, topic, f2 string) {
		if strings.ContainsAny(topic, "+#") || topic == "" {
			return
		}
		var tr trie
		var filters []string
		for _, f := range []string{f1, f2} {
			if topics.ValidFilter(f) {
				tr.insert(f, int32(len(filters)))
				filters = append(filters, f)
			}
		}
		got := tr.match(topic, nil)
		var want []int32
		for i, f := range filters {
			if topics.Match(f, topic) {
				want = append(want, int32(i))
			}
		}
		if len(got) != len(want) {
			t.Fatalf("filters %q topic %q: trie %v, matcher %v", filters, topic, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("filters %q topic %q: trie %v, matcher %v", filters, topic, got, want)
			}
		}
	})
}

func TestTemplate(t *testing.T) {
	for _, tc := range []struct{ src, want, err string }{
		{src: "plain", want: "plain"},
		{src: "a/{{ levels[1] }}/{{ json.n + 1 }}", want: "a/b/3"},
		{src: "{{ json.obj }}|{{ json.none }}|{{ json.f }}|{{ qos }}", want: `{"k":[1,"x"]}||0.5|1`},
		{src: "x{{", err: "column 2: {{ without }}"},
		{src: "x{{ }}", err: "column 2: empty {{ }}"},
		{src: "ab{{ nope }}", err: "line 1, column 6: unknown name nope"},
	} {
		tpl, err := compileTemplate(tc.src)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %s", tc.src, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		m := &msg{topic: "a/b", qos: 1, payload: []byte(`{"n": 2, "obj": {"k": [1, "x"]}, "f": 0.5}`)}
		m.e = env{Topic: m.topic, QoS: 1}
		got, err := tpl.render(m.env(tpl.needs))
		if err != nil || got != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.src, got, err, tc.want)
		}
	}
}

// The payload is parsed once per message, however many rules read it, and
// only when some rule reads it.
func TestLazyEnv(t *testing.T) {
	p, err := compileExpr(`topic == "a" && qos == 0`, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.needs != 0 {
		t.Fatalf("needs %b", p.needs)
	}
	q, _ := compileExpr(`json.x > 1 && levels[0] == "a"`, true, 0)
	if q.needs != needJSON|needLevels {
		t.Fatalf("needs %b", q.needs)
	}
	m := &msg{topic: "a", payload: []byte(`{"x": 2}`)}
	e := m.env(p.needs)
	if e.JSON != nil || m.valDone {
		t.Fatal("parsed without need")
	}
	e = m.env(q.needs)
	first := e.JSON
	if v, err := q.run(e); err != nil || v != true {
		t.Fatalf("%v %v", v, err)
	}
	if m.env(q.needs).JSON == nil || !sameValue(first, m.env(q.needs).JSON) {
		t.Fatal("parsed twice")
	}
}

// FuzzParseJSON: the hand-written parser accepts what encoding/json accepts
// and yields the same values.
func FuzzParseJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{`"\ud83d\ude00"`, `"\ud83d"`, `"\ud83d\u0041"`, `"\ud83dx"`, `"\xff\xfe"`, `"a\u00"`,
		`01`, `-`, `1.`, `.5`, `1e`, `[1,]`, `{"a":1,}`, `{"a" 1}`, "\"\x01\"", ` [ 1 , 2 ] `, `tru`, `nul`, `"\/\b\f\n\r\t"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseJSON(data)
		want, werr := decodeJSONStd(data)
		if err != nil && strings.Contains(err.Error(), "nested too deeply") {
			return
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: parseJSON error %v, encoding/json error %v", data, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: parseJSON %#v, encoding/json %#v", data, got, want)
		}
	})
}

// FuzzEncodeJSON: the hand-written encoder writes what encoding/json
// writes (SetEscapeHTML(false)), except floats from 2^53 to 1e21, which
// get an exponent so that they read back as floats.
func FuzzEncodeJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{`"\u2028\u2029 \u007f \u0000 \b\f"`, `[1e-7, 1e-6, 123456789e300, 9007199254740992.0, 1e21, 0.000001]`, `"\xff<>&"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeJSONStd(data)
		if err != nil {
			return
		}
		got, err := encodeJSON(v)
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		var buf strings.Builder
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if string(got) == want {
			return
		}
		// Only big floats may differ, and then only in form.
		back, err := decodeJSON(got)
		if err != nil || !sameValue(back, v) || !hasBigFloat(v) {
			t.Fatalf("%q: encodeJSON %s, encoding/json %s", data, got, want)
		}
	})
}

func hasBigFloat(v any) bool {
	switch x := v.(type) {
	case float64:
		return math.Abs(x) >= exactBelow && math.Abs(x) < 1e21
	case map[string]any:
		for _, e := range x {
			if hasBigFloat(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasBigFloat(e) {
				return true
			}
		}
	}
	return false
}
