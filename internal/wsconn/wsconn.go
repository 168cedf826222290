// Package wsconn presents a client-side WebSocket as a net.Conn carrying a
// byte stream in binary messages, as MQTT over WebSocket does [MQTT-6.0.0-1].
// The bench tool and the test clients dial the broker's WebSocket listener
// through it.
package wsconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Conn carries the MQTT byte stream in binary WebSocket messages.
//
// Writes: gorilla allows one writer at a time, and MQTT client libraries
// write from more than one goroutine (paho.mqtt.golang's keepalive writes
// PINGREQ directly, beside its writer goroutine), so Write takes wmu.
// paho.golang writes one packet as several Writes (net.Buffers) and keeps them
// together by locking the sync.Locker a net.Conn may implement
// (packets.ControlPacket.WriteTo); the embedded Mutex is that lock. Lock
// order: embedded Mutex, then wmu.
//
// Deadlines: gorilla's SetWriteDeadline must not run beside a write, but a
// closing client sets one to unblock a stuck write. So the deadline is kept
// here, applied to gorilla under wmu before each write, and also set on the
// network connection at once (which is safe at any time) to unblock a write
// in progress.
//
// Reads: one reader at a time, continuing across message boundaries.
type Conn struct {
	sync.Mutex // held by paho.golang around each packet's Writes

	ws  *websocket.Conn
	wmu sync.Mutex // one WriteMessage at a time
	rmu sync.Mutex // one reader at a time
	r   io.Reader  // current message, nil between messages

	dmu sync.Mutex
	wdl time.Time
}

var _ net.Conn = (*Conn)(nil)

// Dial opens a WebSocket to url (ws:// or wss://) with subprotocol "mqtt"
// [MQTT-6.0.0-3]; origin, when not empty, is sent as the Origin header, and
// tlsConf (nil for defaults) configures wss://.
func Dial(ctx context.Context, url, origin string, tlsConf *tls.Config) (*Conn, error) {
	var h http.Header
	if origin != "" {
		h = http.Header{"Origin": {origin}}
	}
	return DialHeader(ctx, url, h, tlsConf)
}

// DialHeader is Dial with any request headers.
func DialHeader(ctx context.Context, url string, h http.Header, tlsConf *tls.Config) (*Conn, error) {
	d := websocket.Dialer{
		NetDialContext:  (&net.Dialer{}).DialContext,
		Subprotocols:    []string{"mqtt"},
		TLSClientConfig: tlsConf,
	}
	ws, resp, err := d.DialContext(ctx, url, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close() // the handshake response has no body we need
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket dial %s: %w (HTTP %d)", url, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("websocket dial %s: %w", url, err)
	}
	return New(ws), nil
}

// New wraps an open WebSocket.
func New(ws *websocket.Conn) *Conn { return &Conn{ws: ws} }

func (c *Conn) Read(p []byte) (int, error) {
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

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.dmu.Lock()
	dl := c.wdl
	c.dmu.Unlock()
	if err := c.ws.SetWriteDeadline(dl); err != nil {
		return 0, err
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Conn) Close() error                      { return c.ws.Close() }
func (c *Conn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	c.wdl = t
	c.dmu.Unlock()
	return c.ws.NetConn().SetWriteDeadline(t)
}

func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
