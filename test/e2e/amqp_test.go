package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// amqpURL is the RabbitMQ of the tests (the README's test command makes
// sure it runs); MOTE_TEST_AMQP_URL overrides it.
func amqpURL() string {
	if u := os.Getenv("MOTE_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// rabbit is a test's own connection to RabbitMQ with a confirming channel.
type rabbit struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func dialRabbit(t *testing.T) *rabbit {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL(), amqp.Config{Properties: amqp.Table{"connection_name": "mote-e2e-" + t.Name()}})
	if err != nil {
		t.Fatalf("RabbitMQ at %s: %v (the README's test command starts it)", amqpURL(), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rabbit{conn, ch}
}

// unique names things so that parallel runs do not meet.
func unique(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// closeAMQPConnections force-closes, server side, every connection whose
// client properties mention name (the bridge's connection_name carries the
// bridge name), as `rabbitmqctl close_connection` does for an operator.
func closeAMQPConnections(t *testing.T, name string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "-s", "list_connections", "pid", "client_properties").Output()
	if err != nil {
		return 0, fmt.Errorf("rabbitmqctl list_connections: %w", err)
	}
	closed := 0
	for _, line := range strings.Split(string(out), "\n") {
		pid, props, ok := strings.Cut(line, "\t")
		if !ok || !strings.Contains(props, name) {
			continue
		}
		if out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "close_connection", pid, "mote e2e test").CombinedOutput(); err != nil {
			t.Logf("close_connection %s: %v %s", pid, err, out)
			continue
		}
		closed++
	}
	return closed, nil
}

// closeDuring runs flood while it force-closes the bridge's connections
// once the flood is under way.
func closeDuring(t *testing.T, name string, flood func()) {
	t.Helper()
	done := make(chan struct{})
	result := make(chan string, 1)
	go func() {
		select {
		case <-done:
			result <- "the flood ended before the connection was closed"
			return
		case <-time.After(150 * time.Millisecond):
		}
		n, err := closeAMQPConnections(t, name)
		result <- fmt.Sprintf("closed %d bridge connection(s) during the flood (error: %v)", n, err)
	}()
	flood()
	close(done)
	t.Log(<-result)
}

// 5,000 QoS 1 messages go MQTT → AMQP while RabbitMQ closes the bridge's
// connection twice and the broker is SIGKILLed once: every acknowledged
// message reaches the bound queue at least once.
func TestKill9AMQPBridge(t *testing.T) {
	r := dialRabbit(t)
	exchange, queue, name := unique("mote.e2e.x"), unique("mote-e2e-q"), unique("rabbit")
	if err := r.ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = r.ch.QueueDelete(queue, false, false, false)
		_ = r.ch.ExchangeDelete(exchange, false, false)
	})
	if err := r.ch.QueueBind(queue, "orders.#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}

	c := NewChecker()
	deliveries, err := r.ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for d := range deliveries {
			c.Delivered(d.Body)
		}
	}()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "mote.yaml")
	yaml := fmt.Sprintf(`bridges:
  - name: %s
    type: amqp
    filters: ["orders/#"]
    concurrency: 2
    batch_size: 50
    max_attempts: 100000
    backoff_min: 20ms
    backoff_max: 300ms
    breaker_cooldown: 300ms
    amqp:
      url: %q
      exchange: {name: %s, type: topic, declare: true}
`, name, amqpURL(), exchange)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p := brokertest.Spawn(t, moteBin, data, "--config", cfg)

	const n = 5000
	closeDuring(t, name, func() { Flood(t, p.Addr(broker.ListenerMQTT), "orders/a", 2, 1500, c) })
	Flood(t, p.Addr(broker.ListenerMQTT), "orders/b", 2, 1000, c)
	p.Kill()
	p = brokertest.Spawn(t, moteBin, data, "--config", cfg)
	closeDuring(t, name, func() { Flood(t, p.Addr(broker.ListenerMQTT), "orders/c", 2, 1500, c) })
	Flood(t, p.Addr(broker.ListenerMQTT), "orders/d", 2, 1000, c)

	deadline := time.Now().Add(90 * time.Second)
	for c.Report().Lost != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("RabbitMQ is missing messages: %v", c.Report())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep := c.Report()
	t.Logf("MQTT → AMQP across two connection closes and a kill -9: %v", rep)
	if rep.OK != n {
		t.Fatalf("acknowledged %d of %d", rep.OK, n)
	}
}

