package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/internal/testpki"
)

// TestOut sends local messages and checks what a subscriber on Mosquitto
// gets: topic mapping, QoS min(message, topic), retain, properties.
func TestOut(t *testing.T) {
	addr := mosquitto(t)
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			remote := "mote-test/" + uniq() + "/factory/site1/"
			cfg := testConfig("tcp://"+addr, version,
				Topic{Pattern: "sensors/#", QoS: 1, LocalPrefix: "site1/", RemotePrefix: remote},
				Topic{Pattern: "sensors/#", QoS: 2, LocalPrefix: "site1/", RemotePrefix: remote + "never/"}, // the first match decides
				Topic{Pattern: "alarms/#", QoS: 2, LocalPrefix: "site1/", RemotePrefix: remote},
			)
			b := startBridge(t, cfg, nil)
			got := &received{}
			sub := client(t, addr, got)
			subscribe(t, sub, remote+"#", 2)
			waitUp(t, b)

			rich := msg("site1/sensors/t1", "21.5", 2)
			rich.FixedHeader.Retain = true
			rich.Properties = packets.Properties{
				ContentType:           "text/plain",
				ResponseTopic:         "site1/replies/t1",
				CorrelationData:       []byte{1, 2, 3},
				User:                  []packets.UserProperty{{Key: "unit", Val: "C"}, {Key: "unit", Val: "K"}},
				MessageExpiryInterval: 300,
				PayloadFormat:         1,
				PayloadFormatFlag:     true,
			}
			send(t, b, rich)
			send(t, b, msg("site1/alarms/fire", "!", 2), msg("site1/sensors/t2", "q0", 0))
			t.Cleanup(func() { // no retained message left on Mosquitto
				publish(t, sub, &paho.Publish{Topic: remote + "sensors/t1", Retain: true, QoS: 1})
			})

			p := got.wait(t, remote+"sensors/t1")
			if string(p.Payload) != "21.5" || p.QoS != 1 || !p.Retain {
				t.Errorf("sensors/t1: payload %q qos %d retain %v; want 21.5, 1 (min of 2 and 1), retained", p.Payload, p.QoS, p.Retain)
			}
			pp := p.Properties
			if version == 5 {
				if pp == nil || pp.ContentType != "text/plain" || pp.ResponseTopic != remote+"replies/t1" ||
					!bytes.Equal(pp.CorrelationData, []byte{1, 2, 3}) || len(pp.User) != 2 || pp.User[1].Value != "K" ||
					pp.MessageExpiry == nil || *pp.MessageExpiry == 0 || *pp.MessageExpiry > 300 ||
					pp.PayloadFormat == nil || *pp.PayloadFormat != 1 {
					t.Errorf("v5 properties not carried: %+v", pp)
				}
			} else if pp != nil && (pp.ContentType != "" || len(pp.User) > 0 || pp.ResponseTopic != "") {
				t.Errorf("3.1.1 has no properties, got %+v", pp)
			}
			if p := got.wait(t, remote+"alarms/fire"); p.QoS != 2 {
				t.Errorf("alarms/fire: qos %d, want 2", p.QoS)
			}
			if p := got.wait(t, remote+"sensors/t2"); p.QoS != 0 {
				t.Errorf("sensors/t2: qos %d, want 0", p.QoS)
			}
			if n := got.count(remote+"never/sensors/t1", "21.5"); n != 0 {
				t.Error("the second matching topic was used")
			}
			if s := b.Status(); s.Published != 3 || !s.Connected {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// TestSendNotConnected: without a connection Send fails at once, and the
// failure is retryable.
func TestSendNotConnected(t *testing.T) {
	r := startMochi(t, nil)
	url := r.url()
	r.stop() // nothing listens there now
	b := startBridge(t, testConfig(url, 5, Topic{Pattern: "a/#", QoS: 1}), nil)
	eventually(t, 5*time.Second, "a failed connection attempt", func() bool { return b.Status().LastError != "" })
	start := time.Now()
	err := b.Send(context.Background(), []packets.Packet{msg("a/1", "x", 1)})
	if !errors.Is(err, ErrNotConnected) || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "last error: dial") {
		t.Fatalf("Send without a connection: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Send took %s to fail", d)
	}
	if s := b.Status(); s.Connected || s.LastErrorAt.IsZero() {
		t.Errorf("status %+v", s)
	}
}

// denyHook lets everyone connect and refuses publishes to topics with
// "denied" in them.
type denyHook struct{ mochi.HookBase }

func (h *denyHook) ID() string { return "deny" }
func (h *denyHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *denyHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (h *denyHook) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	return !write || !strings.Contains(topic, "denied")
}

// refuseHook refuses every connection.
type refuseHook struct{ mochi.HookBase }

func (h *refuseHook) ID() string                                               { return "refuse" }
func (h *refuseHook) Provides(b byte) bool                                     { return b == mochi.OnConnectAuthenticate }
func (h *refuseHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return false }

// TestSendRefused: a v5 PUBACK "not authorized" (0x87) is permanent, for
// QoS 1 and for QoS 2 (where it comes in the PUBREC); the bridge stays up.
func TestSendRefused(t *testing.T) {
	r := startMochi(t, nil, &denyHook{})
	b := startBridge(t, testConfig(r.url(), 5, Topic{Pattern: "#", QoS: 2}), nil)
	waitUp(t, b)
	for _, qos := range []byte{1, 2} {
		err := b.Send(context.Background(), []packets.Packet{msg("x/denied", "p", qos)})
		if !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "0x87 not authorized") {
			t.Errorf("QoS %d refused: %v", qos, err)
		}
	}
	send(t, b, msg("x/allowed", "p", 1))
	// A batch: one refused, one sent: the outcome is per message, so
	// only the refused one is dead-lettered.
	err := b.Send(context.Background(), []packets.Packet{msg("y/denied", "p", 1), msg("y/ok", "p", 1)})
	var be *bridge.BatchError
	if !errors.As(err, &be) || !bridge.IsPermanent(be.Errs[0]) || be.Errs[1] != nil {
		t.Errorf("batch with a refused message: %v", err)
	}
	if s := b.Status(); !s.Connected || s.Published != 2 || !strings.Contains(s.LastError, "not authorized") {
		t.Errorf("status %+v", s)
	}
}

