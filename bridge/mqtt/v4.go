package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// v4Remote speaks MQTT 3.1.1 with paho.mqtt.golang. One paho client serves
// every connection, reconnected by the bridge (paho's own reconnection is
// off): its store keeps unacknowledged QoS 1/2 publishes and PUBRELs,
// resent after a reconnect when the session is persistent.
type v4Remote struct {
	b  *Bridge
	cl paho3.Client

	mu      sync.Mutex
	dialCtx context.Context // of the connect in progress (paho's dial hook takes none)
	cur     *v4Link         // the connection being made or up
}

func newV4Remote(b *Bridge) *v4Remote {
	r := &v4Remote{b: b}
	o := paho3.NewClientOptions().
		AddBroker(b.cfg.URL). // not dialled: dialConn opens the connection
		SetClientID(b.cfg.ClientID).
		SetUsername(b.cfg.Username).
		SetPassword(b.cfg.Password).
		SetProtocolVersion(4).
		SetCleanSession(*b.cfg.CleanSession).
		SetKeepAlive(b.cfg.Keepalive).
		SetConnectTimeout(b.cfg.ConnectTimeout).
		SetWriteTimeout(b.cfg.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false). // the bridge subscribes after every connect
		SetOrderMatters(true).
		SetAutoAckDisabled(true). // acknowledged once the local broker has it
		SetCustomOpenConnectionFn(r.dialConn).
		SetDefaultPublishHandler(r.received).
		SetConnectionLostHandler(r.connectionLost)
	r.cl = paho3.NewClient(o)
	return r
}

// close: the client's store is memory; Disconnect already released it.
func (r *v4Remote) close() {}

// v4Link is one connection of the paho client.
type v4Link struct {
	r       *v4Remote
	conn    *watchedConn
	present bool

	gone     chan struct{}
	goneOnce sync.Once
	why      error
}

// dialConn is paho's hook to open the network connection.
func (r *v4Remote) dialConn(_ *url.URL, _ paho3.ClientOptions) (net.Conn, error) {
	r.mu.Lock()
	ctx, l := r.dialCtx, r.cur
	r.mu.Unlock()
	if ctx == nil || l == nil {
		return nil, errors.New("mqtt bridge: dial outside connect")
	}
	conn, err := r.b.dial(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	l.conn = conn
	r.mu.Unlock()
	return conn, nil
}

func (r *v4Remote) connect(ctx context.Context) (link, error) {
	l := &v4Link{r: r, gone: make(chan struct{})}
	r.mu.Lock()
	r.dialCtx, r.cur = ctx, l
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.dialCtx = nil
		r.mu.Unlock()
	}()
	tok := r.cl.Connect()
	// paho bounds the handshake by ConnectTimeout itself; closing the
	// connection when ctx ends (Stop) cuts it short.
	var stop func() bool
	select {
	case <-tok.Done():
	case <-ctx.Done():
		r.mu.Lock()
		if l.conn != nil {
			stop = abortOn(ctx, l.conn)
		}
		r.mu.Unlock()
		<-tok.Done()
	}
	if stop != nil {
		stop()
	}
	if err := tok.Error(); err != nil {
		// 0x01 to 0x05 are CONNACK refusals; paho uses 0xFE and 0xFF for
		// network and protocol errors.
		if ct, ok := tok.(*paho3.ConnectToken); ok && ct.ReturnCode() >= 0x01 && ct.ReturnCode() <= 0x05 {
			return nil, fmt.Errorf("the remote refused the connection: %w%s", err, v4Hint(ct.ReturnCode()))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s: %w (%w)", r.b.addr, err, ctx.Err())
		}
		return nil, fmt.Errorf("connect to %s: %w", r.b.addr, err)
	}
	l.present = tok.(*paho3.ConnectToken).SessionPresent()
	return l, nil
}

// v4Hint tells the operator what to check for a CONNACK return code.
func v4Hint(rc byte) string {
	switch rc {
	case 0x01:
		return " (the remote does not accept MQTT 3.1.1)"
	case 0x02:
		return " (check client_id)"
	case 0x04, 0x05:
		return " (check username and password, and the remote's ACL for them)"
	}
	return ""
}

// connectionLost is paho's callback, called once the client has stopped
// the connection's goroutines (the client may connect again).
func (r *v4Remote) connectionLost(_ paho3.Client, err error) {
	r.mu.Lock()
	l := r.cur
	r.mu.Unlock()
	if l != nil {
		l.end(err)
	}
}

func (l *v4Link) end(err error) {
	l.goneOnce.Do(func() {
		l.why = err
		close(l.gone)
	})
}

// received is paho's handler for every message (the default handler, so
// that queued messages arriving before SUBSCRIBE are not lost).
func (r *v4Remote) received(_ paho3.Client, msg paho3.Message) {
	r.mu.Lock()
	var conn *watchedConn
	if r.cur != nil {
		conn = r.cur.conn
	}
	r.mu.Unlock()
	if conn == nil {
		return // not reached: paho reads only from a connection it dialled
	}
	r.b.deliver(inMsg{
		topic:   msg.Topic(),
		qos:     msg.Qos(),
		retain:  msg.Retained(),
		payload: msg.Payload(),
		ack:     msg.Ack, // dropped by paho once this connection is gone
		conn:    conn.ctx,
	})
}

func (l *v4Link) sessionPresent() bool { return l.present }

func (l *v4Link) lost() <-chan struct{} { return l.gone }

func (l *v4Link) cause() error {
	<-l.gone
	if l.why != nil {
		return l.why
	}
	return l.conn.cause()
}

func (l *v4Link) disconnect() {
	// Disconnect sends DISCONNECT and waits up to quiesce for the client to
	// stop (it returns sooner when done).
	l.r.cl.Disconnect(uint(2 * writeDeadline / time.Millisecond))
	l.end(nil)
}

// wait waits for tok, the end of ctx or of the connection.
func (l *v4Link) wait(ctx context.Context, tok paho3.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-l.conn.ctx.Done():
		// With a persistent session paho keeps the message for the next
		// connection and never completes the token.
		return errConnectionLost
	}
}

func (l *v4Link) subscribe(ctx context.Context, subs []subscription) error {
	filters := make(map[string]byte, len(subs))
	for _, s := range subs {
		filters[s.filter] = s.qos
	}
	tok := l.r.cl.SubscribeMultiple(filters, nil)
	if err := l.wait(ctx, tok); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	var errs []error
	if st, ok := tok.(*paho3.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				errs = append(errs, &subRefusedError{filter: f, code: code})
			}
		}
	}
	return errors.Join(errs...)
}

func (l *v4Link) publish(ctx context.Context, m outMsg) error {
	// MQTT 3.1.1 has no properties: content type, response topic,
	// correlation data, user properties and expiry do not cross.
	return l.wait(ctx, l.r.cl.Publish(m.topic, m.qos, m.retain, m.payload))
}
