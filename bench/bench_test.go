package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	amqpbridge "github.com/motemq/mote/bridge/amqp"
	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// startBroker starts a Mote broker (in this process, on 127.0.0.1:0, fsync
// always) and returns its mqtt:// URL, the broker, and a function that stops
// it early. Bench tests run against Mote rather than plain mochi because
// plain mochi v2.7.9 deadlocks under sustained QoS 1 fan-out (a subscriber's
// lock is held in a blocked write); that is one of the holes Mote closes.
func startBroker(tb testing.TB) (string, *broker.Broker, func()) {
	tb.Helper()
	b := brokertest.Start(tb)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	}
	return "mqtt://" + b.Addr(broker.ListenerMQTT), b, stop
}

// testConfig is a short run of scenario against url.
func testConfig(scenario, url string, protocol int) Config {
	c := DefaultConfig(scenario)
	c.URL = url
	c.Protocol = protocol
	c.Duration = time.Second
	c.Drain = 10 * time.Second // an upper bound: the drain ends as soon as everything arrived
	c.Hold = 300 * time.Millisecond
	return c
}

// run runs cfg, fails the test on error, and checks that Run left no
// goroutine behind (the broker's own, started before, are ignored).
func run(t *testing.T, cfg Config) Result {
	t.Helper()
	before := goleak.IgnoreCurrent()
	res, err := Run(t.Context(), cfg, testLog{t})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	goleak.VerifyNone(t, before)
	return res
}

// testLog sends Run's progress lines to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func protocols() []int { return []int{4, 5} }

func protoName(p int) string {
	if p == 5 {
		return "v5"
	}
	return "v311"
}

// checkLatency asserts the latency summary is consistent.
func checkLatency(t *testing.T, l Latency, wantCount uint64) {
	t.Helper()
	if l.Count != wantCount {
		t.Errorf("latency count = %d, want %d (one per delivery)", l.Count, wantCount)
	}
	if l.Count == 0 {
		return
	}
	if !(0 <= l.Min && l.Min <= l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latency not ordered: min %v p50 %v p95 %v p99 %v max %v", l.Min, l.P50, l.P95, l.P99, l.Max)
	}
	if l.Mean < l.Min || l.Mean > l.Max {
		t.Errorf("latency mean %v outside [%v, %v]", l.Mean, l.Min, l.Max)
	}
	if l.Max > time.Minute {
		t.Errorf("latency max %v: timestamps are broken", l.Max)
	}
}

func TestPubSub(t *testing.T) {
	url, _, _ := startBroker(t)
	tests := []struct {
		name       string
		mode       string
		pubs, subs int
		qos        byte
		rate       float64
	}{
		// QoS 0 has no flow control, so it is paced to keep loss out of the picture.
		{name: "fanout-qos0", mode: ModeFanOut, pubs: 1, subs: 3, qos: 0, rate: 2000},
		{name: "fanout-qos1", mode: ModeFanOut, pubs: 1, subs: 3, qos: 1},
		{name: "fanout-qos2", mode: ModeFanOut, pubs: 1, subs: 3, qos: 2},
		// Fan-in multiplies each subscriber's load by the publishers: paced so
		// that the subscribers keep up and no session queue overflows.
		{name: "fanin-qos1", mode: ModeFanIn, pubs: 3, subs: 2, qos: 1, rate: 2000},
		{name: "pairs-qos1", mode: ModePairs, pubs: 3, subs: 3, qos: 1},
	}
	for _, proto := range protocols() {
		for _, tt := range tests {
			t.Run(protoName(proto)+"/"+tt.name, func(t *testing.T) {
				cfg := testConfig(ScenarioPubSub, url, proto)
				cfg.TopicMode, cfg.Pubs, cfg.Subs, cfg.QoS, cfg.Rate = tt.mode, tt.pubs, tt.subs, tt.qos, tt.rate
				m := run(t, cfg).Messages
				if m == nil {
					t.Fatal("no message stats")
				}
				t.Logf("sent %d (%.0f/s) received %d (%.0f/s) p50 %v p99 %v", m.Sent, m.SendRate, m.Received, m.ReceiveRate, m.Latency.P50, m.Latency.P99)
				if m.Sent == 0 || m.SendRate <= 0 {
					t.Fatalf("sent %d at %.0f/s, want > 0", m.Sent, m.SendRate)
				}
				want := m.Sent * uint64(tt.subs)
				if tt.mode == ModePairs {
					want = m.Sent
				}
				if m.Expected != want {
					t.Errorf("expected = %d, want %d", m.Expected, want)
				}
				if m.Received != want || m.Lost != 0 || m.Duplicates != 0 {
					t.Errorf("received %d lost %d duplicates %d, want %d/0/0", m.Received, m.Lost, m.Duplicates, want)
				}
				if m.OutOfOrder != 0 || m.Unacked != 0 || m.Rejected != 0 || m.Foreign != 0 {
					t.Errorf("out of order %d unacked %d rejected %d foreign %d, want 0", m.OutOfOrder, m.Unacked, m.Rejected, m.Foreign)
				}
				if !m.DrainComplete {
					t.Error("drain incomplete")
				}
				if tt.rate > 0 && float64(m.Sent) > tt.rate*cfg.Duration.Seconds()*float64(tt.pubs)*1.05+1 {
					t.Errorf("sent %d in %v at --rate %g: pacing broken", m.Sent, cfg.Duration, tt.rate)
				}
				checkLatency(t, m.Latency, m.Received)
			})
		}
	}
}

