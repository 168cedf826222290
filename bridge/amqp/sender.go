package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/motemq/mote/bridge"
)

// ErrClosed is returned by Send once Close was called.
var ErrClosed = errors.New("amqp: sender closed")

const (
	// maxIdleChannels bounds the publisher channels kept open between
	// Sends; the bridge runs at most its concurrency Sends at once.
	maxIdleChannels = 64
	// returnBuffer is the room for basic.return notifications between two
	// reads; amqp091-go drops one that waits for room more than 5s.
	returnBuffer = 256
	// closeNoticeWait is how long a failed publish waits for the channel's
	// close reason, which amqp091-go sends just after marking the channel
	// closed.
	closeNoticeWait = time.Second
)

// Sender publishes MQTT messages to a RabbitMQ exchange with publisher
// confirms (MQTT → AMQP); it implements bridge.Sender.
//
// It dials lazily, on the first Send, and again on the Send after the
// connection was lost; each (re)connection declares the exchange when
// configured to. Each Send publishes its messages on a publisher channel
// of its own (kept open for later Sends), so concurrent Sends neither
// block each other nor mix up their confirms and returns.
type Sender struct {
	name       string
	cfg        Config
	exchange   string       // on the wire ("" for amq.default)
	key        *outTemplate // nil: TopicToKey
	mandatory  bool
	deadLetter bool // unroutable messages are a permanent failure
	tls        *tls.Config
	connName   string
	log        *slog.Logger

	dialing chan struct{} // one dial at a time; waiting for it honours ctx
	seq     atomic.Uint64 // message ids of messages without one (QoS 0)

	mu     sync.Mutex
	link   *link // the current connection; nil before the first Send
	closed bool

	wg sync.WaitGroup // connection watchers and closers of abandoned channels
}

var _ bridge.Sender = (*Sender)(nil)

// link is one connection of a Sender.
type link struct {
	*dialed
	closed  chan *amqp.Error
	lost    atomic.Bool
	blocked atomic.Pointer[string] // why RabbitMQ blocks publishing, while it does
	idle    []*pubChannel          // guarded by Sender.mu
}

func (l *link) dead() bool { return l.lost.Load() || l.conn.IsClosed() }

// pubChannel is a channel in confirm mode, used by one Send at a time.
type pubChannel struct {
	ch      *amqp.Channel
	closed  chan *amqp.Error
	returns chan amqp.Return
}

// outgoing is a message ready to publish: msgs[idx] of a Send.
type outgoing struct {
	idx int
	key string
	msg amqp.Publishing
}

// ConnectionName is the client-provided name of the connection of bridge
// name's Sender, as RabbitMQ shows it (management UI, rabbitmqctl
// list_connections client_properties).
func ConnectionName(name string) string { return "mote bridge " + name + " out" }

// ConsumerConnectionName is the client-provided name of the connection of
// bridge name's Consumer of queue.
func ConsumerConnectionName(name, queue string) string {
	return "mote bridge " + name + " in " + queue
}

