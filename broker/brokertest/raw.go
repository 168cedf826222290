package brokertest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/motemq/mote/internal/wsconn"
)

// Raw is a client connection driven byte by byte, for sending what no
// client library would: malformed, oversized or partial packets.
type Raw struct {
	net.Conn
	r *bufio.Reader
}

// RawPacket is one packet read from the broker.
type RawPacket struct {
	Type  byte // 1 CONNECT … 15 AUTH
	Flags byte
	Body  []byte // the variable header and payload
}

// ReasonCode is the reason code of a v5 CONNACK or DISCONNECT (0 when the
// packet has none).
func (p RawPacket) ReasonCode() byte {
	switch p.Type {
	case 2: // CONNACK: flags, reason
		if len(p.Body) >= 2 {
			return p.Body[1]
		}
	case 14: // DISCONNECT: reason (absent means 0)
		if len(p.Body) >= 1 {
			return p.Body[0]
		}
	}
	return 0
}

func (p RawPacket) String() string {
	return fmt.Sprintf("type %d flags %#x body % x", p.Type, p.Flags, p.Body)
}

// NewRaw wraps an open connection.
func NewRaw(c net.Conn) *Raw { return &Raw{Conn: c, r: bufio.NewReader(c)} }

// DialRaw opens a TCP connection to addr, closed when the test ends.
// rcvBuf > 0 sets the socket's receive buffer before connecting (a small
// one makes a client that does not read fill the broker's side quickly).
func DialRaw(t testing.TB, addr string, rcvBuf int) *Raw {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("brokertest: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return NewRaw(c)
}

// DialWS opens a WebSocket (subprotocol mqtt) to addr with extra request
// headers (Origin, X-Forwarded-For...). On a refused handshake the error is
// returned with the HTTP response, whose status says why.
func DialWS(ctx context.Context, addr, path string, h http.Header) (net.Conn, *http.Response, error) {
	if path == "" {
		path = "/mqtt"
	}
	u := url.URL{Scheme: "ws", Host: addr, Path: path}
	d := websocket.Dialer{NetDialContext: (&net.Dialer{}).DialContext, Subprotocols: []string{"mqtt"}}
	ws, resp, err := d.DialContext(ctx, u.String(), h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, resp, err
	}
	return wsconn.New(ws), resp, nil
}

// Send writes the byte slices in order, each in its own write.
func (r *Raw) Send(bs ...[]byte) error {
	_ = r.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, b := range bs {
		if _, err := r.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// MustSend is Send that fails the test on error.
func (r *Raw) MustSend(t testing.TB, bs ...[]byte) {
	t.Helper()
	if err := r.Send(bs...); err != nil {
		t.Fatalf("brokertest: raw send: %v", err)
	}
}

// ReadPacket reads one packet within timeout.
func (r *Raw) ReadPacket(timeout time.Duration) (RawPacket, error) {
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	b0, err := r.r.ReadByte()
	if err != nil {
		return RawPacket{}, err
	}
	var rem, mult uint32 = 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return RawPacket{}, errors.New("brokertest: remaining length longer than four bytes")
		}
		c, err := r.r.ReadByte()
		if err != nil {
			return RawPacket{}, err
		}
		rem += uint32(c&0x7F) * mult
		mult *= 128
		if c&0x80 == 0 {
			break
		}
	}
	if rem > 16<<20 {
		return RawPacket{}, fmt.Errorf("brokertest: packet of %d bytes from the broker", rem)
	}
	body := make([]byte, rem)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return RawPacket{}, err
	}
	return RawPacket{Type: b0 >> 4, Flags: b0 & 0x0F, Body: body}, nil
}

// Expect reads one packet and fails the test unless it has type typ.
func (r *Raw) Expect(t testing.TB, typ byte, timeout time.Duration) RawPacket {
	t.Helper()
	p, err := r.ReadPacket(timeout)
	if err != nil {
		t.Fatalf("brokertest: want packet type %d: %v", typ, err)
	}
	if p.Type != typ {
		t.Fatalf("brokertest: want packet type %d, got %v", typ, p)
	}
	return p
}

// Connect sends a CONNECT (version 4 or 5, clean start, keepalive 30s) and
// fails the test unless a successful CONNACK comes back.
func (r *Raw) Connect(t testing.TB, version byte, id string) {
	t.Helper()
	r.MustSend(t, RawConnect(version, id, 30))
	p := r.Expect(t, 2, 5*time.Second)
	if p.ReasonCode() != 0 {
		t.Fatalf("brokertest: raw connect %q refused: %v", id, p)
	}
}

// WaitClosed reads until the broker closes the connection and returns the
// packets it sent before closing; err is non-nil when the connection was
// still open after timeout.
func (r *Raw) WaitClosed(timeout time.Duration) ([]RawPacket, error) {
	deadline := time.Now().Add(timeout)
	var got []RawPacket
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return got, fmt.Errorf("brokertest: connection still open after %v (received %v)", timeout, got)
		}
		p, err := r.ReadPacket(left)
		if err == nil {
			got = append(got, p)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return got, fmt.Errorf("brokertest: connection still open after %v (received %v)", timeout, got)
		}
		return got, nil // EOF, reset, or a closed WebSocket
	}
}

// --- packet building ---------------------------------------------------------

// Pkt builds a packet: the first byte (type << 4 | flags), the minimal
// Remaining Length of the body, then the body parts.
func Pkt(first byte, body ...[]byte) []byte {
	n := 0
	for _, b := range body {
		n += len(b)
	}
	out := append([]byte{first}, VBI(n)...)
	for _, b := range body {
		out = append(out, b...)
	}
	return out
}

// VBI encodes a Variable Byte Integer.
func VBI(n int) []byte {
	var out []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			return out
		}
	}
}

// Str encodes a length-prefixed string (or binary data).
func Str(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// U16 encodes a Two Byte Integer.
func U16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// RawConnect is a CONNECT with clean start, no will, no credentials and,
// for version 5, no properties.
func RawConnect(version byte, id string, keepalive uint16) []byte {
	vh := append(Str("MQTT"), version, 0x02)
	vh = append(vh, U16(keepalive)...)
	if version == 5 {
		vh = append(vh, 0) // properties
	}
	return Pkt(0x10, vh, Str(id))
}

// RawSubscribe is a SUBSCRIBE of one filter at qos.
func RawSubscribe(version byte, id uint16, filter string, qos byte) []byte {
	vh := U16(id)
	if version == 5 {
		vh = append(vh, 0)
	}
	return Pkt(0x82, vh, Str(filter), []byte{qos})
}

// RawPublish is a PUBLISH (id is ignored for QoS 0).
func RawPublish(version byte, topic string, qos byte, id uint16, payload []byte) []byte {
	vh := Str(topic)
	if qos > 0 {
		vh = append(vh, U16(id)...)
	}
	if version == 5 {
		vh = append(vh, 0)
	}
	return Pkt(0x30|qos<<1, vh, payload)
}
