package persistence

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Session engine tests drive the hook through mochi's own routing (an
// in-process server, not serving: the inline client publishes) to clients
// whose connection is one end of a net.Pipe; the test reads the other end.

type hookHarness struct {
	t   testing.TB
	srv *mqtt.Server
	h   *Hook
}

func newHookHarness(t testing.TB, opts Options) *hookHarness {
	t.Helper()
	store, err := Open(Config{Dir: t.TempDir(), Fsync: FsyncEverySecond}, discard)
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: discard})
	srv.Options.Capabilities.MaximumInflight = 65535 // as broker.New: sessions bound themselves
	// mochi refuses every publish and subscription without an ACL hook.
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	h := NewHook(store, srv, opts)
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Stop()
		_ = store.Close()
	})
	return &hookHarness{t: t, srv: srv, h: h}
}

// testClient is the far end of a client's connection.
type testClient struct {
	cl   *mqtt.Client
	conn net.Conn // the test's end
	pubs chan packets.Packet
}

// connect attaches a client with clean start (MQTT 5, session expiry 0
// unless persistent) the way mochi's attachClient does, and subscribes it
// to filter at qos when filter is not empty.
func (hh *hookHarness) connect(id string, persistent bool, filter string, qos byte) *testClient {
	hh.t.Helper()
	server, client := net.Pipe()
	cl := hh.srv.NewClient(server, "test", id, false)
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.ReceiveMaximum = 65535
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5}
	connect.Connect.Clean = !persistent
	if persistent {
		cl.Properties.Props.SessionExpiryInterval = 3600
	}
	tc := &testClient{cl: cl, conn: client, pubs: make(chan packets.Packet, 1024)}
	go tc.read()
	hh.h.OnSessionEstablish(cl, connect)
	hh.srv.Clients.Add(cl)
	hh.h.OnSessionEstablished(cl, connect)
	if filter != "" {
		sub := packets.Subscription{Filter: filter, Qos: qos}
		hh.srv.Topics.Subscribe(id, sub)
		cl.State.Subscriptions.Add(filter, sub)
	}
	hh.t.Cleanup(func() {
		cl.Stop(nil)
		_ = client.Close()
		_ = server.Close()
	})
	return tc
}

// resume connects a new client object for the persistent session id with
// clean start false, as mochi's attachClient and inheritClientSession do
// when a client comes back (taking over the old connection if it is still
// open): the session's in-flight messages are resent with DUP.
// beforeResend, if not nil, runs once the new client is registered and
// before mochi resends.
func (hh *hookHarness) resume(id string, beforeResend func()) *testClient {
	hh.t.Helper()
	existing, ok := hh.srv.Clients.Get(id)
	if !ok {
		hh.t.Fatalf("no client %s to resume", id)
	}
	server, client := net.Pipe()
	cl := hh.srv.NewClient(server, "test", id, false)
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.ReceiveMaximum = 65535
	cl.Properties.Props.SessionExpiryInterval = 3600
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5}
	tc := &testClient{cl: cl, conn: client, pubs: make(chan packets.Packet, 1024)}
	go tc.read()
	hh.h.OnSessionEstablish(cl, connect)
	existing.Stop(packets.ErrSessionTakenOver)
	existing.State.Inflight = mqtt.NewInflights() // the hook took what was in flight
	for _, sub := range existing.State.Subscriptions.GetAll() {
		hh.srv.Topics.Subscribe(id, sub)
		cl.State.Subscriptions.Add(sub.Filter, sub)
	}
	hh.srv.Clients.Add(cl)
	if beforeResend != nil {
		beforeResend()
	}
	if err := cl.ResendInflightMessages(true); err != nil {
		hh.t.Fatalf("resend: %v", err)
	}
	hh.h.OnSessionEstablished(cl, connect)
	hh.t.Cleanup(func() {
		cl.Stop(nil)
		_ = client.Close()
		_ = server.Close()
	})
	return tc
}

// read decodes what the broker writes and keeps the PUBLISH packets.
func (tc *testClient) read() {
	defer close(tc.pubs)
	r := bufio.NewReader(tc.conn)
	for {
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		var fh packets.FixedHeader
		if err := fh.Decode(b); err != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		if fh.Type != packets.Publish {
			continue
		}
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
		if err := pk.PublishDecode(buf); err != nil {
			return
		}
		tc.pubs <- pk
	}
}

// next returns the next PUBLISH the client received.
func (tc *testClient) next(t testing.TB) packets.Packet {
	t.Helper()
	select {
	case pk, ok := <-tc.pubs:
		if !ok {
			t.Fatal("connection closed")
		}
		return pk
	case <-time.After(10 * time.Second):
		t.Fatal("no PUBLISH within 10s")
	}
	return packets.Packet{}
}

// none checks that nothing more arrives for a while.
func (tc *testClient) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case pk := <-tc.pubs:
		t.Fatalf("unexpected PUBLISH %q id %d", pk.Payload, pk.PacketID)
	case <-time.After(d):
	}
}