// NewSender checks cfg's connection and outbound settings (Validate with
// filters, less the inbound entries) and returns a Sender for bridge name.
// It does not dial: the first Send does.
func NewSender(name string, cfg Config, log *slog.Logger) (*Sender, error) {
	v := &validator{}
	cfg.validateConn(v)
	cfg.validateOut(v)
	if err := v.err(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	s := &Sender{
		name:       name,
		cfg:        cfg,
		exchange:   wireExchange(cfg.Exchange.Name),
		mandatory:  *cfg.Mandatory,
		deadLetter: cfg.Unroutable == UnroutableDeadLetter,
		tls:        tlsCfg,
		connName:   ConnectionName(name),
		log:        log,
		dialing:    make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("bridge", name)
	if cfg.RoutingKey != "" {
		if s.key, err = parseOutTemplate(cfg.RoutingKey); err != nil {
			return nil, fmt.Errorf("amqp.routing_key: %w", err)
		}
	}
	return s, nil
}

// Send publishes msgs and waits for RabbitMQ to confirm every one; nil
// means all were confirmed (acked, and routed when mandatory). Failures
// are per message where RabbitMQ tells them apart (a *bridge.BatchError
// when some of several messages failed), so that only those are retried
// or dead-lettered:
//   - a message that can never be published (its routing key renders
//     empty, invalid or longer than 255 bytes; a user property name longer
//     than 255 bytes) fails with a bridge.Permanent error and is not
//     published;
//   - with mandatory, a message RabbitMQ returns as unroutable (NO_ROUTE)
//     fails with a bridge.Permanent error (unroutable: dead_letter) or a
//     plain one (retry); returns are matched to messages by message id
//     (every publish of a Send has a distinct one);
//   - a nacked message fails with a plain error (retried);
//   - a lost connection or channel, or ConfirmTimeout passing (the whole
//     Send: dialing, publishing, confirms) fails the whole batch with a
//     plain error: the batch is retried, and the next Send re-dials if
//     needed.
//
// When ctx ends (or ConfirmTimeout passes) while the Send waits for
// confirms, only its channel is given up; while it is still dialing or
// writing (RabbitMQ applying TCP back-pressure), the connection is
// aborted, failing the other Sends on it too.
//
// Messages whose MQTT message expiry has passed are not published
// [MQTT-3.3.2-5]. Each message's id from bridge.MessageIDs becomes its
// AMQP message-id, the same on every attempt, so consumers can drop
// duplicates; QoS 0 messages (which have none) get one unique to the Send.
func (s *Sender) Send(ctx context.Context, msgs []packets.Packet) error {
	pubs, errs := s.prepare(ctx, msgs)
	if len(pubs) > 0 {
		ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.ConfirmTimeout,
			fmt.Errorf("amqp: send not confirmed within confirm_timeout (%s)", s.cfg.ConfirmTimeout))
		defer cancel()
		l, pc, err := s.acquire(ctx)
		if err != nil {
			return err
		}
		if err := s.publish(ctx, l, pc, pubs, errs); err != nil {
			return err
		}
	}
	return batchResult(errs)
}

// batchResult is the error of a Send whose per-message errors are errs.
func batchResult(errs []error) error {
	failed := 0
	var last error
	for _, err := range errs {
		if err != nil {
			failed++
			last = err
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(errs) == 1:
		return last
	}
	return &bridge.BatchError{Errs: errs}
}

// prepare maps msgs to publishings; errs[i] is set, as a Permanent error,
// for a message that can never be published.
func (s *Sender) prepare(ctx context.Context, msgs []packets.Packet) ([]outgoing, []error) {
	ids := bridge.MessageIDs(ctx)
	now := time.Now()
	out := make([]outgoing, 0, len(msgs))
	errs := make([]error, len(msgs))
	for i := range msgs {
		pk := &msgs[i]
		key, err := s.routingKey(pk)
		if err != nil {
			errs[i] = bridge.Permanent(fmt.Errorf("amqp: message on %q: %w", pk.TopicName, err))
			continue
		}
		var id string
		if i < len(ids) {
			id = ids[i]
		}
		if id == "" {
			id = "mote-" + strconv.FormatUint(s.seq.Add(1), 36)
		}
		msg, expired, err := toPublishing(pk, id, now)
		if err != nil {
			errs[i] = bridge.Permanent(fmt.Errorf("amqp: message on %q: %w", pk.TopicName, err))
			continue
		}
		if expired {
			s.log.Debug("amqp expired message not sent", "topic", pk.TopicName)
			continue
		}
		out = append(out, outgoing{idx: i, key: key, msg: msg})
	}
	return out, errs
}

// routingKey renders the routing key of pk.
func (s *Sender) routingKey(pk *packets.Packet) (string, error) {
	if s.key == nil {
		key := TopicToKey(pk.TopicName)
		return key, checkKey(key)
	}
	key, err := s.key.render(pk)
	if err != nil {
		return "", fmt.Errorf("routing_key template: %w", err)
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("routing_key template: %w", err)
	}
	return key, nil
}

// acquire returns a publisher channel for one Send, connecting if needed.
func (s *Sender) acquire(ctx context.Context) (*link, *pubChannel, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, nil, ErrClosed
		}
		l := s.link
		if l != nil && !l.dead() {
			if reason := l.blocked.Load(); reason != nil {
				s.mu.Unlock()
				return nil, nil, fmt.Errorf("amqp: RabbitMQ blocks publishing (%s); sends resume when its resource alarm clears", *reason)
			}
			if n := len(l.idle); n > 0 {
				pc := l.idle[n-1]
				l.idle = l.idle[:n-1]
				s.mu.Unlock()
				if pc.ch.IsClosed() {
					continue
				}
				return l, pc, nil
			}
			s.mu.Unlock()
			pc, err := s.openChannel(ctx, l)
			return l, pc, err
		}
		s.mu.Unlock()
		select {
		case s.dialing <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("amqp: waiting for the connection: %w", context.Cause(ctx))
		}
		s.mu.Lock()
		again := s.link != l
		s.mu.Unlock()
		if again { // another Send connected meanwhile
			<-s.dialing
			continue
		}
		l, pc, err := s.connect(ctx)
		<-s.dialing
		return l, pc, err
	}
}

