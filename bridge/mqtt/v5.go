package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
)

// remote is the client side of one protocol version: it outlives
// connections (it holds the client session state).
type remote interface {
	// connect dials and completes CONNECT/CONNACK before ctx ends.
	connect(ctx context.Context) (link, error)
	// close releases the session state once no connection is left.
	close()
}

// link is one live connection to the remote.
type link interface {
	sessionPresent() bool
	subscribe(ctx context.Context, subs []subscription) error
	// publish returns once the remote acknowledged m (QoS 1/2) or m was
	// written (QoS 0); it fails at once when the connection is lost.
	publish(ctx context.Context, m outMsg) error
	// lost is closed once the connection is gone and the client's
	// goroutines for it have ended.
	lost() <-chan struct{}
	// cause says why the connection was lost (after lost).
	cause() error
	// disconnect closes the connection cleanly (DISCONNECT, session kept)
	// and waits for the client's goroutines.
	disconnect()
}

type subscription struct {
	filter string
	qos    byte
}

// receiveMaximum bounds the unacknowledged QoS 1/2 messages an MQTT 5
// remote sends the bridge at once.
const receiveMaximum = 64

// ackInterval is how often paho sends the acknowledgements the inbound
// worker released (paho keeps them in order and flushes on a ticker).
const ackInterval = 5 * time.Millisecond

// v5Remote speaks MQTT 5 with paho.golang. Its session state lives as long
// as the bridge: across reconnects it resends unacknowledged QoS 1/2
// publishes and PUBRELs [MQTT-4.4.0-1] and keeps packet identifiers of a
// QoS 2 exchange in flight from being reused.
type v5Remote struct {
	b     *Bridge
	state *state.State
}

func newV5Remote(b *Bridge) *v5Remote {
	return &v5Remote{b: b, state: state.NewInMemory()}
}

func (r *v5Remote) close() {
	if err := r.state.Close(); err != nil {
		r.b.log.Debug("bridge session state close", "error", err)
	}
}

type v5Link struct {
	cl      *paho.Client
	conn    *watchedConn
	present bool
	maxQoS  byte
	retain  bool
	maxSize uint32
	causes  chan error
	log     *slog.Logger
}

func (r *v5Remote) connect(ctx context.Context) (link, error) {
	b := r.b
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	l := &v5Link{conn: conn, causes: make(chan error, 1), maxQoS: 2, retain: true, log: b.log}
	l.cl = paho.NewClient(paho.ClientConfig{
		ClientID:                   b.cfg.ClientID,
		Conn:                       conn,
		Session:                    r.state,
		PacketTimeout:              ackTimeout,
		EnableManualAcknowledgment: true,
		SendAcksInterval:           ackInterval,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			b.deliver(l.inMsg(pr))
			return true, nil
		}},
		OnClientError: l.note,
		OnServerDisconnect: func(d *paho.Disconnect) {
			reason := ""
			if d.Properties != nil && d.Properties.ReasonString != "" {
				reason = ": " + d.Properties.ReasonString
			}
			l.note(fmt.Errorf("the remote disconnected the bridge: reason code 0x%02X %s%s", d.ReasonCode, reasonName(d.ReasonCode), reason))
		},
	})
	sei := uint32(b.cfg.SessionExpiry / time.Second)
	recvMax := uint16(receiveMaximum)
	cp := &paho.Connect{
		ClientID:     b.cfg.ClientID,
		KeepAlive:    uint16(b.cfg.Keepalive / time.Second),
		CleanStart:   *b.cfg.CleanSession,
		Username:     b.cfg.Username,
		UsernameFlag: b.cfg.Username != "",
		Password:     []byte(b.cfg.Password),
		PasswordFlag: b.cfg.Password != "",
		Properties: &paho.ConnectProperties{
			ReceiveMaximum:     &recvMax,
			RequestProblemInfo: true,
		},
	}
	if !*b.cfg.CleanSession {
		cp.Properties.SessionExpiryInterval = &sei
	}
	ca, err := l.cl.Connect(ctx, cp) // closes conn when it fails
	if err != nil {
		if ca != nil && ca.ReasonCode >= 0x80 {
			return nil, connackError(ca)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s: no CONNACK within %s: %w", b.addr, b.cfg.ConnectTimeout, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", b.addr, err)
	}
	l.present = ca.SessionPresent
	if p := ca.Properties; p != nil {
		if p.MaximumQoS != nil {
			l.maxQoS = *p.MaximumQoS
		}
		l.retain = p.RetainAvailable
		if p.MaximumPacketSize != nil {
			l.maxSize = *p.MaximumPacketSize
		}
	}
	return l, nil
}

