// Package bridge is the shared machinery of outbound bridges: messages
// matching a bridge's filters are kept in a durable outbox (QoS 1/2) or a
// bounded memory buffer (QoS 0) and handed to a Sender, with retries,
// backoff, per-topic ordering, batching, a circuit breaker and dead
// lettering. Delivery is at least once: a message leaves the outbox only
// once Send returned nil for it.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// Status is a snapshot of a bridge's state.
type Status struct {
	Name         string
	Connected    bool // breaker closed and the last send succeeded
	Backlog      int  // messages waiting (not in flight)
	InFlight     int  // messages in Send calls
	Sent         uint64
	Failed       uint64 // messages in failed send attempts
	DeadLettered uint64
	Dropped      uint64 // QoS 0 messages dropped because the buffer was full
	LastError    string
	LastErrorAt  time.Time
	BreakerOpen  bool
	Paused       bool // by Pause: nothing is sent until Resume
	DeadLetters  int  // dead letters kept for RetryDead (at most MaxDeadLetters)
}

// item is one message the bridge holds.
type item struct {
	id        uint64 // outbox id; 0 for a QoS 0 message kept in memory
	pk        packets.Packet
	attempts  int
	readyAt   time.Time // when it became ready to send (for BatchWait)
	notBefore time.Time // backoff
	inflight  bool
}

// lookahead bounds the outbox records held in memory at once.
const lookahead = 1024

// Bridge moves matching messages to a Sender.
type Bridge struct {
	cfg        Config
	ordered    bool
	outbox     *persistence.Log
	deadLog    *persistence.Log // dead letters kept for RetryDead
	store      *persistence.Store
	sender     Sender
	deadLetter func(pk packets.Packet, reason string, attempts int)
	log        *slog.Logger
	onSend     atomic.Pointer[func(d time.Duration, msgs int, err error)]

	kick                chan struct{}
	quit                chan struct{}
	wg                  sync.WaitGroup // dispatcher
	sends               sync.WaitGroup
	acking              sync.WaitGroup // outbox deletes waiting for their dead letters' copies
	ctx                 context.Context
	cancel              context.CancelFunc
	startOnce, stopOnce sync.Once

	mu                          sync.Mutex
	pending                     []*item // in order of arrival
	logHeld                     int     // outbox items in pending
	memHeld                     int     // QoS 0 items in pending
	inflightMsg                 int
	inflightB                   int // Send calls running
	stopped                     bool
	holdUntil                   time.Time // RetryAfter
	failures                    int       // consecutive failed sends
	breakerOpen                 bool
	openUntil                   time.Time
	probing                     bool
	paused                      bool
	retryMu                     sync.Mutex // one RetryDead at a time
	lastOK                      bool
	sent, failed, dead, dropped uint64
	lastErr                     string
	lastErrAt                   time.Time
}

