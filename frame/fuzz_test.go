package frame

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// FuzzCheck input layout: data[0] is a mode byte, data[1:] a byte stream cut
// into packets with Header, as the connection wrapper does.
//
//	mode&3: 0 = nothing sent first (the stream should start with a CONNECT),
//	        1 / 2 / 3 = an accepted MQTT 3.1 / 3.1.1 / 5 CONNECT sent first
//	mode&4: tight Limits instead of the defaults
//
// The v5 CONNECT carries an Authentication Method and a Session Expiry
// Interval so that AUTH and DISCONNECT properties are reachable.
var fuzzConnects = [4][]byte{
	nil,
	minimalConnect(3),
	minimalConnect(4),
	connect5(0x02, plist(cat(b(propSessionExpiry), u32(60)), cat(b(propAuthMethod), s("SCRAM"))), s("fz")),
}

var fuzzTightLimits = Limits{MaxPacketSize: 512, TopicAliasMaximum: 8, MaxUserProperties: 4, MaxTopicLength: 32, MaxTopicLevels: 4}

// checkStream is the property FuzzCheck asserts, also used by the
// deterministic consistency tests: Check never panics, never modifies its
// input, never accepts an incomplete packet, refuses only with an *Error
// carrying a failure reason code whose Reply mochi can decode, and every
// packet it accepts decodes through mochi's decoders without error (and
// passes mochi's own validation, apart from the documented differences).
func checkStream(t testing.TB, data []byte) {
	t.Helper()
	if len(data) == 0 {
		return
	}
	mode := data[0]
	lim := Limits{}
	if mode&4 != 0 {
		lim = fuzzTightLimits
	}
	c := NewChecker(lim)
	if conn := fuzzConnects[mode&3]; conn != nil {
		if err := c.Check(conn); err != nil {
			t.Fatalf("fuzz CONNECT refused: %v", err)
		}
	}
	aliasMax := c.lim.TopicAliasMaximum
	for stream := data[1:]; len(stream) > 0; {
		total, complete, herr := Header(stream, lim.MaxPacketSize)
		whole := herr == nil && complete && total <= len(stream)
		pkt := stream
		if whole {
			pkt = stream[:total]
		}
		ver := c.Version()
		in := append([]byte{}, pkt...)
		err := c.Check(pkt)
		if !bytes.Equal(in, pkt) {
			t.Fatalf("Check modified its input % x", in)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code < 0x80 {
				t.Fatalf("refusal %v is not an *Error with a failure code", err)
			}
			if herr != nil && !errors.As(herr, new(*Error)) {
				t.Fatalf("Header error %v is not an *Error", herr)
			}
			if r := c.Reply(err); r != nil {
				if err := decodeReply(c.Version(), r); err != nil {
					t.Fatal(err)
				}
			}
			return
		}
		if !whole {
			t.Fatalf("accepted % x although Header said total=%d complete=%v err=%v", pkt, total, complete, herr)
		}
		p, derr := mochiDecode(ver, pkt)
		if derr != nil {
			t.Fatalf("accepted % x (version %d) but mochi: %v", pkt, ver, derr)
		}
		if verr := mochiValidate(p, aliasMax); verr != nil {
			t.Fatalf("accepted % x (version %d) but %v", pkt, ver, verr)
		}
		stream = stream[total:]
	}
}

// seed is a named FuzzCheck input.
type seed struct {
	name string
	data []byte
}

