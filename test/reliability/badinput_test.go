package reliability

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/motemq/mote/broker/brokertest"
)

// A hostile case: bytes written on a raw connection (after a CONNECT of
// version, or as the connection's first bytes when version is 0) and what
// the broker must answer within a second.
type bad struct {
	name    string
	version byte
	send    []byte
	want    outcome
}

type outcomeKind int

const (
	kindClosed  outcomeKind = iota // closed; v5: after one DISCONNECT with a reason in codes
	kindConnack                    // CONNACK codes[0], then closed
	kindReply                      // a packet of type typ (reason in codes), connection still open
)

type outcome struct {
	kind  outcomeKind
	typ   byte
	codes []byte
}

// disc: closed after DISCONNECT with one of codes (none: closed silently).
func disc(codes ...byte) outcome { return outcome{kind: kindClosed, codes: codes} }

// silent: closed without a reply (MQTT 3.1.1, or before a CONNECT).
var silent = outcome{kind: kindClosed}

// refusedConnect: CONNACK with code (v5 reason, 3.1.1 return code), closed.
func refusedConnect(code byte) outcome { return outcome{kind: kindConnack, codes: []byte{code}} }

// answered: a packet of type typ whose reason code (acks) or reason codes
// (SUBACK, in order) are codes; the connection stays open.
func answered(typ byte, codes ...byte) outcome {
	return outcome{kind: kindReply, typ: typ, codes: codes}
}

func (o outcome) check(t *testing.T, r *brokertest.Raw, version byte) {
	t.Helper()
	switch o.kind {
	case kindClosed:
		closedWith(t, r, o.codes...)
	case kindConnack:
		connackThenClosed(t, r, o.codes[0])
	case kindReply:
		p := next(t, r, o.typ)
		var got []byte
		if o.typ == tSuback {
			got = subackReasons(t, p, version)
		} else {
			got = []byte{ackReason(p)}
		}
		if !slices.Equal(got, o.codes) {
			t.Fatalf("%v: reason codes % x, want % x", p, got, o.codes)
		}
		stillOpen(t, r)
	}
}

// runBad runs the cases against m, each on a new connection, and after
// each checks the broker is alive and a healthy client round-trips.
func runBad(t *testing.T, m *mote, cases []bad) {
	t.Helper()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := brokertest.DialRaw(t, m.addr, 0)
			if tc.version != 0 {
				r.Connect(t, tc.version, fmt.Sprintf("bad-%d", i))
			}
			r.MustSend(t, tc.send)
			tc.want.check(t, r, tc.version)
			m.healthy(t)
		})
	}
}

