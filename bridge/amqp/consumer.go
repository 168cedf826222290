package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/motemq/mote/bridge"
)

// Consumer consumes one queue into MQTT (AMQP → MQTT): one Inbound entry.
//
// Its goroutine owns a connection: it dials, sets the prefetch, declares
// the queue when configured to (and nothing else), binds it, and consumes
// with manual acknowledgements; when the connection or channel is lost it
// reconnects with jittered exponential backoff (ReconnectMin to
// ReconnectMax) until Stop.
//
// Deliveries are handled in order, one at a time, so the queue's order
// holds into MQTT:
//   - publish returned nil (the message is durable in the broker): ack;
//   - publish refused it for good (a bridge.Permanent error: ACL, invalid
//     topic, too large): reject without requeueing, so RabbitMQ
//     dead-letters it to the queue's dead-letter exchange if it has one
//     (it drops it otherwise);
//   - any other error (the broker is shutting down): nack with requeue and
//     reconnect after a backoff. Closing the channel requeues the
//     deliveries prefetched behind the failed one too, so they come again
//     in their order rather than before it.
type Consumer struct {
	name     string
	cfg      Config
	in       Inbound
	queue    string
	args     amqp.Table
	topic    *inTemplate // nil: the mqtt-topic header, else KeyToTopic
	tls      *tls.Config
	connName string
	tag      string
	publish  bridge.Publish
	log      *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu               sync.Mutex
	started, stopped bool
	st               ConsumerStatus
}

// NewConsumer checks cfg's connection settings and in, and returns the
// Consumer of in.Queue for bridge name; publish hands its messages to the
// broker (see bridge.Hook.Inbound). Start starts it.
func NewConsumer(name string, cfg Config, in Inbound, publish bridge.Publish, log *slog.Logger) (*Consumer, error) {
	v := &validator{}
	cfg.validateConn(v)
	path := "amqp.in[?]"
	for i := range cfg.In {
		if cfg.In[i].Queue == in.Queue {
			path = fmt.Sprintf("amqp.in[%d]", i)
			break
		}
	}
	in.validate(v, path)
	if publish == nil {
		v.bad("publish", "NewConsumer needs a publish function")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	in = in.withDefaults()
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	args, err := toTable(in.Arguments)
	if err != nil {
		return nil, fmt.Errorf("%s.arguments: %w", path, err)
	}
	if in.DeadLetterExchange != "" {
		if args == nil {
			args = amqp.Table{}
		}
		args["x-dead-letter-exchange"] = in.DeadLetterExchange
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Consumer{
		name:     name,
		cfg:      cfg,
		in:       in,
		queue:    in.Queue,
		args:     args,
		tls:      tlsCfg,
		connName: ConsumerConnectionName(name, in.Queue),
		tag:      "mote-" + name,
		publish:  publish,
		log:      log.With("bridge", name, "queue", in.Queue),
		ctx:      ctx,
		cancel:   cancel,
		st:       ConsumerStatus{Queue: in.Queue},
	}
	if in.Topic != "" {
		if c.topic, err = parseInTemplate(in.Topic); err != nil {
			cancel()
			return nil, fmt.Errorf("%s.topic: %w", path, err)
		}
	}
	return c, nil
}

// Start starts consuming; it does nothing after the first call or after
// Stop.
func (c *Consumer) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return
	}
	c.started = true
	c.wg.Go(c.run)
}

// Stop stops consuming and waits for the Consumer's goroutine: a delivery
// being published is given up (publish sees its context cancelled), and
// the deliveries not acknowledged return to the queue when the connection
// closes. Stop is idempotent.
func (c *Consumer) Stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Status returns a snapshot of the Consumer's state.
func (c *Consumer) Status() ConsumerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *Consumer) setConnected(on bool) {
	c.mu.Lock()
	c.st.Connected = on
	c.mu.Unlock()
}

// failed records err as the last error.
func (c *Consumer) failed(err error) {
	c.mu.Lock()
	c.st.LastError = err.Error()
	c.st.LastErrorAt = time.Now()
	c.mu.Unlock()
}

// count adds one to a counter of st.
func (c *Consumer) count(field *uint64) {
	c.mu.Lock()
	*field++
	c.mu.Unlock()
}

// run is the Consumer's goroutine: sessions, and backoff between them.
func (c *Consumer) run() {
	attempt := 0
	for {
		healthy, err := c.session()
		if c.ctx.Err() != nil {
			return
		}
		if healthy {
			attempt = 0
		}
		wait := backoff(attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)
		attempt++
		if err == nil {
			err = errors.New("amqp: session ended")
		}
		c.failed(err)
		level := slog.LevelWarn
		if operatorError(err) {
			level = slog.LevelError
		}
		c.log.Log(c.ctx, level, "amqp consumer interrupted; reconnecting", "error", err, "retry_in", wait)
		if !sleep(c.ctx, wait) {
			return
		}
	}
}

