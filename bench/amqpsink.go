package bench

import (
	"fmt"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// startAMQPSink consumes what the broker's amqp bridge publishes for the
// run's topics: it declares the exchange (topic, durable: the same as a
// bridge with declare: true), binds a private queue to it with the run's
// routing keys (MQTT topic with '/' and '.' swapped, the bridge's default)
// and counts each message body as a delivery to s. It returns the function
// that stops it.
func (m *messageRun) startAMQPSink(s *subscriber) (func(), error) {
	conn, err := amqp.DialConfig(m.cfg.AMQPURL, amqp.Config{Properties: amqp.Table{"connection_name": "mote-bench-sink"}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", redactURL(m.cfg.AMQPURL), err)
	}
	fail := func(step string, err error) (func(), error) {
		_ = conn.Close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fail("channel", err)
	}
	if err := ch.ExchangeDeclare(m.cfg.Exchange, "topic", true, false, false, false, nil); err != nil {
		return fail("declare exchange "+m.cfg.Exchange+" (topic, durable)", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fail("declare queue", err)
	}
	key := swapSlashDot(m.topic) + ".#"
	if err := ch.QueueBind(q.Name, key, m.cfg.Exchange, false, nil); err != nil {
		return fail("bind "+key, err)
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		return fail("qos", err)
	}
	deliveries, err := ch.Consume(q.Name, "mote-bench", true, true, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	deliver := m.deliver(s)
	var wg sync.WaitGroup
	wg.Go(func() {
		for d := range deliveries { // ends when the connection closes
			deliver(d.Body)
		}
	})
	m.log.Info("amqp sink consuming", "exchange", m.cfg.Exchange, "binding", key)
	return func() {
		_ = conn.Close()
		wg.Wait()
	}, nil
}

// swapSlashDot maps an MQTT topic to an AMQP routing key the way the amqp
// bridge does by default.
func swapSlashDot(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '/':
			return '.'
		case '.':
			return '/'
		}
		return r
	}, s)
}

// redactURL hides the password of an amqp:// URL for messages.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	userinfo := s[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return s[:scheme+3] + user + ":xxxxx" + s[at:]
	}
	return s
}