// Class 1: framing.
func TestFraming(t *testing.T) {
	m := start(t, raceBin, "")
	m.healthy(t)
	sub5 := func(body ...[]byte) []byte { return pkt(0x82, body...) }
	cases := []bad{
		// Remaining Length of five bytes.
		{"remaining length of five bytes", 5, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, disc(0x81)},
		{"remaining length of five bytes v3.1.1", 4, []byte{0xC0, 0x80, 0x80, 0x80, 0x80, 0x00}, silent},
		{"remaining length of five bytes before CONNECT", 0, []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, silent},
		// Not minimally encoded.
		{"remaining length not minimal PINGREQ", 5, []byte{0xC0, 0x80, 0x00}, disc(0x81)},
		{"remaining length not minimal PUBLISH", 5, slices.Concat([]byte{0x30, 0x85, 0x00}, str("a"), []byte{0, 'x'}), disc(0x81)},
		{"remaining length not minimal v3.1.1", 4, []byte{0xC0, 0x80, 0x00}, silent},
		{"remaining length not minimal CONNECT", 0, slices.Concat([]byte{0x10, 0x8D, 0x00}, str("MQTT"), []byte{4, 2, 0, 30}, str("x")), silent},
		// Above the maximum packet size (1 MiB by default), refused from the
		// fixed header alone: no body is ever sent.
		{"announced 256MiB", 5, []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, disc(0x95)},
		{"announced max_packet_size+1", 5, slices.Concat([]byte{0x30}, vbi(1<<20-3)), disc(0x95)},
		{"announced 256MiB v3.1.1", 4, []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, silent},
		{"announced 256MiB CONNECT", 0, []byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F}, silent},
		// Remaining Length smaller than the fields it should hold.
		{"SUBSCRIBE without options (mochi #501)", 5, sub5(u16(1), props(), str("a")), disc(0x81)},
		{"SUBSCRIBE second filter without options (#501)", 5, sub5(u16(1), props(), str("a"), []byte{1}, str("b")), disc(0x81)},
		{"SUBSCRIBE filter truncated", 5, sub5(u16(1), props(), []byte{0, 10, 'a', 'b'}), disc(0x81)},
		{"SUBSCRIBE packet id only", 5, sub5(u16(1)), disc(0x81)},
		{"SUBSCRIBE packet id truncated", 5, sub5([]byte{1}), disc(0x81)},
		{"SUBSCRIBE without options v3.1.1", 4, sub5(u16(1), str("a")), silent},
		{"UNSUBSCRIBE filter truncated", 5, pkt(0xA2, u16(1), props(), []byte{0, 10, 'a'}), disc(0x81)},
		{"UNSUBSCRIBE packet id only", 5, pkt(0xA2, u16(1)), disc(0x81)},
		{"UNSUBSCRIBE filter truncated v3.1.1", 4, pkt(0xA2, u16(1), []byte{0, 10, 'a'}), silent},
		{"PUBLISH topic truncated", 5, pkt(0x30, []byte{0, 9, 'a'}), disc(0x81)},
		{"PUBLISH QoS 1 without packet id", 5, pkt(0x32, str("a")), disc(0x81)},
		{"PUBLISH properties past the end", 5, pkt(0x30, str("a"), []byte{9, 0x01, 0x01}), disc(0x81)},
		{"PUBLISH property value truncated", 5, pkt(0x30, str("a"), []byte{2, 0x02, 0x00}), disc(0x81)},
		{"PUBACK truncated", 5, pkt(0x40, []byte{1}), disc(0x81)},
		{"PUBREL truncated v3.1.1", 4, pkt(0x62, []byte{1}), silent},
		{"DISCONNECT properties past the end", 5, pkt(0xE0, []byte{0, 5, 0x11}), disc(0x81)},
		{"CONNECT client id past the end v5", 0, pkt(0x10, str("MQTT"), []byte{5, 2, 0, 30, 0}, []byte{0, 9, 'x'}), refusedConnect(0x81)},
		{"CONNECT client id past the end v3.1.1", 0, pkt(0x10, str("MQTT"), []byte{4, 2, 0, 30}, []byte{0, 9, 'x'}), silent},
		{"CONNECT properties past the end", 0, pkt(0x10, str("MQTT"), []byte{5, 2, 0, 30, 20}, str("x")), refusedConnect(0x81)},
		{"CONNECT without keepalive", 0, pkt(0x10, str("MQTT"), []byte{4, 2}), silent},
		{"CONNECT will payload missing", 0, pkt(0x10, str("MQTT"), []byte{5, 0x06, 0, 30, 0}, str("w"), []byte{0}, str("a/b")), refusedConnect(0x81)},
		// Reserved packet types.
		{"packet type 0", 5, []byte{0x00, 0x00}, disc(0x81)},
		{"packet type 0 v3.1.1", 4, []byte{0x00, 0x00}, silent},
		{"packet type 15 (AUTH) without a method in CONNECT", 5, []byte{0xF0, 0x00}, disc(0x82)},
		{"packet type 15 v3.1.1", 4, []byte{0xF0, 0x00}, silent},
		{"packet type 0 before CONNECT", 0, []byte{0x00, 0x00}, silent},
		{"packet type 15 before CONNECT", 0, []byte{0xF0, 0x00}, silent},
		// Reserved flag bits.
		{"SUBSCRIBE flags 0x0", 5, pkt(0x80, u16(1), props(), str("a"), []byte{1}), disc(0x81)},
		{"SUBSCRIBE flags 0x3", 5, pkt(0x83, u16(1), props(), str("a"), []byte{1}), disc(0x81)},
		{"SUBSCRIBE flags 0xa v3.1.1", 4, pkt(0x8A, u16(1), str("a"), []byte{1}), silent},
		{"UNSUBSCRIBE flags 0x0", 5, pkt(0xA0, u16(1), props(), str("a")), disc(0x81)},
		{"PUBREL flags 0x0", 5, pkt(0x60, u16(1)), disc(0x81)},
		{"PUBACK flags 0x2", 5, pkt(0x42, u16(1)), disc(0x81)},
		{"PINGREQ flags 0x1", 5, []byte{0xC1, 0x00}, disc(0x81)},
		{"DISCONNECT flags 0x1", 5, []byte{0xE1, 0x00}, disc(0x81)},
		{"DISCONNECT flags 0x2 v3.1.1", 4, []byte{0xE2, 0x00}, silent},
		{"CONNECT flags 0x1", 0, func() []byte { b := (conn{version: 5, id: "f"}).bytes(); b[0] = 0x11; return b }(), refusedConnect(0x81)},
		{"CONNECT reserved connect flag", 0, func() []byte { b := (conn{version: 5, id: "f"}).bytes(); b[9] |= 1; return b }(), refusedConnect(0x81)},
		// QoS 3.
		{"PUBLISH QoS 3", 5, pkt(0x36, str("a"), u16(1), props(), []byte("x")), disc(0x81)},
		{"PUBLISH QoS 3 v3.1.1", 4, pkt(0x36, str("a"), u16(1), []byte("x")), silent},
		{"PUBLISH DUP on QoS 0", 5, pkt(0x38, str("a"), props(), []byte("x")), disc(0x81)},
		{"will QoS 3", 0, (conn{version: 5, id: "w3", will: true, willQoS: 3, willTopic: "a", willPayload: "x"}).bytes(), refusedConnect(0x81)},
		// A first packet that is not CONNECT.
		{"first packet PINGREQ", 0, []byte{0xC0, 0x00}, silent},
		{"first packet PUBLISH", 0, brokertest.RawPublish(4, "a", 0, 0, []byte("x")), silent},
		{"first packet SUBSCRIBE", 0, brokertest.RawSubscribe(4, 1, "#", 0), silent},
		{"first packet CONNACK", 0, []byte{0x20, 0x02, 0x00, 0x00}, silent},
		{"first packet DISCONNECT", 0, []byte{0xE0, 0x00}, silent},
		{"first bytes HTTP", 0, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), silent},
		{"first bytes TLS ClientHello", 0, []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}, silent},
		{"first byte only, not CONNECT", 0, []byte{0x82}, silent},
		{"protocol name not MQTT", 0, pkt(0x10, str("HTTP"), []byte{4, 2, 0, 30}, str("x")), silent},
		{"protocol level 6", 0, pkt(0x10, str("MQTT"), []byte{6, 2, 0, 30}, str("x")), refusedConnect(0x01)},
		// A second CONNECT.
		{"second CONNECT", 5, brokertest.RawConnect(5, "again", 30), disc(0x82)},
		{"second CONNECT v3.1.1", 4, brokertest.RawConnect(4, "again", 30), silent},
		// A server-only packet from the client.
		{"CONNACK from a client", 5, []byte{0x20, 0x03, 0x00, 0x00, 0x00}, disc(0x82)},
		{"SUBACK from a client", 5, pkt(0x90, u16(1), props(), []byte{0}), disc(0x82)},
		{"PINGRESP from a client v3.1.1", 4, []byte{0xD0, 0x00}, silent},
	}
	runBad(t, m, cases)
}

