package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
	topics "github.com/motemq/mote/internal/topic"
)

// Status is a snapshot of a bridge's state.
type Status struct {
	// Connected: a connection to the remote is up (CONNACK received).
	Connected bool
	// SessionPresent: the remote still had the bridge's session at the
	// last connect.
	SessionPresent bool
	// Subscribed: connected, and the remote granted every subscription of
	// the in and both topics on this connection (true when there are none).
	Subscribed bool
	// Connects counts the connections made (1 + reconnections).
	Connects uint64
	// Received counts messages from the remote published locally.
	Received uint64
	// Published counts messages the remote acknowledged (QoS 0: written).
	Published uint64
	// Refused counts messages from the remote that the local broker
	// refused for good (ACL, invalid topic) or that no in topic maps; they
	// were acknowledged and dropped.
	Refused uint64
	// Echoed counts, on MQTT 3.1.1, the bridge's own messages that came
	// back through its subscriptions and were dropped (see the package doc).
	Echoed uint64
	// Expired counts outbound messages whose message expiry passed before
	// they could be sent; they were dropped, as MQTT asks [MQTT-3.3.2-5].
	Expired uint64
	// LastError is the last failure (connection, subscription, publish
	// either way) and LastErrorAt when it happened; they stay after a
	// recovery.
	LastError   string
	LastErrorAt time.Time
}

// ErrNotConnected is returned by Send while the bridge has no connection
// to the remote; the bridge package retries with backoff.
var ErrNotConnected = errors.New("not connected to the remote broker")

// ackTimeout bounds the wait for a PUBACK/PUBCOMP on a live connection.
const ackTimeout = 30 * time.Second

// inboundBuffer bounds the messages received and not yet handed to the
// local broker; beyond it the connection's reader waits (backpressure).
const inboundBuffer = 64

// route is one Topic with its filters on each side.
type route struct {
	Topic
	out, in       bool
	local, remote string // LocalPrefix+Pattern, RemotePrefix+Pattern
}

// Bridge is a bridge to a remote MQTT broker. Its outbound side is a
// bridge.Sender (Send); its inbound side subscribes on the remote and
// hands what arrives to the local broker through a bridge.Publish.
type Bridge struct {
	name    string
	cfg     Config
	addr    string
	tls     *tls.Config
	routes  []route
	publish bridge.Publish
	log     *slog.Logger
	remote  remote
	echoes  *echoes // MQTT 3.1.1 with topics in both directions only

	in   chan inMsg
	quit chan struct{}
	wg   sync.WaitGroup

	startOnce, stopOnce sync.Once

	mu         sync.Mutex
	cancel     context.CancelFunc
	stopped    bool
	link       link // nil while not connected
	present    bool
	subscribed bool // on link
	lastErr    string
	lastErrAt  time.Time

	connects, received, published, refused, echoed, expired atomic.Uint64
}

// New validates cfg and builds the bridge called name; it does not dial
// (Start does). publish is how messages from the remote enter the local
// broker; it may be nil when no topic has direction in or both. It expands
// "${NAME}" credentials and loads the TLS files. log should not carry a
// "bridge" attribute already: New adds it.
func New(name string, cfg Config, publish bridge.Publish, log *slog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults(name)
	var err error
	var errs []error
	if cfg.Username, err = expandEnv("username", cfg.Username); err != nil {
		errs = append(errs, err)
	}
	if cfg.Password, err = expandEnv("password", cfg.Password); err != nil {
		errs = append(errs, err)
	}
	addr, host, _ := parseURL(cfg.URL) // checked by Validate
	b := &Bridge{
		name:    name,
		cfg:     cfg,
		addr:    addr,
		publish: publish,
		log:     log.With("bridge", name),
		in:      make(chan inMsg, inboundBuffer),
		quit:    make(chan struct{}),
	}
	if isTLS(cfg.URL) {
		t, err := cfg.TLS.Build()
		if err != nil {
			errs = append(errs, fmt.Errorf("mqtt.%w", err))
		} else {
			if t.ServerName == "" {
				t.ServerName = host
			}
			b.tls = t
		}
	}
	var anyIn, anyOut bool
	for _, t := range cfg.Topics {
		out, in, _ := t.directions()
		anyIn, anyOut = anyIn || in, anyOut || out
		b.routes = append(b.routes, route{Topic: t, out: out, in: in, local: t.LocalPrefix + t.Pattern, remote: t.RemotePrefix + t.Pattern})
	}
	if anyIn && publish == nil {
		errs = append(errs, errors.New("mqtt.topics: topics with direction in or both need a publish function (a broker wiring error)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.ProtocolVersion == 4 {
		if anyIn && anyOut {
			b.echoes = newEchoes(echoWindow, echoCapacity)
		}
		b.remote = newV4Remote(b)
	} else {
		b.remote = newV5Remote(b)
	}
	return b, nil
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.name }

// Start connects in the background and keeps reconnecting, with jittered
// exponential backoff, until Stop. It does nothing after Stop, or when
// called again.
func (b *Bridge) Start() {
	b.startOnce.Do(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.stopped {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		b.cancel = cancel
		b.wg.Go(func() { b.run(ctx) })
		b.wg.Go(func() { b.inbound(ctx) })
	})
}

// Stop disconnects cleanly (keeping the persistent session on the remote)
// and returns once every goroutine of the bridge has ended. A message from
// the remote that was not yet published locally stays unacknowledged, so
// the remote sends it again on the next connection. Stop is idempotent.
func (b *Bridge) Stop() {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		cancel := b.cancel
		b.mu.Unlock()
		close(b.quit)
		if cancel != nil {
			cancel()
		}
		b.wg.Wait()
		b.remote.close()
	})
}