// fuzzSeeds builds the FuzzCheck seeds: every mochi-encoded valid packet and
// every table case (mode 0, CONNECT and setup packets in the stream), the
// same packets after the fuzz CONNECTs where they fit, a few multi-packet
// sessions, and the #501 input.
func fuzzSeeds() []seed {
	var out []seed
	modeOf := func(conn []byte) (byte, bool) {
		for i, fc := range fuzzConnects {
			if fc != nil && bytes.Equal(fc, conn) {
				return byte(i), true
			}
		}
		for v := byte(3); v <= 5; v++ {
			if bytes.Equal(conn, minimalConnect(v)) {
				return v - 2, true
			}
		}
		return 0, false
	}
	add := func(name string, mode byte, parts ...[]byte) {
		out = append(out, seed{name: name, data: cat(b(mode), cat(parts...))})
	}
	for _, v := range mochiValid() {
		add("valid "+v.name, 0, v.conn, cat(v.pre...), v.pkt)
		if m, ok := modeOf(v.conn); ok && v.conn != nil {
			add("valid mode "+v.name, m, cat(v.pre...), v.pkt)
		}
	}
	for _, tc := range cases {
		var mode byte
		if tc.lim != (Limits{}) {
			mode = 4 // not the same limits, but close enough to steer the fuzzer
		}
		conn := tc.conn
		if conn == nil && tc.ver != 0 {
			conn = minimalConnect(tc.ver)
		}
		add("case "+tc.name, mode, conn, cat(tc.pre...), tc.pkt)
	}
	add("issue 501", 3, b(0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x02, 0x61, 0x62))
	add("issue 501 v3.1.1", 2, b(0x82, 0x06, 0x00, 0x01, 0x00, 0x02, 0x61, 0x62))
	add("session v5", 0, mochiConnect5,
		pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(3))), []byte("1")),
		pk(0x32, s(""), u16(1), plist(cat(b(propTopicAlias), u16(3))), []byte("2")),
		pk(0x82, u16(2), plist(b(propSubscriptionIdentifier, 9)), s("a/+"), b(0x11), s("$share/g/#"), b(0x02)),
		pk(0x40, u16(1)), pk(0x50, u16(2), b(0x10)), pk(0x62, u16(2)), pk(0x70, u16(2), b(0), plist()),
		pk(0xA2, u16(3), plist(), s("a/+")), b(0xC0, 0x00),
		pk(0xF0, b(0x19), plist(cat(b(propAuthMethod), s("SCRAM-SHA-1")))),
		pk(0xE0, b(0x04), plist(cat(b(propSessionExpiry), u32(0)))))
	add("session v3.1.1", 0, mochiConnect311,
		pk(0x82, u16(1), s("a/b"), b(1), s("c/d"), b(2)),
		pk(0x34, s("a/b"), u16(7), []byte("hi")), pk(0x62, u16(7)), b(0xC0, 0x00), b(0xE0, 0x00))
	add("session tight limits", 7,
		pk(0x30, s("a/b/c/d"), plist(cat(b(propTopicAlias), u16(8)), user("a", "b")), []byte("x")),
		pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(8)))),
		pk(0x82, u16(1), plist(), s("a/b/c/d"), b(0)))
	add("slow drip", 3, b(0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b'))
	add("two packets in one read", 2, b(0xC0, 0x00, 0xC0, 0x00, 0xE0, 0x00))
	return out
}

// maxSeed keeps the 64 KiB-topic cases out of the fuzzer's seed corpus,
// where they would slow every mutation down; TestSeedsConsistent covers them.
const maxSeed = 4096

func FuzzCheck(f *testing.F) {
	for _, sd := range fuzzSeeds() {
		if len(sd.data) <= maxSeed {
			f.Add(sd.data)
		}
	}
	// The project-level corpus (testdata/fuzz/FuzzCheck at the module root).
	// go test itself replays only this package's testdata/fuzz/FuzzCheck,
	// which holds the same files.
	files, err := readCorpus(filepath.Join("..", "testdata", "fuzz", "FuzzCheck"))
	if err != nil {
		f.Fatal(err)
	}
	for _, data := range files {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkStream(t, data) })
}

func TestSeedsConsistent(t *testing.T) {
	for _, sd := range fuzzSeeds() {
		t.Run(sd.name, func(t *testing.T) { checkStream(t, sd.data) })
	}
}

// TestMutationsConsistent is a deterministic fuzz: every valid packet with
// each byte replaced by interesting values, and every truncation, must keep
// Check and mochi in agreement.
func TestMutationsConsistent(t *testing.T) {
	values := []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x0B, 0x23, 0x26, 0x30, 0x7F, 0x80, 0x81, 0xC0, 0xFF}
	n := 0
	for _, v := range mochiValid() {
		prefix := cat(b(0), v.conn, cat(v.pre...))
		for i := range v.pkt {
			for _, x := range append(values, v.pkt[i]+1, v.pkt[i]-1, v.pkt[i]^0x80) {
				m := append([]byte{}, v.pkt...)
				m[i] = x
				checkStream(t, cat(prefix, m))
				n++
			}
			checkStream(t, cat(prefix, v.pkt[:i]))
			// Remaining Length adjusted to the truncation, so the packet is
			// whole but its fields are short (the #501 shape).
			if i >= 2 && v.pkt[1] < 0x80 {
				tr := append([]byte{v.pkt[0], byte(i - 2)}, v.pkt[2:i]...)
				checkStream(t, cat(prefix, tr))
				n++
			}
		}
	}
	t.Logf("%d mutations", n)
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the FuzzCheck seed corpus files")

