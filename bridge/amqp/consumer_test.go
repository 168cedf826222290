package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/motemq/mote/bridge"
)

// fast reconnects for tests.
func consumerCfg() Config {
	return Config{URL: amqpURL(), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
}

// startConsumer starts a Consumer, stopped at cleanup.
func startConsumer(t testing.TB, name string, cfg Config, in Inbound, publish bridge.Publish, log *slog.Logger) *Consumer {
	t.Helper()
	cfg.In = []Inbound{in}
	c, err := NewConsumer(name, cfg, in, publish, log)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

func waitConnected(t testing.TB, c *Consumer) {
	t.Helper()
	eventually(t, 10*time.Second, "the consumer to connect", func() bool { return c.Status().Connected })
}

// The consumer declares its queue (with the dead-letter exchange) and
// bindings, and turns deliveries into MQTT messages: mapped topic, headers
// as user properties, reply-to as response topic, correlation id as
// correlation data, expiration as message expiry.
func TestConsumerDeclaresBindsAndPublishes(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, dlx, q := uniq(t, "ex"), uniq(t, "dlx"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.cleanupQueue(q)
	rec := &recorder{}
	c := startConsumer(t, "decl", consumerCfg(), Inbound{
		Queue: q, Declare: true, Durable: ptr(false), DeadLetterExchange: dlx,
		Arguments: map[string]any{"x-max-length": 1000},
		Bindings:  []Binding{{Exchange: ex, Key: FilterToBindingKey("sensors/#")}},
	}, rec.publish, discard)
	waitConnected(t, c)
	r.must("inspect the declared queue", func(ch *amqp.Channel) error {
		// A passive declare does not check arguments; an active one with
		// the same arguments succeeds only if they match.
		_, err := ch.QueueDeclare(q, false, false, false, false, amqp.Table{"x-max-length": int32(1000), "x-dead-letter-exchange": dlx})
		return err
	})

	r.publish(ex, "sensors.1/5.temp", amqp.Publishing{
		Body: []byte("21.5"), ContentType: "text/plain", CorrelationId: "req-1", ReplyTo: "replies.dev-7",
		Expiration: "1500", Headers: amqp.Table{"unit": "C", "n": int32(5), "tags": []any{"a", "b"}},
	})
	r.publish(ex, "other.key", amqp.Publishing{Body: []byte("not bound")})
	eventually(t, 10*time.Second, "one message", func() bool { return len(rec.packets()) == 1 })
	pk := rec.packets()[0]
	if pk.TopicName != "sensors/1.5/temp" || string(pk.Payload) != "21.5" || pk.FixedHeader.Qos != 1 || pk.FixedHeader.Retain ||
		pk.FixedHeader.Type != packets.Publish {
		t.Errorf("packet %+v", pk)
	}
	p := pk.Properties
	wantUser := []packets.UserProperty{{Key: "n", Val: "5"}, {Key: "tags", Val: "a"}, {Key: "tags", Val: "b"}, {Key: "unit", Val: "C"}}
	if p.ContentType != "text/plain" || string(p.CorrelationData) != "req-1" || p.ResponseTopic != "replies/dev-7" ||
		p.MessageExpiryInterval != 2 || !slices.Equal(p.User, wantUser) {
		t.Errorf("properties %+v", p)
	}
	st := c.Status()
	if st.Queue != q || !st.Connected || st.Consumed != 1 || st.Published != 1 || st.Rejected != 0 || st.Requeued != 0 {
		t.Errorf("status %+v", st)
	}
	eventually(t, 5*time.Second, "the queue drained", func() bool { return r.count(q) == 0 })
}

// A message that came from a Mote bridge keeps its MQTT topic (the
// mqtt-topic header), whatever its routing key; a topic template overrides
// both; the other settings (QoS, retain) are the inbound entry's.
func TestConsumerTopicSources(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q1, q2 := uniq(t, "ex"), uniq(t, "q1"), uniq(t, "q2")
	r.exchange(ex, "direct")
	r.cleanupQueue(q1)
	r.cleanupQueue(q2)
	plain, tpl := &recorder{}, &recorder{}
	c1 := startConsumer(t, "topics", consumerCfg(), Inbound{Queue: q1, Declare: true, Durable: ptr(false),
		Bindings: []Binding{{Exchange: ex, Key: "k"}}, QoS: ptr(byte(0)), Retain: true}, plain.publish, discard)
	c2 := startConsumer(t, "topics-tpl", consumerCfg(), Inbound{Queue: q2, Declare: true, Durable: ptr(false),
		Bindings: []Binding{{Exchange: ex, Key: "k"}}, Topic: `in/{{exchange}}/{{queue}}/{{header "site"}}/{{key_topic}}/{{routing_key}}`},
		tpl.publish, discard)
	waitConnected(t, c1)
	waitConnected(t, c2)
	// What a Mote Sender publishes, with a templated routing key.
	pk := msg("sensors/7/temp", 1, "m")
	out, _, err := toPublishing(&pk, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out.Headers["site"] = "paris"
	r.publish(ex, "k", out)
	eventually(t, 10*time.Second, "both consumers", func() bool { return len(plain.packets()) == 1 && len(tpl.packets()) == 1 })
	got := plain.packets()[0]
	if got.TopicName != "sensors/7/temp" || got.FixedHeader.Qos != 0 || !got.FixedHeader.Retain ||
		!slices.Equal(got.Properties.User, []packets.UserProperty{{Key: "site", Val: "paris"}}) {
		t.Errorf("from a Mote bridge: %+v", got)
	}
	if got := tpl.packets()[0].TopicName; got != "in/"+ex+"/"+q2+"/paris/k/k" {
		t.Errorf("templated topic %q", got)
	}
}

// A message the broker refuses for good (here: a topic the bridge's user
// may not publish to) is rejected: it goes to the dead-letter exchange,
// not back to the queue, and the consumer carries on.
func TestConsumerPermanentRefusalDeadLetters(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, dlx, dlq, q := uniq(t, "ex"), uniq(t, "dlx"), uniq(t, "dlq"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.exchange(dlx, "fanout")
	r.queue(dlq, nil)
	r.bind(dlq, "", dlx)
	r.cleanupQueue(q)
	rec := &recorder{refuse: func(pk packets.Packet, _ int) error {
		if strings.HasPrefix(pk.TopicName, "forbidden/") {
			return bridge.Permanent(fmt.Errorf("%w: bridge may not publish to %q", bridge.ErrNotAuthorized, pk.TopicName))
		}
		return nil
	}}
	logs := &logRecorder{}
	c := startConsumer(t, "refuse", consumerCfg(), Inbound{Queue: q, Declare: true, Durable: ptr(false), DeadLetterExchange: dlx,
		Bindings: []Binding{{Exchange: ex, Key: "#"}}}, rec.publish, slog.New(logs))
	waitConnected(t, c)
	r.publish(ex, "forbidden.x", amqp.Publishing{Body: []byte("no")})
	r.publish(ex, "allowed.x", amqp.Publishing{Body: []byte("yes")})
	eventually(t, 10*time.Second, "the allowed message", func() bool { return len(rec.packets()) == 1 })
	dead := r.take(dlq, 1, 10*time.Second)[0]
	if string(dead.Body) != "no" || dead.RoutingKey != "forbidden.x" {
		t.Fatalf("dead letter %+v", dead)
	}
	if reason := headerString(dead.Headers["x-first-death-reason"]); reason != "rejected" {
		t.Errorf("death reason %q", reason)
	}
	st := c.Status()
	if st.Rejected != 1 || st.Published != 1 || st.Consumed != 2 || st.Requeued != 0 || !strings.Contains(st.LastError, "not authorized") {
		t.Errorf("status %+v", st)
	}
	if !logs.has("rejected") || !logs.has("forbidden/x") {
		t.Errorf("no warning about the rejection: %v", logs.msgs)
	}
	if p := rec.payloads(); !slices.Equal(p, []string{"yes"}) {
		t.Errorf("published %v", p)
	}
}

// A transient error (the broker shutting down) requeues the message, which
// comes again after a backoff; the queue's order is kept: the messages
// behind it are not published before it.
func TestConsumerTransientErrorRequeuesInOrder(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	q := uniq(t, "q")
	r.queue(q, nil)
	var failures atomic.Int32
	rec := &recorder{refuse: func(pk packets.Packet, _ int) error {
		if string(pk.Payload) == "m1" && failures.Add(1) <= 2 {
			return bridge.ErrStopped
		}
		return nil
	}}
	for i := range 5 {
		r.publish("", q, amqp.Publishing{Body: []byte(fmt.Sprintf("m%d", i))})
	}
	c := startConsumer(t, "transient", consumerCfg(), Inbound{Queue: q}, rec.publish, discard)
	eventually(t, 10*time.Second, "all five messages", func() bool { return len(rec.packets()) == 5 })
	if p := rec.payloads(); !slices.Equal(p, []string{"m0", "m1", "m2", "m3", "m4"}) {
		t.Fatalf("order %v", p)
	}
	st := c.Status()
	if st.Requeued != 2 || st.Published != 5 || st.Rejected != 0 || !strings.Contains(st.LastError, "shutting down") {
		t.Errorf("status %+v", st)
	}
	if got := rec.packets()[0].TopicName; got != KeyToTopic(q) {
		t.Errorf("topic from the default exchange %q", got)
	}
}

// When RabbitMQ closes the consumer's connection, the consumer reconnects
// and continues: every message arrives (a message whose ack was lost may
// come twice; none is lost).
func TestConsumerReconnectsAfterConnectionKilled(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	q := uniq(t, "q")
	r.queue(q, nil)
	rec := &recorder{}
	name := uniq(t, "bridge")
	c := startConsumer(t, name, consumerCfg(), Inbound{Queue: q, Prefetch: 5}, rec.publish, discard)
	waitConnected(t, c)
	var want []string
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			body := fmt.Sprintf("m%03d", i)
			want = append(want, body)
			r.publish("", q, amqp.Publishing{Body: []byte(body)})
		}
	}
	publish(0, 20)
	killConnection(t, ConsumerConnectionName(name, q))
	publish(20, 40)
	eventually(t, 20*time.Second, "every message", func() bool {
		got := map[string]bool{}
		for _, p := range rec.payloads() {
			got[p] = true
		}
		return len(got) == len(want)
	})
	st := c.Status()
	if !strings.Contains(st.LastError, "CONNECTION_FORCED") || st.LastErrorAt.IsZero() {
		t.Errorf("status %+v", st)
	}
	waitConnected(t, c)
	if n := r.count(q); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

// A queue that does not exist (and is not declared) is an error the
// consumer reports and keeps retrying, without spinning; Stop ends it.
func TestConsumerMissingQueue(t *testing.T) {
	t.Parallel()
	q := uniq(t, "q")
	logs := &logRecorder{}
	c := startConsumer(t, "missing", consumerCfg(), Inbound{Queue: q}, (&recorder{}).publish, slog.New(logs))
	eventually(t, 10*time.Second, "an error", func() bool { return c.Status().LastError != "" })
	st := c.Status()
	if st.Connected || !strings.Contains(st.LastError, "404") || !strings.Contains(st.LastError, "declare: true") {
		t.Fatalf("status %+v", st)
	}
	if !logs.has("reconnecting") {
		t.Errorf("logs %v", logs.msgs)
	}
}

// Stop gives up the message being published (publish sees its context
// cancelled), leaves it in the queue, returns, and leaks no goroutine.
// Not parallel: it checks every goroutine of the process.
func TestConsumerStopReturnsUnackedAndLeaksNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs last, after the test's connection closed
	r := newRabbit(t)
	q := uniq(t, "q")
	r.queue(q, nil)
	r.publish("", q, amqp.Publishing{Body: []byte("held")})
	inPublish := make(chan struct{})
	var once atomic.Bool
	publish := func(ctx context.Context, pk packets.Packet) error {
		if once.CompareAndSwap(false, true) {
			close(inPublish)
		}
		<-ctx.Done() // a broker that never makes the message durable
		return errors.Join(bridge.ErrStopped, ctx.Err())
	}
	c, err := NewConsumer("stop", consumerCfg(), Inbound{Queue: q}, publish, discard)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	select {
	case <-inPublish:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	stopped := make(chan struct{})
	go func() { c.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
	c.Stop()  // idempotent
	c.Start() // no effect after Stop
	if st := c.Status(); st.Connected || st.Published != 0 || st.Requeued != 1 {
		t.Errorf("status %+v", st)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; string(d.Body) != "held" || !d.Redelivered {
		t.Errorf("message after Stop: %q redelivered %v", d.Body, d.Redelivered)
	}
}

// A queue deleted under the consumer cancels it; the consumer reconnects,
// declares the queue again and binds it, and consumes what comes next.
func TestConsumerQueueDeletedIsDeclaredAgain(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "direct")
	r.cleanupQueue(q)
	rec := &recorder{}
	c := startConsumer(t, "deleted", consumerCfg(), Inbound{Queue: q, Declare: true, Durable: ptr(false),
		Bindings: []Binding{{Exchange: ex, Key: "k"}}}, rec.publish, discard)
	waitConnected(t, c)
	r.must("delete the queue", func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err })
	eventually(t, 10*time.Second, "the cancellation", func() bool { return strings.Contains(c.Status().LastError, "cancelled") })
	waitConnected(t, c)
	r.publish(ex, "k", amqp.Publishing{Body: []byte("after")})
	eventually(t, 10*time.Second, "the message", func() bool { return slices.Equal(rec.payloads(), []string{"after"}) })
}