// AMQP → MQTT: messages published to an exchange reach a persistent MQTT
// session across a broker SIGKILL (the bridge acks RabbitMQ only once the
// broker stored a message), and a message whose routing key makes no valid
// topic is rejected to the queue's dead-letter exchange, not requeued.
func TestKill9AMQPInbound(t *testing.T) {
	r := dialRabbit(t)
	exchange, dlx := unique("mote.e2e.in"), unique("mote.e2e.dlx")
	queue, dlq, name := unique("mote-e2e-in"), unique("mote-e2e-dlq"), unique("rabbit-in")
	for _, x := range []struct{ name, kind string }{{exchange, "topic"}, {dlx, "fanout"}} {
		if err := r.ch.ExchangeDeclare(x.name, x.kind, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.ch.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// The bridge declares its queue too (the same way); declared here as
	// well so that nothing published before the bridge connects is lost.
	if _, err := r.ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-dead-letter-exchange": dlx}); err != nil {
		t.Fatal(err)
	}
	if err := r.ch.QueueBind(queue, "cmd.#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range []string{queue, dlq} {
			_, _ = r.ch.QueueDelete(q, false, false, false)
		}
		for _, x := range []string{exchange, dlx} {
			_ = r.ch.ExchangeDelete(x, false, false)
		}
	})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "mote.yaml")
	yaml := fmt.Sprintf(`bridges:
  - name: %s
    type: amqp
    amqp:
      url: %q
      reconnect_min: 20ms
      reconnect_max: 300ms
      in:
        - queue: %s
          declare: true
          dead_letter_exchange: %s
          bindings: [{exchange: %s, key: "cmd.#"}]
          qos: 1
          prefetch: 50
`, name, amqpURL(), queue, dlx, exchange)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	p := brokertest.Spawn(t, moteBin, data, "--config", cfg)

	o := brokertest.Options{ID: "amqp-sub", SessionExpiry: 3600, Session: state.NewInMemory()}
	sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	sub.Sub(t, 1, "cmd/#")
	sub.Close() // offline: everything is queued for the session

	c := NewChecker()
	publish := func(key string, body []byte) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conf, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			t.Fatalf("publish to RabbitMQ: %v", err)
		}
		ok, err := conf.WaitContext(ctx)
		return err == nil && ok
	}
	const n = 2000
	for i := range uint64(n) {
		if i == n/2 {
			p.Kill()
			p = brokertest.Spawn(t, moteBin, data, "--config", cfg)
		}
		c.Sent("amqp", i, publish(fmt.Sprintf("cmd.dev%d", i%3), Payload("amqp", i)))
	}
	// A routing key that maps to a topic with a wildcard: refused.
	if !publish("cmd.bad+key", []byte("poison")) {
		t.Fatal("RabbitMQ did not confirm the poison message")
	}

	sub = brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	stop := Collect(c, sub.Inbox)
	deadline := time.Now().Add(60 * time.Second)
	for c.Report().Lost != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if rep := c.Report(); rep.Lost != 0 || rep.OK != n {
		t.Fatalf("AMQP → MQTT across kill -9: %v", rep)
	}
	t.Logf("AMQP → MQTT across kill -9: %v", c.Report())

	// The poison message is in the dead-letter queue, not in the bridge's.
	deadline = time.Now().Add(20 * time.Second)
	for {
		d, ok, err := r.ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(d.Body) != "poison" {
				t.Fatalf("dead-letter queue holds %q", d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refused message did not reach the dead-letter exchange")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
