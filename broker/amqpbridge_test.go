package broker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	amqpbridge "github.com/motemq/mote/bridge/amqp"
	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// An AMQP bridge's inbound side publishes as its configured user: what the
// ACL lets that user publish arrives, the rest is rejected to the queue's
// dead-letter exchange and counted as refused.
func TestAMQPInboundActsAsUser(t *testing.T) {
	url := os.Getenv("MOTE_TEST_AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("RabbitMQ at %s: %v (the README's test command starts it)", url, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%08x", rand.Uint32())
	exchange, dlx, queue, dlq := "mote.acl.x."+id, "mote.acl.dlx."+id, "mote-acl-q-"+id, "mote-acl-dlq-"+id
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil))
	must(ch.ExchangeDeclare(dlx, "fanout", false, true, false, false, nil))
	_, err = ch.QueueDeclare(dlq, false, true, false, false, nil)
	must(err)
	must(ch.QueueBind(dlq, "", dlx, false, nil))
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_, _ = ch.QueueDelete(dlq, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = ch.ExchangeDelete(dlx, false, false)
	})

	b := brokertest.Start(t, func(c *broker.Config) {
		c.Auth.ACL = []broker.ACLRule{
			{Permission: "allow", User: "bridge", Action: "pub", Topic: "cmd/#"},
			{Permission: "allow", Anonymous: true, Action: "all", Topic: "#"},
		}
		c.Bridges = []broker.BridgeConfig{{Name: "rabbit", Type: "amqp", Username: "bridge",
			AMQP: &amqpbridge.Config{URL: url, ReconnectMin: 20 * time.Millisecond, In: []amqpbridge.Inbound{{
				Queue: queue, Declare: true, DeadLetterExchange: dlx,
				Bindings: []amqpbridge.Binding{{Exchange: exchange, Key: "#"}},
			}}}}}
	})
	sub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "sub", Clean: true})
	sub.Sub(t, 1, "#")
	deadline := time.Now().Add(15 * time.Second)
	for !b.Inbound()[0].Connected {
		if time.Now().After(deadline) {
			t.Fatalf("consumer not connected: %+v", b.Inbound())
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for key, body := range map[string]string{"secret.plans": "denied", "cmd.door": "open"} {
		must(ch.PublishWithContext(ctx, exchange, key, false, false, amqp.Publishing{Body: []byte(body)}))
	}
	m := sub.Next(t, 10*time.Second)
	if m.Topic != "cmd/door" || string(m.Payload) != "open" {
		t.Fatalf("got %q %q", m.Topic, m.Payload)
	}
	for {
		d, ok, err := ch.Get(dlq, true)
		must(err)
		if ok {
			if string(d.Body) != "denied" {
				t.Fatalf("dead-lettered %q", d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refused message did not reach the dead-letter exchange")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m, ok := sub.Try(200 * time.Millisecond); ok {
		t.Fatalf("the refused message was delivered: %q %q", m.Topic, m.Payload)
	}
	if st := b.Inbound()[0]; st.Refused != 1 || st.Published != 1 {
		t.Fatalf("status %+v", st)
	}
}