func TestLatency(t *testing.T) {
	url, _, _ := startBroker(t)
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			cfg := testConfig(ScenarioLatency, url, proto)
			cfg.Rate = 1000
			m := run(t, cfg).Messages
			t.Logf("sent %d p50 %v p99 %v", m.Sent, m.Latency.P50, m.Latency.P99)
			if cfg.QoS != 1 || m.Publishers != 1 || m.Subscribers != 1 {
				t.Errorf("latency ran qos %d with %d/%d clients, want QoS 1 with 1/1", cfg.QoS, m.Publishers, m.Subscribers)
			}
			// Paced at 1000/s for 1s: allow for a slow start under -race, never more.
			if m.Sent < 500 || m.Sent > 1010 {
				t.Errorf("sent %d, want about 1000", m.Sent)
			}
			if m.Lost != 0 || m.Received != m.Sent {
				t.Errorf("received %d of %d (lost %d)", m.Received, m.Sent, m.Lost)
			}
			checkLatency(t, m.Latency, m.Received)
		})
	}
}

func TestQueue(t *testing.T) {
	url, _, _ := startBroker(t)
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			cfg := testConfig(ScenarioQueue, url, proto)
			cfg.Pubs, cfg.Subs = 2, 3
			m := run(t, cfg).Messages
			t.Logf("sent %d received %d per consumer %v", m.Sent, m.Received, m.PerSubscriber)
			if m.Sent == 0 {
				t.Fatal("nothing sent")
			}
			if m.Expected != m.Sent || m.Received != m.Sent || m.Lost != 0 || m.Duplicates != 0 {
				t.Errorf("expected %d received %d lost %d duplicates %d for %d sent: each message must reach exactly one consumer",
					m.Expected, m.Received, m.Lost, m.Duplicates, m.Sent)
			}
			if len(m.PerSubscriber) != cfg.Subs {
				t.Fatalf("per-consumer counts %v, want %d", m.PerSubscriber, cfg.Subs)
			}
			var sum uint64
			for _, n := range m.PerSubscriber {
				sum += n
			}
			if sum != m.Received {
				t.Errorf("per-consumer counts sum to %d, want %d", sum, m.Received)
			}
			if !(0 <= m.MinShare && m.MinShare <= m.MaxShare && m.MaxShare <= 1) {
				t.Errorf("shares min %v max %v", m.MinShare, m.MaxShare)
			}
			checkLatency(t, m.Latency, m.Received)
		})
	}
}