// Status returns a snapshot of the bridge's state.
func (b *Bridge) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Status{
		Connected:      b.link != nil,
		SessionPresent: b.link != nil && b.present,
		Subscribed:     b.link != nil && b.subscribed,
		Connects:       b.connects.Load(),
		Received:       b.received.Load(),
		Published:      b.published.Load(),
		Refused:        b.refused.Load(),
		Echoed:         b.echoed.Load(),
		Expired:        b.expired.Load(),
		LastError:      b.lastErr,
		LastErrorAt:    b.lastErrAt,
	}
}

func (b *Bridge) setErr(err error) {
	b.mu.Lock()
	b.lastErr, b.lastErrAt = err.Error(), time.Now()
	b.mu.Unlock()
}

func (b *Bridge) current() link {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.link
}

// backoff is the wait before attempt n (from 1): exponential from
// ReconnectMin to ReconnectMax, with equal jitter (half fixed, half
// random) so that many bridges do not reconnect in step.
func (b *Bridge) backoff(n int) time.Duration {
	d := b.cfg.ReconnectMin
	for i := 1; i < n && d < b.cfg.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, b.cfg.ReconnectMax)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// run connects, subscribes, waits for the connection to end, and again,
// until ctx ends; then it disconnects cleanly.
func (b *Bridge) run(ctx context.Context) {
	attempt := 0
	var lastLogged string
	var wasUp bool
	var lostAt time.Time
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
		l, err := b.remote.connect(cctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attempt++
			b.setErr(err)
			// One warning per distinct failure, not one per attempt.
			if msg := err.Error(); msg != lastLogged {
				b.log.Warn("bridge cannot connect; retrying", "url", b.cfg.URL, "attempt", attempt, "error", err)
				lastLogged = msg
			} else {
				b.log.Debug("bridge cannot connect; retrying", "url", b.cfg.URL, "attempt", attempt, "error", err)
			}
			if !sleep(ctx, b.backoff(attempt)) {
				return
			}
			continue
		}
		lastLogged = ""
		up := time.Now()
		b.mu.Lock()
		b.link, b.present, b.subscribed = l, l.sessionPresent(), false
		b.mu.Unlock()
		b.connects.Add(1)
		if wasUp {
			b.log.Info("bridge reconnected", "url", b.cfg.URL, "session_present", l.sessionPresent(), "down", time.Since(lostAt).Round(time.Millisecond))
		} else {
			b.log.Info("bridge connected", "url", b.cfg.URL, "client", b.cfg.ClientID, "protocol_version", b.cfg.ProtocolVersion, "session_present", l.sessionPresent())
		}
		wasUp = true
		if !b.serve(ctx, l) {
			b.mu.Lock()
			b.link = nil
			b.mu.Unlock()
			l.disconnect()
			b.log.Info("bridge disconnected", "url", b.cfg.URL)
			return
		}
		lostAt = time.Now()
		b.mu.Lock()
		b.link = nil
		b.lastErr, b.lastErrAt = errConnectionLost.Error(), lostAt // the cause follows
		b.mu.Unlock()
		cause := l.cause()
		b.setErr(fmt.Errorf("connection lost: %w", cause))
		b.log.Warn("bridge connection lost; reconnecting", "url", b.cfg.URL, "error", cause, "up", lostAt.Sub(up).Round(time.Millisecond))
		// A connection that held for a while starts the backoff over; one
		// that drops at once (a session taken over by another client with
		// the same id, say) keeps backing off.
		if lostAt.Sub(up) >= b.cfg.ReconnectMax {
			attempt = 0
		}
		attempt++
		if !sleep(ctx, b.backoff(attempt)) {
			return
		}
	}
}

