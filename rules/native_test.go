package rules

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// exprGen writes a random expression of the native subset (and a little
// beyond it) from fuzz bytes.
type exprGen struct {
	b []byte
	i int
}

func (g *exprGen) pick(n int) int {
	if g.i >= len(g.b) {
		return 0
	}
	c := int(g.b[g.i])
	g.i++
	return c % n
}

var (
	genOperands = []string{
		"json", "json.a", "json.b", "json.s", "json.n", "json.o.x", "json.o?.x", "json?.o?.y", "json?.zz.x",
		"json.l[0]", "json.l[5]", "json?.l[1]", "json.o", "topic", "qos", "retain", "client_id", "levels[1]",
		"1", "2.5", "-3", `"x"`, `"1"`, "true", "false", "nil", "payload", "index", "properties.user",
		"len(topic)", "json.n + 1", // outside the subset: the VM runs those
	}
	genBinary = []string{"==", "!=", "<", ">", "<=", ">=", "&&", "||", "and", "or", "??", "+", "-", "*", "/", "%", "**"}
	genEnvs   = []any{
		nil, "str", 3.5, int64(7), []any{1.0, "two"},
		map[string]any{"a": 1.0, "b": int64(2), "s": "x", "n": nil, "o": map[string]any{"x": true}, "l": []any{int64(1), "1"}},
		map[string]any{"a": "1", "o": nil, "l": "text"},
		map[string]any{"o": map[string]any{"y": 1.0}, "b": true},
	}
)

func (g *exprGen) expr(depth int) string {
	if depth > 3 {
		return genOperands[g.pick(len(genOperands))]
	}
	switch g.pick(9) {
	case 0, 1:
		return genOperands[g.pick(len(genOperands))]
	case 2:
		return "!(" + g.expr(depth+1) + ")"
	case 3:
		return "(" + g.expr(depth+1) + ")"
	case 4:
		return "-(" + g.expr(depth+1) + ")"
	case 5:
		return "[" + g.expr(depth+1) + ", " + g.expr(depth+1) + "]"
	case 6:
		keys := []string{`"a"`, `"b"`, "topic", "json.s"}
		return "{" + keys[g.pick(4)] + ": " + g.expr(depth+1) + ", " + keys[g.pick(4)] + ": " + g.expr(depth+1) + "}"
	default:
		return g.expr(depth+1) + " " + genBinary[g.pick(len(genBinary))] + " " + g.expr(depth+1)
	}
}

// FuzzNative: the native closures and the VM agree on every expression of
// the subset: both fail, or both give the same value.
func FuzzNative(f *testing.F) {
	for _, s := range []string{"\x02\x03\x04\x05", "\x04\x01\x00\x07\x02", "\x05\x05\x06\x09\x0a\x01", "\x00\x07", "\x02\x08\x0b\x03\x10\x11"} {
		f.Add([]byte(s), uint8(5))
	}
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		g := &exprGen{b: b}
		src := g.expr(0)
		p, err := compileExpr(src, false, 0)
		if err != nil || p.native == nil {
			return
		}
		e := &env{Topic: "a/b", Levels: []string{"a", "b"}, QoS: 1, ClientID: "c", Payload: "p",
			JSON: genEnvs[int(which)%len(genEnvs)], Properties: map[string]any{"user": map[string]any{}}}
		want, werr := p.runVM(e)
		got, gerr := p.native(e)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s with json=%v: VM %v (%v), native %v (%v)", src, e.JSON, want, werr, got, gerr)
		}
		// %#v: NaN is not DeepEqual to itself; fmt sorts map keys.
		if werr == nil && !reflect.DeepEqual(want, got) && fmt.Sprintf("%#v", want) != fmt.Sprintf("%#v", got) {
			t.Fatalf("%s with json=%v: VM %#v, native %#v", src, e.JSON, want, got)
		}
	})
}

func TestNativeCovers(t *testing.T) {
	for _, src := range []string{
		`json.temp > 1000 && json.device != ""`, `json?.level == "debug"`, `json.value > 30`,
		`topic == "a" || qos >= 1`, `!(json.a.b ?? false)`, `levels[1] == "x"`, `json.l[0] < 3.5`,
		`json.temp * 1.8 + 32 > -4`, `{"a": json.a, "b": [1, json.b % 2]}.a == 1`,
	} {
		p, err := compileExpr(src, true, 0)
		if err != nil {
			t.Fatal(err)
		}
		if p.native == nil {
			t.Errorf("%s runs on the VM", src)
		}
	}
	for _, src := range []string{`len(topic) > 1`, `upper(json.a) == "A"`, `timestamp.Unix() > 0`, `json.a in [1, 2]`} {
		p, _ := compileExpr(src, true, 0)
		if p.native != nil {
			t.Errorf("%s runs natively", src)
		}
	}
	p, _ := compileExpr(`json.a.b > 1`, true, 0)
	if _, err := p.run(&env{}); err == nil || !strings.Contains(err.Error(), "cannot fetch") {
		t.Errorf("fetch from nil: %v", err)
	}
}
