package frame

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestReply(t *testing.T) {
	tests := []struct {
		name string
		ver  byte // CONNECT accepted first; 0: none
		pkt  []byte
		want []byte
	}{
		{name: "v5 connect malformed", pkt: connect5(0x03, plist(), s("c")), want: b(0x20, 3, 0, 0x81, 0)},
		{name: "v5 connect bad fixed header flags", pkt: cat(b(0x12), minimalConnect(5)[1:]), want: b(0x20, 3, 0, 0x81, 0)},
		{name: "v5 connect protocol error", pkt: connect5(0x02, plist(cat(b(propReceiveMaximum), u16(0))), s("c")), want: b(0x20, 3, 0, 0x82, 0)},
		{name: "v5 connect bad client id", pkt: connect5(0x02, plist(), s(nul)), want: b(0x20, 3, 0, 0x85, 0)},
		{name: "v5 connect bad will topic", pkt: connect5(0x06, plist(), s("c"), plist(), s("a/#"), s("m")), want: b(0x20, 3, 0, 0x90, 0)},
		{name: "v5 connect bad will payload", pkt: connect5(0x06, plist(), s("c"), plist(b(propPayloadFormat, 1)), s("w"), s("\xff")), want: b(0x20, 3, 0, 0x99, 0)},
		{name: "v3.1.1 connect bad client id", pkt: connect4(0x00, s("")), want: b(0x20, 2, 0, 0x02)},
		{name: "v3.1 connect bad client id", pkt: connect3(0x02, s(badUTF8)), want: b(0x20, 2, 0, 0x02)},
		{name: "v3.1.1 connect malformed", pkt: connect4(0x03, s("c"))},
		{name: "v3.1.1 connect bad will topic", pkt: connect4(0x06, s("c"), s("a/#"), s("m"))},
		{name: "MQTT level 3", pkt: pk(0x10, s("MQTT"), b(3, 2), u16(0), s("c")), want: b(0x20, 2, 0, 0x01)},
		{name: "MQTT level 6", pkt: pk(0x10, s("MQTT"), b(6, 2), u16(0), s("c")), want: b(0x20, 2, 0, 0x01)},
		{name: "MQIsdp level 5", pkt: pk(0x10, s("MQIsdp"), b(5, 2), u16(0), plist(), s("c")), want: b(0x20, 2, 0, 0x01)},
		{name: "unknown protocol name", pkt: pk(0x10, s("AMQP"), b(4, 2), u16(0), s("c"))},
		{name: "connect truncated before the level", pkt: pk(0x10, s("MQTT"))},
		{name: "first packet not connect", pkt: b(0xC0, 0x00)},
		{name: "after v5 connect", ver: 5, pkt: pk(0x36, s("a"), u16(1), plist()), want: b(0xE0, 2, 0x81, 0)},
		{name: "after v5 connect, topic alias", ver: 5, pkt: pk(0x30, s("a"), plist(cat(b(propTopicAlias), u16(0)))), want: b(0xE0, 2, 0x94, 0)},
		{name: "after v5 connect, second connect", ver: 5, pkt: minimalConnect(5), want: b(0xE0, 2, 0x82, 0)},
		{name: "after v3.1.1 connect", ver: 4, pkt: pk(0x36, s("a"), u16(1))},
		{name: "after v3.1 connect", ver: 3, pkt: pk(0x30, s("a/#"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewChecker(Limits{})
			if tc.ver != 0 {
				if err := c.Check(minimalConnect(tc.ver)); err != nil {
					t.Fatal(err)
				}
			}
			err := c.Check(tc.pkt)
			if err == nil {
				t.Fatal("accepted")
			}
			got := c.Reply(err)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Reply(%v) = % x, want % x", err, got, tc.want)
			}
			if got != nil {
				if err := decodeReply(c.Version(), got); err != nil {
					t.Fatal(err)
				}
			}
			// The same through a wrapping error.
			if w := c.Reply(fmt.Errorf("conn 1: %w", err)); !bytes.Equal(w, tc.want) {
				t.Fatalf("Reply(wrapped) = % x", w)
			}
		})
	}
}