// serve subscribes on the new connection l and waits for its end: true
// when it was lost, false when ctx ended. Subscriptions the remote refused
// are asked for again with backoff while the connection lasts (an ACL
// fixed on the remote takes effect without a restart).
func (b *Bridge) serve(ctx context.Context, l link) bool {
	ok := b.subscribe(ctx, l, slog.LevelError)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for retry := 1; ; retry++ {
		var again <-chan time.Time
		if !ok {
			t = time.NewTimer(b.backoff(retry))
			again = t.C
		}
		select {
		case <-l.lost():
			return true
		case <-ctx.Done():
			return false
		case <-again:
			ok = b.subscribe(ctx, l, slog.LevelDebug)
		}
	}
}

// subscribe subscribes to the remote filters of the in and both topics;
// it reports whether the remote granted them all. It runs after every
// connect, even with a session present: cheap, and needed when the remote
// lost the session or the config changed. A refusal is logged at level
// (an operator's problem).
func (b *Bridge) subscribe(ctx context.Context, l link, level slog.Level) bool {
	var subs []subscription
	for _, r := range b.routes {
		if r.in && !containsSub(subs, r.remote) {
			subs = append(subs, subscription{filter: r.remote, qos: r.QoS})
		}
	}
	if len(subs) == 0 {
		b.setSubscribed(l)
		return true
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	err := l.subscribe(sctx, subs)
	// A mochi remote checks a SUBSCRIBE's packet identifier against the
	// messages it has in flight to the bridge as well, and refuses it with
	// 0x91 when they share one (the spec keeps the two apart): again, with
	// the next identifier.
	for attempt := 1; err != nil && attempt < subscribeAttempts && onlyIDInUse(err); attempt++ {
		b.log.Debug("bridge subscribe: packet identifier in use on the remote; again", "error", err)
		err = l.subscribe(sctx, subs)
	}
	if err != nil {
		b.setErr(err)
		if ctx.Err() != nil || errors.Is(err, errConnectionLost) {
			level = min(level, slog.LevelWarn)
		}
		b.log.Log(ctx, level, "bridge subscribe failed; retrying", "url", b.cfg.URL, "error", err)
		return false
	}
	b.setSubscribed(l)
	b.log.Debug("bridge subscribed", "filters", len(subs))
	return true
}

func (b *Bridge) setSubscribed(l link) {
	b.mu.Lock()
	b.subscribed = b.link == l
	b.mu.Unlock()
}

// subscribeAttempts bounds the SUBSCRIBEs refused with 0x91 in a row.
const subscribeAttempts = 8

// subRefusedError is a subscription the remote refused.
type subRefusedError struct {
	filter string
	code   byte
}

func (e *subRefusedError) Error() string {
	return fmt.Sprintf("subscribe to %q refused: reason code 0x%02X %s (check the remote's ACL for the bridge's user)", e.filter, e.code, reasonName(e.code))
}

// onlyIDInUse reports whether err holds only refusals with 0x91 (packet
// identifier in use).
func onlyIDInUse(err error) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var r *subRefusedError
		if !errors.As(e, &r) || r.code != 0x91 {
			return false
		}
	}
	return len(errs) > 0
}

func containsSub(subs []subscription, f string) bool {
	for _, s := range subs {
		if s.filter == f {
			return true
		}
	}
	return false
}

// mapOut finds the first out topic matching the local topic t and returns
// it with the remote topic.
func (b *Bridge) mapOut(t string) (route, string, bool) {
	for _, r := range b.routes {
		if r.out && strings.HasPrefix(t, r.LocalPrefix) && topics.Match(r.local, t) {
			return r, r.RemotePrefix + t[len(r.LocalPrefix):], true
		}
	}
	return route{}, "", false
}

