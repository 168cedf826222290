package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// v3Conn is an MQTT 3.1.1 client on paho.mqtt.golang.
//
// paho.mqtt.golang's Publish returns a Token at once and writes in call
// order, so keeping several publishes in flight needs only a FIFO of tokens,
// waited for by one goroutine per client. Its Disconnect may return (after
// the quiesce time) before its goroutines have stopped, so message callbacks
// pass through gate, which close shuts before it returns.
type v3Conn struct {
	cli     mqtt.Client
	nc      atomic.Pointer[net.Conn] // set by the dial callback
	closing atomic.Bool
	lost    sync.Once

	gate   sync.Mutex // held while a callback runs; closed stops new ones
	closed bool

	subHandler mqtt.MessageHandler // nil unless the client subscribes

	pending chan pendingPub // QoS ≥ 1 publishes awaiting their token
	done    chan struct{}   // closed by close: stop waiting for tokens
	onAck   func(uint64, ackResult)
	acks    sync.WaitGroup // the token waiter
}

type pendingPub struct {
	tok mqtt.Token
	seq uint64
}

// disconnectQuiesce is how long paho.mqtt.golang's Disconnect waits for the
// DISCONNECT to be written, in milliseconds.
const disconnectQuiesce = 250

func connectV3(ctx context.Context, o clientOpts) (mqttConn, error) {
	c := &v3Conn{onAck: o.onAck, done: make(chan struct{})}
	opts := mqtt.NewClientOptions()
	opts.AddBroker(o.url.String())
	opts.SetClientID(o.id)
	opts.SetProtocolVersion(4)
	opts.SetCleanSession(o.cfg.Clean)
	opts.SetKeepAlive(o.cfg.KeepAlive)
	opts.SetConnectTimeout(o.cfg.ConnectTimeout)
	// WriteTimeout bounds both a blocked Publish and each network write; a
	// broker that stalls that long fails the run instead of hanging it.
	opts.SetWriteTimeout(o.cfg.ConnectTimeout)
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetOrderMatters(true) // deliver in order on one goroutine; false would spawn one per message
	if o.cfg.Username != "" {
		opts.SetUsername(o.cfg.Username)
	}
	if o.cfg.Password != "" {
		opts.SetPassword(o.cfg.Password)
	}
	opts.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		nc, err := dial(ctx, u, o.readBuf)
		if err != nil {
			return nil, err
		}
		c.nc.Store(&nc)
		return nc, nil
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		if c.closing.Load() || o.onLost == nil {
			return
		}
		c.lost.Do(func() { o.onLost(err) })
	})
	var handler mqtt.MessageHandler
	if o.onMessage != nil {
		onMessage := o.onMessage
		handler = func(_ mqtt.Client, m mqtt.Message) {
			c.gate.Lock()
			defer c.gate.Unlock()
			if !c.closed {
				onMessage(m.Payload())
			}
		}
		// Also the default, in case the library's router does not match the filter.
		opts.SetDefaultPublishHandler(handler)
		c.subHandler = handler
	}
	c.cli = mqtt.NewClient(opts)

	tok := c.cli.Connect()
	stop := context.AfterFunc(ctx, func() {
		// Abort a handshake in progress; the token then completes with an error.
		if p := c.nc.Load(); p != nil {
			_ = (*p).Close()
		}
	})
	<-tok.Done() // bounded: the dial uses ctx, the handshake ConnectTimeout
	if !stop() || tok.Error() != nil {
		err := tok.Error()
		if err == nil {
			err = ctx.Err()
		}
		c.cli.Disconnect(0)
		return nil, err
	}
	if o.onAck != nil {
		c.pending = make(chan pendingPub, o.inflight)
		c.acks.Go(c.waitTokens)
	}
	return c, nil
}

// waitTokens reports the outcome of each QoS ≥ 1 publish, in publish order.
func (c *v3Conn) waitTokens() {
	for {
		select {
		case p := <-c.pending:
			select {
			case <-p.tok.Done():
				if p.tok.Error() != nil {
					c.onAck(p.seq, ackLost) // 3.1.1 has no failure reason codes in PUBACK
				} else {
					c.onAck(p.seq, ackOK)
				}
			case <-c.done:
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *v3Conn) publish(_ context.Context, topic string, qos byte, payload []byte, seq uint64) error {
	tok := c.cli.Publish(topic, qos, false, payload)
	if qos == 0 {
		select {
		case <-tok.Done(): // only already complete when it failed, or was written very fast
			return tok.Error()
		default:
			return nil
		}
	}
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return err
		}
	default:
	}
	// Room is guaranteed: the caller holds one of inflight slots per pending
	// publish, and pending has inflight places.
	select {
	case c.pending <- pendingPub{tok: tok, seq: seq}:
		return nil
	default:
		return errors.New("more publishes in flight than --inflight (bug)")
	}
}

func (c *v3Conn) subscribe(ctx context.Context, filter string, qos byte) error {
	tok := c.cli.Subscribe(filter, qos, c.subHandler)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[filter] == 0x80 {
		return fmt.Errorf("SUBACK refused %q (return code 0x80)", filter)
	}
	return nil
}

func (c *v3Conn) close() error {
	c.closing.Store(true)
	if p := c.nc.Load(); p != nil {
		setCloseDeadline(*p)
	}
	c.cli.Disconnect(disconnectQuiesce)
	if p := c.nc.Load(); p != nil {
		_ = (*p).Close() // in case Disconnect returned on its timer; closing twice is harmless
	}
	c.gate.Lock()
	c.closed = true
	c.gate.Unlock()
	close(c.done)
	c.acks.Wait()
	return nil
}
