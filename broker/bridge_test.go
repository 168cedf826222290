package broker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// webhookEndpoint is a real HTTP server that answers with status() and
// records the bodies it accepted (2xx).
type webhookEndpoint struct {
	*httptest.Server
	status atomic.Int64
	calls  atomic.Int64
	mu     sync.Mutex
	bodies []string
}

func newEndpoint(t *testing.T) *webhookEndpoint {
	e := &webhookEndpoint{}
	e.status.Store(200)
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e.calls.Add(1)
		st := int(e.status.Load())
		if st/100 == 2 {
			e.mu.Lock()
			e.bodies = append(e.bodies, string(b))
			e.mu.Unlock()
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *webhookEndpoint) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.bodies...)
}

func (e *webhookEndpoint) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.got()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("webhook received %d of %d messages: %v", len(e.got()), n, e.got())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e.got()
}

func webhookBridge(url string) func(*broker.Config) {
	return func(c *broker.Config) {
		c.Bridges = []broker.BridgeConfig{{
			Name: "hooks", Type: "http", Filters: []string{"events/#"}, URL: url + "/in/{{level 1}}", Body: "json",
			BackoffMin: broker.Duration(10 * time.Millisecond), BackoffMax: broker.Duration(50 * time.Millisecond),
			MaxAttempts: 1000, BreakerFailures: 100, // retried until the test lets it through
		}}
	}
}

func TestWebhookBridge(t *testing.T) {
	ep := newEndpoint(t)
	b := brokertest.Start(t, webhookBridge(ep.URL))
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "dev-1", Clean: true})

	t.Run("delivered", func(t *testing.T) {
		pub.MustPub(t, "events/door", []byte("open"), 1, false)
		pub.MustPub(t, "other/door", []byte("not matched"), 1, false)
		got := ep.wait(t, 1)
		var env map[string]any
		if err := json.Unmarshal([]byte(got[0]), &env); err != nil {
			t.Fatal(err)
		}
		if env["topic"] != "events/door" || env["payload"] != "open" || env["client_id"] != "dev-1" || env["qos"] != 1.0 {
			t.Fatalf("envelope %v", env)
		}
	})

	t.Run("retried until accepted", func(t *testing.T) {
		ep.status.Store(503)
		before := ep.calls.Load()
		pub.MustPub(t, "events/window", []byte("closed"), 1, false)
		for ep.calls.Load() < before+2 {
			time.Sleep(5 * time.Millisecond)
		}
		ep.status.Store(200)
		ep.wait(t, 2)
	})

	t.Run("refused goes to the dead letters", func(t *testing.T) {
		dead := brokertest.MustV5(t, addr, brokertest.Options{ID: "dead-watch", Clean: true})
		dead.Sub(t, 1, "$bridge/hooks/dead")
		events := brokertest.MustV5(t, addr, brokertest.Options{ID: "event-watch", Clean: true})
		events.Sub(t, 0, "$events/bridge/error")
		ep.status.Store(400)
		pub.MustPub(t, "events/bad", []byte("rejected"), 1, false)
		// The failure is also an event, for rules and operators.
		ev := events.Next(t, 10*time.Second)
		var e map[string]any
		if err := json.Unmarshal(ev.Payload, &e); err != nil || e["event"] != "bridge/error" || e["bridge"] != "hooks" ||
			e["topic"] != "events/bad" || e["dead_lettered"] != true {
			t.Fatalf("bridge error event %s (%v)", ev.Payload, err)
		}
		m := dead.Next(t, 10*time.Second)
		if string(m.Payload) != "rejected" {
			t.Fatalf("dead letter %q", m.Payload)
		}
		props := map[string]string{}
		for _, u := range m.Props.User {
			props[u.Key] = u.Value
		}
		if props["original-topic"] != "events/bad" || props["reason"] == "" || props["attempts"] != "1" {
			t.Fatalf("dead letter properties %v", props)
		}
		ep.status.Store(200)
	})

	t.Run("not sent back what came over HTTP", func(t *testing.T) {
		n := len(ep.got())
		if status, out := post(t, b, "/api/v1/publish", "application/json", `{"topic":"events/from-web","payload":"x"}`); status != 200 {
			t.Fatalf("publish API: %d %v", status, out)
		}
		pub.MustPub(t, "events/marker", []byte("m"), 1, false)
		got := ep.wait(t, n+1)
		if len(got) != n+1 || !json.Valid([]byte(got[n])) {
			t.Fatalf("webhook got %v", got[n:])
		}
		var env map[string]any
		_ = json.Unmarshal([]byte(got[n]), &env)
		if env["topic"] != "events/marker" {
			t.Fatalf("the HTTP-published message went back out over HTTP: %v", env)
		}
	})

	// The endpoint has the last body before the bridge has its answer.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := b.Bridges().Bridges()[0].Status()
		if st.Sent >= 3 && st.DeadLettered == 1 && st.Backlog == 0 && st.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The outbox is durable: messages acknowledged while the far side is down
