package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// The webhook target is down (first refusing connections, then answering
// 500) while 2,000 QoS 1 messages are published on two topics and the broker
// is SIGKILLed and restarted. When the target recovers it has every
// acknowledged message at least once, each topic in order.
func TestKill9WebhookOutage(t *testing.T) {
	// A port nobody listens on yet: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := l.Addr().String()
	_ = l.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "mote.yaml")
	yaml := fmt.Sprintf(`bridges:
  - name: sink
    type: http
    filters: ["orders/#"]
    url: "http://%s/in"
    body: json
    max_attempts: 100000
    backoff_min: 20ms
    backoff_max: 200ms
    breaker_failures: 5
    breaker_cooldown: 200ms
`, target)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p := brokertest.Spawn(t, moteBin, data, "--config", cfg)

	c := NewChecker()
	const n = 2000
	pub, err := brokertest.ConnectV5(context.Background(), p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(from, to uint64) {
		for i := from; i < to; i++ {
			topic := fmt.Sprintf("orders/%d", i%2)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := pub.Pub(ctx, topic, Payload(topic, i), 1, false)
			cancel()
			ok := err == nil && (r == nil || r.ReasonCode < 0x80)
			c.Sent(topic, i, ok)
			if !ok {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	publish(0, n/2)

	// Target now answers 500; the broker dies with its outbox full.
	var mu sync.Mutex
	var order = map[string][]uint64{}
	var up atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var env struct{ Topic, Payload string }
		var raw map[string]any
		if err := json.Unmarshal(b, &raw); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		env.Topic, _ = raw["topic"].(string)
		env.Payload, _ = raw["payload"].(string)
		pl := []byte(env.Payload)
		if raw["payload_encoding"] == "base64" {
			pl = decodeB64(env.Payload)
		}
		c.Delivered(pl)
		if _, seq, err := Decode(pl); err == nil {
			mu.Lock()
			order[env.Topic] = append(order[env.Topic], seq)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	ln, err := net.Listen("tcp", target)
	if err != nil {
		t.Fatalf("listen on the target address again: %v", err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	p.Kill()
	pub.Drop()
	p = brokertest.Spawn(t, moteBin, data, "--config", cfg)
	pub, err = brokertest.ConnectV5(context.Background(), p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	if err != nil {
		t.Fatal(err)
	}
	publish(n/2, n)
	up.Store(true)

	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.Report()
		if r.Lost == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target recovered but is missing messages: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after the outage and kill -9: %v", c.Report())
	mu.Lock()
	defer mu.Unlock()
	for topic, seqs := range order {
		seen := map[uint64]bool{}
		var last uint64
		first := true
		for _, s := range seqs {
			if seen[s] {
				continue // an at-least-once repeat
			}
			seen[s] = true
			if !first && s < last {
				t.Fatalf("topic %s: %d delivered after %d", topic, s, last)
			}
			last, first = s, false
		}
	}
}

func decodeB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}
