package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// Raw-socket and hostile-client tests: every connection below misbehaves in
// a way a real client library would not, and each test checks both that
// the offender is refused and that well-behaved clients are unaffected.

// Packet types as read back from the broker.
const (
	tConnack    = 2
	tPuback     = 4
	tSuback     = 9
	tPingresp   = 13
	tDisconnect = 14
)

// healthy is a well-behaved subscriber/publisher pair kept alongside the
// hostile connections of a test.
type healthy struct {
	sub, pub *brokertest.V5
	n        int
}

func newHealthy(t *testing.T, addr string) *healthy {
	t.Helper()
	h := &healthy{
		sub: brokertest.MustV5(t, addr, brokertest.Options{ID: "healthy-sub", Clean: true}),
		pub: brokertest.MustV5(t, addr, brokertest.Options{ID: "healthy-pub", Clean: true}),
	}
	h.sub.Sub(t, 1, "healthy/#")
	h.check(t)
	return h
}

// check publishes one message and fails unless the subscriber gets it
// (and nothing else) within a bound.
func (h *healthy) check(t *testing.T) {
	t.Helper()
	h.n++
	want := fmt.Sprintf("alive-%d", h.n)
	h.pub.MustPub(t, "healthy/x", []byte(want), 1, false)
	m := h.sub.Next(t, wait)
	if m.Topic != "healthy/x" || string(m.Payload) != want {
		t.Fatalf("healthy subscriber got %q %q, want healthy/x %q", m.Topic, m.Payload, want)
	}
	select {
	case <-h.sub.Done():
		t.Fatal("healthy subscriber was disconnected")
	case <-h.pub.Done():
		t.Fatal("healthy publisher was disconnected")
	default:
	}
}

// expectRefused waits for the broker to close r and checks what it sent
// first: with codes nil, nothing at all; otherwise exactly one DISCONNECT
// whose reason code is one of codes.
func expectRefused(t *testing.T, r *brokertest.Raw, within time.Duration, codes ...byte) {
	t.Helper()
	got, err := r.WaitClosed(within)
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) == 0 {
		if len(got) != 0 {
			t.Fatalf("broker sent %v before closing, want nothing", got)
		}
		return
	}
	if len(got) != 1 || got[0].Type != tDisconnect {
		t.Fatalf("broker sent %v before closing, want one DISCONNECT with a reason in % x", got, codes)
	}
	if rc := got[0].ReasonCode(); !slices.Contains(codes, rc) {
		t.Fatalf("DISCONNECT reason 0x%02x, want one of % x", rc, codes)
	}
}

// 1. Upstream mochi #501: a v5 SUBSCRIBE whose (last) filter has no
// subscription options byte made mochi index past the end of its buffer
// and panic. The frame checker must refuse it with DISCONNECT 0x81 before
// mochi sees it, and the broker must keep serving.
func TestRobustIssue501SubscribeWithoutOptions(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	h := newHealthy(t, addr)
	for _, tc := range []struct {
		name    string
		version byte
		pkt     []byte
		codes   []byte
	}{
		{"v5 only filter", 5, brokertest.Pkt(0x82, brokertest.U16(1), []byte{0}, brokertest.Str("i501/a")), []byte{0x81}},
		{"v5 second filter", 5, brokertest.Pkt(0x82, brokertest.U16(1), []byte{0}, brokertest.Str("i501/a"), []byte{1}, brokertest.Str("i501/b")), []byte{0x81}},
		{"v5 no properties either", 5, brokertest.Pkt(0x82, brokertest.U16(1)), []byte{0x81}},
		{"v3.1.1 no requested QoS", 4, brokertest.Pkt(0x82, brokertest.U16(1), brokertest.Str("i501/a")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := brokertest.DialRaw(t, addr, 0)
			r.Connect(t, tc.version, "i501")
			r.MustSend(t, tc.pkt)
			expectRefused(t, r, 3*time.Second, tc.codes...)
			h.check(t)
		})
	}
	// CONNECT and the bad SUBSCRIBE in one write (one read on the broker):
	// the CONNECT is still answered, then the SUBSCRIBE refused.
	t.Run("v5 same write as CONNECT", func(t *testing.T) {
		r := brokertest.DialRaw(t, addr, 0)
		r.MustSend(t, slices.Concat(brokertest.RawConnect(5, "i501-one-write", 30),
			brokertest.Pkt(0x82, brokertest.U16(1), []byte{0}, brokertest.Str("i501/a"))))
		if p := r.Expect(t, tConnack, wait); p.ReasonCode() != 0 {
			t.Fatalf("CONNACK %v", p)
		}
		expectRefused(t, r, 3*time.Second, 0x81)
	})
	// Packets before the refused one in the same read are answered first,
	// and nothing follows the DISCONNECT [MQTT-3.14.4-1].
	t.Run("v5 after a QoS 1 PUBLISH in the same write", func(t *testing.T) {
		r := brokertest.DialRaw(t, addr, 0)
		r.Connect(t, 5, "i501-after-publish")
		r.MustSend(t, slices.Concat(
			brokertest.RawPublish(5, "healthy/before-501", 1, 9, []byte("first")),
			brokertest.Pkt(0x82, brokertest.U16(1), []byte{0}, brokertest.Str("i501/a"))))
		got, err := r.WaitClosed(3 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Type != tPuback || got[1].Type != tDisconnect || got[1].ReasonCode() != 0x81 {
			t.Fatalf("broker sent %v, want PUBACK then DISCONNECT 0x81", got)
		}
		if m := h.sub.Next(t, wait); string(m.Payload) != "first" {
			t.Fatalf("the PUBLISH before the refused packet: got %q", m.Payload)
		}
	})
	if subs := b.Server().Topics.Subscribers("i501/a"); len(subs.Subscriptions) != 0 {
		t.Fatalf("a refused SUBSCRIBE left subscriptions: %v", subs.Subscriptions)
	}
	// A fresh client can still subscribe and publish.
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "after-501", Clean: true})
	c.Sub(t, 1, "i501/#")
	h.pub.MustPub(t, "i501/a", []byte("ok"), 1, false)
	if m := c.Next(t, wait); m.Topic != "i501/a" || string(m.Payload) != "ok" {
		t.Fatalf("after #501: got %q %q", m.Topic, m.Payload)
	}
	h.check(t)
	if n := b.ConnStats().Refused[0x81].Load(); n < 4 {
		t.Fatalf("refused-0x81 counter is %d, want at least 4", n)
	}
}

