package retaingate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

const wait = 5 * time.Second

// start serves a mochi server with the gate (Head first, Tail last) and
// mid between them on 127.0.0.1:0. Its $SYS ticker runs once, at Serve.
func start(t *testing.T, canDeliver func(*mqtt.Client, string) bool, mid ...mqtt.Hook) (*mqtt.Server, *Gate, string) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Logger:                 slog.New(slog.DiscardHandler),
		SysTopicResendInterval: 3600,
	})
	if canDeliver == nil {
		canDeliver = func(*mqtt.Client, string) bool { return true }
	}
	g, err := New(s, Options{CanDeliver: canDeliver})
	if err != nil {
		t.Fatal(err)
	}
	hooks := append([]mqtt.Hook{g.Head(), new(auth.AllowHook)}, mid...)
	for _, h := range append(hooks, g.Tail()) {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, g, l.Address()
}

// client is an MQTT 5 test client.
type client struct {
	*paho.Client
	msgs chan *paho.Publish
	conn net.Conn
}

// connect connects an MQTT 5 client with a clean start; edit changes the
// CONNECT first.
func connect(t *testing.T, addr, id string, edit ...func(*paho.Connect)) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 10000), conn: conn}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: pahopackets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.msgs <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	for _, e := range edit {
		e(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}); _ = conn.Close() })
	return c
}

// sub subscribes and returns the reason codes.
func (c *client) sub(t *testing.T, opts ...paho.SubscribeOptions) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s := &paho.Subscribe{Subscriptions: opts}
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa.Reasons
}

func (c *client) pub(t *testing.T, topic, payload string, qos byte, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// drain returns what arrives until nothing has for quiet.
func (c *client) drain(quiet time.Duration) []*paho.Publish {
	var out []*paho.Publish
	for {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		case <-time.After(quiet):
			return out
		}
	}
}

// topics lists the topics of ms, marking any without the retain flag.
func topics(ms []*paho.Publish) []string {
	var out []string
	for _, m := range ms {
		s := m.Topic
		if !m.Retain {
			s += " (not retained)"
		}
		out = append(out, s)
	}
	return out
}

// checkIdle fails the test if the gate still holds or remembers anything.
func checkIdle(t *testing.T, g *Gate) {
	t.Helper()
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.writes) == 0 && len(g.subs) == 0
	})
	if g.lock.count(classScan, true)+g.lock.count(classRetain, true)+g.lock.count(classScan, false)+g.lock.count(classRetain, false) != 0 {
		t.Fatalf("gate not idle: active %v waiting %v", g.lock.active, g.lock.waiting)
	}
}

