package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// restart shuts b down gracefully and starts a broker on the same directory.
func restart(t *testing.T, b *broker.Broker, dir string) *broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	return brokertest.StartIn(t, dir)
}

// A persistent subscriber goes offline, messages are published, the broker
// restarts gracefully: every message arrives, once, in order, and the
// retained messages are back.
func TestGracefulRestartKeepsSessionsAndRetained(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		for _, proto := range []int{4, 5} {
			t.Run(fmt.Sprintf("qos%d/v%d", qos, proto), func(t *testing.T) {
				dir := t.TempDir()
				b := brokertest.StartIn(t, dir)
				id := fmt.Sprintf("sub-%d-%d", qos, proto)
				o := brokertest.Options{ID: id, Clean: false, SessionExpiry: 3600}
				if proto == 4 {
					v3 := brokertest.MustV3(t, b.Addr(broker.ListenerMQTT), o)
					v3.Sub(t, qos, "durable/#")
					v3.Disconnect(100)
				} else {
					v5 := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), o)
					v5.Sub(t, qos, "durable/#")
					v5.Close()
				}
				pub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
				const n = 1000
				for i := range n {
					pub.MustPub(t, "durable/x", fmt.Appendf(nil, "%04d", i), qos, false)
				}
				pub.MustPub(t, "durable/retained", []byte("kept"), 1, true)
				pub.Close()
				b = restart(t, b, dir)
				if st := b.Restored(); st.Sessions != 1 || st.Queued != n+1 || st.Retained != 1 {
					t.Fatalf("restored %+v, want 1 session, %d queued, 1 retained", st, n+1)
				}
				var in *brokertest.Inbox
				if proto == 4 {
					in = brokertest.MustV3(t, b.Addr(broker.ListenerMQTT), o).Inbox
				} else {
					in = brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), o).Inbox
				}
				seen := map[string]bool{}
				next := 0
				for len(seen) < n {
					m := in.Next(t, 10*time.Second)
					if m.Topic == "durable/retained" {
						continue // the queued copy of the retained publish
					}
					p := string(m.Payload)
					if seen[p] {
						t.Fatalf("duplicate %s", p)
					}
					seen[p] = true
					if want := fmt.Sprintf("%04d", next); p != want {
						t.Fatalf("message %d is %s: out of order", next, p)
					}
					next++
				}
				if m, ok := in.Try(300 * time.Millisecond); ok && m.Topic != "durable/retained" {
					t.Fatalf("extra message %q %q", m.Topic, m.Payload)
				}
				fresh := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "fresh", Clean: true})
				fresh.Sub(t, 1, "durable/retained")
				if m := fresh.Next(t, wait); string(m.Payload) != "kept" || !m.Retain {
					t.Fatalf("retained after restart: %q retain=%v", m.Payload, m.Retain)
				}
			})
		}
	}
}

// Messages in flight to a connected persistent subscriber (sent, not yet
// acknowledged) are resent after a restart.
func TestRestartResendsUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	b := brokertest.StartIn(t, dir)
	o := brokertest.Options{ID: "noack", Clean: false, SessionExpiry: 3600, NoAck: true, ReceiveMaximum: 10}
	sub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), o)
	sub.Sub(t, 1, "inflight/#")
	pub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	for i := range 30 {
		pub.MustPub(t, "inflight/x", fmt.Appendf(nil, "%02d", i), 1, false)
	}
	for range 10 {
		sub.Next(t, wait) // received, never acknowledged
	}
	sub.Drop()
	b = restart(t, b, dir)
	o.NoAck = false
	again := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), o)
	for i := range 30 {
		m := again.Next(t, wait)
		if want := fmt.Sprintf("%02d", i); string(m.Payload) != want && i >= 10 {
			t.Fatalf("message %d: %s", i, m.Payload)
		}
		if i < 10 && !m.Dup {
			t.Fatalf("resent message %s has no DUP flag", m.Payload)
		}
	}
}
