package rules_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/motemq/mote/auth"
	"github.com/motemq/mote/guard"
	"github.com/motemq/mote/persistence"
	"github.com/motemq/mote/rules"
)

func TestMain(m *testing.M) {
	// buntdb's background goroutine ends up to a second after Close: it is
	// the store's, not the engine's.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
}

const wait = 5 * time.Second

type (
	packetT = mpackets.Packet
	batchT  = persistence.Batch
)

// broker is a real mochi server wired as Mote wires it: auth, guard, the
// rules engine, persistence and its barrier, on 127.0.0.1:0.
type broker struct {
	server  *mqtt.Server
	engine  *rules.Engine
	store   *persistence.Store
	persist *persistence.Hook
	addr    string
	once    sync.Once
}

type brokerOpts struct {
	rules   string // a rules file's YAML
	bridges rules.BridgeLookup
	noEvent bool
	dir     string
}

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("RULES_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startBroker(t testing.TB, o brokerOpts) *broker {
	t.Helper()
	log := testLog(t)
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := persistence.Open(persistence.Config{Dir: dir, Fsync: persistence.FsyncEverySecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	server := mqtt.New(&mqtt.Options{InlineClient: true, Logger: log})
	anyone := true
	a, err := auth.New(auth.Config{AllowAnonymous: &anyone}, server, log)
	if err != nil {
		t.Fatal(err)
	}
	persist := persistence.NewHook(store, server, persistence.Options{})
	eng := rules.New(rules.Options{
		Server: server, Store: store, Persist: persist, Bridges: o.bridges, Log: log, Events: !o.noEvent,
	})
	for _, h := range []mqtt.Hook{a, guard.New(server, guard.Options{}), eng, persist, persistence.NewBarrier(persist)} {
		if err := server.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})); err != nil {
		t.Fatal(err)
	}
	if _, err := persist.Restore(); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse([]byte(o.rules))
	if err != nil {
		t.Fatal(err)
	}
	set, err := eng.Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	eng.Reload(set)
	if err := eng.Start(); err != nil {
		t.Fatal(err)
	}
	if err := server.Serve(); err != nil {
		t.Fatal(err)
	}
	l, _ := server.Listeners.Get("t")
	b := &broker{server: server, engine: eng, store: store, persist: persist, addr: l.Address()}
	t.Cleanup(func() { b.stop(t) })
	return b
}

// stop closes the server (which stops the hooks, the engine too) and the
// store; it is idempotent.
func (b *broker) stop(t testing.TB) {
	b.once.Do(func() {
		_ = b.server.Close()
		if err := b.store.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
}

// msg is a message a test client received.
type msg struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Props   *paho.PublishProperties
}

func (m msg) user(key string) string {
	if m.Props == nil {
		return ""
	}
	return m.Props.User.Get(key)
}

// client is a paho.golang MQTT 5 client with an inbox.
type client struct {
	*paho.Client
	in   chan msg
	conn net.Conn
}

func connect(t testing.TB, addr, id string) *client {
	t.Helper()
	c := &client{in: make(chan msg, 10000)}
	return dial(t, addr, id, c, func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		c.in <- msg{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: p.Properties}
		return true, nil
	})
}

// dial connects c with a handler for what it receives.
func dial(t testing.TB, addr, id string, c *client, onPublish func(paho.PublishReceived) (bool, error)) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:              packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){onPublish},
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		_ = conn.Close()
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(c.close)
	return c
}

func (c *client) close() {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	_ = c.conn.Close()
	<-c.Done()
}

func (c *client) sub(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	for i, code := range sa.Reasons {
		if code >= 0x80 {
			t.Fatalf("subscribe %q refused: 0x%02x", filters[i], code)
		}
	}
}

// pub publishes and returns the acknowledgement's reason code (0 for QoS 0).
func (c *client) pub(t testing.TB, topic string, payload string, qos byte, props *paho.PublishProperties) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Properties: props})
	if err != nil && (r == nil || r.ReasonCode < 0x80) {
		t.Fatalf("publish %q: %v", topic, err)
	}
	if r == nil {
		return 0
	}
	return r.ReasonCode
}

// next returns the next message or fails the test.
func (c *client) next(t testing.TB) msg {
	t.Helper()
	select {
	case m := <-c.in:
		return m
	case <-time.After(wait):
		t.Fatal("no message within", wait)
		return msg{}
	}
}

// nextOn returns the next message on topic, skipping others.
func (c *client) nextOn(t testing.TB, topic string) msg {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-c.in:
			if m.Topic == topic {
				return m
			}
		case <-deadline:
			t.Fatalf("no message on %s within %v", topic, wait)
			return msg{}
		}
	}
}

// none checks that nothing arrives for d.
func (c *client) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.in:
		t.Fatalf("unexpected message on %s: %s", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// sync publishes a marker through the broker and waits until it comes
// back: everything the broker routed to c before it has arrived. It
// returns what arrived before the marker.
func (c *client) sync(t testing.TB) []msg {
	t.Helper()
	marker := "sync/" + strings.ReplaceAll(t.Name(), "/", "_")
	c.sub(t, 0, marker)
	c.pub(t, marker, "", 0, nil)
	var got []msg
	deadline := time.After(wait)
	for {
		select {
		case m := <-c.in:
			if m.Topic == marker {
				return got
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("sync marker did not come back within %v", wait)
			return nil
		}
	}
}

// collect waits for one message on each of topics, in any order, and
// returns them by topic; messages on other topics are skipped.
func (c *client) collect(t testing.TB, topics ...string) map[string]msg {
	t.Helper()
	want := map[string]bool{}
	for _, tp := range topics {
		want[tp] = true
	}
	got := map[string]msg{}
	deadline := time.After(wait)
	for len(got) < len(want) {
		select {
		case m := <-c.in:
			if _, dup := got[m.Topic]; want[m.Topic] && !dup {
				got[m.Topic] = m
			}
		case <-deadline:
			t.Fatalf("got %d of %v within %v", len(got), topics, wait)
		}
	}
	return got
}

// eventually polls fn until it is true or fails the test.
func eventually(t testing.TB, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clientV3 is an MQTT 3.1.1 client (paho.mqtt.golang).
type clientV3 struct{ pahov3.Client }

func connectV3(t testing.TB, addr, id string) *clientV3 {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait)
	c := &clientV3{pahov3.NewClient(opts)}
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// pub publishes and waits for the acknowledgement.
func (c *clientV3) pub(t testing.TB, topic, payload string, qos byte) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func mustParse(t testing.TB, y string) []rules.Rule {
	t.Helper()
	rs, err := rules.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