// Class 1: a header announcing 256 MiB, on many connections at once, is
// refused before anything is allocated for the body: the broker's memory
// does not move.
func TestFramingOversizeNoAllocation(t *testing.T) {
	m := start(t, raceBin, "")
	m.healthy(t)
	pid := m.pid(t)
	const conns = 64
	for _, tc := range []struct {
		name    string
		version byte
		codes   []byte
	}{{"v5", 5, []byte{0x95}}, {"v3.1.1", 4, nil}, {"before CONNECT", 0, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			rss0 := procStatus(t, pid, "VmRSS")
			rs := make([]*brokertest.Raw, conns)
			for i := range rs {
				rs[i] = dialRaw(t, m.addr, tc.version, fmt.Sprintf("huge-%d", i))
			}
			header := []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F} // PUBLISH of 256 MiB
			if tc.version == 0 {
				header[0] = 0x10 // CONNECT
			}
			for _, r := range rs {
				r.MustSend(t, header)
			}
			for _, r := range rs {
				closedWith(t, r, tc.codes...)
			}
			rss1 := procStatus(t, pid, "VmRSS")
			t.Logf("%d connections announcing 256 MiB refused; broker RSS %d → %d MiB", conns, rss0>>20, rss1>>20)
			if rss1-rss0 > 64<<20 {
				t.Fatalf("broker RSS grew by %d MiB refusing %d oversized headers", (rss1-rss0)>>20, conns)
			}
			m.healthy(t)
		})
	}
}