// mapIn finds the first in topic matching the remote topic t and returns
// it with the local topic.
func (b *Bridge) mapIn(t string) (route, string, bool) {
	for _, r := range b.routes {
		if r.in && strings.HasPrefix(t, r.RemotePrefix) && topics.Match(r.remote, t) {
			return r, r.LocalPrefix + t[len(r.RemotePrefix):], true
		}
	}
	return route{}, "", false
}

// subscribedTo reports whether the remote topic t matches a filter the
// bridge subscribes to: a message sent there may come back.
func (b *Bridge) subscribedTo(t string) bool {
	for _, r := range b.routes {
		if r.in && topics.Match(r.remote, t) {
			return true
		}
	}
	return false
}

// swapPrefix maps a response topic with prefix from to one with prefix to;
// other topics stay as they are.
func swapPrefix(t, from, to string) string {
	if t != "" && strings.HasPrefix(t, from) {
		return to + t[len(from):]
	}
	return t
}

// outMsg is a message to publish on the remote.
type outMsg struct {
	topic   string
	qos     byte
	retain  bool
	payload []byte
	props   packets.Properties // MQTT 5 properties, response topic mapped
	expiry  uint32             // remaining message expiry in seconds (0: none)
}

// Send publishes msgs on the remote and returns nil once the remote
// acknowledged every one (PUBACK for QoS 1, PUBCOMP for QoS 2; QoS 0 once
// written). Without a connection it fails at once with ErrNotConnected. A
// remote refusal that will not change (v5 reason codes 0x87 not
// authorized, 0x90 topic name invalid, 0x95 packet too large, 0x99 payload
// format invalid) is bridge.Permanent. Messages of different topics in one
// batch are published concurrently, those of one topic in order; with
// several messages a failure is reported per message (*bridge.BatchError),
// so only the failed ones are retried or dead-lettered. Send is safe for
// concurrent use.
func (b *Bridge) Send(ctx context.Context, msgs []packets.Packet) error {
	l := b.current()
	if l == nil {
		b.mu.Lock()
		last := b.lastErr
		b.mu.Unlock()
		if last != "" {
			return fmt.Errorf("%w at %s (last error: %s)", ErrNotConnected, b.cfg.URL, last)
		}
		return fmt.Errorf("%w at %s", ErrNotConnected, b.cfg.URL)
	}
	if len(msgs) == 1 {
		return b.sendOne(ctx, l, msgs[0])
	}
	// Topics go out concurrently, each in order; a message after a failed
	// one of its topic is not sent (it fails with the same error, so the
	// topic's order holds on the retry). The outcome is per message.
	var order []string
	byTopic := map[string][]int{}
	for i, pk := range msgs {
		if _, ok := byTopic[pk.TopicName]; !ok {
			order = append(order, pk.TopicName)
		}
		byTopic[pk.TopicName] = append(byTopic[pk.TopicName], i)
	}
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for _, t := range order {
		wg.Go(func() {
			var failed error
			for _, i := range byTopic[t] {
				if failed != nil {
					errs[i] = fmt.Errorf("not sent after an earlier message of %q failed (%v); retrying", t, failed)
					continue
				}
				if err := b.sendOne(ctx, l, msgs[i]); err != nil {
					errs[i], failed = err, err
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return &bridge.BatchError{Errs: errs}
		}
	}
	return nil
}

// sendOne maps and publishes one message.
func (b *Bridge) sendOne(ctx context.Context, l link, pk packets.Packet) error {
	r, remoteTopic, ok := b.mapOut(pk.TopicName)
	if !ok {
		return bridge.Permanent(fmt.Errorf("topic %q matches no out topic of mqtt bridge %s: the bridge's filters must be its OutFilters", pk.TopicName, b.name))
	}
	m := outMsg{
		topic:   remoteTopic,
		qos:     min(pk.FixedHeader.Qos, r.QoS),
		retain:  pk.FixedHeader.Retain,
		payload: pk.Payload,
		props:   pk.Properties,
	}
	m.props.ResponseTopic = swapPrefix(pk.Properties.ResponseTopic, r.LocalPrefix, r.RemotePrefix)
	if e := pk.Properties.MessageExpiryInterval; e > 0 {
		// What is left of the publisher's expiry: the message may have
		// waited in the outbox.
		left := int64(e)
		if pk.Created > 0 {
			left -= time.Now().Unix() - pk.Created
		}
		if left <= 0 {
			b.expired.Add(1)
			b.log.Debug("bridge message expired before it could be sent; dropped", "topic", pk.TopicName)
			return nil
		}
		m.expiry = uint32(left)
	}
	if b.echoes != nil && b.subscribedTo(remoteTopic) {
		// Before publishing: the echo may come back before the PUBACK.
		b.echoes.add(remoteTopic, m.payload)
	}
	if err := l.publish(ctx, m); err != nil {
		err = fmt.Errorf("publish to %s on %s: %w", remoteTopic, b.cfg.URL, err)
		b.setErr(err)
		return err
	}
	b.published.Add(1)
	return nil
}

// inMsg is a message received from the remote.
type inMsg struct {
	topic   string
	qos     byte
	retain  bool
	payload []byte
	props   packets.Properties
	// ack acknowledges it to the remote (PUBACK / PUBREC); a no-op once
	// its connection is gone.
	ack func()
	// conn ends with the connection the message came on.
	conn context.Context
}

// deliver hands a received message to the inbound worker. It runs on the
// client's reader, so it waits while the worker is busy (backpressure),
// but never past the end of the message's connection or of the bridge:
// unacknowledged, the message comes again on the next connection.
func (b *Bridge) deliver(m inMsg) {
	select {
	case b.in <- m:
	case <-m.conn.Done():
	case <-b.quit:
	}
}

// inbound publishes received messages locally, one at a time, in order.
func (b *Bridge) inbound(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-b.in:
			b.handleIn(ctx, m)
		}
	}
}

// handleIn publishes m locally and acknowledges it to the remote once the
// local broker has it (durably for QoS 1/2). A permanent refusal is
// counted, logged and acknowledged (the remote cannot dead-letter it). A
// transient failure is retried with backoff until it succeeds or Stop;
// for a QoS 1/2 message on a persistent session it also stops when the
// message's connection is lost, since the remote sends it again on the next.
func (b *Bridge) handleIn(ctx context.Context, m inMsg) {
	if b.echoes != nil && b.echoes.take(m.topic, m.payload) {
		b.echoed.Add(1)
		b.log.Debug("bridge dropped its own message coming back", "topic", m.topic)
		m.ack()
		return
	}
	r, local, ok := b.mapIn(m.topic)
	if !ok {
		b.refused.Add(1)
		err := fmt.Errorf("message on remote topic %q matches no in topic (a subscription left in the persistent session by an earlier configuration? set clean_session: true once to clear it)", m.topic)
		b.setErr(err)
		b.log.Warn("bridge message from the remote dropped", "topic", m.topic, "error", err)
		m.ack()
		return
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.qos, Retain: m.retain},
		TopicName:   local,
		Payload:     m.payload,
		Properties:  m.props,
		Created:     time.Now().Unix(),
	}
	pk.Properties.ResponseTopic = swapPrefix(m.props.ResponseTopic, r.RemotePrefix, r.LocalPrefix)
	redelivered := m.qos > 0 && !*b.cfg.CleanSession
	if redelivered && m.conn.Err() != nil {
		// Its connection went while it waited here: the remote sends it
		// again on the next one (publishing it now would double it).
		b.log.Debug("bridge left a message to the remote's redelivery", "topic", m.topic)
		return
	}
	for attempt := 1; ; attempt++ {
		err := b.publish(ctx, pk)
		switch {
		case err == nil:
			b.received.Add(1)
			m.ack()
			return
		case bridge.IsPermanent(err):
			b.refused.Add(1)
			b.setErr(fmt.Errorf("local publish to %s refused: %w", local, err))
			b.log.Warn("bridge message from the remote refused locally; dropped", "topic", local, "error", err)
			m.ack()
			return
		case ctx.Err() != nil:
			return // Stop: unacknowledged, the remote sends it again
		}
		b.setErr(fmt.Errorf("local publish to %s: %w", local, err))
		if attempt == 1 {
			b.log.Warn("bridge local publish failed; retrying", "topic", local, "error", err)
		} else {
			b.log.Debug("bridge local publish failed; retrying", "topic", local, "attempt", attempt, "error", err)
		}
		var lost <-chan struct{} // nil: never
		if redelivered {
			lost = m.conn.Done()
		}
		t := time.NewTimer(b.backoff(attempt))
		select {
		case <-ctx.Done():
		case <-lost:
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
		if redelivered && m.conn.Err() != nil {
			b.log.Debug("bridge left a message to the remote's redelivery", "topic", m.topic)
			return
		}
	}
}
