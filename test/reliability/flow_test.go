package reliability

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/motemq/mote/broker/brokertest"
)

// connackProp returns the value bytes of property id in a v5 CONNACK (nil
// when absent).
func connackProp(p brokertest.RawPacket, id byte) []byte {
	b := p.Body[2:]
	n, size := 0, 0
	for i, mult := 0, 1; i < 4 && i < len(b); i++ {
		n += int(b[i]&0x7F) * mult
		mult *= 128
		size++
		if b[i]&0x80 == 0 {
			break
		}
	}
	ps := b[size : size+n]
	for len(ps) > 0 {
		pid := ps[0]
		ps = ps[1:]
		var l int
		switch pid {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
			l = 1
		case 0x13, 0x21, 0x22, 0x23:
			l = 2
		case 0x02, 0x11, 0x18, 0x27:
			l = 4
		case 0x26:
			k := int(binary.BigEndian.Uint16(ps))
			l = 2 + k + 2 + int(binary.BigEndian.Uint16(ps[2+k:]))
		default: // strings and binary data
			l = 2 + int(binary.BigEndian.Uint16(ps))
		}
		if pid == id {
			return ps[:l]
		}
		ps = ps[l:]
	}
	return nil
}

// connect5 connects a raw v5 client with CONNECT properties ps and returns
// it with its CONNACK.
func connect5(t *testing.T, addr, id string, ps []byte) (*brokertest.Raw, brokertest.RawPacket) {
	t.Helper()
	r := brokertest.DialRaw(t, addr, 0)
	r.MustSend(t, (conn{version: 5, id: id, props: ps}).bytes())
	p := next(t, r, tConnack)
	if p.ReasonCode() != 0 {
		t.Fatalf("CONNACK %v", p)
	}
	return r, p
}

