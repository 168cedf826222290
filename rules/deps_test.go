package rules_test

import (
	"strings"
	"testing"

	"github.com/motemq/mote/internal/deps"
)

// TestDeps keeps the package a leaf feature (STYLE.md §1): mochi,
// persistence and its own drivers; never the broker, another feature
// package, or testing in production code. Bridges are reached through
// BridgeLookup, which the broker provides.
func TestDeps(t *testing.T) {
	banned := map[string]string{}
	for _, p := range []string{"broker", "bridge", "queue", "auth", "guard", "admin", "listen", "frame"} {
		banned["github.com/motemq/mote/"+p] = "a feature package imports no other (declare a small interface the broker satisfies)"
	}
	deps.Forbid(t, "rules", banned)
	for _, p := range deps.Of(t) {
		if strings.HasPrefix(p, "github.com/motemq/mote/bridge/") {
			t.Errorf("rules depends on %s", p)
		}
	}
}
