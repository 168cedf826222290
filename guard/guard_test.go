package guard

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
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

// mochi's DisconnectClient writes a DISCONNECT to every client; an MQTT
// 3.1.1 client must only see the connection close (test/reliability
// TestACLBypass and TestRetainedFlood are the end-to-end cases).
func TestNoDisconnectPacketToV3Clients(t *testing.T) {
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	h := New(s, Options{})
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version byte
		want    []byte // what the client reads before the close
	}{
		{4, nil},
		{3, nil},
		{5, []byte{0xE0, 0x13, 0x87, 0x11, 0x1F, 0x00, 0x0E}}, // DISCONNECT 0x87, reason string "not authorized"
	} {
		t.Run(fmt.Sprintf("version %d", tc.version), func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			cl := s.NewClient(server, "t", fmt.Sprintf("c%d", tc.version), false)
			cl.Properties.ProtocolVersion = tc.version
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(client)
				got <- b
			}()
			_ = s.DisconnectClient(cl, packets.ErrNotAuthorized)
			_ = server.Close()
			b := <-got
			if !bytes.HasPrefix(b, tc.want) || (tc.want == nil && len(b) != 0) {
				t.Fatalf("client read % x, want % x…", b, tc.want)
			}
		})
	}
	if n := h.Counters.V3DisconnectSuppressed.Load(); n != 2 {
		t.Fatalf("V3DisconnectSuppressed %d, want 2", n)
	}
}

// An expired session's subscriptions leave mochi's topic index (mochi only
// deletes the client; test/reliability TestSessionExpiryCap measures the
// memory end to end).
func TestExpiredSessionUnsubscribed(t *testing.T) {
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	h := New(s, Options{})
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	cl := s.NewClient(nil, "t", "gone", false)
	other := s.NewClient(nil, "t", "stays", false)
	for _, c := range []*mqtt.Client{cl, other} {
		for _, f := range []string{"a/+/c", "b/#", "$share/g/q/#"} {
			sub := packets.Subscription{Filter: f, Qos: 1}
			s.Topics.Subscribe(c.ID, sub)
			c.State.Subscriptions.Add(f, sub)
		}
	}
	h.OnClientExpired(cl)
	subs := s.Topics.Subscribers("a/b/c")
	if _, ok := subs.Subscriptions["gone"]; ok {
		t.Fatal("the expired session still matches a/b/c")
	}
	if _, ok := subs.Subscriptions["stays"]; !ok {
		t.Fatal("another session's subscription was removed")
	}
	if shared := s.Topics.Subscribers("q/x").Shared; len(shared["$share/g/q/#"]) != 1 {
		t.Fatalf("shared group members after the expiry: %v, want only the live one", shared)
	}
	if cl.State.Subscriptions.Len() != 0 {
		t.Fatal("the expired client still lists subscriptions")
	}
	if n := h.Counters.ExpiredUnsubscribed.Load(); n != 1 {
		t.Fatalf("ExpiredUnsubscribed %d, want 1", n)
	}
}
