package amqp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The bridge test's persistence store: its background goroutine ends
		// up to a second after Close.
		goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
}

var discard = slog.New(slog.DiscardHandler)

// amqpURL is the RabbitMQ the tests use.
func amqpURL() string {
	if u := os.Getenv("MOTE_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// rabbitmqctl is the control tool of that RabbitMQ.
func rabbitmqctl() string {
	if p := os.Getenv("MOTE_TEST_RABBITMQCTL"); p != "" {
		return p
	}
	return "/usr/sbin/rabbitmqctl"
}

// uniq makes a name unique to this test run, for exchanges and queues.
func uniq(t testing.TB, what string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_")
	return "mote-test." + name + "." + what + "." + hex.EncodeToString(b)
}

// rabbit is the test's own connection to RabbitMQ, for setting up and
// checking topology with amqp091-go directly.
type rabbit struct {
	t    testing.TB
	conn *amqp.Connection
}

// newRabbit connects; an unreachable RabbitMQ fails the test.
func newRabbit(t testing.TB) *rabbit {
	t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable at %s: %v (start it, or point MOTE_TEST_AMQP_URL at one)", redactURL(amqpURL()), err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Logf("closing the test connection: %v", err)
		}
	})
	return &rabbit{t: t, conn: conn}
}

// do runs f on a fresh channel (an error closes a channel).
func (r *rabbit) do(f func(ch *amqp.Channel) error) error {
	ch, err := r.conn.Channel()
	if err != nil {
		return err
	}
	err = f(ch)
	if !ch.IsClosed() {
		if cerr := ch.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

func (r *rabbit) must(what string, f func(ch *amqp.Channel) error) {
	r.t.Helper()
	if err := r.do(f); err != nil {
		r.t.Fatalf("%s: %v", what, err)
	}
}

// exchange declares an exchange, deleted at cleanup.
func (r *rabbit) exchange(name, kind string) {
	r.t.Helper()
	r.must("declare exchange "+name, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(name, kind, false, false, false, false, nil)
	})
	r.cleanupExchange(name)
}

func (r *rabbit) cleanupExchange(name string) {
	r.t.Cleanup(func() {
		if err := r.do(func(ch *amqp.Channel) error { return ch.ExchangeDelete(name, false, false) }); err != nil {
			r.t.Logf("delete exchange %s: %v", name, err)
		}
	})
}

// queue declares a queue, deleted at cleanup.
func (r *rabbit) queue(name string, args amqp.Table) {
	r.t.Helper()
	r.must("declare queue "+name, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, false, false, false, false, args)
		return err
	})
	r.cleanupQueue(name)
}

func (r *rabbit) cleanupQueue(name string) {
	r.t.Cleanup(func() {
		if err := r.do(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(name, false, false, false); return err }); err != nil {
			r.t.Logf("delete queue %s: %v", name, err)
		}
	})
}

func (r *rabbit) bind(queue, key, exchange string) {
	r.t.Helper()
	r.must("bind "+queue, func(ch *amqp.Channel) error { return ch.QueueBind(queue, key, exchange, false, nil) })
}

// publish publishes one message with a publisher confirm.
func (r *rabbit) publish(exchange, key string, msg amqp.Publishing) {
	r.t.Helper()
	r.must("publish", func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, msg)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return &amqp.Error{Code: amqp.InternalError, Reason: "publish not confirmed"}
		}
		return nil
	})
}

// count is the number of ready messages in queue.
func (r *rabbit) count(queue string) int {
	r.t.Helper()
	var n int
	r.must("inspect "+queue, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		n = q.Messages
		return err
	})
	return n
}

// take consumes n messages from queue (acknowledging them), failing the
// test if they do not come within d.
func (r *rabbit) take(queue string, n int, d time.Duration) []amqp.Delivery {
	r.t.Helper()
	var got []amqp.Delivery
	r.must("consume "+queue, func(ch *amqp.Channel) error {
		if err := ch.Qos(500, 0, false); err != nil {
			return err
		}
		ds, err := ch.Consume(queue, "", true, false, false, false, nil)
		if err != nil {
			return err
		}
		t := time.NewTimer(d)
		defer t.Stop()
		for len(got) < n {
			select {
			case dv, ok := <-ds:
				if !ok {
					return amqp.ErrClosed
				}
				got = append(got, dv)
			case <-t.C:
				return nil
			}
		}
		return nil
	})
	if len(got) < n {
		r.t.Fatalf("queue %s: got %d messages in %s, want %d", queue, len(got), d, n)
	}
	return got
}