// Class 5 and R13: flow control.
func TestFlowControl(t *testing.T) {
	const recvMax = 16
	m := start(t, raceBin, fmt.Sprintf("mqtt:\n  receive_maximum: %d\n", recvMax))
	m.healthy(t)
	// Each case watches its own topic: a message of an earlier case
	// arriving late must not be taken for one of its own.
	watchTopic := func(t *testing.T, topic string) *brokertest.V5 {
		t.Helper()
		w := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "watch-" + topic, Clean: true})
		w.Sub(t, 1, topic)
		return w
	}

	t.Run("QoS 2 beyond receive maximum without PUBREL (CVE-2023-28366)", func(t *testing.T) {
		r, ca := connect5(t, m.addr, "qos2-flood", props())
		if rm := connackProp(ca, 0x21); rm == nil || binary.BigEndian.Uint16(rm) != recvMax {
			t.Fatalf("CONNACK receive maximum % x, want %d", rm, recvMax)
		}
		var burst []byte
		for id := range uint16(recvMax) {
			burst = append(burst, publish5("fc/q2", 2, id+1, props(), "x")...)
		}
		r.MustSend(t, burst)
		for range recvMax {
			if p := next(t, r, tPubrec); ackReason(p) != 0 {
				t.Fatalf("PUBREC %v", p)
			}
		}
		r.MustSend(t, publish5("fc/q2", 2, recvMax+1, props(), "one too many"))
		closedWith(t, r, 0x93)
		m.healthy(t)
	})

	t.Run("QoS 1 burst beyond receive maximum is acknowledged", func(t *testing.T) {
		// mochi acknowledges each QoS 1 PUBLISH as it reads it, so the
		// broker never holds more than one unacknowledged: a burst is no
		// violation [MQTT-3.3.4-8] and all of it is delivered.
		watch := watchTopic(t, "fc/q1")
		r, _ := connect5(t, m.addr, "qos1-burst", props())
		var burst []byte
		for id := range uint16(recvMax + 1) {
			burst = append(burst, publish5("fc/q1", 1, id+1, props(), "x")...)
		}
		r.MustSend(t, burst)
		for range recvMax + 1 {
			if p := next(t, r, tPuback); ackReason(p) >= 0x80 {
				t.Fatalf("PUBACK %v", p)
			}
		}
		stillOpen(t, r)
		for range recvMax + 1 {
			watch.Next(t, within)
		}
	})

	t.Run("QoS 2 packet id reused before PUBREL", func(t *testing.T) {
		watch := watchTopic(t, "fc/reuse")
		r, _ := connect5(t, m.addr, "qos2-reuse", props())
		r.MustSend(t, publish5("fc/reuse", 2, 5, props(), "first"))
		if p := next(t, r, tPubrec); ackReason(p) != 0 {
			t.Fatalf("PUBREC %v", p)
		}
		dup := publish5("fc/reuse", 2, 5, props(), "second")
		dup[0] |= 0x08
		r.MustSend(t, dup, publish5("fc/reuse", 2, 5, props(), "third"))
		for range 2 {
			if p := next(t, r, tPubrec); ackReason(p) != 0 {
				t.Fatalf("PUBREC for a reused id %v, want 0x00 (not 0x91: the broker has the message)", p)
			}
		}
		r.MustSend(t, pkt(0x62, u16(5)))
		if p := next(t, r, tPubcomp); ackReason(p) != 0 {
			t.Fatalf("PUBCOMP %v", p)
		}
		if msg := watch.Next(t, within); string(msg.Payload) != "first" {
			t.Fatalf("delivered %q, want first", msg.Payload)
		}
		if msg, ok := watch.Try(300 * time.Millisecond); ok {
			t.Fatalf("a reused packet id was delivered twice: %q", msg.Payload)
		}
		stillOpen(t, r)
	})

	t.Run("QoS 1 packet id reused", func(t *testing.T) {
		watch := watchTopic(t, "fc/reuse1")
		r, _ := connect5(t, m.addr, "qos1-reuse", props())
		r.MustSend(t, joinBytes(publish5("fc/reuse1", 1, 7, props(), "a"), publish5("fc/reuse1", 1, 7, props(), "b")))
		for range 2 {
			if p := next(t, r, tPuback); ackReason(p) >= 0x80 {
				t.Fatalf("PUBACK %v", p)
			}
		}
		stillOpen(t, r)
		got := string(watch.Next(t, within).Payload) + string(watch.Next(t, within).Payload)
		if got != "ab" {
			t.Fatalf("delivered %q, want a then b", got)
		}
	})

	t.Run("PUBREL for an unknown packet id", func(t *testing.T) {
		r, _ := connect5(t, m.addr, "pubrel-unknown", props())
		r.MustSend(t, pkt(0x62, u16(4242)))
		if p := next(t, r, tPubcomp); ackReason(p) != 0x92 {
			t.Fatalf("PUBCOMP %v, want reason 0x92 (packet identifier not found)", p)
		}
		stillOpen(t, r)
		r3 := dialRaw(t, m.addr, 4, "pubrel-unknown-v3")
		r3.MustSend(t, pkt(0x62, u16(4242)))
		next(t, r3, tPubcomp)
		stillOpen(t, r3)
	})

	t.Run("unsolicited acknowledgements", func(t *testing.T) {
		r, _ := connect5(t, m.addr, "unsolicited", props())
		r.MustSend(t, pkt(0x40, u16(99)), pkt(0x70, u16(98)), pkt(0x40, u16(97), []byte{0x80}))
		stillOpen(t, r)
		r.MustSend(t, pkt(0x50, u16(96)))
		if p := next(t, r, tPubrel); ackReason(p) != 0x92 {
			t.Fatalf("PUBREL for an unsolicited PUBREC %v, want 0x92", p)
		}
		stillOpen(t, r)
		m.healthy(t)
	})

	t.Run("unsolicited acknowledgements do not widen the client's window", func(t *testing.T) {
		// A subscriber with Receive Maximum 2 spams PUBACK and PUBCOMP for
		// ids it was never sent: the broker must still never have more
		// than 2 QoS 1 deliveries unacknowledged to it [MQTT-3.3.4-9].
		const clientMax, total = 2, 40
		r, _ := connect5(t, m.addr, "window", props(prop(0x21, u16(clientMax))))
		r.MustSend(t, subscribe5(1, props(), 1, "fc/window"))
		next(t, r, tSuback)
		pub := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "window-pub", Clean: true})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range total {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _ = pub.Pub(ctx, "fc/window", fmt.Append(nil, i), 1, false)
				cancel()
			}
		})
		defer wg.Wait()
		outstanding := map[uint16]bool{}
		var order []uint16
		maxOut, got := 0, 0
		deadline := time.Now().Add(20 * time.Second)
		for got < total && time.Now().Before(deadline) {
			// Spam acknowledgements for ids never sent, then see what comes.
			r.MustSend(t, pkt(0x40, u16(60001)), pkt(0x70, u16(60002)), pkt(0x40, u16(60003)))
			p, err := r.ReadPacket(100 * time.Millisecond)
			if err == nil {
				if p.Type != tPublish {
					continue
				}
				id := binary.BigEndian.Uint16(p.Body[2+int(binary.BigEndian.Uint16(p.Body)):])
				if !outstanding[id] {
					outstanding[id] = true
					order = append(order, id)
					got++
				}
				maxOut = max(maxOut, len(outstanding))
				continue
			}
			// Nothing more came: acknowledge the oldest.
			if len(order) > 0 {
				id := order[0]
				order = order[1:]
				delete(outstanding, id)
				r.MustSend(t, pkt(0x40, u16(id)))
			}
		}
		if maxOut > clientMax {
			t.Fatalf("the broker had %d QoS 1 deliveries unacknowledged to a client with Receive Maximum %d", maxOut, clientMax)
		}
		if got < total {
			t.Fatalf("received %d of %d messages", got, total)
		}
		stillOpen(t, r)
	})

	t.Run("QoS 2 flood on one packet id without PUBREL", func(t *testing.T) {
		watch := watchTopic(t, "fc/same")
		pid := m.pid(t)
		rss0 := procStatus(t, pid, "VmRSS")
		r, _ := connect5(t, m.addr, "qos2-same-id", props())
		const n = 2000
		payload := strings.Repeat("p", 1024)
		var burst []byte
		for i := range n {
			b := publish5("fc/same", 2, 9, props(), payload)
			if i > 0 {
				b[0] |= 0x08
			}
			burst = append(burst, b...)
		}
		r.MustSend(t, burst)
		for i := range n {
			if p := next(t, r, tPubrec); ackReason(p) != 0 {
				t.Fatalf("PUBREC %d: %v", i, p)
			}
		}
		stillOpen(t, r)
		watch.Next(t, within)
		if msg, ok := watch.Try(300 * time.Millisecond); ok {
			t.Fatalf("a resent QoS 2 message was delivered again (%d bytes)", len(msg.Payload))
		}
		rss1 := procStatus(t, pid, "VmRSS")
		t.Logf("%d resends of one QoS 2 message: broker RSS %d → %d MiB", n, rss0>>20, rss1>>20)
		if rss1-rss0 > 32<<20 {
			t.Fatalf("broker RSS grew by %d MiB for resends of one message", (rss1-rss0)>>20)
		}
	})

	t.Run("QoS 2 messages abandoned by reconnecting clients", func(t *testing.T) {
		// Clean-start clients that leave QoS 2 messages without PUBREL,
		// over and over: the broker's in-flight count returns to where it
		// was, nothing accumulates.
		base := m.metric(t, "mote_inflight_messages")
		for i := range 100 {
			r, _ := connect5(t, m.addr, fmt.Sprintf("abandon-%d", i%10), props())
			var burst []byte
			for id := range uint16(recvMax) {
				burst = append(burst, publish5("fc/abandon", 2, id+1, props(), "x")...)
			}
			r.MustSend(t, burst)
			for range recvMax {
				next(t, r, tPubrec)
			}
			_ = r.Close()
		}
		waitFor(t, 5*time.Second, "the abandoned QoS 2 state to be dropped", func() bool {
			return m.metric(t, "mote_inflight_messages") <= base
		})
		m.healthy(t)
	})
}

