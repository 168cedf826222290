package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLog writes the bridge's log to t.Log (shown for failing tests).
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// mosquitto is the address of the Mosquitto the tests use; the test fails
// when it is not reachable.
func mosquitto(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("MOTE_TEST_MOSQUITTO_ADDR")
	if addr == "" {
		addr = "127.0.0.1:1883"
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("Mosquitto is not reachable at %s (%v): run scripts/ensure-services.sh, or set MOTE_TEST_MOSQUITTO_ADDR", addr, err)
	}
	_ = c.Close()
	return addr
}

// uniq is a fresh random name part: topics and client ids of one test do
// not meet those of another run on the same Mosquitto.
func uniq() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// eventually polls cond every 5ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline, not synchronisation by sleeping
	}
}

// testConfig is a bridge config with quick reconnects.
func testConfig(url string, version int, ts ...Topic) Config {
	clean := false
	return Config{
		URL:             url,
		ProtocolVersion: version,
		ClientID:        "mote-test-" + uniq(),
		CleanSession:    &clean,
		ConnectTimeout:  3 * time.Second,
		ReconnectMin:    20 * time.Millisecond,
		ReconnectMax:    200 * time.Millisecond,
		Topics:          ts,
	}
}

// startBridge builds and starts a bridge, stopped at cleanup; on Mosquitto
// its persistent session is removed then too.
func startBridge(t testing.TB, cfg Config, publish bridge.Publish) *Bridge {
	t.Helper()
	b, err := New("test", cfg, publish, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(func() {
		b.Stop()
		if strings.HasSuffix(cfg.URL, mosquittoAddrOf(t)) {
			dropSession(t, mosquittoAddrOf(t), b.cfg.ClientID)
		}
	})
	return b
}

func mosquittoAddrOf(t testing.TB) string {
	if a := os.Getenv("MOTE_TEST_MOSQUITTO_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:1883"
}

// dropSession removes a client's session from a remote: a clean start
// with no session expiry ends it.
func dropSession(t testing.TB, addr, clientID string) {
	t.Helper()
	c := dialClient(t, addr, clientID, nil)
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Logf("drop session %s: %v", clientID, err)
	}
}

func waitUp(t testing.TB, b *Bridge) {
	t.Helper()
	eventually(t, 10*time.Second, "the bridge to connect and subscribe", func() bool {
		s := b.Status()
		return s.Connected && s.Subscribed
	})
}

// waitReconnected waits for a connection after the before-th, subscribed.
func waitReconnected(t testing.TB, b *Bridge, before uint64) {
	t.Helper()
	eventually(t, 10*time.Second, "the bridge to reconnect and subscribe", func() bool {
		s := b.Status()
		return s.Connects > before && s.Connected && s.Subscribed
	})
}

// received is what a test MQTT client got.
type received struct {
	mu   sync.Mutex
	msgs []*paho.Publish
}

func (r *received) add(p *paho.Publish) {
	r.mu.Lock()
	r.msgs = append(r.msgs, p)
	r.mu.Unlock()
}

// wait returns the first message on topic, waiting up to 10 s.
func (r *received) wait(t testing.TB, topic string) *paho.Publish {
	t.Helper()
	var got *paho.Publish
	eventually(t, 10*time.Second, "a message on "+topic, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, m := range r.msgs {
			if m.Topic == topic {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

func (r *received) count(topic string, payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m.Topic == topic && string(m.Payload) == payload {
			n++
		}
	}
	return n
}

// dialClient connects an MQTT 5 test client (clean start, no session
// expiry) to addr; got (may be nil) receives its messages.
func dialClient(t testing.TB, addr, id string, got *received) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if got != nil {
				got.add(pr.Packet)
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("test client %s: %v", id, err)
	}
	return c
}

// client is a connected test client, disconnected at cleanup.
func client(t testing.TB, addr string, got *received) *paho.Client {
	t.Helper()
	c := dialClient(t, addr, "mote-test-client-"+uniq(), got)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func subscribe(t testing.TB, c *paho.Client, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos, RetainAsPublished: true}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func publish(t testing.TB, c *paho.Client, p *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, p); err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

// recorder is the local side's publish function: it records what the
// inbound side publishes, and can refuse or fail on demand.
type recorder struct {
	mu        sync.Mutex
	got       []packets.Packet
	calls     map[string]int // per payload
	failFirst int            // transient failures before a success, per payload
	failWhile func() bool    // fail transiently while it returns true
	refuse    string         // topic refused for good
	onCall    func(pk packets.Packet)
}

func newRecorder() *recorder { return &recorder{calls: map[string]int{}} }

func (r *recorder) publish(ctx context.Context, pk packets.Packet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[string(pk.Payload)]++
	if r.onCall != nil {
		r.onCall(pk)
	}
	if pk.TopicName == r.refuse {
		return bridge.Permanent(errors.New("not authorized"))
	}
	if r.calls[string(pk.Payload)] <= r.failFirst || (r.failWhile != nil && r.failWhile()) {
		return errors.New("local broker busy")
	}
	r.got = append(r.got, pk)
	return nil
}

// wait returns the first published packet with payload, waiting up to 10 s.
func (r *recorder) wait(t testing.TB, payload string) packets.Packet {
	t.Helper()
	var got packets.Packet
	eventually(t, 10*time.Second, "a local publish of "+payload, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, pk := range r.got {
			if string(pk.Payload) == payload {
				got = pk
				return true
			}
		}
		return false
	})
	return got
}

func (r *recorder) published(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, pk := range r.got {
		if bytes.Equal(pk.Payload, []byte(payload)) {
			n++
		}
	}
	return n
}

func (r *recorder) callsOf(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[payload]
}

// remoteBroker is an in-process mochi broker playing the remote; it can
// stop and start again on the same port.
type remoteBroker struct {
	t      testing.TB
	addr   string
	tls    *tls.Config
	hooks  []mochi.Hook
	server *mochi.Server
}

// startMochi starts a plain mochi broker (allow-all auth, or hooks) on
// 127.0.0.1:0.
func startMochi(t testing.TB, tlsConfig *tls.Config, hooks ...mochi.Hook) *remoteBroker {
	t.Helper()
	r := &remoteBroker{t: t, addr: "127.0.0.1:0", tls: tlsConfig, hooks: hooks}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *remoteBroker) start() {
	r.t.Helper()
	s := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if len(r.hooks) == 0 {
		if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
			r.t.Fatal(err)
		}
	}
	for _, h := range r.hooks {
		if err := s.AddHook(h, nil); err != nil {
			r.t.Fatal(err)
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: r.addr, TLSConfig: r.tls})
	// The port of a stopped broker may take a moment to be free again.
	var err error
	for i := 0; i < 100; i++ {
		if err = s.AddListener(l); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("remote broker listen on %s: %v", r.addr, err)
	}
	if err := s.Serve(); err != nil {
		r.t.Fatal(err)
	}
	r.addr = l.Address()
	r.server = s
}

func (r *remoteBroker) stop() {
	if r.server != nil {
		_ = r.server.Close()
		r.server = nil
	}
}

func (r *remoteBroker) url() string { return "tcp://" + r.addr }

// inflight is how many messages the remote has sent client id and not had
// acknowledged.
func (r *remoteBroker) inflight(id string) int {
	cl, ok := r.server.Clients.Get(id)
	if !ok {
		return -1
	}
	return cl.State.Inflight.Len()
}

// kick disconnects client id from the remote's side (its session stays).
func (r *remoteBroker) kick(t testing.TB, id string) {
	t.Helper()
	cl, ok := r.server.Clients.Get(id)
	if !ok {
		t.Fatalf("remote has no client %s", id)
	}
	_ = r.server.DisconnectClient(cl, packets.ErrAdministrativeAction)
}

// proxy forwards TCP connections to a target; down cuts them and refuses
// new ones, up listens again on the same address.
type proxy struct {
	t      testing.TB
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	p := &proxy{t: t, addr: "127.0.0.1:0", target: target}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(u, c); _ = u.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, u); _ = c.Close() })
		}
	})
}

func (p *proxy) down() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) url() string { return "tcp://" + p.addr }

// msg is a local message as the bridge package hands it to Send.
func msg(topic, payload string, qos byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     []byte(payload),
		Created:     time.Now().Unix(),
	}
}

func send(t testing.TB, b *Bridge, pks ...packets.Packet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Send(ctx, pks); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// tlsKeyPair is the server side of pki.
func tlsKeyPair(pki testpki.PKI) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
