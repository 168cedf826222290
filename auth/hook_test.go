package auth

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"
)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every ACL denial is counted; the log gets a bounded number of lines (a
// client denying itself in a loop cannot flood it), and a line after
// suppressed ones says how many were not logged.
func TestACLDenialsLoggedWithinARate(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	server := mqtt.New(&mqtt.Options{Logger: log})
	anyone := true
	h, err := New(Config{AllowAnonymous: &anyone, Rules: []Rule{{Allow: true, Action: ActionPublish, Topic: "ok/#"}}}, server, log)
	if err != nil {
		t.Fatal(err)
	}
	cl := server.NewClient(nil, "t", "mallory", false)
	const n = 500
	for range n {
		if h.OnACLCheck(cl, "secret/x", true) {
			t.Fatal("a publish outside the ACL was allowed")
		}
	}
	if h.OnACLCheck(cl, "secret/#", false) {
		t.Fatal("a subscription outside the ACL was allowed")
	}
	if !h.OnACLCheck(cl, "ok/x", true) {
		t.Fatal("an allowed publish was denied")
	}
	if got := h.Counters.PublishDenied.Load(); got != n {
		t.Fatalf("PublishDenied %d, want %d", got, n)
	}
	lines := strings.Count(out.String(), `msg="acl denied"`)
	if lines < denyLogBurst || lines > denyLogBurst+5 {
		t.Fatalf("%d denial lines logged for %d denials, want about the burst of %d", lines, n+1, denyLogBurst)
	}
	if !strings.Contains(out.String(), "action=publish topic=secret/x") || !strings.Contains(out.String(), "client=mallory") {
		t.Fatalf("denial lines lack the client, action or topic:\n%s", out.String())
	}
	// Once the rate allows again, the next line reports what was not logged.
	notLogged := h.unlogged.Load()
	if notLogged != uint64(n+1-lines) {
		t.Fatalf("%d denials counted as not logged, want %d", notLogged, n+1-lines)
	}
	h.denyLog.SetLimit(rate.Inf)
	h.OnACLCheck(cl, "secret/y", true)
	if want := fmt.Sprintf("topic=secret/y not_logged=%d", notLogged); !strings.Contains(out.String(), want) {
		t.Fatalf("the line after suppressed denials does not count them (want %q):\n%s", want, out.String())
	}
	if h.unlogged.Load() != 0 {
		t.Fatal("the count of denials not logged was not reset")
	}
}
