package hookset

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
)

func TestSet(t *testing.T) {
	s := Of(mqtt.OnConnect, mqtt.OnPublish, mqtt.OnPacketIDExhausted)
	for e := range byte(255) {
		want := e == mqtt.OnConnect || e == mqtt.OnPublish || e == mqtt.OnPacketIDExhausted
		if s.Has(e) != want {
			t.Errorf("Has(%d) = %v, want %v", e, s.Has(e), want)
		}
	}
	if Of().Has(0) {
		t.Error("the empty set has event 0")
	}
	// mochi's last event must fit: a new mochi with more events fails here
	// rather than in Of at start-up.
	_ = Of(mqtt.OnPacketIDExhausted, mqtt.OnSelectSubscribers, mqtt.OnPublishDropped)
}