// Class 1: a Remaining Length larger than the bytes that arrive. Before
// CONNECT the connect timeout closes the connection however slowly bytes
// drip in; after CONNECT the keepalive does (mochi's read deadline is 1.5
// × keepalive).
func TestFramingSlowDrip(t *testing.T) {
	const connectTimeout = time.Second
	m := start(t, raceBin, "mqtt:\n  connect_timeout: 1s\n")
	m.healthy(t)
	drip := func(r *brokertest.Raw, b []byte, every time.Duration) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range b {
				if r.Send(b[i:i+1]) != nil {
					return
				}
				time.Sleep(every)
			}
		}()
		return done
	}
	t.Run("CONNECT dripped at 1 byte per 100ms", func(t *testing.T) {
		start := time.Now()
		r := brokertest.DialRaw(t, m.addr, 0)
		done := drip(r, brokertest.RawConnect(5, "dripper-with-a-long-client-identifier", 30), 100*time.Millisecond)
		if _, err := r.WaitClosed(connectTimeout + within); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < connectTimeout-100*time.Millisecond {
			t.Fatalf("closed after %v, before the connect timeout", d)
		}
		<-done
	})
	t.Run("header announcing more than arrives, before CONNECT", func(t *testing.T) {
		start := time.Now()
		r := brokertest.DialRaw(t, m.addr, 0)
		r.MustSend(t, []byte{0x10, 0x7F, 0x00, 0x04})
		if _, err := r.WaitClosed(connectTimeout + within); err != nil {
			t.Fatal(err)
		}
		t.Logf("closed %v after accept", time.Since(start))
	})
	t.Run("partial PUBLISH after CONNECT with keepalive 1", func(t *testing.T) {
		r := brokertest.DialRaw(t, m.addr, 0)
		r.MustSend(t, brokertest.RawConnect(5, "partial", 1))
		if p := next(t, r, tConnack); p.ReasonCode() != 0 {
			t.Fatalf("CONNACK %v", p)
		}
		start := time.Now()
		r.MustSend(t, []byte{0x30, 0x7F, 0x00, 0x01, 'a'})
		got, err := r.WaitClosed(1500*time.Millisecond + within)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("closed %v after the partial packet (keepalive 1s), sent %v", time.Since(start), got)
	})
	m.healthy(t)
}

// The fault kinds of class 2, as bytes inside a string.
var stringFaults = []struct{ name, s string }{
	{"invalid UTF-8", "a/\xff"},
	{"overlong encoding", "a/\xc0\xaf"},
	{"U+0000", "a/\x00/b"},
	{"surrogate U+D800", "a/\xed\xa0\x80"},
	{"U+FFFF", "a/\xef\xbf\xbf"},
	{"control U+0001", "a/\x01"},
	{"C1 control U+0085", "a/\xc2\x85"},
	{"noncharacter U+FDD0", "a/\xef\xb7\x90"},
}