// 2. A fixed header announcing the largest remaining length must be
// refused as soon as the length bytes arrive, without allocating a buffer
// for the body; a packet above a configured max_packet_size is refused
// with DISCONNECT 0x95.
func TestRobustOversizePackets(t *testing.T) {
	t.Run("announced 256MiB", func(t *testing.T) {
		b := brokertest.Start(t)
		addr := b.Addr(broker.ListenerMQTT)
		h := newHealthy(t, addr)
		const conns = 8
		for _, tc := range []struct {
			name    string
			version byte // 0: before CONNECT
			header  []byte
			codes   []byte
		}{
			{"v5 publish after CONNECT", 5, []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, []byte{0x95}},
			{"v3.1.1 publish after CONNECT", 4, []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, nil},
			{"CONNECT header", 0, []byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				raws := make([]*brokertest.Raw, conns)
				for i := range raws {
					raws[i] = brokertest.DialRaw(t, addr, 0)
					if tc.version != 0 {
						raws[i].Connect(t, tc.version, fmt.Sprintf("huge-%d", i))
					}
				}
				start := time.Now()
				for _, r := range raws {
					r.MustSend(t, tc.header)
				}
				for _, r := range raws {
					expectRefused(t, r, 2*time.Second, tc.codes...)
				}
				elapsed := time.Since(start)
				runtime.ReadMemStats(&after)
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
					t.Fatalf("allocated %d MiB while refusing %d oversized headers", grew>>20, conns)
				}
				if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
					t.Fatalf("heap grew by %d MiB", grew>>20)
				}
				t.Logf("%d connections refused in %v, allocated %d KiB", conns, elapsed, (after.TotalAlloc-before.TotalAlloc)>>10)
				h.check(t)
			})
		}
	})

	t.Run("max_packet_size 256", func(t *testing.T) {
		b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.MaxPacketSize = 256 })
		addr := b.Addr(broker.ListenerMQTT)
		h := newHealthy(t, addr)

		// MQTT 5 clients are told the limit.
		if mps := h.pub.Connack.Properties.MaximumPacketSize; mps == nil || *mps != 256 {
			t.Fatalf("CONNACK maximum packet size %v, want 256", mps)
		}

		// A packet of exactly 256 bytes is accepted.
		r := brokertest.DialRaw(t, addr, 0)
		r.Connect(t, 5, "fits")
		fits := sizedPublish(t, "healthy/fits", 7, 256)
		r.MustSend(t, fits)
		if p := r.Expect(t, tPuback, wait); len(p.Body) > 2 && p.Body[2] >= 0x80 {
			t.Fatalf("PUBACK for a 256-byte packet: %v", p)
		}
		if m := h.sub.Next(t, wait); m.Topic != "healthy/fits" {
			t.Fatalf("healthy subscriber got %q", m.Topic)
		}

		// One byte more is refused with 0x95.
		big := sizedPublish(t, "healthy/big", 8, 257)
		r.MustSend(t, big)
		expectRefused(t, r, 2*time.Second, 0x95)

		// A header announcing more than the limit is refused before the
		// body arrives.
		r = brokertest.DialRaw(t, addr, 0)
		r.Connect(t, 5, "header-only")
		r.MustSend(t, []byte{0x30, 0xE8, 0x07}) // 1000 bytes to follow
		expectRefused(t, r, 2*time.Second, 0x95)

		// MQTT 3.1.1: closed without a reply.
		r = brokertest.DialRaw(t, addr, 0)
		r.Connect(t, 4, "v3-big")
		r.MustSend(t, brokertest.RawPublish(4, "healthy/big", 0, 0, make([]byte, 300)))
		expectRefused(t, r, 2*time.Second)

		// A CONNECT above the limit: closed without a reply.
		r = brokertest.DialRaw(t, addr, 0)
		r.MustSend(t, brokertest.RawConnect(5, strings.Repeat("c", 300), 30))
		expectRefused(t, r, 2*time.Second)

		if m, ok := h.sub.Try(200 * time.Millisecond); ok {
			t.Fatalf("an oversized publish was delivered: %q (%d bytes)", m.Topic, len(m.Payload))
		}
		h.check(t)
		if n := b.ConnStats().Refused[0x95].Load(); n < 4 {
			t.Fatalf("refused-0x95 counter is %d, want at least 4", n)
		}
	})
}

