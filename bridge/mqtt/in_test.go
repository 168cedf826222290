package mqtt

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestIn: messages published on Mosquitto under the remote prefix are
// published locally under the local prefix, with QoS, retain flag and
// (v5) properties.
func TestIn(t *testing.T) {
	addr := mosquitto(t)
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			remote := "mote-test/" + uniq() + "/factory/site1/"
			pub := client(t, addr, nil)
			// Retained before the bridge subscribes: it comes with the
			// subscription, flagged retained.
			publish(t, pub, &paho.Publish{Topic: remote + "cmd/retained", QoS: 1, Retain: true, Payload: []byte("kept")})
			t.Cleanup(func() { publish(t, pub, &paho.Publish{Topic: remote + "cmd/retained", QoS: 1, Retain: true}) })

			rec := newRecorder()
			b := startBridge(t, testConfig("tcp://"+addr, version,
				Topic{Pattern: "cmd/#", Direction: "in", QoS: 2, LocalPrefix: "site1/", RemotePrefix: remote}), rec.publish)
			waitUp(t, b)

			if pk := rec.wait(t, "kept"); pk.TopicName != "site1/cmd/retained" || !pk.FixedHeader.Retain || pk.FixedHeader.Qos != 1 {
				t.Errorf("retained: topic %q retain %v qos %d", pk.TopicName, pk.FixedHeader.Retain, pk.FixedHeader.Qos)
			}
			expiry := uint32(600)
			publish(t, pub, &paho.Publish{Topic: remote + "cmd/go", QoS: 2, Payload: []byte("run"), Properties: &paho.PublishProperties{
				ContentType: "text/plain", ResponseTopic: remote + "replies/1", CorrelationData: []byte("c1"),
				User: paho.UserProperties{{Key: "k", Value: "v"}}, MessageExpiry: &expiry,
			}})
			publish(t, pub, &paho.Publish{Topic: remote + "cmd/q0", QoS: 0, Payload: []byte("zero")})
			pk := rec.wait(t, "run")
			if pk.TopicName != "site1/cmd/go" || pk.FixedHeader.Qos != 2 || pk.FixedHeader.Type != packets.Publish {
				t.Errorf("cmd/go: topic %q qos %d", pk.TopicName, pk.FixedHeader.Qos)
			}
			pp := pk.Properties
			if version == 5 {
				if pp.ContentType != "text/plain" || pp.ResponseTopic != "site1/replies/1" || !bytes.Equal(pp.CorrelationData, []byte("c1")) ||
					len(pp.User) != 1 || pp.User[0] != (packets.UserProperty{Key: "k", Val: "v"}) || pp.MessageExpiryInterval == 0 || pp.MessageExpiryInterval > 600 {
					t.Errorf("v5 properties not mapped: %+v", pp)
				}
			}
			if pk := rec.wait(t, "zero"); pk.FixedHeader.Qos != 0 || pk.TopicName != "site1/cmd/q0" {
				t.Errorf("cmd/q0: topic %q qos %d", pk.TopicName, pk.FixedHeader.Qos)
			}
			if s := b.Status(); s.Received != 3 || s.Refused != 0 {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestInAckedAfterLocalPublish: while the local publish fails, the remote
// still holds the message unacknowledged; it is acknowledged once the
// local publish succeeded, and published locally once.
func TestInAckedAfterLocalPublish(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			r := startMochi(t, nil)
			rec := newRecorder()
			rec.failFirst = 3
			cfg := testConfig(r.url(), version, Topic{Pattern: "in/#", Direction: "in", QoS: 1})
			var unackedWhileFailing atomic.Int32
			rec.onCall = func(packets.Packet) {
				// Runs inside the bridge's local publish: the remote has
				// not had a PUBACK yet.
				if r.inflight(cfg.ClientID) == 1 {
					unackedWhileFailing.Add(1)
				}
			}
			b := startBridge(t, cfg, rec.publish)
			waitUp(t, b)
			if err := r.server.Publish("in/x", []byte("m1"), false, 1); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, "m1")
			if n := unackedWhileFailing.Load(); n != 4 {
				t.Errorf("unacknowledged at %d of the 4 local publish attempts, want all", n)
			}
			eventually(t, 5*time.Second, "the PUBACK", func() bool { return r.inflight(cfg.ClientID) == 0 })
			if n := rec.published("m1"); n != 1 {
				t.Errorf("published %d times", n)
			}
			if s := b.Status(); s.Received != 1 || s.LastError == "" {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestInRedeliveredAfterReconnect: the local publish keeps failing until
// the connection is lost; the remote sends the message again on the next
// connection (persistent session) and nothing is lost or doubled.
func TestInRedeliveredAfterReconnect(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			r := startMochi(t, nil)
			rec := newRecorder()
			cfg := testConfig(r.url(), version, Topic{Pattern: "in/#", Direction: "in", QoS: 2})
			b := startBridge(t, cfg, rec.publish)
			waitUp(t, b)
			rec.mu.Lock()
			rec.failWhile = func() bool { return b.Status().Connects < 2 } // fails on the first connection
			rec.mu.Unlock()
			if err := r.server.Publish("in/y", []byte("m2"), false, 2); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "a failed local publish", func() bool { return rec.callsOf("m2") >= 2 })
			n := b.Status().Connects
			r.kick(t, cfg.ClientID)
			rec.wait(t, "m2")
			waitReconnected(t, b, n)
			if !b.Status().SessionPresent {
				t.Error("the remote kept no session")
			}
			eventually(t, 5*time.Second, "the acknowledgement", func() bool { return r.inflight(cfg.ClientID) == 0 })
			// A marker after the redelivery: anything doubled would be in by then.
			if err := r.server.Publish("in/y", []byte("marker"), false, 1); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, "marker")
			if n := rec.published("m2"); n != 1 {
				t.Errorf("published %d times", n)
			}
		})
	}
}

