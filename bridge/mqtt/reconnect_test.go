package mqtt

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/motemq/mote/bridge"
)

// TestRemoteDownThenUp stops the remote and starts a fresh one on the same
// port: Send fails while it is down and works after; the bridge subscribes
// again on the new remote (which has no session) and gets messages.
func TestRemoteDownThenUp(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			r := startMochi(t, nil)
			rec := newRecorder()
			b := startBridge(t, testConfig(r.url(), version,
				Topic{Pattern: "out/#", QoS: 1},
				Topic{Pattern: "in/#", Direction: "in", QoS: 1}), rec.publish)
			waitUp(t, b)
			send(t, b, msg("out/1", "before", 1))

			r.stop()
			eventually(t, 5*time.Second, "the bridge to see the remote gone", func() bool { return !b.Status().Connected })
			start := time.Now()
			err := b.Send(context.Background(), []packets.Packet{msg("out/2", "while down", 1)})
			if err == nil || bridge.IsPermanent(err) {
				t.Fatalf("Send while down: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Send while down took %s", d)
			}
			if s := b.Status(); s.LastError == "" {
				t.Errorf("no last error: %+v", s)
			}

			r.start()
			got := &received{}
			subscribe(t, client(t, r.addr, got), "out/#", 1)
			waitUp(t, b)
			send(t, b, msg("out/2", "after", 1))
			if p := got.wait(t, "out/2"); string(p.Payload) != "after" {
				t.Errorf("payload %q", p.Payload)
			}
			if err := r.server.Publish("in/1", []byte("subscribed again"), false, 1); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, "subscribed again")
			if s := b.Status(); s.Published != 2 || s.SessionPresent {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestPersistentSessionAcrossOutage: the remote is unreachable for a while
// (it keeps running); what is published there meanwhile arrives once the
// bridge is back, from the session the remote kept.
func TestPersistentSessionAcrossOutage(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			r := startMochi(t, nil)
			p := startProxy(t, r.addr)
			rec := newRecorder()
			b := startBridge(t, testConfig(p.url(), version, Topic{Pattern: "in/#", Direction: "in", QoS: 1}), rec.publish)
			waitUp(t, b)
			p.down()
			eventually(t, 5*time.Second, "the bridge to be cut off", func() bool { return !b.Status().Connected })
			for i := range 3 {
				if err := r.server.Publish("in/q", fmt.Appendf(nil, "queued %d", i), false, 1); err != nil {
					t.Fatal(err)
				}
			}
			p.up()
			for i := range 3 {
				rec.wait(t, fmt.Sprintf("queued %d", i))
			}
			if s := b.Status(); !s.SessionPresent || s.Received != 3 {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestPersistentSessionAcrossRestart: a bridge stopped and built again
// with the same client id gets what Mosquitto queued meanwhile.
func TestPersistentSessionAcrossRestart(t *testing.T) {
	addr := mosquitto(t)
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			remote := "mote-test/" + uniq() + "/"
			cfg := testConfig("tcp://"+addr, version, Topic{Pattern: "#", Direction: "in", QoS: 1, RemotePrefix: remote, LocalPrefix: "l/"})
			first := startBridge(t, cfg, newRecorder().publish)
			waitUp(t, first)
			first.Stop()

			publish(t, client(t, addr, nil), &paho.Publish{Topic: remote + "while-away", QoS: 1, Payload: []byte("queued")})
			rec := newRecorder()
			second := startBridge(t, cfg, rec.publish)
			if pk := rec.wait(t, "queued"); pk.TopicName != "l/while-away" {
				t.Errorf("topic %q", pk.TopicName)
			}
			if s := second.Status(); !s.SessionPresent {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestStop: Stop ends every goroutine whatever the bridge is doing, and is
// idempotent.
func TestStop(t *testing.T) {
	r := startMochi(t, nil)
	unreachable := startMochi(t, nil)
	unreachable.stop()
	ignore := goleak.IgnoreCurrent()
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d/connected", version), func(t *testing.T) {
			rec := newRecorder()
			b, err := New("stop", testConfig(r.url(), version, Topic{Pattern: "#", Direction: "both", QoS: 2}), rec.publish, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			b.Start()
			waitUp(t, b)
			send(t, b, msg("a", "x", 2))
			b.Stop()
			b.Stop()
			b.Start() // after Stop: nothing
			if s := b.Status(); s.Connected {
				t.Errorf("connected after Stop: %+v", s)
			}
			eventually(t, 5*time.Second, "the remote to see the bridge go", func() bool {
				cl, ok := r.server.Clients.Get(b.cfg.ClientID)
				return ok && cl.Closed()
			})
		})
		t.Run(fmt.Sprintf("v%d/reconnecting", version), func(t *testing.T) {
			b, err := New("stop", testConfig(unreachable.url(), version, Topic{Pattern: "#"}), nil, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			b.Start()
			eventually(t, 5*time.Second, "a failed attempt", func() bool { return b.Status().LastError != "" })
			b.Stop()
		})
		t.Run(fmt.Sprintf("v%d/local publish blocked", version), func(t *testing.T) {
			entered := make(chan struct{}, 1)
			blocked := func(ctx context.Context, _ packets.Packet) error {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-ctx.Done()
				return ctx.Err()
			}
			b, err := New("stop", testConfig(r.url(), version, Topic{Pattern: "blocked/#", Direction: "in", QoS: 1}), blocked, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			b.Start()
			waitUp(t, b)
			// More than the inbound buffer: the client's reader waits too.
			for i := range inboundBuffer + 10 {
				if err := r.server.Publish("blocked/x", fmt.Append(nil, i), false, 1); err != nil {
					t.Fatal(err)
				}
			}
			<-entered
			start := time.Now()
			b.Stop()
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Stop took %s", d)
			}
		})
	}
	t.Run("never started", func(t *testing.T) {
		b, err := New("stop", testConfig(r.url(), 5, Topic{Pattern: "#"}), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Stop()
	})
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left after Stop: %v", err)
	}
}

// TestConnectRefused: a CONNACK refusal is explained in the status.
func TestConnectRefused(t *testing.T) {
	r := startMochi(t, nil, &refuseHook{})
	for _, version := range []int{5, 4} {
		b := startBridge(t, testConfig(r.url(), version, Topic{Pattern: "#"}), nil)
		eventually(t, 5*time.Second, "a refused connection", func() bool {
			return strings.Contains(b.Status().LastError, "the remote refused the connection")
		})
		if s := b.Status(); !strings.Contains(s.LastError, "check username and password") {
			t.Errorf("v%d: %q", version, s.LastError)
		}
	}
}