// TestSysRetainHandling: the gate sends the retained messages of $SYS
// wildcard filters itself, as mochi would.
func TestSysRetainHandling(t *testing.T) {
	deny := "$SYS/test/secret"
	s, g, addr := start(t, func(_ *mqtt.Client, topic string) bool { return topic != deny })
	for _, tp := range []string{"$SYS/test/a", "$SYS/test/b", deny} {
		s.Topics.RetainMessage(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
			TopicName:   tp, Payload: []byte("v"), Origin: "self",
			Created: time.Now().Unix(), // mochi's expiry sweep drops a retained message from 1970
		})
	}
	want := "$SYS/test/a $SYS/test/b"

	t.Run("handling 0", func(t *testing.T) {
		c := connect(t, addr, "h0")
		if rc := c.sub(t, paho.SubscribeOptions{Topic: "$SYS/test/#", QoS: 1}); rc[0] != 1 {
			t.Fatalf("suback %v", rc)
		}
		if got := strings.Join(topics(c.drain(200*time.Millisecond)), " "); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		// Asked twice with handling 0: sent again [MQTT-3.3.1-9].
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/test/#"})
		if got := strings.Join(topics(c.drain(200*time.Millisecond)), " "); got != want {
			t.Fatalf("again: got %q, want %q", got, want)
		}
		cl, _ := s.Clients.Get("h0")
		if sub, _ := cl.State.Subscriptions.Get("$SYS/test/#"); sub.RetainHandling != 0 {
			t.Fatalf("stored retain handling %d, want 0", sub.RetainHandling)
		}
	})
	t.Run("handling 1", func(t *testing.T) {
		c := connect(t, addr, "h1")
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/+/a", RetainHandling: 1})
		if got := strings.Join(topics(c.drain(200*time.Millisecond)), " "); got != "$SYS/test/a" {
			t.Fatalf("new subscription: got %q", got)
		}
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/+/a", RetainHandling: 1})
		if got := c.drain(200 * time.Millisecond); len(got) != 0 {
			t.Fatalf("existing subscription: got %v [MQTT-3.3.1-10]", topics(got))
		}
		cl, _ := s.Clients.Get("h1")
		if sub, _ := cl.State.Subscriptions.Get("$SYS/+/a"); sub.RetainHandling != 1 {
			t.Fatalf("stored retain handling %d, want 1", sub.RetainHandling)
		}
	})
	t.Run("handling 2", func(t *testing.T) {
		c := connect(t, addr, "h2")
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/test/#", RetainHandling: 2})
		if got := c.drain(200 * time.Millisecond); len(got) != 0 {
			t.Fatalf("got %v [MQTT-3.3.1-11]", topics(got))
		}
	})
	t.Run("identifier and no local", func(t *testing.T) {
		c := connect(t, addr, "self")
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		id := 7
		if _, err := c.Subscribe(ctx, &paho.Subscribe{
			Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: &id},
			Subscriptions: []paho.SubscribeOptions{{Topic: "$SYS/test/+"}, {Topic: "x/#", NoLocal: true}},
		}); err != nil {
			t.Fatal(err)
		}
		got := c.drain(200 * time.Millisecond)
		if strings.Join(topics(got), " ") != want {
			t.Fatalf("got %v, want %s", topics(got), want)
		}
		if p := got[0].Properties; p == nil || p.SubscriptionIdentifier == nil || *p.SubscriptionIdentifier != 7 {
			t.Fatalf("subscription identifier: %+v", p)
		}
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$SYS/test/#", NoLocal: true}}}); err != nil {
			t.Fatal(err)
		}
		if got := c.drain(200 * time.Millisecond); len(got) != 0 {
			t.Fatalf("no local: got %v [MQTT-3.8.3-3]", topics(got))
		}
	})
	t.Run("untouched", func(t *testing.T) {
		c := connect(t, addr, "plain")
		// A plain $SYS topic and a shared filter stay mochi's.
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/test/a"}, paho.SubscribeOptions{Topic: "$share/g/$SYS/test/#"})
		if got := strings.Join(topics(c.drain(200*time.Millisecond)), " "); got != "$SYS/test/a" {
			t.Fatalf("got %q", got)
		}
		// mochi's own $SYS values, published once at Serve.
		c.sub(t, paho.SubscribeOptions{Topic: "$SYS/broker/+"})
		got := c.drain(200 * time.Millisecond)
		if strings.Join(topics(got), " ") != "$SYS/broker/retained $SYS/broker/started $SYS/broker/subscriptions $SYS/broker/time $SYS/broker/uptime $SYS/broker/version" {
			t.Fatalf("$SYS/broker/+: got %v", topics(got))
		}
	})
	checkIdle(t, g)
}

// refuser fails OnPublish for topics under refused/ (mochi then goes on
// with the packet as it was for QoS 0) and, for nest/in, publishes a
// retained message from inside the hook, as Mote's rules engine does.
type refuser struct {
	mqtt.HookBase
	s *mqtt.Server
}

func (r *refuser) ID() string                              { return "refuser" }
func (r *refuser) Provides(b byte) bool                    { return b == mqtt.OnPublish }
func (r *refuser) Init(config any) error                   { return nil }
func (r *refuser) SetOpts(*slog.Logger, *mqtt.HookOptions) {}
func (r *refuser) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case strings.HasPrefix(pk.TopicName, "refused/"):
		return pk, errors.New("refused")
	case strings.HasPrefix(pk.TopicName, "ignored/"):
		return pk, packets.CodeSuccessIgnore
	case pk.TopicName == "nest/in":
		if err := r.s.Publish("nest/out", pk.Payload, true, 0); err != nil {
			return pk, err
		}
	}
	return pk, nil
}