// TestInRefused: a local permanent refusal is counted, logged and
// acknowledged: the remote does not send it again, later messages flow.
func TestInRefused(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			r := startMochi(t, nil)
			rec := newRecorder()
			rec.refuse = "local/denied"
			cfg := testConfig(r.url(), version, Topic{Pattern: "#", Direction: "in", QoS: 1, LocalPrefix: "local/"})
			b := startBridge(t, cfg, rec.publish)
			waitUp(t, b)
			if err := r.server.Publish("denied", []byte("no"), false, 1); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "the refusal", func() bool { return b.Status().Refused == 1 })
			eventually(t, 5*time.Second, "the acknowledgement", func() bool { return r.inflight(cfg.ClientID) == 0 })
			n := b.Status().Connects
			r.kick(t, cfg.ClientID)
			// Published while the bridge reconnects: the remote keeps it in
			// the session, and has it in flight when the bridge subscribes
			// again (a mochi remote then refuses a SUBSCRIBE with the same
			// packet identifier: the bridge tries the next one).
			if err := r.server.Publish("fine", []byte("yes"), false, 1); err != nil {
				t.Fatal(err)
			}
			waitReconnected(t, b, n)
			if pk := rec.wait(t, "yes"); pk.TopicName != "local/fine" {
				t.Errorf("topic %q", pk.TopicName)
			}
			if n := rec.callsOf("no"); n != 1 {
				t.Errorf("the refused message was handed over %d times", n)
			}
			if s := b.Status(); s.Refused != 1 || s.Received != 1 {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// subGate refuses subscriptions until opened.
type subGate struct {
	mochi.HookBase
	open atomic.Bool
}

func (h *subGate) ID() string { return "sub-gate" }
func (h *subGate) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *subGate) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *subGate) OnACLCheck(_ *mochi.Client, _ string, write bool) bool {
	return write || h.open.Load()
}

// TestSubscribeRetried: a subscription the remote refuses is asked for
// again while the connection lasts; once the remote's ACL allows it,
// messages come in.
func TestSubscribeRetried(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			gate := &subGate{}
			r := startMochi(t, nil, gate)
			rec := newRecorder()
			b := startBridge(t, testConfig(r.url(), version, Topic{Pattern: "in/#", Direction: "in", QoS: 1}), rec.publish)
			eventually(t, 5*time.Second, "a refused subscription", func() bool {
				s := b.Status()
				return s.Connected && !s.Subscribed && strings.Contains(s.LastError, `subscribe to "in/#" refused`)
			})
			gate.open.Store(true)
			waitUp(t, b)
			if err := r.server.Publish("in/late", []byte("allowed now"), false, 1); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, "allowed now")
			if n := b.Status().Connects; n != 1 {
				t.Errorf("%d connections, want 1: the subscription is retried on the same one", n)
			}
		})
	}
}