// takeAll consumes queue until every body of want was seen (duplicates
// allowed), failing the test with the missing ones after d.
func (r *rabbit) takeAll(queue string, want []string, d time.Duration) {
	r.t.Helper()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	r.must("consume "+queue, func(ch *amqp.Channel) error {
		if err := ch.Qos(1000, 0, false); err != nil {
			return err
		}
		ds, err := ch.Consume(queue, "", true, false, false, false, nil)
		if err != nil {
			return err
		}
		t := time.NewTimer(d)
		defer t.Stop()
		for len(missing) > 0 {
			select {
			case dv, ok := <-ds:
				if !ok {
					return amqp.ErrClosed
				}
				delete(missing, string(dv.Body))
			case <-t.C:
				return nil
			}
		}
		return nil
	})
	if len(missing) > 0 {
		lost := slices.Sorted(maps.Keys(missing))
		r.t.Fatalf("queue %s: %d of %d messages lost: %.20v", queue, len(lost), len(want), lost)
	}
}

// killConnection closes, server side, the connection a client named
// connName, as an operator or a failing node would.
func killConnection(t testing.TB, connName string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The text output shows pids as close_connection takes them (the JSON
	// one does not): "<rabbit@host.1.2.0>\t[{"connection_name","…"},…]".
	want := `{"connection_name","` + connName + `"}`
	var pid string
	for pid == "" {
		out, err := exec.CommandContext(ctx, rabbitmqctl(), "-q", "list_connections", "--no-table-headers", "pid", "client_properties").Output()
		if err != nil {
			t.Fatalf("rabbitmqctl list_connections: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if p, props, ok := strings.Cut(line, "\t"); ok && strings.Contains(props, want) {
				pid = p
			}
		}
		if pid == "" {
			if ctx.Err() != nil {
				t.Fatalf("no connection named %q", connName)
			}
			time.Sleep(50 * time.Millisecond) // polling rabbitmqctl, which has no wait
		}
	}
	if out, err := exec.CommandContext(ctx, rabbitmqctl(), "-q", "close_connection", pid, "killed by "+t.Name()).CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl close_connection %q: %v: %s", pid, err, out)
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a bridge.Publish that records what it is given; refuse
// decides the outcome per message (nil: accept).
type recorder struct {
	mu     sync.Mutex
	got    []packets.Packet
	calls  int
	refuse func(pk packets.Packet, call int) error
}

func (r *recorder) publish(ctx context.Context, pk packets.Packet) error {
	r.mu.Lock()
	r.calls++
	call := r.calls
	refuse := r.refuse
	r.mu.Unlock()
	if refuse != nil {
		if err := refuse(pk, call); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	r.got = append(r.got, pk)
	r.mu.Unlock()
	return nil
}

func (r *recorder) packets() []packets.Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) payloads() []string {
	var out []string
	for _, pk := range r.packets() {
		out = append(out, string(pk.Payload))
	}
	return out
}

// logRecorder is a slog handler keeping the messages of records at
// Warn and above.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// proxy relays TCP connections to RabbitMQ so that a test can stall and
// cut them as a network would.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	tls    *tls.Config

	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{} // closed: RabbitMQ's bytes flow; open: they are held
	wg    sync.WaitGroup
}

// newProxy listens on 127.0.0.1:0; it stops at cleanup.
func newProxy(t testing.TB) *proxy { return newTLSProxy(t, nil) }

// newTLSProxy is a proxy that terminates TLS (amqps://) with tlsCfg, in
// front of a RabbitMQ without TLS.
func newTLSProxy(t testing.TB, tlsCfg *tls.Config) *proxy {
	t.Helper()
	u, err := url.Parse(amqpURL())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: u.Host, gate: make(chan struct{}), tls: tlsCfg}
	close(p.gate)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close() // ends accept
		p.cut()
		p.wg.Wait()
	})
	return p
}

// url is the RabbitMQ URL through the proxy.
func (p *proxy) url() string {
	u, err := url.Parse(amqpURL())
	if err != nil {
		p.t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	if p.tls != nil {
		u.Scheme = "amqps"
	}
	return u.String()
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.tls != nil {
			c = tls.Server(c, p.tls) // handshakes on the first read
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.relay(s, c, true) })  // client → RabbitMQ
		p.wg.Go(func() { p.relay(c, s, false) }) // RabbitMQ → client
	}
}

// relay copies from src to dst; RabbitMQ's side (fromServer) waits at the
// gate.
func (p *proxy) relay(dst, src net.Conn, fromClient bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !fromClient {
				p.mu.Lock()
				gate := p.gate
				p.mu.Unlock()
				<-gate
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold stops relaying what RabbitMQ sends (confirms, closes) until cut.
func (p *proxy) hold() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

// cut closes every relayed connection, as a failing network would, and
// opens the gate for the connections to come.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close() // the relays end on the error
	}
	p.conns = nil
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}
