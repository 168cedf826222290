package brokertest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/motemq/mote/internal/wsconn"
)

// Message is a message a test client received.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Dup     bool
	Props   *paho.PublishProperties // MQTT 5 only
	pk      *paho.Publish
}

// Inbox collects received messages.
type Inbox struct {
	ch chan Message
}

func newInbox() *Inbox { return &Inbox{ch: make(chan Message, 100000)} }

// Next returns the next message or fails the test after timeout.
func (in *Inbox) Next(t testing.TB, timeout time.Duration) Message {
	t.Helper()
	select {
	case m := <-in.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("brokertest: no message within %v", timeout)
		return Message{}
	}
}

// Try returns the next message, or false after timeout.
func (in *Inbox) Try(timeout time.Duration) (Message, bool) {
	select {
	case m := <-in.ch:
		return m, true
	case <-time.After(timeout):
		return Message{}, false
	}
}

// Len is the number of messages waiting.
func (in *Inbox) Len() int { return len(in.ch) }

// Options configure a test client.
type Options struct {
	ID             string
	Clean          bool   // clean start (v5) / clean session (v3)
	SessionExpiry  uint32 // v5: seconds; 0 = session ends with the connection
	ReceiveMaximum uint16 // v5: 0 = client default
	Username       string
	Password       string
	KeepAlive      uint16
	Will           *paho.WillMessage
	WS             bool        // connect over WebSocket (addr is then host:port of the ws listener)
	TLS            *tls.Config // connect with TLS (mqtts, or wss with WS)
	WSPath         string
	Origin         string
	Header         http.Header // extra WebSocket request headers (e.g. X-Forwarded-For)
	// NoAck makes the client never acknowledge QoS 1/2 messages (v5).
	NoAck bool
	// Session keeps the client's MQTT session state (v5) across
	// connections; nil gives each connection a fresh one.
	Session session.SessionManager
}

// V5 is an MQTT 5 client (paho.golang).
type V5 struct {
	*paho.Client
	*Inbox
	Connack *paho.Connack
	conn    net.Conn
}

// Dial connects a network connection to addr: TCP, or TLS when o.TLS is
// set; over WebSocket (wss with o.TLS) if o.WS.
func Dial(ctx context.Context, addr string, o Options) (net.Conn, error) {
	if !o.WS {
		if o.TLS != nil {
			d := tls.Dialer{Config: o.TLS}
			return d.DialContext(ctx, "tcp", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	path := o.WSPath
	if path == "" {
		path = "/mqtt"
	}
	u := url.URL{Scheme: "ws", Host: addr, Path: path}
	if o.TLS != nil {
		u.Scheme = "wss"
	}
	h := o.Header.Clone()
	if o.Origin != "" {
		if h == nil {
			h = http.Header{}
		}
		h.Set("Origin", o.Origin)
	}
	return wsconn.DialHeader(ctx, u.String(), h, o.TLS)
}

// ConnectPacket is the MQTT 5 CONNECT that o describes.
func ConnectPacket(o Options) *paho.Connect {
	cp := &paho.Connect{
		ClientID:   o.ID,
		CleanStart: o.Clean,
		KeepAlive:  o.KeepAlive,
		Properties: &paho.ConnectProperties{},
	}
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	if o.SessionExpiry > 0 {
		se := o.SessionExpiry
		cp.Properties.SessionExpiryInterval = &se
	}
	if o.ReceiveMaximum > 0 {
		rm := o.ReceiveMaximum
		cp.Properties.ReceiveMaximum = &rm
	}
	if o.Username != "" {
		cp.Username, cp.UsernameFlag = o.Username, true
	}
	if o.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(o.Password), true
	}
	if o.Will != nil {
		cp.WillMessage = o.Will
		cp.WillProperties = &paho.WillProperties{}
	}
	return cp
}

// ConnectV5 connects an MQTT 5 client and returns it with its CONNACK; a
// refused connection returns the CONNACK and an error.
func ConnectV5(ctx context.Context, addr string, o Options) (*V5, error) {
	conn, err := Dial(ctx, addr, o)
	if err != nil {
		return nil, err
	}
	c := &V5{Inbox: newInbox(), conn: conn}
	cfg := paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			c.ch <- Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Duplicate(), Props: p.Properties, pk: p}
			return true, nil
		}},
		EnableManualAcknowledgment: o.NoAck,
		Session:                    o.Session,
	}
	c.Client = paho.NewClient(cfg)
	cp := ConnectPacket(o)
	ca, err := c.Connect(ctx, cp)
	c.Connack = ca
	if err != nil {
		_ = conn.Close()
		return c, err
	}
	return c, nil
}

