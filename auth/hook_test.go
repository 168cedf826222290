package auth

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
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

// The retained caps count what each user holds: a new retained topic
// beyond either cap is refused (MQTT 5 QoS 1: 0x97), replacing or clearing
// one's own is not, clearing or expiry gives room back, another user and
// the broker's own messages are not affected.
func TestRetainedCapPerUser(t *testing.T) {
	server := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	anyone := true
	h, err := New(Config{AllowAnonymous: &anyone, Limits: Limits{MaxRetainedPerUser: 2, MaxRetainedBytesPerUser: 100}},
		server, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	client := func(id, user string, version byte) *mqtt.Client {
		cl := server.NewClient(nil, "t", id, false)
		cl.Properties.Username = []byte(user)
		cl.Properties.ProtocolVersion = version
		return cl
	}
	alice, alice2, bob := client("a1", "alice", 5), client("a2", "alice", 5), client("b", "bob", 5)
	inline := server.NewClient(nil, "local", "inline", true)
	// publish runs the hook as mochi would: OnPublish, then (unless
	// refused) the retain and OnRetainMessage.
	publish := func(cl *mqtt.Client, topic, payload string, qos byte) error {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true, Qos: qos}, TopicName: topic, Payload: []byte(payload), PacketID: 1}
		pk, err := h.OnPublish(cl, pk)
		if err != nil {
			return err
		}
		h.OnRetainMessage(cl, pk, server.Topics.RetainMessage(pk))
		return nil
	}
	mustPublish := func(cl *mqtt.Client, topic, payload string) {
		t.Helper()
		if err := publish(cl, topic, payload, 1); err != nil {
			t.Fatalf("retained publish %s by %s: %v", topic, cl.ID, err)
		}
	}
	refused := func(cl *mqtt.Client, topic, payload string) {
		t.Helper()
		if err := publish(cl, topic, payload, 1); !errors.Is(err, packets.ErrQuotaExceeded) {
			t.Fatalf("retained publish %s by %s: %v, want 0x97", topic, cl.ID, err)
		}
	}
	mustPublish(alice, "t/1", "x")
	mustPublish(alice2, "t/2", "x") // the same user on another connection
	refused(alice, "t/3", "x")
	refused(alice2, "t/3", "x")
	mustPublish(alice, "t/1", "replaced") // replacing her own
	mustPublish(bob, "t/3", "x")          // bob has his own budget
	mustPublish(inline, "t/4", "x")       // the broker's own count for no one
	if err := publish(alice, "t/5", "x", 0); !errors.Is(err, packets.ErrRejectPacket) {
		t.Fatalf("QoS 0 over the cap: %v, want dropped", err)
	}
	mustPublish(alice, "t/2", "") // clearing is always allowed, and gives room back
	mustPublish(alice, "t/5", "x")
	if u := h.retained.use("alice"); u.count != 2 {
		t.Fatalf("alice holds %+v, want 2 messages", u)
	}
	// Taking over a topic another user set moves it to the new publisher.
	refused(alice, "t/3", "x")
	mustPublish(bob, "t/1", "bob's now")
	if a, b := h.retained.use("alice"), h.retained.use("bob"); a.count != 1 || b.count != 2 {
		t.Fatalf("after bob replaced t/1: alice %+v, bob %+v", a, b)
	}
	// Expiry gives room back.
	h.OnRetainedExpired("t/5")
	if u := h.retained.use("alice"); u.count != 0 {
		t.Fatalf("alice holds %+v after her last message expired", u)
	}
	// The bytes cap (topic + payload, 100): 3 + 90 fits, then 3 + 10 more does not.
	carol := client("c", "carol", 5)
	mustPublish(carol, "b/1", strings.Repeat("p", 90))
	refused(carol, "b/2", strings.Repeat("p", 10))
	mustPublish(carol, "b/1", strings.Repeat("p", 97)) // replacing within the cap
	// MQTT 3.1.1 QoS 1 over the cap: dropped (the client is disconnected).
	v3 := client("v3", "bob", 4)
	if err := publish(v3, "t/9", "x", 1); !errors.Is(err, packets.ErrRejectPacket) {
		t.Fatalf("3.1.1 QoS 1 over the cap: %v, want refused", err)
	}
	if n := h.Counters.RetainedQuota.Load(); n != 6 {
		t.Fatalf("RetainedQuota %d, want 6", n)
	}
}

// Without a cap nothing is tracked.
func TestRetainedNoCapNoBooks(t *testing.T) {
	server := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	h, err := New(Config{}, server, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cl := server.NewClient(nil, "t", "c", false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "t", Payload: []byte("x")}
	if _, err := h.OnPublish(cl, pk); err != nil {
		t.Fatal(err)
	}
	h.OnRetainMessage(cl, pk, 1)
	if h.retained != nil {
		t.Fatal("retained owners kept without a cap")
	}
}