// session consumes over one connection until it fails or Stop. healthy
// reports that it got as far as consuming and did not end on a message the
// broker could not take (which keeps the backoff growing).
func (c *Consumer) session() (healthy bool, err error) {
	d, err := dial(c.ctx, c.cfg, c.tls, c.connName)
	if err != nil {
		return false, err
	}
	defer func() {
		c.setConnected(false)
		if cerr := d.close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			c.log.Debug("amqp consumer connection close failed", "error", cerr)
		}
	}()
	var (
		deliveries <-chan amqp.Delivery
		closed     chan *amqp.Error
		cancelled  chan string
	)
	err = d.guard(c.ctx, func() error {
		ch, err := d.conn.Channel()
		if err != nil {
			return fmt.Errorf("opening a channel: %w", err)
		}
		closed = ch.NotifyClose(make(chan *amqp.Error, 1))
		cancelled = ch.NotifyCancel(make(chan string, 1))
		if err := ch.Qos(c.in.Prefetch, 0, false); err != nil {
			return fmt.Errorf("setting prefetch %d: %w", c.in.Prefetch, err)
		}
		if c.in.Declare {
			if _, err := ch.QueueDeclare(c.queue, *c.in.Durable, false, false, false, c.args); err != nil {
				return fmt.Errorf("declaring queue %q: %w%s", c.queue, err, hint(err))
			}
		}
		for _, b := range c.in.Bindings {
			if err := ch.QueueBind(c.queue, b.Key, b.Exchange, false, nil); err != nil {
				return fmt.Errorf("binding queue %q to exchange %q with key %q: %w%s", c.queue, b.Exchange, b.Key, err, hint(err))
			}
		}
		deliveries, err = ch.Consume(c.queue, c.tag, false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consuming queue %q: %w%s", c.queue, err, hint(err))
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("amqp: %w", err)
	}
	c.setConnected(true)
	c.log.Info("amqp consumer started", "url", redactURL(c.cfg.URL))
	for {
		select {
		case <-c.ctx.Done():
			return true, nil
		case dv, ok := <-deliveries:
			if !ok {
				return true, c.endReason(closed, cancelled)
			}
			if err := c.handle(&dv); err != nil {
				return false, err
			}
		}
	}
}

// endReason explains why the deliveries stopped.
func (c *Consumer) endReason(closed chan *amqp.Error, cancelled chan string) error {
	t := time.NewTimer(closeNoticeWait)
	defer t.Stop()
	for {
		select {
		case e, ok := <-closed:
			if ok && e != nil {
				return fmt.Errorf("amqp: consuming queue %q: %w", c.queue, e)
			}
			return fmt.Errorf("amqp: consuming queue %q: channel closed", c.queue)
		case _, ok := <-cancelled:
			if ok {
				return fmt.Errorf("amqp: RabbitMQ cancelled the consumer of queue %q (was the queue deleted?)", c.queue)
			}
			cancelled = nil // closed with the channel: wait for its reason
		case <-t.C:
			return fmt.Errorf("amqp: consuming queue %q: deliveries stopped", c.queue)
		}
	}
}

// handle publishes one delivery and settles it. An error ends the session.
func (c *Consumer) handle(d *amqp.Delivery) error {
	c.count(&c.st.Consumed)
	pk, err := c.toPacket(d)
	if err == nil {
		err = c.publish(c.ctx, pk)
	}
	switch {
	case err == nil:
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("amqp: acknowledging a delivery of queue %q (RabbitMQ will deliver it again): %w", c.queue, err)
		}
		c.count(&c.st.Published)
		return nil
	case bridge.IsPermanent(err):
		c.failed(err)
		c.count(&c.st.Rejected)
		c.log.Warn("amqp message refused by the broker; rejected to the queue's dead-letter exchange, if any",
			"topic", pk.TopicName, "error", err)
		if err := d.Reject(false); err != nil {
			return fmt.Errorf("amqp: rejecting a delivery of queue %q (RabbitMQ will deliver it again): %w", c.queue, err)
		}
		return nil
	default:
		c.failed(err)
		c.count(&c.st.Requeued)
		if c.ctx.Err() == nil {
			c.log.Warn("amqp message not taken by the broker; requeued", "topic", pk.TopicName, "error", err)
		}
		if nerr := d.Nack(false, true); nerr != nil {
			c.log.Debug("amqp nack failed; closing the connection requeues the delivery", "error", nerr)
		}
		return fmt.Errorf("amqp: publishing a message of queue %q: %w (requeued; reconnecting so that the queue's order holds)", c.queue, err)
	}
}

// toPacket maps a delivery to the MQTT message to publish. The topic is
// the template's if set, else the mqtt-topic header of a message that came
// from a Mote bridge, else KeyToTopic(routing key). An error (the template
// failed) is permanent.
func (c *Consumer) toPacket(d *amqp.Delivery) (packets.Packet, error) {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: *c.in.QoS, Retain: c.in.Retain},
		Payload:     d.Body,
		Properties:  toProperties(d),
	}
	switch t, ok := headerTopic(d); {
	case c.topic != nil:
		topic, err := c.topic.render(d, c.queue)
		if err != nil {
			return pk, bridge.Permanent(err)
		}
		pk.TopicName = topic
	case ok:
		pk.TopicName = t
	default:
		pk.TopicName = KeyToTopic(d.RoutingKey)
	}
	return pk, nil
}

// operatorError reports errors that retrying will not fix without an
// operator: refused access, missing or mismatched queues and exchanges.
func operatorError(err error) bool {
	var e *amqp.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case amqp.AccessRefused, amqp.NotFound, amqp.PreconditionFailed, amqp.ResourceLocked, amqp.NotAllowed:
		return true
	}
	return false
}