// MustV5 is ConnectV5 that fails the test on error and disconnects at the end.
func MustV5(t testing.TB, addr string, o Options) *V5 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ConnectV5(ctx, addr, o)
	if err != nil {
		t.Fatalf("brokertest: connect %s as %q: %v", addr, o.ID, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Sub subscribes to filters at qos and fails the test unless granted.
func (c *V5) Sub(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("brokertest: subscribe %v: %v", filters, err)
	}
	for i, code := range sa.Reasons {
		if code >= 0x80 {
			t.Fatalf("brokertest: subscribe %q refused: 0x%02x", filters[i], code)
		}
	}
}

// Pub publishes and, for QoS 1/2, waits for the acknowledgement.
func (c *V5) Pub(ctx context.Context, topic string, payload []byte, qos byte, retain bool) (*paho.PublishResponse, error) {
	return c.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain})
}

// MustPub is Pub that fails the test on error or a refusal reason code.
func (c *V5) MustPub(t testing.TB, topic string, payload []byte, qos byte, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Pub(ctx, topic, payload, qos, retain)
	if err != nil {
		t.Fatalf("brokertest: publish %q: %v", topic, err)
	}
	if r != nil && r.ReasonCode >= 0x80 {
		t.Fatalf("brokertest: publish %q refused: 0x%02x", topic, r.ReasonCode)
	}
}

// Ack acknowledges m (a client with Options.NoAck acknowledges nothing by
// itself).
func (c *V5) Ack(m Message) error { return c.Client.Ack(m.pk) }

// Close disconnects cleanly (ignoring errors) and closes the connection.
func (c *V5) Close() {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	_ = c.conn.Close()
}

// Drop closes the network connection without DISCONNECT.
func (c *V5) Drop() { _ = c.conn.Close() }

// V3 is an MQTT 3.1.1 client (paho.mqtt.golang).
type V3 struct {
	pahov3.Client
	*Inbox
}

// ConnectV3 connects an MQTT 3.1.1 client.
func ConnectV3(addr string, o Options) (*V3, error) {
	c := &V3{Inbox: newInbox()}
	scheme := "tcp://"
	if o.WS {
		scheme = "ws://"
		addr += "/mqtt"
	}
	opts := pahov3.NewClientOptions().
		AddBroker(scheme + addr).
		SetClientID(o.ID).
		SetCleanSession(o.Clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			c.ch <- Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retain: m.Retained(), Dup: m.Duplicate()}
		})
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	c.Client = pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("mqtt 3.1.1 connect %s: timeout", addr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt 3.1.1 connect %s: %w", addr, err)
	}
	return c, nil
}

// MustV3 is ConnectV3 that fails the test on error and disconnects at the end.
func MustV3(t testing.TB, addr string, o Options) *V3 {
	t.Helper()
	c, err := ConnectV3(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// Sub subscribes and fails the test unless granted.
func (c *V3) Sub(t testing.TB, qos byte, filter string) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("brokertest: v3 subscribe %q: %v", filter, tok.Error())
	}
	if st, ok := tok.(*pahov3.SubscribeToken); ok {
		for _, code := range st.Result() {
			if code >= 0x80 {
				t.Fatalf("brokertest: v3 subscribe %q refused: 0x%02x", filter, code)
			}
		}
	}
}

// MustPub publishes and waits for the acknowledgement.
func (c *V3) MustPub(t testing.TB, topic string, payload []byte, qos byte, retain bool) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("brokertest: v3 publish %q: %v", topic, tok.Error())
	}
}