// New validates cfg and opens the bridge's durable outbox, the persistence
// log "bridge/"+cfg.Name in store. deadLetter (may be nil) is called, from a
// bridge goroutine, for each message given up on, with the last error.
func New(cfg Config, store *persistence.Store, sender Sender, deadLetter func(pk packets.Packet, reason string, attempts int), log *slog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || sender == nil {
		return nil, errors.New("bridge: store and sender are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	outbox, err := store.Log("bridge/" + cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
	}
	dead, err := store.Log(deadLogPrefix + cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: dead letters: %w", cfg.Name, err)
	}
	_, paused, err := store.Get(pausedKey(cfg.Name))
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
	}
	if paused {
		log.Warn("bridge paused (by the admin API before the restart): nothing is sent until it is resumed", "bridge", cfg.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Bridge{
		cfg:        cfg,
		ordered:    *cfg.Ordered,
		outbox:     outbox,
		deadLog:    dead,
		paused:     paused,
		store:      store,
		sender:     sender,
		deadLetter: deadLetter,
		log:        log.With("bridge", cfg.Name),
		kick:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		lastOK:     true,
	}, nil
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

// Matches reports whether topic matches one of the bridge's filters.
func (b *Bridge) Matches(topic string) bool {
	for _, f := range b.cfg.Filters {
		if topics.Match(f, topic) {
			return true
		}
	}
	return false
}

// Offer takes a message for the bridge. A QoS 1/2 message is appended to
// the durable outbox and the batch making it durable is returned: the
// caller should not acknowledge the publish before it is committed (see
// persistence.Hook.WaitFor). A QoS 0 message is kept in memory only (or
// dropped and counted when the buffer is full) and Offer returns nil.
func (b *Bridge) Offer(pk packets.Packet) *persistence.Batch {
	pk.Connect = packets.ConnectParams{}
	if pk.FixedHeader.Qos == 0 {
		b.mu.Lock()
		if b.stopped || b.memHeld >= b.cfg.MemoryBuffer {
			b.dropped++
			b.mu.Unlock()
			return nil
		}
		b.memHeld++
		b.pending = append(b.pending, &item{pk: pk, readyAt: time.Now()})
		b.mu.Unlock()
		b.wake()
		return nil
	}
	_, batch := b.outbox.Append(persistence.EncodeMessage(pk, 0))
	// Lease skips records not committed yet: look again once it is.
	b.store.Afterwards(batch, func(error) { b.wake() })
	return batch
}

func (b *Bridge) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Start starts delivering. It must be called at most once.
func (b *Bridge) Start() {
	b.startOnce.Do(func() {
		b.wg.Add(1)
		go b.dispatcher()
	})
}

// Stop stops delivering: it lets running sends finish for up to
// StopTimeout, then cancels their context and waits for them. Messages not
// acknowledged stay in the outbox (QoS 0 ones are lost). It is idempotent.
func (b *Bridge) Stop() {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.quit)
		b.wg.Wait()
		done := make(chan struct{})
		go func() { b.sends.Wait(); close(done) }()
		t := time.NewTimer(b.cfg.StopTimeout)
		select {
		case <-done:
		case <-t.C:
			b.cancel()
			<-done
		}
		t.Stop()
		b.cancel()
		b.acking.Wait() // the store commits them (it closes after the bridges stop)
		b.mu.Lock()
		var ids []uint64
		for _, it := range b.pending {
			if it.id != 0 {
				ids = append(ids, it.id)
			}
		}
		b.pending = nil
		b.logHeld, b.memHeld = 0, 0
		b.mu.Unlock()
		b.outbox.Release(ids...)
	})
}

// Status returns a snapshot of the bridge's state.
func (b *Bridge) Status() Status {
	n := b.outbox.Len()
	b.mu.Lock()
	defer b.mu.Unlock()
	open := b.breakerOpen
	backlog := n - b.logHeld + len(b.pending) - b.inflightMsg
	return Status{
		Name:         b.cfg.Name,
		Connected:    !open && b.lastOK,
		Backlog:      max(backlog, 0),
		InFlight:     b.inflightMsg,
		Sent:         b.sent,
		Failed:       b.failed,
		DeadLettered: b.dead,
		Dropped:      b.dropped,
		LastError:    b.lastErr,
		LastErrorAt:  b.lastErrAt,
		BreakerOpen:  open,
		Paused:       b.paused,
		DeadLetters:  b.deadLog.Len(),
	}
}

func (b *Bridge) dispatcher() {
	defer b.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := b.dispatch()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		if !next.IsZero() {
			t.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-b.quit:
			return
		case <-b.kick:
		case <-t.C:
		}
	}
}

// refill leases outbox records into pending. b.mu is held.
func (b *Bridge) refill(now time.Time) {
	if n := lookahead - b.logHeld; n > 0 {
		es, err := b.outbox.Lease(n)
		if err != nil {
			b.log.Error("bridge outbox read failed", "err", err)
		}
		for _, e := range es {
			pk, attempts, err := persistence.DecodeMessage(e.Value)
			if err != nil {
				// Undecodable: nothing can ever send it.
				b.log.Error("bridge outbox record corrupt; dropped", "id", e.ID, "err", err)
				b.outbox.Ack(e.ID)
				continue
			}
			b.pending = append(b.pending, &item{id: e.ID, pk: pk, attempts: attempts, readyAt: now})
			b.logHeld++
		}
	}
}

