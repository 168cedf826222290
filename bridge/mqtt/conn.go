package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// watchedConn is a network connection that says when it is closed and
// remembers why reading stopped.
//
// It is a sync.Locker, so paho.golang holds its lock for each whole packet
// it writes (as with packets.NewThreadSafeConn): Send publishes from
// several goroutines at once. Between Lock and Unlock the writes are
// gathered and go out in one Write at Unlock: paho writes a packet as
// net.Buffers, which a wrapped connection would turn into one system call
// (and one TLS record) per piece. paho.mqtt.golang never locks and writes
// each packet in one piece. Either every writer of a connection locks or
// none does.
type watchedConn struct {
	net.Conn

	wmu      sync.Mutex
	batching atomic.Bool // between Lock and Unlock
	wbuf     []byte

	// ctx is cancelled when the connection is closed: whatever waits on
	// this connection (a publish, a message for the inbound worker) stops.
	ctx    context.Context
	cancel context.CancelFunc

	errMu   sync.Mutex
	readErr error
}

func newWatchedConn(c net.Conn) *watchedConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &watchedConn{Conn: c, ctx: ctx, cancel: cancel}
}

// Lock starts a packet: writes are gathered until Unlock.
func (c *watchedConn) Lock() {
	c.wmu.Lock()
	c.batching.Store(true)
}

// Unlock writes the gathered packet. A failed write closes the
// connection, so that the reader and everything waiting on it stop.
func (c *watchedConn) Unlock() {
	c.batching.Store(false)
	if len(c.wbuf) > 0 {
		if _, err := c.Conn.Write(c.wbuf); err != nil {
			_ = c.Close() // the reader reports the failure
		}
		if cap(c.wbuf) > maxKeptBuffer {
			c.wbuf = nil
		} else {
			c.wbuf = c.wbuf[:0]
		}
	}
	c.wmu.Unlock()
}

// maxKeptBuffer bounds the write buffer kept between packets.
const maxKeptBuffer = 64 << 10

// Write gathers p between Lock and Unlock, else writes it.
func (c *watchedConn) Write(p []byte) (int, error) {
	if c.batching.Load() {
		if c.ctx.Err() != nil {
			return 0, net.ErrClosed
		}
		c.wbuf = append(c.wbuf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Read reads and keeps the first error.
func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.errMu.Lock()
		if c.readErr == nil {
			c.readErr = err
		}
		c.errMu.Unlock()
	}
	return n, err
}

// Close closes the connection and cancels ctx.
func (c *watchedConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

// cause is why reading stopped, or a generic error.
func (c *watchedConn) cause() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.readErr != nil {
		return c.readErr
	}
	return errConnectionLost
}

// errConnectionLost says a connection went away while something waited on it.
var errConnectionLost = errors.New("connection to the remote broker lost")

// dial opens the network connection (TCP, then TLS for the TLS schemes).
// Cancelling ctx aborts it; the caller owns the connection until it gives
// it to a client.
func (b *Bridge) dial(ctx context.Context) (*watchedConn, error) {
	d := net.Dialer{Timeout: b.cfg.ConnectTimeout, KeepAlive: b.cfg.Keepalive}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", b.addr, err)
	}
	if b.tls != nil {
		tc := tls.Client(nc, b.tls)
		hctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = nc.Close() // the handshake error is the one to report
			return nil, fmt.Errorf("tls handshake with %s: %w", b.addr, err)
		}
		nc = tc
	}
	return newWatchedConn(nc), nil
}

// abortOn closes c when ctx ends before the returned stop is called:
// a CONNECT handshake that paho runs without a context stops on Stop.
func abortOn(ctx context.Context, c *watchedConn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = c.Close() })
}

// writeDeadline bounds the DISCONNECT written on a clean close.
const writeDeadline = time.Second
