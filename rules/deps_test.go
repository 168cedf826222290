package rules_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the package a leaf feature (STYLE.md §1): mochi,
// persistence and its own drivers; never the broker, another feature
// package, or testing in production code. Bridges are reached through
// BridgeLookup, which the broker provides.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	banned := map[string]string{
		"testing": "test code in production",
	}
	for _, p := range []string{"broker", "bridge", "queue", "auth", "guard", "admin", "listen", "frame"} {
		banned["github.com/motemq/mote/"+p] = "a feature package imports no other (declare a small interface the broker satisfies)"
	}
	for _, p := range strings.Fields(string(out)) {
		if why, bad := banned[p]; bad {
			t.Errorf("rules depends on %s: %s", p, why)
		}
		if strings.HasPrefix(p, "github.com/motemq/mote/bridge/") {
			t.Errorf("rules depends on %s", p)
		}
	}
}