// 3. A connection that does not complete its CONNECT within
// connect_timeout is closed, however it trickles bytes; one that does is
// then governed by its keepalive, not the connect timeout.
func TestRobustConnectTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.ConnectTimeout = broker.Duration(timeout) })
	addr := b.Addr(broker.ListenerMQTT)
	connect := brokertest.RawConnect(5, "slowpoke", 30)

	check := func(t *testing.T, r *brokertest.Raw, start time.Time) {
		t.Helper()
		expectRefused(t, r, 3*time.Second)
		el := time.Since(start)
		if el < timeout-50*time.Millisecond || el > timeout+1500*time.Millisecond {
			t.Fatalf("closed after %v, want about %v", el, timeout)
		}
	}
	t.Run("silent", func(t *testing.T) {
		start := time.Now()
		r := brokertest.DialRaw(t, addr, 0)
		check(t, r, start)
	})
	t.Run("partial CONNECT", func(t *testing.T) {
		start := time.Now()
		r := brokertest.DialRaw(t, addr, 0)
		r.MustSend(t, connect[:len(connect)-3])
		check(t, r, start)
	})
	t.Run("fixed header only", func(t *testing.T) {
		start := time.Now()
		r := brokertest.DialRaw(t, addr, 0)
		r.MustSend(t, connect[:1])
		check(t, r, start)
	})
	t.Run("trickle", func(t *testing.T) {
		// One byte every 40ms: the whole CONNECT would take about 1s, but
		// the deadline runs from accept, not from the last byte.
		start := time.Now()
		r := brokertest.DialRaw(t, addr, 0)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range connect {
				if r.Send(connect[i:i+1]) != nil {
					return
				}
				time.Sleep(40 * time.Millisecond)
			}
		}()
		check(t, r, start)
		<-done
	})
	t.Run("websocket silent", func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, _, err := brokertest.DialWS(ctx, b.Addr(broker.ListenerWS), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		check(t, brokertest.NewRaw(c), start)
	})
	t.Run("connected client outlives it", func(t *testing.T) {
		r := brokertest.DialRaw(t, addr, 0)
		r.Connect(t, 5, "in-time")
		time.Sleep(3 * timeout)
		r.MustSend(t, []byte{0xC0, 0x00})
		r.Expect(t, tPingresp, wait)
	})
	// Every connection is closed ("in-time" by the client at the end of
	// its subtest), and the broker's count says so.
	waitFor(t, 2*time.Second, "no open connections", func() bool { return b.ConnStats().Open.Load() == 0 })
	if n := b.ConnStats().Accepted.Load(); n != 6 {
		t.Fatalf("accepted %d connections, want 6", n)
	}
}