// dispatch starts the sends that may start now and returns when to look
// again (zero: on the next kick).
func (b *Bridge) dispatch() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped || b.paused {
		return time.Time{}
	}
	now := time.Now()
	b.refill(now)
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	slots := b.cfg.Concurrency - b.inflightB
	if b.breakerOpen {
		if now.Before(b.openUntil) {
			return b.openUntil
		}
		if b.probing || b.inflightB > 0 {
			return time.Time{}
		}
		slots = 1 // one probe
	}
	if now.Before(b.holdUntil) {
		return b.holdUntil
	}
	if slots <= 0 {
		return time.Time{}
	}
	blocked := map[string]bool{}
	var batch []*item
	var oldest time.Time
	launch := func() {
		for _, it := range batch {
			it.inflight = true
			blocked[it.pk.TopicName] = true
		}
		if b.breakerOpen {
			b.probing = true
		}
		b.inflightB++
		b.inflightMsg += len(batch)
		slots--
		b.sends.Add(1)
		go b.send(batch)
		batch, oldest = nil, time.Time{}
	}
	for _, it := range b.pending {
		if slots <= 0 {
			break
		}
		topic := it.pk.TopicName
		if it.inflight {
			if b.ordered {
				blocked[topic] = true
			}
			continue
		}
		if b.ordered && blocked[topic] {
			continue
		}
		if it.notBefore.After(now) {
			later(it.notBefore)
			if b.ordered {
				blocked[topic] = true
			}
			continue
		}
		batch = append(batch, it)
		if oldest.IsZero() || it.readyAt.Before(oldest) {
			oldest = it.readyAt
		}
		if len(batch) >= b.cfg.BatchSize {
			launch()
		}
	}
	if len(batch) > 0 && slots > 0 {
		if deadline := oldest.Add(b.cfg.BatchWait); b.cfg.BatchWait > 0 && now.Before(deadline) {
			later(deadline)
		} else {
			launch()
		}
	}
	return next
}