// ack sends the client's acknowledgement of a QoS 1 delivery through the
// hook and mochi, as mochi's read loop would.
func (hh *hookHarness) ack(tc *testClient, id uint16) {
	hh.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ProtocolVersion: 5}
	pk, err := hh.h.OnPacketRead(tc.cl, pk)
	if err != nil {
		hh.t.Fatal(err)
	}
	if err := hh.srv.InjectPacket(tc.cl, pk); err != nil {
		hh.t.Fatalf("PUBACK %d: %v", id, err)
	}
	hh.h.OnPacketProcessed(tc.cl, pk, nil)
}

func (hh *hookHarness) publish(topic, payload string, qos byte) {
	hh.t.Helper()
	if err := hh.srv.Publish(topic, []byte(payload), false, qos); err != nil {
		hh.t.Fatalf("publish %s: %v", payload, err)
	}
}

// BenchmarkSessionLookup measures the hook's per-packet session lookups
// from many connections at once: the lookup alone, the acknowledgement
// path (OnPacketRead
// with a PUBACK for an id the session does not hold: lookup, session lock,
// map miss) and the delivery path's lookup (sessionFor, as OnQosPublish
// does for every QoS 1/2 delivery).
//
//	go test -run xxx -bench SessionLookup -cpu 1,2 ./persistence/
func BenchmarkSessionLookup(b *testing.B) {
	hh := newHookHarness(b, Options{})
	const n = 256
	clients := make([]*mqtt.Client, n)
	for i := range clients {
		clients[i] = hh.connect(fmt.Sprintf("c%03d", i), false, "", 0).cl
	}
	var next sync.Mutex
	start := 0
	worker := func() int {
		next.Lock()
		defer next.Unlock()
		start += 17
		return start
	}
	b.Run("lookup", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := worker()
			for pb.Next() {
				i++
				_ = hh.h.session(clients[i%n].ID)
			}
		})
	})
	b.Run("ack", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := worker()
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1}
			for pb.Next() {
				i++
				_, _ = hh.h.OnPacketRead(clients[i%n], pk)
			}
		})
	})
	b.Run("deliver", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := worker()
			for pb.Next() {
				i++
				_ = hh.h.sessionFor(clients[i%n])
			}
		})
	})
}

// durableDestination runs on every publish, without the session locks,
// while sessions connect and change their expiry: run with -race.
func TestDurableDestinationWhileSessionsChange(t *testing.T) {
	hh := newHookHarness(t, Options{})
	hh.connect("sub", true, "t/#", 1)
	s := hh.h.session("sub")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			s.mu.Lock()
			hh.h.setPersistent(s, i%2 == 0)
			s.mu.Unlock()
		}
	}()
	for {
		hh.h.durableDestination("t/x")
		select {
		case <-done:
			s.mu.Lock()
			hh.h.setPersistent(s, true)
			s.mu.Unlock()
			if !hh.h.durableDestination("t/x") {
				t.Error("a persistent subscriber is not a durable destination")
			}
			if hh.h.durableDestination("u") {
				t.Error("a topic nobody subscribes to is a durable destination")
			}
			return
		default:
		}
	}
}

// A new delivery whose packet id the session's index still holds for an
// earlier delivery (an id of a replaced client object kept it there until
// 57c02ce) is a new message: only mochi's resend of what is in flight
// (DUP set, same id) is not.
func TestNewDeliveryReusingAPacketIDIsNotAResend(t *testing.T) {
	hh := newHookHarness(t, Options{})
	tc := hh.connect("sub", true, "t/#", 1)
	hh.publish("t/1", "one", 1)
	first := tc.next(t)
	if string(first.Payload) != "one" || first.FixedHeader.Dup {
		t.Fatalf("got %q dup=%v, want one without DUP", first.Payload, first.FixedHeader.Dup)
	}
	hh.ack(tc, first.PacketID)

	// The id mochi gives the next delivery: NextPacketID counts up from the
	// last one it handed out.
	last, err := tc.cl.NextPacketID()
	if err != nil {
		t.Fatal(err)
	}
	reused := uint16(last + 1)
	s := hh.h.session("sub")
	s.mu.Lock()
	stale := &entry{seq: hh.h.next(), id: reused, state: stSent, owner: tc.cl}
	stale.pk.FixedHeader = packets.FixedHeader{Type: packets.Publish, Qos: 1}
	s.byID[reused] = stale // not in flight: mochi hands the id out again
	s.mu.Unlock()

	hh.publish("t/2", "two", 1)
	second := tc.next(t)
	if string(second.Payload) != "two" {
		t.Fatalf("got %q, want two", second.Payload)
	}
	if second.FixedHeader.Dup {
		t.Error("a new delivery was sent with DUP")
	}
	hh.ack(tc, second.PacketID)
	hh.publish("t/3", "three", 1)
	if third := tc.next(t); string(third.Payload) != "three" {
		t.Fatalf("got %q, want three", third.Payload)
	}
}