// connackError explains a refused connection.
func connackError(ca *paho.Connack) error {
	hint := ""
	switch ca.ReasonCode {
	case 0x84:
		hint = " (the remote may speak only MQTT 3.1.1: set protocol_version: 4)"
	case 0x85:
		hint = " (check client_id)"
	case 0x86, 0x87, 0x8C:
		hint = " (check username and password, and the remote's ACL for them)"
	}
	reason := ""
	if ca.Properties != nil && ca.Properties.ReasonString != "" {
		reason = ": " + ca.Properties.ReasonString
	}
	return fmt.Errorf("the remote refused the connection: reason code 0x%02X %s%s%s", ca.ReasonCode, reasonName(ca.ReasonCode), reason, hint)
}

func (l *v5Link) inMsg(pr paho.PublishReceived) inMsg {
	p := pr.Packet
	m := inMsg{topic: p.Topic, qos: p.QoS, retain: p.Retain, payload: p.Payload, conn: l.conn.ctx}
	if pp := p.Properties; pp != nil {
		m.props = packets.Properties{
			ContentType:     pp.ContentType,
			ResponseTopic:   pp.ResponseTopic,
			CorrelationData: pp.CorrelationData,
		}
		if pp.PayloadFormat != nil {
			m.props.PayloadFormat, m.props.PayloadFormatFlag = *pp.PayloadFormat, true
		}
		if pp.MessageExpiry != nil {
			m.props.MessageExpiryInterval = *pp.MessageExpiry
		}
		for _, u := range pp.User {
			m.props.User = append(m.props.User, packets.UserProperty{Key: u.Key, Val: u.Value})
		}
	}
	cl := pr.Client
	m.ack = func() {
		// Fails only when the message's connection is gone: the remote
		// then sends it again.
		if err := cl.Ack(p); err != nil && !errors.Is(err, paho.ErrPacketNotFound) {
			l.note(err)
		}
	}
	return m
}

func (l *v5Link) note(err error) {
	select {
	case l.causes <- err:
	default:
	}
}

func (l *v5Link) sessionPresent() bool { return l.present }

func (l *v5Link) lost() <-chan struct{} { return l.cl.Done() }

// cause waits briefly for paho's error callback, which runs just after the
// client shut down; failing that, the read error.
func (l *v5Link) cause() error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case err := <-l.causes:
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the remote closed the connection: %w", err)
		}
		return err
	case <-t.C:
		return l.conn.cause()
	}
}

func (l *v5Link) disconnect() {
	if err := l.conn.SetWriteDeadline(time.Now().Add(writeDeadline)); err != nil {
		l.log.Debug("bridge disconnect: set write deadline", "error", err)
	}
	// The connection is closed either way and the remote keeps the session.
	if err := l.cl.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		l.log.Debug("bridge DISCONNECT not sent", "error", err)
	}
	<-l.cl.Done()
}