// 4. Malformed and out-of-order packets: each is refused (v5: DISCONNECT
// with the reason code the spec names; before CONNECT and on 3.1.1: just a
// close), and a healthy client alongside keeps receiving.
func TestRobustMalformedPackets(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	h := newHealthy(t, addr)
	pkt, str, u16 := brokertest.Pkt, brokertest.Str, brokertest.U16
	sub5 := func(filter string) []byte { return pkt(0x82, u16(1), []byte{0}, str(filter), []byte{1}) }
	cases := []struct {
		name    string
		version byte // CONNECT first with this version; 0: none
		pkt     []byte
		codes   []byte // v5 DISCONNECT reason; nil: closed without a reply
	}{
		{"remaining length of five bytes", 5, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, []byte{0x81}},
		{"remaining length of five bytes before CONNECT", 0, []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, nil},
		{"remaining length of five bytes v3.1.1", 4, []byte{0xC0, 0x80, 0x80, 0x80, 0x80, 0x00}, nil},
		{"remaining length not minimal", 5, []byte{0xC0, 0x80, 0x00}, []byte{0x81}},
		{"packet type 0", 5, []byte{0x00, 0x00}, []byte{0x81}},
		{"packet type 0 v3.1.1", 4, []byte{0x00, 0x00}, nil},
		{"packet type 15 v3.1.1", 4, []byte{0xF0, 0x00}, nil},
		{"packet type 15 v3.1.1 with a body", 4, []byte{0xF0, 0x02, 0x00, 0x00}, nil},
		{"AUTH without a method in CONNECT", 5, []byte{0xF0, 0x00}, []byte{0x82}},
		{"subscribe flags 0x0", 5, pkt(0x80, u16(1), []byte{0}, str("a"), []byte{1}), []byte{0x81}},
		{"subscribe flags 0x3", 5, pkt(0x83, u16(1), []byte{0}, str("a"), []byte{1}), []byte{0x81}},
		{"subscribe flags 0xa v3.1.1", 4, pkt(0x8A, u16(1), str("a"), []byte{1}), nil},
		{"unsubscribe flags 0x0", 5, pkt(0xA0, u16(1), []byte{0}, str("a")), []byte{0x81}},
		{"publish topic invalid UTF-8", 5, brokertest.RawPublish(5, "a/\xff/b", 0, 0, []byte("x")), []byte{0x81, 0x90}},
		{"publish topic overlong UTF-8", 5, brokertest.RawPublish(5, "a/\xc0\xaf", 1, 1, []byte("x")), []byte{0x81, 0x90}},
		{"publish topic surrogate", 5, brokertest.RawPublish(5, "a/\xed\xa0\x80", 0, 0, []byte("x")), []byte{0x81, 0x90}},
		{"publish topic U+0000", 5, brokertest.RawPublish(5, "a/\x00/b", 0, 0, []byte("x")), []byte{0x81, 0x90}},
		{"publish topic U+0000 v3.1.1", 4, brokertest.RawPublish(4, "a/\x00/b", 1, 1, []byte("x")), nil},
		{"publish topic with wildcard", 5, brokertest.RawPublish(5, "a/+/b", 1, 1, []byte("x")), []byte{0x90}},
		{"publish empty topic v3.1.1", 4, brokertest.RawPublish(4, "", 0, 0, []byte("x")), nil},
		{"publish empty topic without alias", 5, brokertest.RawPublish(5, "", 0, 0, []byte("x")), []byte{0x82}},
		{"publish topic alias never set", 5, pkt(0x30, str(""), []byte{3, 0x23, 0, 1}, []byte("x")), []byte{0x82}},
		{"publish QoS 3", 5, pkt(0x36, str("a"), u16(1), []byte{0}, []byte("x")), []byte{0x81}},
		{"publish QoS 3 v3.1.1", 4, pkt(0x36, str("a"), u16(1), []byte("x")), nil},
		{"publish DUP on QoS 0", 5, pkt(0x38, str("a"), []byte{0}, []byte("x")), []byte{0x81}},
		{"publish packet id 0", 5, pkt(0x32, str("a"), u16(0), []byte{0}, []byte("x")), []byte{0x81}},
		{"publish property duplicated", 5, pkt(0x30, str("a"), []byte{4, 0x01, 0x01, 0x01, 0x01}, []byte("x")), []byte{0x82}},
		{"publish property past its length", 5, pkt(0x30, str("a"), []byte{9, 0x01, 0x01}), []byte{0x81}},
		{"publish subscription identifier from a client", 5, pkt(0x30, str("a"), []byte{2, 0x0B, 0x01}, []byte("x")), []byte{0x82}},
		{"subscribe filter invalid UTF-8", 5, sub5("a/\xff"), []byte{0x81}},
		{"subscribe filter U+0000", 5, sub5("a/\x00"), []byte{0x81}},
		{"subscribe property duplicated", 5, pkt(0x82, u16(1), []byte{4, 0x0B, 0x01, 0x0B, 0x02}, str("a"), []byte{1}), []byte{0x82}},
		{"subscribe options QoS 3", 5, pkt(0x82, u16(1), []byte{0}, str("a"), []byte{3}), []byte{0x82}},
		{"subscribe no filters", 5, pkt(0x82, u16(1), []byte{0}), []byte{0x82}},
		{"pingreq with a body", 5, []byte{0xC0, 0x01, 0x00}, []byte{0x81}},
		{"CONNACK from a client", 5, []byte{0x20, 0x03, 0x00, 0x00, 0x00}, []byte{0x82}},
		{"first packet PINGREQ", 0, []byte{0xC0, 0x00}, nil},
		{"first packet PUBLISH", 0, brokertest.RawPublish(4, "a", 0, 0, []byte("x")), nil},
		{"first packet SUBSCRIBE", 0, brokertest.RawSubscribe(4, 1, "#", 0), nil},
		{"first bytes HTTP", 0, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"first packet PUBLISH header announcing 1MB", 0, []byte{0x30, 0xFF, 0xFF, 0x3E}, nil},
		{"first byte only, not CONNECT", 0, []byte{0x82}, nil},
		{"second CONNECT", 5, brokertest.RawConnect(5, "again", 30), []byte{0x82}},
		{"second CONNECT v3.1.1", 4, brokertest.RawConnect(4, "again", 30), nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := brokertest.DialRaw(t, addr, 0)
			if tc.version != 0 {
				r.Connect(t, tc.version, fmt.Sprintf("bad-%d", i))
			}
			r.MustSend(t, tc.pkt)
			expectRefused(t, r, 3*time.Second, tc.codes...)
			h.check(t)
		})
	}
	// Nothing published by a refused packet reached anyone.
	if m, ok := h.sub.Try(100 * time.Millisecond); ok {
		t.Fatalf("healthy subscriber got an extra message %q %q", m.Topic, m.Payload)
	}
	var ids []string
	for id, cl := range b.Server().Clients.GetAll() {
		if !cl.Net.Inline {
			ids = append(ids, id)
		}
	}
	if slices.Sort(ids); !slices.Equal(ids, []string{"healthy-pub", "healthy-sub"}) {
		t.Fatalf("clients known after the refusals: %v, want only the healthy pair", ids)
	}
}