// Class 2: bad strings in every place a UTF-8 Encoded String appears.
func TestStrings(t *testing.T) {
	m := start(t, raceBin, "")
	m.healthy(t)
	var cases []bad
	for _, f := range stringFaults {
		s := f.s
		cases = append(cases,
			bad{"topic/" + f.name, 5, publish5(s, 1, 1, props(), "x"), disc(0x90)},
			bad{"topic v3.1.1/" + f.name, 4, brokertest.RawPublish(4, s, 1, 1, []byte("x")), silent},
			bad{"filter/" + f.name, 5, subscribe5(1, props(), 1, s), disc(0x81)},
			bad{"filter v3.1.1/" + f.name, 4, brokertest.RawSubscribe(4, 1, s, 1), silent},
			bad{"unsubscribe filter/" + f.name, 5, pkt(0xA2, u16(1), props(), str(s)), disc(0x81)},
			bad{"client id/" + f.name, 0, (conn{version: 5, id: s}).bytes(), refusedConnect(0x85)},
			bad{"client id v3.1.1/" + f.name, 0, (conn{version: 4, id: s}).bytes(), refusedConnect(0x02)},
			bad{"username/" + f.name, 0, (conn{version: 5, id: "u", user: strp(s), pass: strp("p")}).bytes(), refusedConnect(0x81)},
			bad{"username v3.1.1/" + f.name, 0, (conn{version: 4, id: "u", user: strp(s), pass: strp("p")}).bytes(), silent},
			bad{"will topic/" + f.name, 0, (conn{version: 5, id: "w", will: true, willTopic: s, willPayload: "x"}).bytes(), refusedConnect(0x90)},
			bad{"will topic v3.1.1/" + f.name, 0, (conn{version: 4, id: "w", will: true, willTopic: s, willPayload: "x"}).bytes(), silent},
			bad{"PUBLISH content type/" + f.name, 5, publish5("a", 0, 0, props(prop(0x03, str(s))), "x"), disc(0x81)},
			bad{"PUBLISH response topic/" + f.name, 5, publish5("a", 0, 0, props(prop(0x08, str(s))), "x"), disc(0x81)},
			bad{"PUBLISH user property name/" + f.name, 5, publish5("a", 1, 1, props(userProp(s, "v")), "x"), disc(0x81)},
			bad{"SUBSCRIBE user property value/" + f.name, 5, subscribe5(1, props(userProp("k", s)), 1, "a"), disc(0x81)},
			bad{"CONNECT user property/" + f.name, 0, (conn{version: 5, id: "p", props: props(userProp("k", s))}).bytes(), refusedConnect(0x81)},
			bad{"will content type/" + f.name, 0, (conn{version: 5, id: "wp", will: true, willProps: props(prop(0x03, str(s))), willTopic: "a", willPayload: "x"}).bytes(), refusedConnect(0x81)},
			bad{"CONNECT authentication method/" + f.name, 0, (conn{version: 5, id: "am", props: props(prop(0x15, str(s)))}).bytes(), refusedConnect(0x81)},
			bad{"DISCONNECT reason string/" + f.name, 5, pkt(0xE0, []byte{0}, props(prop(0x1F, str(s)))), disc(0x81)},
		)
	}
	// A valid string with a BOM and non-ASCII letters is accepted as is
	// [MQTT-1.5.4-3].
	cases = append(cases, bad{"valid non-ASCII topic", 5, publish5("\ufeffgrüße/日本", 1, 1, props(), "x"), answered(tPuback, 0)})
	runBad(t, m, cases)
}