func (l *v5Link) subscribe(ctx context.Context, subs []subscription) error {
	s := &paho.Subscribe{}
	for _, sub := range subs {
		// NoLocal: the remote does not send back what the bridge published
		// (no loop when both directions overlap). RetainAsPublished: a
		// forwarded message keeps its retain flag, as Mosquitto's bridges
		// do. RetainHandling 1: retained messages only for a new
		// subscription, not again on every reconnect.
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{
			Topic: sub.filter, QoS: sub.qos, NoLocal: true, RetainAsPublished: true, RetainHandling: 1,
		})
	}
	ctx, stop := l.bound(ctx)
	defer stop()
	sa, err := l.cl.Subscribe(ctx, s)
	if sa != nil {
		var errs []error
		for i, code := range sa.Reasons {
			if code >= 0x80 && i < len(subs) {
				errs = append(errs, &subRefusedError{filter: subs[i].filter, code: code})
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	if err != nil {
		if l.conn.ctx.Err() != nil {
			return fmt.Errorf("subscribe: %w", errConnectionLost)
		}
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// bound ends ctx when the connection is lost as well.
func (l *v5Link) bound(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(l.conn.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (l *v5Link) publish(ctx context.Context, m outMsg) error {
	p := &paho.Publish{
		QoS:     min(m.qos, l.maxQoS),
		Retain:  m.retain && l.retain, // a remote without retain refuses the flag
		Topic:   m.topic,
		Payload: m.payload,
		Properties: &paho.PublishProperties{
			ContentType:     m.props.ContentType,
			ResponseTopic:   m.props.ResponseTopic,
			CorrelationData: m.props.CorrelationData,
		},
	}
	if m.props.PayloadFormatFlag {
		pf := m.props.PayloadFormat
		p.Properties.PayloadFormat = &pf
	}
	if m.expiry > 0 {
		e := m.expiry
		p.Properties.MessageExpiry = &e
	}
	for _, u := range m.props.User {
		p.Properties.User = append(p.Properties.User, paho.UserProperty{Key: u.Key, Value: u.Val})
	}
	if l.maxSize > 0 {
		var n countWriter
		if _, err := p.Packet().WriteTo(&n); err == nil && uint32(n) > l.maxSize {
			return bridge.Permanent(fmt.Errorf("the message is %d bytes, more than the remote's maximum packet size %d", n, l.maxSize))
		}
	}
	ctx, stop := l.bound(ctx)
	defer stop()
	resp, err := l.cl.Publish(ctx, p)
	if resp != nil && resp.ReasonCode >= 0x80 { // a QoS 2 PUBREC failure comes with a nil error
		reason := ""
		if resp.Properties != nil && resp.Properties.ReasonString != "" {
			reason = ": " + resp.Properties.ReasonString
		}
		return ackError(resp.ReasonCode, reason)
	}
	if err != nil {
		if errors.Is(err, paho.ErrInvalidArguments) {
			return bridge.Permanent(err)
		}
		if l.conn.ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", errConnectionLost, err)
		}
		return err
	}
	return nil
}

// ackError classifies a PUBACK/PUBREC failure: the refusals that depend
// only on the message are permanent, the others (quota exceeded,
// unspecified, ...) are retried.
func ackError(code byte, reason string) error {
	err := fmt.Errorf("the remote refused the message: reason code 0x%02X %s%s", code, reasonName(code), reason)
	switch code {
	case 0x87, 0x90, 0x95, 0x99:
		return bridge.Permanent(err)
	}
	return err
}

// reasonName names the MQTT 5 reason codes of CONNACK, PUBACK, SUBACK and
// DISCONNECT failures.
func reasonName(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x81:
		return "malformed packet"
	case 0x82:
		return "protocol error"
	case 0x83:
		return "implementation specific error"
	case 0x84:
		return "unsupported protocol version"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8A:
		return "banned"
	case 0x8B:
		return "server shutting down"
	case 0x8C:
		return "bad authentication method"
	case 0x8D:
		return "keep alive timeout"
	case 0x8E:
		return "session taken over"
	case 0x8F:
		return "topic filter invalid"
	case 0x90:
		return "topic name invalid"
	case 0x91:
		return "packet identifier in use"
	case 0x93:
		return "receive maximum exceeded"
	case 0x95:
		return "packet too large"
	case 0x96:
		return "message rate too high"
	case 0x97:
		return "quota exceeded"
	case 0x98:
		return "administrative action"
	case 0x99:
		return "payload format invalid"
	case 0x9A:
		return "retain not supported"
	case 0x9B:
		return "QoS not supported"
	case 0x9C:
		return "use another server"
	case 0x9D:
		return "server moved"
	case 0x9E:
		return "shared subscriptions not supported"
	case 0x9F:
		return "connection rate exceeded"
	case 0xA1:
		return "subscription identifiers not supported"
	case 0xA2:
		return "wildcard subscriptions not supported"
	}
	return "(unknown reason)"
}

// countWriter counts the bytes written to it.
type countWriter int

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}