// TestSendExpired: a message whose expiry passed in the outbox is dropped
// and counted, not sent.
func TestSendExpired(t *testing.T) {
	r := startMochi(t, nil)
	b := startBridge(t, testConfig(r.url(), 5, Topic{Pattern: "#", QoS: 1}), nil)
	waitUp(t, b)
	got := &received{}
	subscribe(t, client(t, r.addr, got), "#", 1)
	old := msg("e/old", "stale", 1)
	old.Properties.MessageExpiryInterval = 5
	old.Created = time.Now().Add(-time.Minute).Unix()
	send(t, b, old, msg("e/marker", "m", 1))
	got.wait(t, "e/marker")
	if got.count("e/old", "stale") != 0 {
		t.Error("an expired message was sent")
	}
	if s := b.Status(); s.Expired != 1 || s.Published != 1 {
		t.Errorf("status %+v", s)
	}
}

// TestBatchKeepsTopicOrder: one Send with several topics; per topic, the
// remote sees the messages in order.
func TestBatchKeepsTopicOrder(t *testing.T) {
	r := startMochi(t, nil)
	b := startBridge(t, testConfig(r.url(), 5, Topic{Pattern: "#", QoS: 1}), nil)
	waitUp(t, b)
	got := &received{}
	subscribe(t, client(t, r.addr, got), "#", 1)
	var batch []packets.Packet
	for i := range 20 {
		batch = append(batch, msg(fmt.Sprintf("o/%d", i%3), fmt.Sprint(i), 1))
	}
	send(t, b, batch...)
	eventually(t, 10*time.Second, "20 messages", func() bool {
		got.mu.Lock()
		defer got.mu.Unlock()
		return len(got.msgs) == 20
	})
	last := map[string]int{}
	for _, p := range got.msgs {
		var i int
		fmt.Sscan(string(p.Payload), &i)
		if prev, ok := last[p.Topic]; ok && i < prev {
			t.Errorf("%s: %d after %d", p.Topic, i, prev)
		}
		last[p.Topic] = i
	}
}

// TestTLS bridges over mqtts:// to a TLS remote, with the CA from a file
// and the server name from the URL's host.
func TestTLS(t *testing.T) {
	pki := testpki.New(t)
	cert, err := tlsKeyPair(pki)
	if err != nil {
		t.Fatal(err)
	}
	r := startMochi(t, cert)
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			cfg := testConfig("mqtts://"+r.addr, version, Topic{Pattern: "tls/#", Direction: "both", QoS: 1})
			cfg.TLS.CAFile = pki.CAFile
			rec := newRecorder()
			b := startBridge(t, cfg, rec.publish)
			waitUp(t, b)
			send(t, b, msg("tls/out", "over tls", 1))
			if s := b.Status(); s.Published != 1 {
				t.Errorf("status %+v", s)
			}
			inline := r.server.Publish("tls/in", []byte("back over tls"), false, 1)
			if inline != nil {
				t.Fatal(inline)
			}
			rec.wait(t, "back over tls")
		})
	}
	t.Run("unknown CA", func(t *testing.T) {
		b := startBridge(t, testConfig("mqtts://"+r.addr, 5, Topic{Pattern: "#"}), nil)
		eventually(t, 5*time.Second, "a TLS error", func() bool {
			return strings.Contains(b.Status().LastError, "tls handshake")
		})
	})
}