// connect dials, declares the exchange when configured to, and makes the
// new connection the current one. s.dialing is held.
func (s *Sender) connect(ctx context.Context) (*link, *pubChannel, error) {
	d, err := dial(ctx, s.cfg, s.tls, s.connName)
	if err != nil {
		return nil, nil, err
	}
	l := &link{dialed: d, closed: d.conn.NotifyClose(make(chan *amqp.Error, 1))}
	blocks := d.conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	pc, err := s.openChannel(ctx, l)
	if err == nil && s.cfg.Exchange.Declare {
		e := s.cfg.Exchange
		err = l.guard(ctx, func() error {
			return pc.ch.ExchangeDeclare(s.exchange, e.Type, *e.Durable, e.AutoDelete, false, false, nil)
		})
		if err != nil {
			err = fmt.Errorf("amqp: declaring exchange %q (%s): %w%s", e.Name, e.Type, err, hint(err))
		}
	}
	if err == nil {
		s.mu.Lock()
		if s.closed {
			err = ErrClosed
		} else {
			s.link = l
			s.wg.Go(func() { s.watch(l, blocks) })
		}
		s.mu.Unlock()
	}
	if err != nil {
		if cerr := d.close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			s.log.Debug("amqp close after a failed setup failed", "error", cerr)
		}
		return nil, nil, err
	}
	s.log.Info("amqp connected", "url", redactURL(s.cfg.URL), "exchange", showExchange(s.exchange))
	return l, pc, nil
}

// watch follows a connection until it closes: it marks it lost, so the
// next Send re-dials, and tracks whether RabbitMQ blocks publishing.
func (s *Sender) watch(l *link, blocks chan amqp.Blocking) {
	for {
		select {
		case b, ok := <-blocks:
			if !ok {
				blocks = nil
				continue
			}
			if b.Active {
				reason := b.Reason
				l.blocked.Store(&reason)
				s.log.Warn("amqp publishing blocked by a RabbitMQ resource alarm", "reason", reason)
			} else {
				l.blocked.Store(nil)
				s.log.Info("amqp publishing unblocked")
			}
		case e, ok := <-l.closed:
			l.lost.Store(true)
			if ok && e != nil {
				s.log.Warn("amqp connection lost; the next send reconnects", "error", e)
			}
			return
		}
	}
}

// openChannel opens a publisher channel in confirm mode.
func (s *Sender) openChannel(ctx context.Context, l *link) (*pubChannel, error) {
	var pc *pubChannel
	err := l.guard(ctx, func() error {
		ch, err := l.conn.Channel()
		if err != nil {
			return err
		}
		pc = &pubChannel{
			ch:      ch,
			closed:  ch.NotifyClose(make(chan *amqp.Error, 1)),
			returns: ch.NotifyReturn(make(chan amqp.Return, returnBuffer)),
		}
		return ch.Confirm(false)
	})
	if err != nil {
		if pc != nil {
			s.discard(pc)
		}
		return nil, fmt.Errorf("amqp: opening a publisher channel: %w", err)
	}
	return pc, nil
}

// returned collects the messages RabbitMQ returned during one Send.
type returned struct {
	byID map[string]amqp.Return
}

func (r *returned) add(ret amqp.Return) {
	if r.byID == nil {
		r.byID = map[string]amqp.Return{}
	}
	r.byID[ret.MessageId] = ret
}

// drain takes the returns already notified, without waiting.
func (r *returned) drain(c chan amqp.Return) {
	for {
		select {
		case ret, ok := <-c:
			if !ok {
				return
			}
			r.add(ret)
		default:
			return
		}
	}
}