func TestWebSocket(t *testing.T) {
	_, b, _ := startBroker(t)
	ws := "ws://" + b.Addr(broker.ListenerWS) + "/mqtt"
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			cfg := testConfig(ScenarioPubSub, ws, proto)
			cfg.QoS, cfg.Subs, cfg.Duration = 1, 2, 500*time.Millisecond
			m := run(t, cfg).Messages
			if m.Sent == 0 || m.Received != 2*m.Sent || m.Lost != 0 {
				t.Errorf("over WebSocket: sent %d received %d lost %d", m.Sent, m.Received, m.Lost)
			}
		})
	}
}

func TestConns(t *testing.T) {
	url, _, _ := startBroker(t)
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			cfg := testConfig(ScenarioConns, url, proto)
			cfg.Conns = 200
			cfg.KeepAlive = time.Second
			cfg.PID = os.Getpid() // the broker runs in this process, so this reads our own VmRSS
			res := run(t, cfg)
			s := res.Conns
			if s == nil {
				t.Fatal("no conns stats")
			}
			t.Logf("connected %d in %v; rss %d → %d", s.Connected, s.ConnectTime, s.RSSBefore, s.RSSAfter)
			if s.Requested != 200 || s.Connected != 200 || s.Failed != 0 || s.Dropped != 0 {
				t.Errorf("requested %d connected %d failed %d (%s) dropped %d, want 200/200/0/0",
					s.Requested, s.Connected, s.Failed, s.FirstError, s.Dropped)
			}
			if s.ConnectTime <= 0 || s.ConnectRate <= 0 || s.Held < cfg.Hold {
				t.Errorf("connect time %v rate %.0f held %v", s.ConnectTime, s.ConnectRate, s.Held)
			}
			if s.RSSBefore <= 0 || s.RSSAfter <= 0 {
				t.Errorf("rss before %d after %d, want both read", s.RSSBefore, s.RSSAfter)
			}
			if s.NoFileLimit < 200 {
				t.Errorf("nofile limit %d", s.NoFileLimit)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	// A port that refuses connections: bind one, then close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "mqtt://" + l.Addr().String()
	_ = l.Close()
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			_, err := Run(t.Context(), testConfig(ScenarioPubSub, url, proto), nil)
			if err == nil {
				t.Fatal("Run succeeded against a closed port")
			}
			want := "bench: subscriber 0: connect " + url + ": "
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "refused") {
				t.Errorf("error %q, want it to start with %q and say refused", err, want)
			}
			goleak.VerifyNone(t, before)
		})
	}
}

// TestBrokerGone closes the broker mid-run: Run must stop early, name the
// lost client, and still return its partial result without leaking.
func TestBrokerGone(t *testing.T) {
	for _, proto := range protocols() {
		t.Run(protoName(proto), func(t *testing.T) {
			url, _, stop := startBroker(t)
			cfg := testConfig(ScenarioPubSub, url, proto)
			cfg.QoS, cfg.Duration = 1, time.Minute
			connected := make(chan struct{})
			log := &signalWriter{match: "clients connected", ch: connected}
			before := goleak.IgnoreCurrent()
			done := make(chan struct{})
			var (
				res Result
				err error
			)
			go func() { defer close(done); res, err = Run(t.Context(), cfg, log) }()
			select {
			case <-connected:
			case <-done:
				t.Fatalf("Run returned before connecting: %v", err)
			}
			stop()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return after the broker closed")
			}
			// Whichever client notices first: a subscriber's lost connection or a
			// publisher's failed publish.
			if err == nil || !(strings.Contains(err.Error(), "connection lost") || strings.Contains(err.Error(), ": publish to ")) {
				t.Errorf("error %v, want a lost connection or a failed publish", err)
			}
			if res.Error == "" || res.Messages == nil {
				t.Errorf("partial result missing: error %q messages %v", res.Error, res.Messages)
			}
			goleak.VerifyNone(t, before)
		})
	}
}

func TestInterrupt(t *testing.T) {
	url, _, _ := startBroker(t)
	cfg := testConfig(ScenarioPubSub, url, 5)
	cfg.QoS, cfg.Duration = 1, time.Minute
	ctx, cancel := context.WithCancel(t.Context())
	connected := make(chan struct{})
	before := goleak.IgnoreCurrent()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		_, err = Run(ctx, cfg, &signalWriter{match: "clients connected", ch: connected})
	}()
	<-connected
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	goleak.VerifyNone(t, before)
}