// 5. A QoS 1 subscriber that never reads its socket must not hold up
// publishers: it is disconnected after write_timeout, every publish is
// acknowledged promptly, and a normal subscriber gets every message.
func TestRobustSlowSubscriber(t *testing.T) {
	const (
		minTotal     = 8000  // 8 MB: twice what a loopback socket buffers here
		maxTotal     = 20000 // give up waiting for the stuck subscriber's close
		after        = 1000  // messages published after it was closed
		workers      = 16
		writeTimeout = 500 * time.Millisecond
		ackBound     = 3 * time.Second // the longest any publish may wait for its PUBACK
	)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MQTT.WriteTimeout = broker.Duration(writeTimeout)
		// Let the session engine send the stuck subscriber everything at
		// once (it never acknowledges), so its socket fills up.
		c.MQTT.MaxInflight = 65535
		c.MQTT.MaxQueuedMessages = maxTotal
	})
	addr := b.Addr(broker.ListenerMQTT)

	stuck := brokertest.DialRaw(t, addr, 4096)
	stuck.Connect(t, 5, "stuck")
	stuck.MustSend(t, brokertest.RawSubscribe(5, 1, "slow/t", 1))
	if p := stuck.Expect(t, tSuback, wait); len(p.Body) < 4 || p.Body[3] != 1 {
		t.Fatalf("SUBACK %v", p)
	}
	// From here on the stuck subscriber reads nothing.

	normal := brokertest.MustV5(t, addr, brokertest.Options{ID: "normal", Clean: true})
	normal.Sub(t, 1, "slow/t")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})

	var (
		next      atomic.Int64
		closedIdx atomic.Int64 // publishes claimed when the stuck subscriber was closed
		closedAt  atomic.Int64
		maxWait   atomic.Int64
		failures  atomic.Int64
		sent      = make([]atomic.Bool, maxTotal)
		firstErr  sync.Once
		errMsg    string
		wg        sync.WaitGroup
	)
	closedIdx.Store(-1)
	start := time.Now()
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for b.ConnStats().SlowClosed.Load() == 0 {
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		closedAt.Store(int64(time.Since(start)))
		closedIdx.Store(next.Load())
	}()
	for range workers {
		wg.Go(func() {
			p := make([]byte, 1024)
			for {
				i := next.Add(1) - 1
				ci := closedIdx.Load()
				if i >= maxTotal || failures.Load() > 0 || (ci >= 0 && i >= max(minTotal, ci+after)) {
					return
				}
				copy(p, fmt.Sprintf("%06d", i))
				ctx, cancel := context.WithTimeout(context.Background(), ackBound)
				t0 := time.Now()
				r, err := pub.Pub(ctx, "slow/t", p, 1, false)
				d := time.Since(t0)
				cancel()
				for {
					m := maxWait.Load()
					if int64(d) <= m || maxWait.CompareAndSwap(m, int64(d)) {
						break
					}
				}
				if err == nil && r != nil && r.ReasonCode >= 0x80 {
					err = fmt.Errorf("reason 0x%02x", r.ReasonCode)
				}
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { errMsg = fmt.Sprintf("publish %d after %v: %v", i, d, err) })
					return
				}
				sent[i].Store(true)
			}
		})
	}
	wg.Wait()
	close(stopWatch)
	<-watchDone
	pubTime := time.Since(start)
	if failures.Load() > 0 {
		t.Fatalf("%d publishes failed or were not acknowledged within %v; first: %s", failures.Load(), ackBound, errMsg)
	}
	total := 0
	for i := range sent {
		if sent[i].Load() {
			total++
		}
	}
	t.Logf("%d QoS 1 publishes of 1 KiB acknowledged in %v; slowest PUBACK %v", total, pubTime, time.Duration(maxWait.Load()))
	if closedIdx.Load() < 0 {
		t.Fatalf("the stuck subscriber was not disconnected while %d messages were published to it", total)
	}
	t.Logf("stuck subscriber closed %v after the first publish, after about %d publishes",
		time.Duration(closedAt.Load()), closedIdx.Load())

	// The normal subscriber gets every message exactly once.
	seen := make([]bool, maxTotal)
	deadline := time.Now().Add(20 * time.Second)
	for got := 0; got < total; got++ {
		m, ok := normal.Try(time.Until(deadline))
		if !ok {
			t.Fatalf("normal subscriber got %d of %d messages", got, total)
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Payload[:6]), "%06d", &i); err != nil || i >= maxTotal || !sent[i].Load() || seen[i] {
			t.Fatalf("normal subscriber: unexpected or duplicate message %q (dup=%v)", m.Payload[:6], m.Dup)
		}
		seen[i] = true
	}
	if m, ok := normal.Try(100 * time.Millisecond); ok {
		t.Fatalf("normal subscriber got an extra message %q", m.Payload[:6])
	}

	// The stuck subscriber is gone, and only it was closed as slow.
	waitFor(t, 5*time.Second, "the stuck subscriber to be disconnected", func() bool {
		cl, ok := b.Server().Clients.Get("stuck")
		return !ok || cl.Closed()
	})
	if n := b.ConnStats().SlowClosed.Load(); n != 1 {
		t.Fatalf("slow-closed counter is %d, want 1", n)
	}
	select {
	case <-normal.Done():
		t.Fatal("the normal subscriber was disconnected")
	case <-pub.Done():
		t.Fatal("the publisher was disconnected")
	default:
	}
}