// are sent after a broker restart.
func TestWebhookOutboxSurvivesRestart(t *testing.T) {
	ep := newEndpoint(t)
	ep.status.Store(503)
	dir := t.TempDir()
	cfg := func(c *broker.Config) {
		webhookBridge(ep.URL)(c)
		c.Bridges[0].MaxAttempts = 100
	}
	b := brokertest.StartIn(t, dir, cfg)
	pub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	for _, p := range []string{"a", "b", "c"} {
		pub.MustPub(t, "events/x", []byte(p), 1, false)
	}
	pub.Close()
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ep.got()); n != 0 {
		t.Fatalf("%d accepted while the endpoint was down", n)
	}
	ep.status.Store(200)
	brokertest.StartIn(t, dir, cfg)
	got := ep.wait(t, 3)
	for i, want := range []string{"a", "b", "c"} {
		var env map[string]any
		_ = json.Unmarshal([]byte(got[i]), &env)
		if env["payload"] != want {
			t.Fatalf("message %d: %v, want payload %q (in order)", i, env, want)
		}
	}
}

// Request/response: a message becomes an HTTP request and the answer is
// published as the reply (MQTT 5: to the response topic with the
// correlation data; MQTT 3: to reply_topic); a timeout is an error reply.
func TestRequestResponseBridge(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) == "slow" {
			time.Sleep(600 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"echo":"` + string(b) + `","path":"` + r.URL.Path + `"}`))
	}))
	t.Cleanup(svc.Close)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Bridges = []broker.BridgeConfig{{
			Name: "rpc", Type: "http", Mode: "request", Filters: []string{"rpc/#"},
			URL: svc.URL + "/svc/{{level 1}}", ReplyTopic: "{{topic}}/reply", Timeout: broker.Duration(300 * time.Millisecond),
		}}
	})
	addr := b.Addr(broker.ListenerMQTT)

	v5 := brokertest.MustV5(t, addr, brokertest.Options{ID: "caller-5", Clean: true})
	v5.Sub(t, 1, "replies/caller-5")
	ctx, cancel := contextWithTimeout(wait)
	defer cancel()
	if _, err := v5.Publish(ctx, &paho.Publish{Topic: "rpc/weather", QoS: 1, Payload: []byte("today"),
		Properties: &paho.PublishProperties{ResponseTopic: "replies/caller-5", CorrelationData: []byte("req-1")}}); err != nil {
		t.Fatal(err)
	}
	m := v5.Next(t, wait)
	status := ""
	for _, u := range m.Props.User {
		if u.Key == "status" {
			status = u.Value
		}
	}
	if string(m.Payload) != `{"echo":"today","path":"/svc/weather"}` || string(m.Props.CorrelationData) != "req-1" ||
		m.Props.ContentType != "application/json" || status != "201" {
		t.Fatalf("v5 reply %q props %+v", m.Payload, m.Props)
	}

	v3 := brokertest.MustV3(t, addr, brokertest.Options{ID: "caller-3", Clean: true})
	v3.Sub(t, 1, "rpc/lamp/reply")
	v3.MustPub(t, "rpc/lamp", []byte("on"), 1, false)
	if r := v3.Next(t, wait); string(r.Payload) != `{"echo":"on","path":"/svc/lamp"}` {
		t.Fatalf("v3 reply %q", r.Payload)
	}

	v3.MustPub(t, "rpc/lamp", []byte("slow"), 1, false)
	r := v3.Next(t, 5*time.Second)
	if !strings.Contains(string(r.Payload), "timeout") {
		t.Fatalf("timeout reply %q, want an error reply naming the timeout", r.Payload)
	}
	// The reply is out before the bridge marks the request done.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := b.Bridges().Bridges()[0].Status()
		if st.Backlog == 0 && st.InFlight == 0 && st.DeadLettered == 0 && st.Sent == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