// On resume mochi resends what the hook put in flight (DUP, original id):
// that is the same delivery, not a new one to send again.
func TestResendOnResumeIsNotANewDelivery(t *testing.T) {
	hh := newHookHarness(t, Options{})
	tc := hh.connect("sub", true, "t/#", 1)
	hh.publish("t/1", "one", 1)
	first := tc.next(t)

	tc2 := hh.resume("sub", nil)
	again := tc2.next(t)
	if string(again.Payload) != "one" || again.PacketID != first.PacketID || !again.FixedHeader.Dup {
		t.Fatalf("resent %q id %d dup=%v, want one id %d with DUP", again.Payload, again.PacketID, again.FixedHeader.Dup, first.PacketID)
	}
	tc2.none(t, 200*time.Millisecond)
	hh.ack(tc2, again.PacketID)
	s := hh.h.session("sub")
	s.mu.Lock()
	queued := s.queued()
	s.mu.Unlock()
	if queued != 0 {
		t.Errorf("%d messages still queued after the acknowledgement", queued)
	}
	hh.publish("t/2", "two", 1)
	if next := tc2.next(t); string(next.Payload) != "two" || next.FixedHeader.Dup {
		t.Fatalf("got %q dup=%v, want two without DUP", next.Payload, next.FixedHeader.Dup)
	}
	tc2.none(t, 200*time.Millisecond)
}

// A delivery routed into the new client object between the takeover and
// mochi's resend is in mochi's in-flight map (pending) and so resent with
// DUP: that write is its delivery, and the pump must not send it again.
func TestDeliveryRoutedBeforeResendIsSentOnce(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			hh := newHookHarness(t, Options{})
			tc := hh.connect("sub", true, "t/#", qos)
			hh.publish("t/1", "one", qos)
			tc.next(t)

			tc2 := hh.resume("sub", func() {
				hh.h.stopping.Store(true) // hold the pump: the delivery stays as mochi routed it
				hh.publish("t/2", "two", qos)
			})
			hh.h.stopping.Store(false)
			s := hh.h.session("sub")
			s.kick()
			got := map[string]uint16{}
			for range 2 {
				pk := tc2.next(t)
				if !pk.FixedHeader.Dup {
					t.Errorf("%q id %d sent without DUP: sent again by the pump", pk.Payload, pk.PacketID)
				}
				got[string(pk.Payload)] = pk.PacketID
			}
			if _, ok := got["two"]; !ok || len(got) != 2 {
				t.Fatalf("resent %v, want one and two", got)
			}
			tc2.none(t, 200*time.Millisecond)
			s.mu.Lock()
			e := s.outstanding[got["two"]]
			s.mu.Unlock()
			if e == nil || string(e.pk.Payload) != "two" {
				t.Fatalf("two (id %d) is not outstanding: its acknowledgement would be lost", got["two"])
			}
			if p, ok := tc2.cl.State.Inflight.Get(got["two"]); !ok || p.Expiry < 0 {
				t.Errorf("two is still pending in mochi's in-flight map (%v %d)", ok, p.Expiry)
			}
		})
	}
}

// A delivery mochi meant to write itself (its send quota was briefly above
// zero) into a connection that then closed is never written: the pump does
// not poll for it (it used to, every 50 µs, until the session resumed or
// ended); the session's next connection takes it over.
func TestPumpDoesNotPollForAClosedConnection(t *testing.T) {
	hh := newHookHarness(t, Options{})
	tc := hh.connect("sub", true, "t/#", 1)
	s := hh.h.session("sub")
	tc.cl.Stop(packets.ErrServerShuttingDown)
	id, err := tc.cl.NextPacketID()
	if err != nil {
		t.Fatal(err)
	}
	e := &entry{seq: hh.h.next(), id: uint16(id), state: stIncoming, owner: tc.cl}
	e.pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t/1", Payload: []byte("one"), PacketID: e.id}
	tc.cl.State.Inflight.Set(e.pk) // in flight, not pending (Expiry 0): mochi's own write
	s.mu.Lock()
	s.byID[e.id] = e
	s.incoming = append(s.incoming, e)
	s.kickLocked()
	s.mu.Unlock()

	deadline := time.Now().Add(5 * time.Second)
	for quiet := 0; quiet < 20; {
		s.mu.Lock()
		busy := s.running || s.retry != nil
		s.mu.Unlock()
		if busy {
			quiet = 0
		} else {
			quiet++
		}
		if time.Now().After(deadline) {
			t.Fatal("the pump keeps polling for a delivery a closed connection will never write")
		}
		time.Sleep(time.Millisecond)
	}

	tc2 := hh.resume("sub", nil)
	if pk := tc2.next(t); string(pk.Payload) != "one" {
		t.Fatalf("got %q, want one", pk.Payload)
	}
}