// sizedPublish is a v5 QoS 1 PUBLISH of exactly size bytes.
func sizedPublish(t *testing.T, topic string, id uint16, size int) []byte {
	t.Helper()
	for n := 0; ; n++ {
		p := brokertest.RawPublish(5, topic, 1, id, make([]byte, n))
		if len(p) == size {
			return p
		}
		if len(p) > size {
			t.Fatalf("no PUBLISH to %q is exactly %d bytes", topic, size)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// 6. WebSocket: the Origin allow-list and X-Forwarded-For from trusted
// proxies only.
func TestRobustWebSocketOriginAndProxy(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Listeners.WS.AllowedOrigins = []string{"https://app.example.com"}
		c.Listeners.WS.TrustedProxies = []string{"127.0.0.1"}
	})
	ws := b.Addr(broker.ListenerWS)

	// dial opens a WebSocket with headers and, when it is accepted,
	// connects over it as id and returns the address mochi recorded.
	dial := func(t *testing.T, id string, h http.Header) (remote string, status int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, resp, err := brokertest.DialWS(ctx, ws, "", h)
		if err != nil {
			if resp == nil {
				t.Fatalf("websocket dial: %v", err)
			}
			return "", resp.StatusCode
		}
		defer c.Close()
		r := brokertest.NewRaw(c)
		r.Connect(t, 5, id)
		cl, ok := b.Server().Clients.Get(id)
		if !ok {
			t.Fatalf("client %q not known to the broker", id)
		}
		return cl.Net.Remote, http.StatusSwitchingProtocols
	}

	for _, tc := range []struct {
		name   string
		origin string
		want   int
	}{
		{"no Origin", "", http.StatusSwitchingProtocols},
		{"same origin", "http://" + ws, http.StatusSwitchingProtocols},
		{"allowed origin", "https://app.example.com", http.StatusSwitchingProtocols},
		{"allowed origin other case", "https://APP.example.com", http.StatusSwitchingProtocols},
		{"other origin", "https://evil.example.com", http.StatusForbidden},
		{"allowed origin as a prefix", "https://app.example.com.evil.io", http.StatusForbidden},
		{"allowed host, other scheme", "http://app.example.com", http.StatusForbidden},
		{"allowed host, other port", "https://app.example.com:8443", http.StatusForbidden},
		{"null origin", "null", http.StatusForbidden},
		{"same host, other port", "http://127.0.0.1:1", http.StatusForbidden},
	} {
		t.Run("origin/"+tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			_, status := dial(t, "origin-"+strings.ReplaceAll(tc.name, " ", "-"), h)
			if status != tc.want {
				t.Fatalf("Origin %q: HTTP %d, want %d", tc.origin, status, tc.want)
			}
		})
	}

	t.Run("forwarded by a trusted proxy", func(t *testing.T) {
		// One id per connection: mochi v2.7.9 may delete a reconnected
		// clean client's entry when the previous connection's close is
		// processed late.
		for i, xff := range []string{"203.0.113.7", "198.51.100.1, 203.0.113.7", "203.0.113.7, 127.0.0.1"} {
			remote, _ := dial(t, fmt.Sprintf("xff-trusted-%d", i), http.Header{"X-Forwarded-For": {xff}})
			if host := hostOf(remote); host != "203.0.113.7" {
				t.Fatalf("X-Forwarded-For %q from a trusted proxy: client address %q, want 203.0.113.7", xff, remote)
			}
		}
		// Two header lines are read as one list.
		remote, _ := dial(t, "xff-two-lines", http.Header{"X-Forwarded-For": {"198.51.100.1", "203.0.113.9"}})
		if host := hostOf(remote); host != "203.0.113.9" {
			t.Fatalf("two X-Forwarded-For lines: client address %q, want 203.0.113.9", remote)
		}
		// Garbage is not believed: the peer's address is kept.
		remote, _ = dial(t, "xff-garbage", http.Header{"X-Forwarded-For": {"not-an-ip"}})
		if host := hostOf(remote); host != "127.0.0.1" {
			t.Fatalf("X-Forwarded-For garbage: client address %q, want the peer 127.0.0.1", remote)
		}
		// No header: the peer.
		remote, _ = dial(t, "xff-none", nil)
		if host := hostOf(remote); host != "127.0.0.1" {
			t.Fatalf("no X-Forwarded-For: client address %q, want the peer 127.0.0.1", remote)
		}
	})

	t.Run("not from an untrusted peer", func(t *testing.T) {
		b2 := brokertest.Start(t, func(c *broker.Config) {
			c.Listeners.WS.TrustedProxies = []string{"10.0.0.0/8"}
		})
		ws2 := b2.Addr(broker.ListenerWS)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, _, err := brokertest.DialWS(ctx, ws2, "", http.Header{"X-Forwarded-For": {"203.0.113.7"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		brokertest.NewRaw(c).Connect(t, 5, "xff-untrusted")
		cl, ok := b2.Server().Clients.Get("xff-untrusted")
		if !ok {
			t.Fatal("client not known")
		}
		if host := hostOf(cl.Net.Remote); host != "127.0.0.1" {
			t.Fatalf("X-Forwarded-For from an untrusted peer was believed: client address %q", cl.Net.Remote)
		}
	})

	t.Run("no trusted proxies", func(t *testing.T) {
		b3 := brokertest.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, resp, err := brokertest.DialWS(ctx, b3.Addr(broker.ListenerWS), "", http.Header{
			"X-Forwarded-For": {"203.0.113.7"}, "Origin": {"https://app.example.com"}})
		if err == nil {
			c.Close()
			t.Fatal("a cross-origin page was accepted with no allowed_origins")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-origin page with no allowed_origins: %v", err)
		}
		c, _, err = brokertest.DialWS(ctx, b3.Addr(broker.ListenerWS), "", http.Header{"X-Forwarded-For": {"203.0.113.7"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		brokertest.NewRaw(c).Connect(t, 5, "xff-default")
		cl, _ := b3.Server().Clients.Get("xff-default")
		if cl == nil || hostOf(cl.Net.Remote) != "127.0.0.1" {
			t.Fatalf("X-Forwarded-For believed with no trusted proxies: %v", cl)
		}
	})
}

func hostOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr
	}
	return strings.Trim(addr[:i], "[]")
}

// 7. Messages on $SYS topics reach $SYS subscriptions only: not #, not
// +/..., and not shared subscriptions starting with a wildcard, whether
// delivered live or as retained messages.
func TestRobustSysTopicsIsolated(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.SysInterval = broker.Duration(time.Second) })
	addr := b.Addr(broker.ListenerMQTT)
	sys := brokertest.MustV5(t, addr, brokertest.Options{ID: "sys", Clean: true})
	sys.Sub(t, 0, "$SYS/#")
	if m := sys.Next(t, 3*time.Second); !strings.HasPrefix(m.Topic, "$SYS/") {
		t.Fatalf("$SYS/# got %q", m.Topic)
	}
	// Subscribed after $SYS topics were published (and retained).
	type watcher struct {
		filter string
		c      *brokertest.V5
	}
	var ws []watcher
	for i, f := range []string{"#", "$share/g/#", "+/broker/#", "$share/h/+/broker/uptime", "+/+/+"} {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("w%d", i), Clean: true})
		c.Sub(t, 1, f)
		ws = append(ws, watcher{f, c})
	}
	v3 := brokertest.MustV3(t, addr, brokertest.Options{ID: "w-v3", Clean: true})
	v3.Sub(t, 0, "#")

	// Two more $SYS rounds.
	drainUntil := time.Now().Add(2500 * time.Millisecond)
	sysCount := 0
	for time.Now().Before(drainUntil) {
		if m, ok := sys.Try(time.Until(drainUntil)); ok {
			if !strings.HasPrefix(m.Topic, "$SYS/") {
				t.Fatalf("$SYS/# got %q", m.Topic)
			}
			sysCount++
		}
	}
	if sysCount == 0 {
		t.Fatal("$SYS/# received nothing in 2.5s with sys_interval 1s")
	}
	for _, w := range ws {
		if m, ok := w.c.Try(50 * time.Millisecond); ok {
			t.Fatalf("%s received %q", w.filter, m.Topic)
		}
	}
	if m, ok := v3.Try(50 * time.Millisecond); ok {
		t.Fatalf("v3.1.1 # received %q", m.Topic)
	}

	// They are live: an ordinary topic reaches the matching ones.
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "x/broker/uptime", []byte("1"), 1, false)
	for _, w := range ws {
		if m := w.c.Next(t, wait); m.Topic != "x/broker/uptime" {
			t.Fatalf("%s received %q", w.filter, m.Topic)
		}
	}
	if m := v3.Next(t, wait); m.Topic != "x/broker/uptime" {
		t.Fatalf("v3.1.1 # received %q", m.Topic)
	}
}

