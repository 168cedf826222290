package amqp

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	// dialTimeout bounds the TCP connect and the TLS and AMQP handshakes
	// when the caller's context has no earlier deadline.
	dialTimeout = 30 * time.Second
	// closeTimeout bounds a graceful connection close (connection.close and
	// its close-ok); past it the socket is closed anyway.
	closeTimeout = 5 * time.Second
)

// dialed is an open AMQP connection and the TCP connection under it.
type dialed struct {
	conn *amqp.Connection
	raw  net.Conn
}

// abort closes the socket under the connection: every pending operation on
// it (a write blocked by TCP back-pressure, an RPC waiting for an answer)
// fails at once. It is how a deadline is enforced on calls of amqp091-go,
// which take no context.
func (d *dialed) abort() {
	// The error of closing an already broken socket tells nothing.
	_ = d.raw.Close()
}

// close closes the connection gracefully (RabbitMQ requeues what was not
// acknowledged), giving up on the handshake after closeTimeout.
func (d *dialed) close() error {
	return d.conn.CloseDeadline(time.Now().Add(closeTimeout))
}

// guard runs f and aborts the connection if ctx ends before f returns. It
// returns f's error, or the context's when the connection was aborted.
func (d *dialed) guard(ctx context.Context, f func() error) error {
	stop := context.AfterFunc(ctx, d.abort)
	err := f()
	if !stop() {
		return fmt.Errorf("%w (connection aborted)", context.Cause(ctx))
	}
	return err
}

// dial opens a connection named connName (shown by RabbitMQ's management
// UI and rabbitmqctl list_connections client_properties) within ctx.
func dial(ctx context.Context, cfg Config, tlsCfg *tls.Config, connName string) (*dialed, error) {
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(connName)
	config := amqp.Config{
		Heartbeat:  cfg.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bound the TLS and AMQP handshakes; amqp091-go clears the
			// deadline once the connection is open.
			deadline := time.Now().Add(dialTimeout)
			if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
				deadline = dl
			}
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close() // the SetDeadline error is the one to report
				return nil, err
			}
			mu.Lock()
			raw = c
			mu.Unlock()
			return c, nil
		},
	}
	if tlsCfg != nil {
		config.TLSClientConfig = tlsCfg.Clone() // amqp091-go sets ServerName in it
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if raw != nil {
			_ = raw.Close() // aborting the handshake
		}
	})
	conn, err := amqp.DialConfig(cfg.URL, config)
	if !stop() {
		if err == nil {
			_ = conn.Close() // its socket is closed already
		}
		return nil, fmt.Errorf("amqp: connecting to %s: %w", redactURL(cfg.URL), context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("amqp: connecting to %s: %w", redactURL(cfg.URL), err)
	}
	mu.Lock()
	defer mu.Unlock()
	return &dialed{conn: conn, raw: raw}, nil
}

// backoff is the delay before reconnect attempt n (from 0): exponential
// from lo up to hi, with "equal jitter" (half fixed, half random) so that
// reconnecting clients neither synchronise nor spin.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
