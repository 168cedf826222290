package mqtt

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// TestNoLoop: with both directions on one topic, what the bridge sends
// out does not come back in (v5: No Local; 3.1.1: fingerprints), while
// what others publish on the remote does.
func TestNoLoop(t *testing.T) {
	addr := mosquitto(t)
	for _, version := range []int{5, 4} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			remote := "mote-test/" + uniq() + "/site1/"
			rec := newRecorder()
			b := startBridge(t, testConfig("tcp://"+addr, version,
				Topic{Pattern: "data/#", Direction: "both", QoS: 1, LocalPrefix: "site1/", RemotePrefix: remote}), rec.publish)
			got := &received{}
			other := client(t, addr, got)
			subscribe(t, other, remote+"#", 1)
			waitUp(t, b)

			send(t, b, msg("site1/data/x", "from-local", 1))
			got.wait(t, remote+"data/x")
			// Published after the PUBACK of ours: an echo of ours would
			// reach the bridge before it.
			publish(t, other, &paho.Publish{Topic: remote + "data/y", QoS: 1, Payload: []byte("from-remote")})
			if pk := rec.wait(t, "from-remote"); pk.TopicName != "site1/data/y" {
				t.Errorf("topic %q", pk.TopicName)
			}
			if rec.callsOf("from-local") != 0 {
				t.Fatal("the bridge's own message came back in")
			}
			want := uint64(0)
			if version == 4 {
				want = 1
			}
			if s := b.Status(); s.Echoed != want || s.Received != 1 || s.Published != 1 {
				t.Errorf("status %+v, want %d echoed", s, want)
			}
			// The same topic and payload from someone else, once the echo
			// is gone: it comes in.
			publish(t, other, &paho.Publish{Topic: remote + "data/x", QoS: 1, Payload: []byte("from-local")})
			rec.wait(t, "from-local")
		})
	}
}