// 8. Shutting the broker down leaves no goroutine behind, with clients
// connected over TCP and WebSocket, half-open connections that never sent
// CONNECT, and QoS 1 messages in flight to a client that does not ack.
func TestRobustNoGoroutineLeak(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	b := brokertest.Start(t)
	tcp, ws := b.Addr(broker.ListenerMQTT), b.Addr(broker.ListenerWS)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var v5s []*brokertest.V5
	for i, o := range []brokertest.Options{
		{ID: "leak-tcp", Clean: true},
		{ID: "leak-ws", Clean: true, WS: true},
		{ID: "leak-persistent", SessionExpiry: 3600},
		{ID: "leak-noack", Clean: true, NoAck: true, ReceiveMaximum: 4},
	} {
		a := tcp
		if o.WS {
			a = ws
		}
		c, err := brokertest.ConnectV5(ctx, a, o)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		v5s = append(v5s, c)
		c.Sub(t, 1, "leak/#")
	}
	v3, err := brokertest.ConnectV3(tcp, brokertest.Options{ID: "leak-v3", Clean: true})
	if err != nil {
		t.Fatal(err)
	}
	v3ws, err := brokertest.ConnectV3(ws, brokertest.Options{ID: "leak-v3ws", Clean: true, WS: true})
	if err != nil {
		t.Fatal(err)
	}
	silent := brokertest.DialRaw(t, tcp, 0) // never sends CONNECT
	partial := brokertest.DialRaw(t, tcp, 0)
	partial.MustSend(t, []byte{0x10, 0x20, 0x00}) // half a CONNECT
	wsSilent, _, err := brokertest.DialWS(ctx, ws, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		v5s[0].MustPub(t, "leak/x", fmt.Appendf(nil, "%d", i), 1, false)
	}
	for i, c := range v5s {
		n := 10
		if i == 3 {
			n = 4 // Receive Maximum 4 and no acks: 4 in flight, 6 queued
		}
		for range n {
			c.Next(t, wait)
		}
	}

	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	t0 := time.Now()
	if err := b.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	// The broker closed every connection; the clients' ends notice.
	for _, r := range []*brokertest.Raw{silent, partial, brokertest.NewRaw(wsSilent)} {
		if _, err := r.WaitClosed(3 * time.Second); err != nil {
			t.Fatalf("after shutdown: %v", err)
		}
	}
	for _, c := range v5s {
		select {
		case <-c.Done():
		case <-time.After(3 * time.Second):
			t.Fatalf("a v5 client was not disconnected by the shutdown")
		}
		c.Drop()
	}
	v3.Disconnect(0)
	v3ws.Disconnect(0)
	_ = silent.Close()
	_ = partial.Close()
	_ = wsSilent.Close()
	// buntdb's background goroutine notices its Close on its next one-second
	// tick, so allow a little more than that.
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := goleak.Find(ignore)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left 3s after shutdown: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// 9. Invalid filters and topics from a real client: each bad filter gets
// SUBACK 0x8F (the rest of the SUBSCRIBE is served), and a publish to a
// topic with a wildcard is refused with DISCONNECT 0x90.
func TestRobustInvalidFiltersAndTopics(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	h := newHealthy(t, addr)
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, f := range []string{"a/#/b", "+a", "", "a/b+", "#/a", "a#", "$share/g", "$share//a", "$share/g#/a"} {
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}, {Topic: "valid/+", QoS: 1}}})
		if sa == nil {
			t.Fatalf("subscribe %q: %v", f, err)
		}
		if !slices.Equal(sa.Reasons, []byte{0x8F, 1}) {
			t.Fatalf("subscribe %q: SUBACK reasons % x, want 8f 01", f, sa.Reasons)
		}
	}
	// The connection is still fine and the valid filter works.
	h.pub.MustPub(t, "valid/1", []byte("v"), 1, false)
	if m := c.Next(t, wait); m.Topic != "valid/1" {
		t.Fatalf("valid/+ got %q", m.Topic)
	}

	// Publishing to a wildcard topic: QoS 1 and QoS 0.
	for _, tc := range []struct {
		topic string
		qos   byte
	}{{"a/+/b", 1}, {"a/#", 0}, {"+", 1}} {
		p := brokertest.MustV5(t, addr, brokertest.Options{ID: "wild-pub", Clean: true})
		// paho.golang does not end a QoS 1 publish when the server
		// disconnects; it waits for its context, so keep that short.
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		r, err := p.Pub(pctx, tc.topic, []byte("x"), tc.qos, false)
		pcancel()
		if tc.qos > 0 && err == nil && (r == nil || r.ReasonCode < 0x80) {
			t.Fatalf("publish to %q was acknowledged: %+v", tc.topic, r)
		}
		select {
		case <-p.Done():
		case <-time.After(3 * time.Second):
			t.Fatalf("publish to %q: connection not closed", tc.topic)
		}
		// Raw, to see the reason code.
		raw := brokertest.DialRaw(t, addr, 0)
		raw.Connect(t, 5, "wild-raw")
		raw.MustSend(t, brokertest.RawPublish(5, tc.topic, tc.qos, 1, []byte("x")))
		expectRefused(t, raw, 3*time.Second, 0x90)
	}
	if m, ok := h.sub.Try(100 * time.Millisecond); ok {
		t.Fatalf("unexpected message %q", m.Topic)
	}
	h.check(t)
}