// corpusNames selects the seeds written as corpus files: every valid packet
// and a representative of each bad-input class (RELIABILITY.md 1–4).
var corpusNames = regexp.MustCompile(`^(valid |issue 501|session |slow drip|two packets|case (` + strings.Join([]string{
	"remaining length of five bytes", "remaining length not minimal", "remaining length larger than",
	"packet over the maximum", "packet type 0", "packet type 15", "connack from", "subscribe flags",
	"publish qos 3", "publish dup on qos 0", "first packet publish", "second connect v5",
	"connect v3.1.1 spec example", "connect protocol", "connect reserved flag", "connect will qos 3",
	"connect trailing byte", "client id", "user name", "will topic", "connect receive maximum 0",
	"connect session expiry twice", "connect user properties over", "will payload format 1",
	"publish empty topic", "publish topic", "topic alias", "publish v5 subscription identifier",
	"publish v5 payload format 1", "publish v5 user properties over", "puback v5",
	"subscribe v5", "subscribe invalid filters", "subscribe filter", "unsubscribe no filters",
	"disconnect v5 session expiry after 0", "auth ",
}, "|") + `))`)

func TestSeedCorpus(t *testing.T) {
	local := filepath.Join("testdata", "fuzz", "FuzzCheck")
	project := filepath.Join("..", "testdata", "fuzz", "FuzzCheck")
	if *updateCorpus {
		want := map[string][]byte{}
		for _, sd := range fuzzSeeds() {
			if corpusNames.MatchString(sd.name) && len(sd.data) <= maxSeed {
				want["seed-"+slug(sd.name)] = sd.data
			}
		}
		for _, dir := range []string{local, project} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
			for _, f := range old {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
			for name, data := range want {
				if err := os.WriteFile(filepath.Join(dir, name), corpusFile(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Crashers go test -fuzz wrote into the package directory join the
		// project corpus.
		found, _ := filepath.Glob(filepath.Join(local, "[0-9a-f]*"))
		for _, f := range found {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(project, filepath.Base(f)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, err := readCorpus(local)
	if err != nil {
		t.Fatal(err)
	}
	p, err := readCorpus(project)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) == 0 {
		t.Fatalf("no corpus in %s; run go test -run TestSeedCorpus -update-corpus", local)
	}
	if len(p) != 0 && len(p) != len(a) {
		t.Fatalf("%s has %d files, %s has %d: run go test -run TestSeedCorpus -update-corpus", local, len(a), project, len(p))
	}
	for name, data := range a {
		if pd, ok := p[name]; len(p) != 0 && (!ok || !bytes.Equal(pd, data)) {
			t.Fatalf("%s differs between %s and %s", name, local, project)
		}
		t.Run(name, func(t *testing.T) { checkStream(t, data) })
	}
	if _, ok := a["seed-issue-501"]; !ok {
		t.Fatal("the #501 input is not in the corpus")
	}
}

func slug(s string) string {
	var sb strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
			dash = false
		} else if !dash && sb.Len() > 0 {
			sb.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(sb.String(), "-")
}

// corpusFile encodes one []byte input in go test's corpus format.
func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
}

// readCorpus reads go test corpus files holding a single []byte; a missing
// directory is an empty corpus.
func readCorpus(dir string) (map[string][]byte, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			return nil, fmt.Errorf("reading corpus file %s: not a single []byte input", f)
		}
		lit := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
		v, err := strconv.Unquote(lit)
		if err != nil {
			return nil, fmt.Errorf("reading corpus file %s: %w", f, err)
		}
		out[filepath.Base(f)] = []byte(v)
	}
	return out, nil
}