// signalWriter closes ch the first time a write contains match.
type signalWriter struct {
	match string
	ch    chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.match) {
		w.once.Do(func() { close(w.ch) })
	}
	return len(p), nil
}

// The webhook scenario counts what the broker's http bridge posts to the
// sink, raw and batched JSON alike.
func TestWebhookScenario(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		batch int
	}{{"raw", "raw", 1}, {"json batches", "json", 20}} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			sink := l.Addr().String()
			_ = l.Close()
			b := brokertest.Start(t, func(c *broker.Config) {
				c.Bridges = []broker.BridgeConfig{{Name: "sink", Type: "http", Filters: []string{"mote-bench/#"},
					URL: "http://" + sink + "/in", Body: tc.body, BatchSize: tc.batch, BatchWait: broker.Duration(5 * time.Millisecond)}}
			})
			cfg := testConfig(ScenarioWebhook, "mqtt://"+b.Addr(broker.ListenerMQTT), 5)
			cfg.Sink = sink
			cfg.Rate = 500
			m := run(t, cfg).Messages
			if m.Sent == 0 || m.Received != m.Sent || m.Lost != 0 || m.Duplicates != 0 || !m.DrainComplete {
				t.Fatalf("sent %d received %d lost %d duplicates %d complete %v", m.Sent, m.Received, m.Lost, m.Duplicates, m.DrainComplete)
			}
		})
	}
}

func TestSinkPayloads(t *testing.T) {
	got, err := sinkPayloads([]byte(`[{"payload":"a"},{"payload":"Yg==","payload_encoding":"base64"}]`), "application/json")
	if err != nil || len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "b" {
		t.Fatalf("%q %v", got, err)
	}
	got, err = sinkPayloads([]byte("\x00raw"), "application/octet-stream")
	if err != nil || len(got) != 1 || string(got[0]) != "\x00raw" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := sinkPayloads([]byte("{"), "application/json"); err == nil {
		t.Fatal("broken JSON accepted")
	}
}

// The amqp scenario counts what the broker's amqp bridge publishes to
// RabbitMQ (the README's test command makes sure it runs).
func TestAMQPScenario(t *testing.T) {
	url := os.Getenv("MOTE_TEST_AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	exchange := fmt.Sprintf("mote.bench.test.%d", time.Now().UnixNano())
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Bridges = []broker.BridgeConfig{{Name: "rabbit", Type: "amqp", Filters: []string{"mote-bench/#"},
			Concurrency: 2, BatchSize: 50, Ordered: new(bool),
			AMQP: &amqpbridge.Config{URL: url, Exchange: amqpbridge.Exchange{Name: exchange, Type: "topic", Declare: true}}}}
	})
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(exchange, false, false)
		}
	})
	// One message first, so that the bridge's connection (which lives as
	// long as the broker) exists before run looks for leaked goroutines.
	warm := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "warm", Clean: true})
	warm.MustPub(t, "mote-bench/warm", []byte("x"), 1, false)
	deadline := time.Now().Add(10 * time.Second)
	for st := b.Bridges().Bridges()[0].Status(); st.Sent+st.DeadLettered == 0; st = b.Bridges().Bridges()[0].Status() {
		if time.Now().After(deadline) {
			t.Fatalf("the bridge sent nothing: %+v", b.Bridges().Bridges()[0].Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cfg := testConfig(ScenarioAMQP, "mqtt://"+b.Addr(broker.ListenerMQTT), 5)
	cfg.AMQPURL, cfg.Exchange = url, exchange
	cfg.Rate = 500
	m := run(t, cfg).Messages
	if m.Sent == 0 || m.Received != m.Sent || m.Lost != 0 || !m.DrainComplete {
		t.Fatalf("sent %d received %d lost %d duplicates %d complete %v", m.Sent, m.Received, m.Lost, m.Duplicates, m.DrainComplete)
	}
}