// send runs one Send call and settles its messages.
func (b *Bridge) send(batch []*item) {
	defer b.sends.Done()
	msgs := make([]packets.Packet, len(batch))
	ids := make([]string, len(batch))
	for i, it := range batch {
		msgs[i] = it.pk
		if it.id != 0 {
			ids[i] = b.cfg.Name + "-" + strconv.FormatInt(it.pk.Created, 36) + "-" + strconv.FormatUint(it.id, 10)
		}
	}
	start := time.Now()
	err := b.safeSend(context.WithValue(b.ctx, idsKey{}, ids), msgs)
	if fn := b.onSend.Load(); fn != nil && b.ctx.Err() == nil {
		(*fn)(time.Since(start), len(msgs), err)
	}
	type dl struct {
		pk       packets.Packet
		reason   string
		attempts int
	}
	var dead []dl
	var acks []uint64
	now := time.Now()

	b.mu.Lock()
	b.inflightB--
	b.inflightMsg -= len(batch)
	b.probing = false
	done := map[*item]bool{}
	switch {
	case err == nil:
		b.failures = 0
		b.breakerOpen = false
		b.lastOK = true
		b.sent += uint64(len(batch))
		for _, it := range batch {
			done[it] = true
			if it.id != 0 {
				acks = append(acks, it.id)
			}
		}
	case b.ctx.Err() != nil:
		// Cancelled by Stop: not an attempt; the messages stay.
		for _, it := range batch {
			it.inflight = false
		}
	default:
		// Per-message outcomes when the sender gave them (BatchError),
		// else err for every message.
		itemErr := func(int) error { return err }
		var be *BatchError
		if errors.As(err, &be) && len(be.Errs) == len(batch) {
			itemErr = func(i int) error { return be.Errs[i] }
		}
		b.lastOK = false
		b.lastErr = err.Error()
		b.lastErrAt = now
		d, asked := retryDelay(err)
		if asked {
			b.holdUntil = now.Add(d)
		}
		transient := false
		for i, it := range batch {
			it.inflight = false
			ierr := itemErr(i)
			if ierr == nil {
				done[it] = true
				b.sent++
				if it.id != 0 {
					acks = append(acks, it.id)
				}
				continue
			}
			b.failed++
			permanent := IsPermanent(ierr)
			transient = transient || !permanent
			it.attempts++
			if permanent || it.attempts >= b.cfg.MaxAttempts {
				done[it] = true
				dead = append(dead, dl{it.pk, ierr.Error(), it.attempts})
				if it.id != 0 {
					acks = append(acks, it.id)
				}
				continue
			}
			wait := b.backoff(it.attempts)
			if asked {
				wait = max(wait, d)
			}
			it.notBefore = now.Add(wait)
			it.readyAt = it.notBefore
			if it.id != 0 {
				// Keep the attempt count across restarts (best effort).
				_, _ = b.outbox.Put(it.id, persistence.EncodeMessage(it.pk, it.attempts))
			}
		}
		// Only failures that may pass count towards the breaker: a far
		// side refusing particular messages for good is not down.
		if transient {
			b.failures++
			if b.breakerOpen || b.failures >= b.cfg.BreakerFailures {
				if !b.breakerOpen {
					b.log.Warn("bridge breaker open", "failures", b.failures, "err", err)
				}
				b.breakerOpen = true
				b.openUntil = now.Add(b.cfg.BreakerCooldown)
			}
		}
		b.dead += uint64(len(dead))
	}
	if len(done) > 0 {
		b.pending = slices.DeleteFunc(b.pending, func(it *item) bool {
			if !done[it] {
				return false
			}
			if it.id != 0 {
				b.logHeld--
			} else {
				b.memHeld--
			}
			return true
		})
		// The outbox records of dead letters go once the kept copies are
		// durable (a crash can apply part of one store transaction, so
		// they do not share a batch); until then they stay leased here.
		var kept *persistence.Batch
		for _, d := range dead {
			kept = b.keepDead(d.pk, d.reason, d.attempts)
		}
		switch {
		case len(acks) == 0:
		case kept != nil:
			ids := acks
			b.acking.Add(1)
			b.store.Afterwards(kept, func(err error) {
				defer b.acking.Done()
				if err == nil {
					b.outbox.Ack(ids...)
				}
			})
		default:
			b.outbox.Ack(acks...)
		}
	}
	b.mu.Unlock()

	for _, d := range dead {
		b.log.Warn("bridge message dead-lettered", "topic", d.pk.TopicName, "attempts", d.attempts, "err", d.reason)
		if b.deadLetter != nil {
			b.deadLetter(d.pk, d.reason, d.attempts)
		}
	}
	b.wake()
}

// safeSend calls the sender, turning a panic into an error.
func (b *Bridge) safeSend(ctx context.Context, msgs []packets.Packet) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bridge: sender panicked: %v", r)
		}
	}()
	return b.sender.Send(ctx, msgs)
}

type idsKey struct{}

// MessageIDs returns, inside Send, a stable id for each message of msgs:
// the same on every attempt and after a restart ("" for a QoS 0 message,
// which has none). Senders give it to far sides that deduplicate (an AMQP
// message-id, an idempotency key).
func MessageIDs(ctx context.Context) []string {
	ids, _ := ctx.Value(idsKey{}).([]string)
	return ids
}

// backoff is the delay before attempt n+1: exponential, full jitter.
func (b *Bridge) backoff(n int) time.Duration {
	c := b.cfg.BackoffMin
	for i := 1; i < n && c < b.cfg.BackoffMax; i++ {
		c *= 2
	}
	c = min(c, b.cfg.BackoffMax)
	if c <= 0 {
		return 0
	}
	return rand.N(c + 1)
}
