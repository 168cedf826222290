package guard

import (
	"log/slog"
	"math"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A DISCONNECT cannot lift the session expiry cap: mochi would keep the
// session in memory for as long as the DISCONNECT asked
// (test/reliability TestSessionExpiryCap is the end-to-end case).
func TestDisconnectSessionExpiryCapped(t *testing.T) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = 10
	s := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	h := New(s, Options{})
	cl := s.NewClient(nil, "t", "c", false)
	for _, tc := range []struct {
		name string
		flag bool
		in   uint32
		want uint32
	}{
		{"above the cap", true, math.MaxUint32, 10},
		{"just above", true, 11, 10},
		{"at the cap", true, 10, 10},
		{"below", true, 3, 3},
		{"zero", true, 0, 0},
		{"absent", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}
			pk.Properties.SessionExpiryIntervalFlag = tc.flag
			pk.Properties.SessionExpiryInterval = tc.in
			got, err := h.OnPacketRead(cl, pk)
			if err != nil {
				t.Fatal(err)
			}
			if got.Properties.SessionExpiryInterval != tc.want || got.Properties.SessionExpiryIntervalFlag != tc.flag {
				t.Fatalf("session expiry %d (flag %v), want %d (flag %v)", got.Properties.SessionExpiryInterval,
					got.Properties.SessionExpiryIntervalFlag, tc.want, tc.flag)
			}
		})
	}
	if n := h.Counters.SessionExpiryCapped.Load(); n != 2 {
		t.Fatalf("SessionExpiryCapped %d, want 2", n)
	}
}