func TestReplyOther(t *testing.T) {
	c := NewChecker(Limits{})
	if r := c.Reply(nil); r != nil {
		t.Fatalf("Reply(nil) = % x", r)
	}
	if r := c.Reply(errors.New("x")); r != nil {
		t.Fatalf("Reply(other) = % x", r)
	}
	if r := c.Reply((*Error)(nil)); r != nil {
		t.Fatalf("Reply(nil *Error) = % x", r)
	}
	// A Header error before any CONNECT body arrived: nothing to say.
	_, _, herr := Header(b(0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), 0)
	if r := c.Reply(herr); r != nil {
		t.Fatalf("Reply(header error) = % x", r)
	}
	if err := c.Check(minimalConnect(5)); err != nil {
		t.Fatal(err)
	}
	_, _, herr = Header(b(0x30, 0xFF, 0xFF, 0x7F), 1000)
	if r := c.Reply(herr); !bytes.Equal(r, b(0xE0, 2, 0x95, 0)) {
		t.Fatalf("Reply(too large) = % x", r)
	}
	if r := c.Reply(&Error{Code: 0x97}); !bytes.Equal(r, b(0xE0, 2, 0x97, 0)) {
		t.Fatalf("Reply(constructed) = % x", r)
	}
}

// decodeReply checks that a reply is a packet mochi's client side decodes.
func decodeReply(ver byte, r []byte) error {
	want := byte(packets.Connack)
	if ver != 0 {
		want = packets.Disconnect
	}
	if r[0]>>4 != want {
		return fmt.Errorf("reply type %d, want %d", r[0]>>4, want)
	}
	if ver == 0 {
		// CONNACK: decode as the version its length says it is.
		ver = 4
		if len(r) == 5 {
			ver = 5
		}
	}
	p, err := mochiDecode(ver, r)
	if err != nil {
		return fmt.Errorf("mochi cannot decode reply % x: %w", r, err)
	}
	if p.FixedHeader.Type == packets.Disconnect && p.ReasonCode != r[2] {
		return fmt.Errorf("mochi reads reason 0x%02x from % x", p.ReasonCode, r)
	}
	return nil
}

func TestHeader(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		max      uint32
		total    int
		complete bool
		code     byte
	}{
		{name: "empty", in: nil},
		{name: "type byte only", in: b(0x30)},
		{name: "zero length", in: b(0xC0, 0x00), total: 2, complete: true},
		{name: "one byte length", in: b(0x30, 0x7F), total: 129, complete: true},
		{name: "two byte length", in: b(0x30, 0x80, 0x01), total: 131, complete: true},
		{name: "two byte length, body absent", in: b(0x30, 0xFF, 0x7F), total: 3 + 16383, complete: true},
		{name: "four byte maximum", in: b(0x30, 0xFF, 0xFF, 0xFF, 0x7F), total: 5 + 268435455, complete: true},
		{name: "length continues", in: b(0x30, 0x80)},
		{name: "length continues three", in: b(0x30, 0xFF, 0xFF, 0xFF)},
		{name: "five length bytes", in: b(0x30, 0xFF, 0xFF, 0xFF, 0xFF), code: 0x81},
		{name: "five length bytes ending", in: b(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), code: 0x81},
		{name: "not minimal two", in: b(0x30, 0x80, 0x00), code: 0x81},
		{name: "not minimal three", in: b(0x30, 0x81, 0x80, 0x00), code: 0x81},
		{name: "not minimal four", in: b(0x30, 0xFF, 0xFF, 0x80, 0x00), code: 0x81},
		{name: "over max before the body", in: b(0x30, 0x80, 0x08), max: 1024, code: 0x95},
		{name: "at max", in: b(0x30, 0xFD, 0x07), max: 1024, total: 1024, complete: true},
		{name: "one over max", in: b(0x30, 0xFE, 0x07), max: 1024, code: 0x95},
		{name: "slowloris prefix", in: b(0x10, 0xFF, 0xFF, 0xFF, 0x7F), max: 1 << 20, code: 0x95},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total, complete, err := Header(tc.in, tc.max)
			if tc.code != 0 {
				var e *Error
				if !errors.As(err, &e) || e.Code != tc.code {
					t.Fatalf("got %v, want code 0x%02x", err, tc.code)
				}
				return
			}
			if err != nil || total != tc.total || complete != tc.complete {
				t.Fatalf("Header = %d, %v, %v; want %d, %v, nil", total, complete, err, tc.total, tc.complete)
			}
			if complete {
				// mochi must read the same length.
				rem, bu, err := packets.DecodeLength(bytes.NewReader(tc.in[1:]))
				if err != nil || 1+bu+rem != total {
					t.Fatalf("mochi reads %d+%d (%v)", bu, rem, err)
				}
			}
		})
	}
}
