package retaingate

import (
	"testing"

	"github.com/motemq/mote/internal/deps"
)

// TestDeps keeps the gate beneath the features (STYLE.md §1): it wraps
// mochi and knows nothing of Mote's hooks; the broker hands it the ACL
// check.
func TestDeps(t *testing.T) {
	banned := map[string]string{}
	for _, p := range []string{"broker", "auth", "persistence", "queue", "rules", "bridge", "guard", "admin"} {
		banned["github.com/motemq/mote/"+p] = "the gate wraps mochi only; the broker wires it to the rest"
	}
	deps.Forbid(t, "internal/retaingate", banned)
}