// Class 3: topic names and filters.
func TestTopics(t *testing.T) {
	m := start(t, raceBin, "")
	m.healthy(t)
	long := strings.Repeat("t", 65535)
	deep := strings.Repeat("l/", 128) + "l" // 129 levels
	var cases []bad
	cases = append(cases,
		bad{"empty topic v3.1.1 (CVE-2021-34432)", 4, brokertest.RawPublish(4, "", 1, 1, []byte("x")), silent},
		bad{"empty topic without alias", 5, publish5("", 1, 1, props(), "x"), disc(0x82)},
		bad{"empty topic QoS 0", 5, publish5("", 0, 0, props(), "x"), disc(0x82)},
		bad{"+ in a PUBLISH topic", 5, publish5("a/+/b", 1, 1, props(), "x"), disc(0x90)},
		bad{"# in a PUBLISH topic", 5, publish5("a/#", 0, 0, props(), "x"), disc(0x90)},
		bad{"+ alone as a PUBLISH topic v3.1.1", 4, brokertest.RawPublish(4, "+", 1, 1, []byte("x")), silent},
		bad{"# in a will topic", 0, (conn{version: 5, id: "w", will: true, willTopic: "a/#", willPayload: "x"}).bytes(), refusedConnect(0x90)},
		bad{"PUBLISH to $SYS QoS 1", 5, publish5("$SYS/broker/fake", 1, 1, props(), "x"), answered(tPuback, 0x87)},
		bad{"PUBLISH to $sys lower case QoS 1", 5, publish5("$sys/x", 1, 2, props(), "x"), answered(tPuback, 0x87)},
		bad{"PUBLISH to $SYS QoS 2", 5, publish5("$SYS/x", 2, 3, props(), "x"), answered(tPubrec, 0x87)},
		bad{"PUBLISH to $SYS QoS 1 v3.1.1", 4, brokertest.RawPublish(4, "$SYS/x", 1, 1, []byte("x")), silent},
		bad{"PUBLISH topic 64KiB", 5, publish5(long, 0, 0, props(), "x"), disc(0x90)},
		bad{"PUBLISH topic 129 levels", 5, publish5(deep, 1, 1, props(), "x"), disc(0x90)},
		bad{"SUBSCRIBE filter 64KiB", 5, subscribe5(1, props(), 1, long), disc(0x8F)},
		bad{"SUBSCRIBE filter 129 levels", 5, subscribe5(1, props(), 1, deep), disc(0x8F)},
		bad{"UNSUBSCRIBE filter 64KiB", 5, pkt(0xA2, u16(1), props(), str(long)), disc(0x8F)},
		bad{"will topic 64KiB", 0, (conn{version: 5, id: "w", will: true, willTopic: long, willPayload: "x"}).bytes(), refusedConnect(0x90)},
	)
	// Filters refused one by one in the SUBACK (0x8F; 3.1.1: 0x80), the
	// valid filter after each still granted.
	for _, f := range []string{"a/#/b", "#/a", "a+", "a#", "+a", "a/b+", "a/+b/c", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a", "$share/g/a#", ""} {
		cases = append(cases,
			bad{"filter " + f, 5, subscribe5(1, props(), 1, f, "ok/+"), answered(tSuback, 0x8F, 0x01)},
			bad{"filter v3.1.1 " + f, 4, pkt(0x82, u16(1), str(f), []byte{1}, str("ok/+"), []byte{1}), answered(tSuback, 0x80, 0x01)},
		)
	}
	runBad(t, m, cases)

	// What the broker accepted is ordinary: NATS wildcards are literal
	// characters, whitespace is part of a level, 128 levels are allowed,
	// and nothing published to $SYS above reached a $SYS subscriber.
	t.Run("literal characters", func(t *testing.T) {
		sub := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "lit-sub", Clean: true})
		sub.Sub(t, 1, "nats/*", "nats/>", "nats/a/+", " sp /+", strings.Repeat("l/", 127)+"+")
		pub := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "lit-pub", Clean: true})
		for _, topic := range []string{"nats/b", "nats/a/>", "nats/*", "nats/>", " sp / x ", strings.Repeat("l/", 127) + "l"} {
			pub.MustPub(t, topic, []byte(topic), 1, false)
		}
		got := map[string]bool{}
		for range 5 {
			got[sub.Next(t, within).Topic] = true
		}
		want := map[string]bool{"nats/a/>": true, "nats/*": true, "nats/>": true, " sp / x ": true, strings.Repeat("l/", 127) + "l": true}
		if m, ok := sub.Try(200 * time.Millisecond); ok || len(got) != len(want) {
			t.Fatalf("got %v (and extra %q), want %v: nats/b must not match nats/* or nats/>", keys(got), m.Topic, keys(want))
		}
		for k := range want {
			if !got[k] {
				t.Fatalf("missing %q; got %v", k, keys(got))
			}
		}
	})
	t.Run("publish to $SYS is not delivered", func(t *testing.T) {
		sub := brokertest.MustV5(t, m.addr, brokertest.Options{ID: "sys-sub", Clean: true})
		sub.Sub(t, 0, "$SYS/fake/#")
		r := dialRaw(t, m.addr, 5, "sys-pub")
		r.MustSend(t, joinBytes(publish5("$SYS/fake/0", 0, 0, props(), "x"), publish5("$SYS/fake/1", 1, 1, props(), "x")))
		if p := next(t, r, tPuback); ackReason(p) != 0x87 {
			t.Fatalf("PUBACK %v, want 0x87", p)
		}
		stillOpen(t, r)
		if msg, ok := sub.Try(300 * time.Millisecond); ok {
			t.Fatalf("a client's publish to $SYS was delivered: %q", msg.Topic)
		}
	})
	m.healthy(t)
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		if len(k) > 40 {
			k = k[:40] + "…"
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Class 4: MQTT 5 properties.
func TestProperties(t *testing.T) {
	m := start(t, raceBin, "")
	m.healthy(t)
	many := func(n int) []byte {
		ps := make([][]byte, n)
		for i := range ps {
			ps[i] = userProp("", "")
		}
		return props(ps...)
	}
	cases := []bad{
		// Duplicated single-instance properties.
		{"PUBLISH payload format twice", 5, publish5("a", 1, 1, props(prop(0x01, []byte{0}), prop(0x01, []byte{0})), "x"), disc(0x82)},
		{"PUBLISH message expiry twice", 5, publish5("a", 1, 1, props(prop(0x02, u32(5)), prop(0x02, u32(5))), "x"), disc(0x82)},
		{"PUBLISH content type twice", 5, publish5("a", 0, 0, props(prop(0x03, str("a")), prop(0x03, str("b"))), "x"), disc(0x82)},
		{"PUBLISH topic alias twice", 5, publish5("a", 0, 0, props(prop(0x23, u16(1)), prop(0x23, u16(2))), "x"), disc(0x82)},
		{"SUBSCRIBE subscription identifier twice", 5, subscribe5(1, props(prop(0x0B, []byte{1}), prop(0x0B, []byte{2})), 1, "a"), disc(0x82)},
		{"CONNECT session expiry twice", 0, (conn{version: 5, id: "d", props: props(prop(0x11, u32(1)), prop(0x11, u32(2)))}).bytes(), refusedConnect(0x82)},
		{"CONNECT receive maximum twice", 0, (conn{version: 5, id: "d", props: props(prop(0x21, u16(1)), prop(0x21, u16(1)))}).bytes(), refusedConnect(0x82)},
		{"will delay twice", 0, (conn{version: 5, id: "d", will: true, willProps: props(prop(0x18, u32(1)), prop(0x18, u32(1))), willTopic: "a", willPayload: "x"}).bytes(), refusedConnect(0x82)},
		{"PUBACK reason string twice", 5, pkt(0x40, u16(1), []byte{0}, props(prop(0x1F, str("a")), prop(0x1F, str("a")))), disc(0x82)},
		// A property not allowed on the packet type: Malformed.
		{"session expiry on PUBLISH", 5, publish5("a", 0, 0, props(prop(0x11, u32(1))), "x"), disc(0x81)},
		{"message expiry on SUBSCRIBE", 5, subscribe5(1, props(prop(0x02, u32(1))), 1, "a"), disc(0x81)},
		{"topic alias on CONNECT", 0, (conn{version: 5, id: "n", props: props(prop(0x23, u16(1)))}).bytes(), refusedConnect(0x81)},
		{"topic alias on PUBACK", 5, pkt(0x40, u16(1), []byte{0}, props(prop(0x23, u16(1)))), disc(0x81)},
		{"receive maximum on DISCONNECT", 5, pkt(0xE0, []byte{0}, props(prop(0x21, u16(1)))), disc(0x81)},
		{"subscription identifier on UNSUBSCRIBE", 5, pkt(0xA2, u16(1), props(prop(0x0B, []byte{1})), str("a")), disc(0x81)},
		{"server keep alive on CONNECT", 0, (conn{version: 5, id: "n", props: props(prop(0x13, u16(1)))}).bytes(), refusedConnect(0x81)},
		{"unknown property 0x7f", 5, publish5("a", 0, 0, props(prop(0x7F, []byte{0})), "x"), disc(0x81)},
		{"property identifier with a continuation bit", 5, publish5("a", 0, 0, props([]byte{0x81, 0x01}), "x"), disc(0x81)},
		// Subscription identifier 0, and on PUBLISH from a client.
		{"subscription identifier 0", 5, subscribe5(1, props(prop(0x0B, []byte{0})), 1, "a"), disc(0x82)},
		{"subscription identifier on PUBLISH", 5, publish5("a", 1, 1, props(prop(0x0B, []byte{1})), "x"), disc(0x82)},
		// Topic aliases (topic_alias_maximum 64).
		{"topic alias 0", 5, publish5("a", 0, 0, props(prop(0x23, u16(0))), "x"), disc(0x94)},
		{"topic alias above the maximum", 5, publish5("a", 1, 1, props(prop(0x23, u16(65))), "x"), disc(0x94)},
		{"topic alias 65535", 5, publish5("a", 1, 1, props(prop(0x23, u16(65535))), "x"), disc(0x94)},
		{"unknown topic alias with an empty topic", 5, publish5("", 1, 1, props(prop(0x23, u16(7))), "x"), disc(0x82)},
		// Values the spec forbids.
		{"receive maximum 0", 0, (conn{version: 5, id: "rm", props: props(prop(0x21, u16(0)))}).bytes(), refusedConnect(0x82)},
		{"maximum packet size 0", 0, (conn{version: 5, id: "mp", props: props(prop(0x27, u32(0)))}).bytes(), refusedConnect(0x82)},
		{"request problem information 2", 0, (conn{version: 5, id: "rp", props: props(prop(0x17, []byte{2}))}).bytes(), refusedConnect(0x82)},
		{"payload format 2", 5, publish5("a", 1, 1, props(prop(0x01, []byte{2})), "x"), disc(0x82)},
		{"payload format 1 with invalid UTF-8", 5, publish5("a", 1, 1, props(prop(0x01, []byte{1})), "\xff\xfe"), disc(0x99)},
		{"response topic with a wildcard", 5, publish5("a", 1, 1, props(prop(0x08, str("r/#"))), "x"), disc(0x82)},
		{"authentication data without a method", 0, (conn{version: 5, id: "ad", props: props(prop(0x16, str("x")))}).bytes(), refusedConnect(0x82)},
		// Huge numbers of user properties (CVE-2021-41039; limit 64).
		{"65 user properties on PUBLISH", 5, publish5("a", 1, 1, many(65), "x"), disc(0x97)},
		{"100000 user properties on PUBLISH", 5, publish5("a", 1, 1, many(100000), "x"), disc(0x97)},
		{"65 user properties on CONNECT", 0, (conn{version: 5, id: "up", props: many(65)}).bytes(), refusedConnect(0x97)},
		{"65 user properties on SUBSCRIBE", 5, subscribe5(1, many(65), 1, "a"), disc(0x97)},
		{"64 user properties on PUBLISH", 5, publish5("a", 1, 1, many(64), "x"), answered(tPuback, 0)},
	}
	runBad(t, m, cases)
}

// joinBytes concatenates packets into one write.
func joinBytes(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
