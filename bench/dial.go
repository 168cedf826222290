package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"

	"github.com/motemq/mote/internal/wsconn"
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
		return wsconn.Dial(ctx, u.String(), "", nil)
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
