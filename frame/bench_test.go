package frame

import (
	"os/exec"
	"strings"
	"testing"
)

func BenchmarkCheck(bm *testing.B) {
	payload64 := []byte(strings.Repeat("x", 64))
	bench := []struct {
		name string
		ver  byte
		pkt  []byte
	}{
		{"v5 publish qos0 64B", 5, pk(0x30, s("sensors/1/temp"), plist(), payload64)},
		{"v5 publish qos1 64B props", 5, pk(0x32, s("sensors/1/temp"), u16(1), plist(
			b(propPayloadFormat, 1), cat(b(propMessageExpiry), u32(60)), user("trace", "abc")), payload64)},
		{"v3.1.1 publish qos0 64B", 4, pk(0x30, s("sensors/1/temp"), payload64)},
		{"v5 publish qos0 4KiB utf8", 5, pk(0x30, s("a/b"), plist(b(propPayloadFormat, 1)), []byte(strings.Repeat("é", 2048)))},
		{"v5 puback", 5, pk(0x40, u16(1))},
		{"pingreq", 4, b(0xC0, 0x00)},
		{"v5 subscribe 3 filters", 5, pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 7)), s("a/+/c"), b(1), s("d/#"), b(2), s("$share/g/e"), b(0))},
		{"v5 connect full", 0, mochiConnect5},
	}
	for _, bc := range bench {
		bm.Run(bc.name, func(bm *testing.B) {
			c := NewChecker(Limits{MaxUserProperties: 64})
			if bc.ver != 0 {
				if err := c.Check(minimalConnect(bc.ver)); err != nil {
					bm.Fatal(err)
				}
			}
			bm.SetBytes(int64(len(bc.pkt)))
			bm.ReportAllocs()
			for bm.Loop() {
				if bc.ver == 0 {
					c.version = 0 // CONNECT again on the same Checker
				}
				if err := c.Check(bc.pkt); err != nil {
					bm.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHeader(bm *testing.B) {
	pkt := b(0x30, 0xFF, 0xFF, 0x03)
	bm.ReportAllocs()
	for bm.Loop() {
		if _, ok, err := Header(pkt, 0); !ok || err != nil {
			bm.Fatal(ok, err)
		}
	}
}

// TestCheckAllocs pins the allocation-free accepted path.
func TestCheckAllocs(t *testing.T) {
	c := NewChecker(Limits{})
	if err := c.Check(minimalConnect(5)); err != nil {
		t.Fatal(err)
	}
	set := pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(3))), []byte("x"))
	use := pk(0x32, s(""), u16(9), plist(cat(b(propTopicAlias), u16(3)), b(propPayloadFormat, 1), user("k", "v")), []byte("ü"))
	sub := pk(0x82, u16(1), plist(), s("a/+"), b(1), s("#"), b(2))
	if err := c.Check(set); err != nil { // allocates the alias bitmap once
		t.Fatal(err)
	}
	for _, p := range [][]byte{set, use, sub, pk(0x40, u16(1)), b(0xC0, 0x00), b(0xE0, 0x00)} {
		if n := testing.AllocsPerRun(100, func() {
			if err := c.Check(p); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Check(% x) allocates %.0f times", p, n)
		}
	}
}

// TestDeps keeps production code on the standard library (no mochi, no
// testing), as STYLE.md §1 asks of leaf packages.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/motemq/mote/frame" {
			t.Errorf("frame depends on %s; production code may use only the standard library", p)
		}
	}
	out, err = exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "testing" {
			t.Error("frame's production code imports testing")
		}
	}
}