// publish publishes pubs on pc and waits for their confirms. RabbitMQ
// sends a message's basic.return before its basic.ack, and amqp091-go
// hands both over in that order, so once every confirm is in, every return
// of this Send is in pc.returns.
//
// It returns an error for the whole batch (the channel or connection
// failed, ctx ended); else it sets errs[p.idx] for each message p that was
// nacked or returned.
func (s *Sender) publish(ctx context.Context, l *link, pc *pubChannel, pubs []outgoing, errs []error) error {
	dcs := make([]*amqp.DeferredConfirmation, 0, len(pubs))
	var ret returned
	err := l.guard(ctx, func() error {
		for _, p := range pubs {
			dc, err := pc.ch.PublishWithDeferredConfirm(s.exchange, p.key, s.mandatory, false, p.msg)
			if err != nil {
				return err
			}
			dcs = append(dcs, dc)
			ret.drain(pc.returns) // keep room: a full buffer stalls the connection's reader
		}
		return nil
	})
	if err != nil {
		s.discard(pc)
		return s.channelError(pc, fmt.Sprintf("publishing %d messages", len(pubs)), err)
	}
	returns := pc.returns
	nacked := make([]bool, len(dcs))
	anyNacked := false
	for i, dc := range dcs {
	wait:
		for {
			select {
			case <-dc.Done():
				break wait
			case r, ok := <-returns:
				if !ok {
					returns = nil
					continue
				}
				ret.add(r)
			case <-ctx.Done():
				s.discard(pc)
				return fmt.Errorf("amqp: waiting for the confirms of %d messages to exchange %s: %w",
					len(pubs), showExchange(s.exchange), context.Cause(ctx))
			}
		}
		if !dc.Acked() {
			nacked[i], anyNacked = true, true
		}
	}
	ret.drain(pc.returns)
	if anyNacked && pc.ch.IsClosed() {
		// Confirms still pending when a channel closes read as nacks.
		s.discard(pc)
		return s.channelError(pc, fmt.Sprintf("publishing %d messages", len(pubs)), amqp.ErrClosed)
	}
	s.release(l, pc)
	for i, p := range pubs {
		if nacked[i] {
			errs[p.idx] = fmt.Errorf("amqp: RabbitMQ nacked the message on %q to exchange %s (it could not take it); retrying",
				p.msg.Headers[HeaderTopic], showExchange(s.exchange))
			continue
		}
		r, ok := ret.byID[p.msg.MessageId]
		if !ok {
			continue
		}
		err := fmt.Errorf("amqp: message unroutable: exchange %s has no queue bound for routing key %q (%d %s)",
			showExchange(r.Exchange), r.RoutingKey, r.ReplyCode, r.ReplyText)
		if s.deadLetter {
			errs[p.idx] = bridge.Permanent(fmt.Errorf("%w; bind a queue, or set amqp.unroutable: retry to keep retrying", err))
		} else {
			errs[p.idx] = fmt.Errorf("%w; retrying until a queue is bound", err)
		}
	}
	return nil
}

// channelError explains a failed operation on pc, with the reason
// RabbitMQ gave for closing the channel or connection if it did.
func (s *Sender) channelError(pc *pubChannel, doing string, err error) error {
	t := time.NewTimer(closeNoticeWait)
	defer t.Stop()
	select {
	case e, ok := <-pc.closed:
		if ok && e != nil {
			return fmt.Errorf("amqp: %s to exchange %s: %w%s", doing, showExchange(s.exchange), e, hint(e))
		}
	case <-t.C:
	}
	return fmt.Errorf("amqp: %s to exchange %s: %w", doing, showExchange(s.exchange), err)
}

// release puts a channel back for later Sends, or closes it.
func (s *Sender) release(l *link, pc *pubChannel) {
	s.mu.Lock()
	if !s.closed && s.link == l && !l.dead() && !pc.ch.IsClosed() && len(l.idle) < maxIdleChannels {
		l.idle = append(l.idle, pc)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.discard(pc)
}

// discard closes a channel that is not to be reused (confirms may be
// pending on it) without waiting for RabbitMQ's answer.
func (s *Sender) discard(pc *pubChannel) {
	if pc.ch.IsClosed() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return // Close closes the connection, and the channel with it
	}
	s.wg.Go(func() {
		if err := pc.ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			s.log.Debug("amqp publisher channel close failed", "error", err)
		}
	})
}

// Connected reports whether the Sender holds an open connection (it dials
// on the first Send, so it is false before).
func (s *Sender) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.link != nil && !s.link.dead()
}

// Close closes the connection and waits for the Sender's goroutines. Sends
// still running fail (a plain error: the bridge keeps their messages), and
// later ones return ErrClosed. Stop the bridge first so that no Send runs.
// Close is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	l := s.link
	s.link = nil
	s.closed = true
	s.mu.Unlock()
	var err error
	if l != nil {
		if cerr := l.close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("amqp: closing the connection: %w", cerr)
		}
	}
	s.wg.Wait()
	return err
}

// hint tells an operator what to do about an AMQP error.
func hint(err error) string {
	var e *amqp.Error
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Code {
	case amqp.AccessRefused:
		return " (check the permissions of the URL's user on the vhost)"
	case amqp.NotFound:
		return " (create it, or let Mote declare it with declare: true)"
	case amqp.PreconditionFailed:
		return " (it exists with other settings: make the config match, or delete it)"
	case amqp.ResourceLocked:
		return " (another connection uses it exclusively)"
	}
	return ""
}
