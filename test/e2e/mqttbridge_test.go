package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	mqttbridge "github.com/motemq/mote/bridge/mqtt"
	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// mosquittoAddr is the Mosquitto of the tests; MOTE_TEST_MOSQUITTO_ADDR
// overrides it.
func mosquittoAddr() string {
	if a := os.Getenv("MOTE_TEST_MOSQUITTO_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:1883"
}

// A Mosquitto-style bridge to the Mosquitto on this machine: messages cross
// out, in and both ways with their prefixes, each exactly once on each side
// (nothing loops back), over MQTT 5 and 3.1.1.
func TestMQTTBridgeToMosquitto(t *testing.T) {
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			remote := unique("mote-e2e")
			b := brokertest.Start(t, func(c *broker.Config) {
				c.Bridges = []broker.BridgeConfig{{
					Name: "cloud", Type: "mqtt",
					BackoffMin: broker.Duration(20 * time.Millisecond), BackoffMax: broker.Duration(200 * time.Millisecond),
					MQTT: &mqttbridge.Config{
						URL: "tcp://" + mosquittoAddr(), ProtocolVersion: version, ClientID: remote + "-bridge",
						ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
						Topics: []mqttbridge.Topic{
							{Pattern: "up/#", Direction: "out", QoS: 1, RemotePrefix: remote + "/site1/"},
							{Pattern: "down/#", Direction: "in", QoS: 1, LocalPrefix: "cloud/", RemotePrefix: remote + "/cloud/"},
							{Pattern: "both/#", Direction: "both", QoS: 1, RemotePrefix: remote + "/"},
						},
					},
				}}
			})
			local := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "local", Clean: true})
			local.Sub(t, 1, "#")
			far := brokertest.MustV5(t, mosquittoAddr(), brokertest.Options{ID: remote + "-far", Clean: true})
			far.Sub(t, 1, remote+"/#")
			waitBridgeUp(t, b, "cloud")

			// A message that must arrive exactly once, and nothing else after it.
			expect := func(in *brokertest.Inbox, side, topic, payload string) {
				t.Helper()
				m := in.Next(t, 10*time.Second)
				if m.Topic != topic || string(m.Payload) != payload {
					t.Fatalf("%s: got %q %q, want %q %q", side, m.Topic, m.Payload, topic, payload)
				}
			}
			quiet := func(in *brokertest.Inbox, side string) {
				t.Helper()
				if m, ok := in.Try(300 * time.Millisecond); ok {
					t.Fatalf("%s: unexpected %q %q (a loop?)", side, m.Topic, m.Payload)
				}
			}

			local.MustPub(t, "up/temp", []byte("21"), 1, false)
			expect(local.Inbox, "local", "up/temp", "21")
			expect(far.Inbox, "remote", remote+"/site1/up/temp", "21")

			far.MustPub(t, remote+"/cloud/down/cmd", []byte("reboot"), 1, false)
			expect(far.Inbox, "remote", remote+"/cloud/down/cmd", "reboot")
			expect(local.Inbox, "local", "cloud/down/cmd", "reboot")

			local.MustPub(t, "both/a", []byte("from-local"), 1, false)
			expect(local.Inbox, "local", "both/a", "from-local")
			expect(far.Inbox, "remote", remote+"/both/a", "from-local")
			quiet(local.Inbox, "local")
			quiet(far.Inbox, "remote")

			far.MustPub(t, remote+"/both/b", []byte("from-remote"), 1, false)
			expect(far.Inbox, "remote", remote+"/both/b", "from-remote")
			expect(local.Inbox, "local", "both/b", "from-remote")
			quiet(local.Inbox, "local")
			quiet(far.Inbox, "remote")
		})
	}
}

// waitBridgeUp waits until the bridge is connected to its remote (and so
// subscribed there).
func waitBridgeUp(t *testing.T, b *broker.Broker, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		up := false
		for _, in := range b.Inbound() {
			up = up || (in.Bridge == name && in.Connected)
		}
		if up {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bridge %s did not connect: %+v", name, b.Inbound())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