// TestWritesReleased: every path that retains releases the gate, and the
// paths that do not retain never take it.
func TestWritesReleased(t *testing.T) {
	ref := &refuser{}
	s, g, addr := start(t, nil, ref)
	ref.s = s
	pub := connect(t, addr, "pub")
	for _, tp := range []string{"plain/a", "refused/a", "ignored/a", "nest/in"} {
		pub.pub(t, tp, "v", 0, true)
		pub.pub(t, tp+"/q1", "v", 1, true)
	}
	pub.pub(t, "plain/a", "", 1, true) // a clear
	if err := s.Publish("inline/a", []byte("v"), true, 0); err != nil {
		t.Fatal(err)
	}
	// Retained wills: one sent at once, one after a delay (by mochi's event
	// loop, past the gate).
	will := func(topic string, delay uint32) func(*paho.Connect) {
		return func(cp *paho.Connect) {
			cp.WillMessage = &paho.WillMessage{Topic: topic, Payload: []byte("gone"), Retain: true}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
			expiry := uint32(60)
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
		}
	}
	w := connect(t, addr, "will", will("will/a", 0))
	_ = w.conn.Close()
	wd := connect(t, addr, "will-delayed", will("will/delayed", 1))
	_ = wd.conn.Close()

	want := map[string]bool{
		"plain/a": false, "plain/a/q1": true, "refused/a": true, "ignored/a": false,
		"nest/in": true, "nest/out": true, "inline/a": true, "will/a": true, "will/delayed": true,
	}
	waitFor(t, func() bool {
		_, now := s.Topics.Retained.Get("will/a")
		_, later := s.Topics.Retained.Get("will/delayed")
		return now && later
	})
	for tp, retained := range want {
		if _, ok := s.Topics.Retained.Get(tp); ok != retained {
			t.Errorf("%s: retained %v, want %v", tp, ok, retained)
		}
	}
	// The refused publishes (QoS 0 and 1) are retained by mochi anyway,
	// past the gate; the delayed will is not counted.
	if n := g.Ungated.Load(); n != 2 {
		t.Errorf("ungated writes: %d, want 2", n)
	}
	checkIdle(t, g)

	// The gate still opens for a wildcard subscription.
	c := connect(t, addr, "sub")
	c.sub(t, paho.SubscribeOptions{Topic: "+/a"})
	if got := strings.Join(topics(c.drain(200*time.Millisecond)), " "); got == "" {
		t.Fatal("+/a got no retained messages")
	}
	checkIdle(t, g)
}

// TestRace churns retained sets and clears (from clients and the inline
// client, and directly into the index under $SYS as mochi's ticker does)
// against wildcard subscriptions. Without the gate, -race reports mochi's
// unlocked reads in TopicsIndex.scanMessages.
func TestRace(t *testing.T) {
	s, g, addr := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const n = 16
	for p := range 2 {
		c := connect(t, addr, fmt.Sprintf("pub%d", p))
		wg.Go(func() {
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				var payload []byte
				if i%4 != 3 {
					payload = []byte("v")
				}
				if _, err := c.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("a/%d/c", (i+p)%n), Payload: payload, Retain: true}); err != nil {
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 5000 && ctx.Err() == nil; i++ {
			var payload []byte
			if i%3 != 2 {
				payload = []byte("v")
			}
			_ = s.Publish(fmt.Sprintf("a/%d/c", i%n), payload, true, 0)
		}
	})
	wg.Go(func() { // mochi's $SYS ticker: straight into the index, no hook
		for i := 0; i < 5000 && ctx.Err() == nil; i++ {
			s.Topics.RetainMessage(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
				TopicName:   fmt.Sprintf("$SYS/broker/t%d", i%n), Payload: []byte("1"),
				Created: time.Now().Unix(),
			})
		}
	})
	for r, filter := range []string{"#", "a/+/c", "$SYS/#", "$SYS/broker/+"} {
		c := connect(t, addr, fmt.Sprintf("sub%d", r))
		wg.Go(func() {
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter}}}); err != nil {
					return
				}
				if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
					return
				}
				c.drain(0)
			}
		})
	}
	wg.Wait()
	checkIdle(t, g)
}

func TestNewRequiresCanDeliver(t *testing.T) {
	if _, err := New(mqtt.New(nil), Options{}); !errors.Is(err, ErrNoCanDeliver) {
		t.Fatalf("New without CanDeliver: %v, want ErrNoCanDeliver", err)
	}
}
