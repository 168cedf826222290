package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// dial opens the network connection to the broker: TCP for mqtt:// and tcp://,
// a WebSocket (subprotocol "mqtt") for ws://. A positive readBuf buffers
// reads from TCP (see tcpConn); WebSocket reads are buffered by gorilla.
func dial(ctx context.Context, u *url.URL, readBuf int) (net.Conn, error) {
	switch u.Scheme {
	case "mqtt", "tcp":
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", hostPort(u, "1883"))
		if err != nil || readBuf <= 0 {
			return nc, err
		}
		tc, ok := nc.(*net.TCPConn)
		if !ok {
			return nc, nil
		}
		return &tcpConn{TCPConn: tc, r: bufio.NewReaderSize(tc, readBuf)}, nil
	case "ws":
		d := websocket.Dialer{
			NetDialContext:   (&net.Dialer{}).DialContext,
			Subprotocols:     []string{"mqtt"}, // [MQTT-6.0.0-3]
			HandshakeTimeout: 0,                // ctx bounds it
		}
		ws, resp, err := d.DialContext(ctx, u.String(), nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close() // the handshake response has no body we need
		}
		if err != nil {
			return nil, err
		}
		return &wsConn{ws: ws}, nil
	}
	return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
}

// tcpConn buffers reads. Both paho libraries read packets straight from the
// net.Conn (packets.ReadPacket: one read for the first byte, one per length
// byte, one for the rest), which is three or more syscalls per received
// message and made the subscriber, not the broker, the bottleneck.
//
// Writes go to the embedded *net.TCPConn. Embedding (not wrapping) keeps its
// writev path: net.Buffers.WriteTo finds the promoted unexported writeBuffers
// method, so each paho.golang packet is still one writev under the fd's write
// lock and never interleaves with another goroutine's packet. Only the
// library's single reader goroutine calls Read.
type tcpConn struct {
	*net.TCPConn
	r *bufio.Reader
}

func (c *tcpConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func hostPort(u *url.URL, defaultPort string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), defaultPort)
}

// wsConn carries the MQTT byte stream in binary WebSocket messages.
//
// Writes: gorilla allows one writer at a time, and both libraries write from
// more than one goroutine (paho.mqtt.golang's keepalive writes PINGREQ
// directly, beside its writer goroutine), so Write takes wmu. paho.golang
// writes one packet as several Writes (net.Buffers) and keeps them together by
// locking the sync.Locker a net.Conn may implement (packets.ControlPacket.WriteTo);
// the embedded Mutex is that lock. Lock order: embedded Mutex, then wmu.
// Reads: one reader at a time, continuing across message boundaries.
type wsConn struct {
	sync.Mutex // held by paho.golang around each packet's Writes

	ws  *websocket.Conn
	wmu sync.Mutex // one WriteMessage at a time
	rmu sync.Mutex // one reader at a time
	r   io.Reader  // current message, nil between messages
}

var _ net.Conn = (*wsConn)(nil)

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}