// R13: topic aliases, from abuse to hoarding.
func TestTopicAliases(t *testing.T) {
	const aliasMax, topicMax = 64, 16384
	m := start(t, raceBin, "")
	m.healthy(t)
	watch := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "watch", Clean: true})
	watch.Sub(t, 0, "alias/#")

	t.Run("advertised and used", func(t *testing.T) {
		r, ca := connect5(t, m.addr, "alias-user", props())
		if v := connackProp(ca, 0x22); v == nil || binary.BigEndian.Uint16(v) != aliasMax {
			t.Fatalf("CONNACK topic alias maximum % x, want %d", v, aliasMax)
		}
		r.MustSend(t, publish5("alias/one", 1, 1, props(prop(0x23, u16(aliasMax))), "set"),
			publish5("", 1, 2, props(prop(0x23, u16(aliasMax))), "used"))
		next(t, r, tPuback)
		next(t, r, tPuback)
		for _, want := range []string{"set", "used"} {
			if msg := watch.Next(t, within); msg.Topic != "alias/one" || string(msg.Payload) != want {
				t.Fatalf("got %q %q, want alias/one %q", msg.Topic, msg.Payload, want)
			}
		}
	})
	for _, tc := range []struct {
		name  string
		pkt   []byte
		codes []byte
	}{
		{"alias 0", publish5("alias/x", 0, 0, props(prop(0x23, u16(0))), "x"), []byte{0x94}},
		{"alias maximum + 1", publish5("alias/x", 0, 0, props(prop(0x23, u16(aliasMax+1))), "x"), []byte{0x94}},
		{"alias 65535", publish5("alias/x", 0, 0, props(prop(0x23, u16(65535))), "x"), []byte{0x94}},
		{"unknown alias with an empty topic", publish5("", 0, 0, props(prop(0x23, u16(3))), "x"), []byte{0x82}},
		{"alias with a 60KiB topic", publish5(strings.Repeat("a", 60<<10), 0, 0, props(prop(0x23, u16(1))), "x"), []byte{0x90}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := connect5(t, m.addr, "alias-abuse", props())
			r.MustSend(t, tc.pkt)
			closedWith(t, r, tc.codes...)
			m.healthy(t)
		})
	}

	t.Run("hoarding is bounded by maximum × topic length", func(t *testing.T) {
		// Each connection fills every alias with a topic of the maximum
		// length: 64 × 16 KiB = 1 MiB per connection, and no more.
		conns := 16
		if soak {
			conns = 64
		}
		heap0 := m.liveHeap(t)
		var rs []*brokertest.Raw
		for c := range conns {
			r, _ := connect5(t, m.addr, fmt.Sprintf("hoard-%d", c), props())
			var burst []byte
			for a := range uint16(aliasMax) {
				topic := fmt.Sprintf("hoard/%02d/%02d/", c, a)
				topic += strings.Repeat("h", topicMax-len(topic))
				burst = append(burst, publish5(topic, 0, 0, props(prop(0x23, u16(a+1))), "")...)
			}
			r.MustSend(t, burst)
			stillOpen(t, r)
			rs = append(rs, r)
		}
		heap1 := m.liveHeap(t)
		perConn := (heap1 - heap0) / int64(conns)
		t.Logf("%d connections holding %d aliases of %d bytes: broker live heap %d → %d MiB, %d KiB per connection",
			conns, aliasMax, topicMax, heap0>>20, heap1>>20, perConn>>10)
		// The topics themselves are 1 MiB; allow the map and the
		// connection's buffers on top.
		if perConn > 1<<20+256<<10 {
			t.Fatalf("%d KiB of broker memory per alias-hoarding connection, want about 1 MiB", perConn>>10)
		}
		// One more alias is refused.
		rs[0].MustSend(t, publish5("hoard/extra", 0, 0, props(prop(0x23, u16(aliasMax+1))), ""))
		closedWith(t, rs[0], 0x94)
		m.healthy(t)
	})
}
