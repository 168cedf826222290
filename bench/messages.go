package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Receive Maximum sent by message scenario clients (v5). Subscribers send the
// protocol's default so the broker is not throttled by us (mochi caps it at
// its MaximumInflight); publishers receive nothing.
const (
	subscriberReceiveMax = 65535
	publisherReceiveMax  = 16
)

// TCP read buffer sizes: subscribers read every delivery, publishers only
// acknowledgements.
const (
	subscriberReadBuf = 64 << 10
	publisherReadBuf  = 4 << 10
)

// publisher is one publishing client and what it sent.
type publisher struct {
	idx   int
	topic string
	conn  mqttConn
	sem   chan struct{} // one slot per outstanding QoS ≥ 1 publish; nil at QoS 0

	mu        sync.Mutex // guards the fields below: written by the publishing and ack goroutines
	sent      seqSet     // acknowledged (QoS ≥ 1) or written (QoS 0)
	published uint64
	rejected  uint64
	lastSent  int64 // r.now() of the last ack (QoS 0: write)
	allAcked  bool  // every publish got its outcome before the drain ended
}

func (p *publisher) onAck(r *runner) func(uint64, ackResult) {
	return func(seq uint64, res ackResult) {
		now := r.now()
		p.mu.Lock()
		switch res {
		case ackOK:
			p.sent.add(seq)
			p.lastSent = max(p.lastSent, now)
		case ackRejected:
			p.rejected++
		}
		p.mu.Unlock()
		select { // release the slot; non-blocking so a spurious ack cannot wedge the reader
		case <-p.sem:
		default:
		}
	}
}

// sink is where deliveries are checked for loss and duplicates: one per
// subscriber, or one per shared-subscription group (queue), so that a
// message delivered to any one consumer counts as received.
type sink struct {
	mu       sync.Mutex
	got      []seqSet // per producer
	dups     uint64
	distinct atomic.Uint64 // first deliveries, for the drain's progress check
	// only is the single producer this sink expects (pairs), or -1 for all.
	only int
}

// subscriber is one subscribing client. All fields but received are written
// only by the client's delivery goroutine and read after the client closed.
type subscriber struct {
	idx      int
	filter   string
	conn     mqttConn
	sink     *sink
	hist     histogram
	high     []uint64 // per producer: highest sequence + 1 seen so far, 0 = none
	ooo      uint64
	foreign  uint64
	last     int64 // r.now() of the last delivery
	received atomic.Uint64
}

// messageRun is one pubsub, latency or queue run.
type messageRun struct {
	*runner
	pubs     []*publisher
	subs     []*subscriber
	sinks    []*sink
	draining atomic.Bool
	progress chan struct{} // poked by deliveries while draining
	closed   bool          // closeClients ran
}

func (r *runner) runMessages(ctx context.Context, start *time.Time) (*MessageStats, error) {
	cfg := &r.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.cancel = cancel

	m := &messageRun{runner: r, progress: make(chan struct{}, 1)}
	m.layout()
	defer m.closeClients() // on every return path; a no-op after the first call

	// Connect and subscribe every subscriber, then connect every publisher.
	connStart := time.Now()
	switch cfg.Scenario {
	case ScenarioWebhook:
		stop, err := m.startSink(m.subs[0])
		if err != nil {
			return nil, fmt.Errorf("bench: webhook sink on %s: %w", cfg.Sink, err)
		}
		defer stop()
	case ScenarioAMQP:
		stop, err := m.startAMQPSink(m.subs[0])
		if err != nil {
			return nil, fmt.Errorf("bench: amqp sink: %w", err)
		}
		defer stop()
	}
	err := forEach(ctx, len(m.subs), func(ctx context.Context, i int) error {
		s := m.subs[i]
		if cfg.Scenario == ScenarioWebhook || cfg.Scenario == ScenarioAMQP {
			return nil // the broker's bridge delivers to the sink
		}
		c, err := connect(ctx, clientOpts{
			cfg: cfg, url: r.url, id: r.clientID('s', i), receiveMax: subscriberReceiveMax, readBuf: subscriberReadBuf,
			onMessage: m.deliver(s),
			onLost:    func(err error) { r.fail(fmt.Errorf("bench: subscriber %d: connection lost: %w", i, err)) },
		})
		if err != nil {
			return fmt.Errorf("bench: subscriber %d: connect %s: %w", i, cfg.URL, err)
		}
		s.conn = c
		if err := c.subscribe(ctx, s.filter, cfg.QoS); err != nil {
			return fmt.Errorf("bench: subscriber %d: subscribe %q: %w", i, s.filter, err)
		}
		return nil
	})
	if err == nil {
		err = forEach(ctx, len(m.pubs), func(ctx context.Context, i int) error {
			p := m.pubs[i]
			o := clientOpts{
				cfg: cfg, url: r.url, id: r.clientID('p', i), receiveMax: publisherReceiveMax, readBuf: publisherReadBuf,
				inflight: cfg.Inflight,
				onLost:   func(err error) { r.fail(fmt.Errorf("bench: publisher %d: connection lost: %w", i, err)) },
			}
			if cfg.QoS > 0 {
				o.onAck = p.onAck(r)
			}
			c, err := connect(ctx, o)
			if err != nil {
				return fmt.Errorf("bench: publisher %d: connect %s: %w", i, cfg.URL, err)
			}
			p.conn = c
			return nil
		})
	}
	if err != nil {
		if ferr := r.firstErr(); ferr != nil {
			err = ferr // a lost connection, which cancelled the connects
		}
		return nil, err
	}
	r.log.Info("clients connected", "publishers", len(m.pubs), "subscribers", len(m.subs), "took", time.Since(connStart).Round(time.Millisecond))

	// The clock starts now.
	*start = time.Now()
	cpu0 := sampleCPU(cfg.PID)
	t0 := r.now()
	pubEnd := t0 + int64(cfg.Duration)
	pubCtx, cancelPub := context.WithDeadline(ctx, r.base.Add(time.Duration(pubEnd)))
	defer cancelPub()
	drainCtx, cancelDrain := context.WithDeadline(ctx, r.base.Add(time.Duration(pubEnd)+cfg.Drain))
	defer cancelDrain()

	var pubWG sync.WaitGroup
	for _, p := range m.pubs {
		pubWG.Go(func() { m.publish(pubCtx, drainCtx, p, t0) })
	}
	// waiter turns pubWG into a channel for the select below; it ends when
	// the publishers do, which closeClients guarantees (closing a client
	// fails any write a publisher is blocked in).
	pubsDone := make(chan struct{})
	var waiter sync.WaitGroup
	waiter.Go(func() { pubWG.Wait(); close(pubsDone) })

	<-pubCtx.Done()
	drainStart := r.now()
	m.draining.Store(true)
	r.log.Info("publishing stopped; draining", "drain", cfg.Drain)

	// Drain: first the publishers' outstanding acknowledgements, then the deliveries.
	select {
	case <-pubsDone:
	case <-drainCtx.Done():
	}
	expected := m.expected()
	for m.distinct() < expected && drainCtx.Err() == nil {
		select {
		case <-m.progress:
		case <-drainCtx.Done():
		}
	}
	drainEnd := r.now()
	cpu := cpuBetween(cpu0, sampleCPU(cfg.PID), runtime.NumCPU())
	complete := m.allAcked() && m.distinct() >= expected && ctx.Err() == nil

	// Close everything so the statistics below are final, then wait for the
	// publishers (and so for waiter).
	m.closeClients()
	waiter.Wait()

	st := m.stats(t0)
	st.Expected = expected
	st.Drain = time.Duration(drainEnd - drainStart)
	st.DrainComplete = complete
	st.CPU = cpu
	if err := r.firstErr(); err != nil {
		return st, err
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("bench: interrupted: %w", err)
	}
	return st, nil
}

// layout creates the publishers, subscribers and sinks for the scenario.
func (m *messageRun) layout() {
	cfg := &m.cfg
	npubs, nsubs := cfg.Pubs, cfg.Subs
	mode := cfg.TopicMode
	switch cfg.Scenario {
	case ScenarioLatency:
		npubs, nsubs, mode = 1, 1, ModeFanIn
	case ScenarioQueue:
		mode = ""
	case ScenarioWebhook, ScenarioAMQP:
		nsubs, mode = 1, ModeFanIn
	}
	topic := func(i int) string {
		switch mode {
		case ModePairs:
			return m.topic + "/" + strconv.Itoa(i)
		case "":
			return m.topic + "/queue"
		}
		return m.topic + "/all"
	}
	for i := range npubs {
		p := &publisher{idx: i, topic: topic(i)}
		if cfg.QoS > 0 {
			p.sem = make(chan struct{}, cfg.Inflight)
		}
		m.pubs = append(m.pubs, p)
	}
	var shared *sink
	if cfg.Scenario == ScenarioQueue {
		shared = &sink{got: make([]seqSet, npubs), only: -1}
		m.sinks = append(m.sinks, shared)
	}
	for i := range nsubs {
		s := &subscriber{idx: i, filter: topic(i), sink: shared, high: make([]uint64, npubs)}
		if shared != nil {
			s.filter = "$share/" + cfg.Group + "/" + topic(i)
		} else {
			s.sink = &sink{got: make([]seqSet, npubs), only: -1}
			if mode == ModePairs {
				s.sink.only = i
			}
			m.sinks = append(m.sinks, s.sink)
		}
		m.subs = append(m.subs, s)
	}
}

// deliver returns subscriber s's message callback.
func (m *messageRun) deliver(s *subscriber) func([]byte) {
	npubs := uint32(len(m.pubs))
	return func(payload []byte) {
		now := m.now()
		h, err := parseHeader(payload)
		// Not ours: another run, another publisher, or a broker that routed a
		// message to a subscriber that did not subscribe to its topic.
		if err != nil || h.run != m.run || h.producer >= npubs || h.seq >= maxSeq ||
			(s.sink.only >= 0 && int(h.producer) != s.sink.only) {
			s.foreign++
			return
		}
		s.hist.record(now - h.sent)
		s.sink.mu.Lock()
		dup := s.sink.got[h.producer].add(h.seq)
		if dup {
			s.sink.dups++
		}
		s.sink.mu.Unlock()
		if !dup {
			s.sink.distinct.Add(1)
			if h.seq+1 < s.high[h.producer] {
				s.ooo++
			} else {
				s.high[h.producer] = h.seq + 1
			}
		}
		s.last = now
		s.received.Add(1)
		if m.draining.Load() {
			select {
			case m.progress <- struct{}{}:
			default:
			}
		}
	}
}

// publish is one publisher's goroutine: publish until pubCtx ends, then wait
// (until drainCtx ends) for the outcome of every publish still in flight.
func (m *messageRun) publish(pubCtx, drainCtx context.Context, p *publisher, t0 int64) {
	cfg := &m.cfg
	var (
		interval float64 // nanoseconds between publishes; 0 = no pacing
		phase    float64 // spreads publishers across the interval
		timer    *time.Timer
	)
	if cfg.Rate > 0 {
		interval = float64(time.Second) / cfg.Rate
		phase = interval * float64(p.idx) / float64(len(m.pubs))
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
loop:
	for seq := uint64(0); pubCtx.Err() == nil; seq++ {
		if interval > 0 {
			due := t0 + int64(phase+float64(seq)*interval)
			if d := time.Duration(due - m.now()); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-pubCtx.Done():
					break loop
				}
			}
		}
		if p.sem != nil {
			select {
			case p.sem <- struct{}{}:
			case <-pubCtx.Done():
				break loop
			}
		}
		payload := make([]byte, cfg.Size) // paho may still hold the previous one
		sent := m.now()
		header{run: m.run, producer: uint32(p.idx), seq: seq, sent: sent}.put(payload)
		if err := p.conn.publish(pubCtx, p.topic, cfg.QoS, payload, seq); err != nil {
			if p.sem != nil {
				<-p.sem // the slot was not used
			}
			if pubCtx.Err() == nil {
				m.fail(fmt.Errorf("bench: publisher %d: publish to %q: %w", p.idx, p.topic, err))
			}
			break loop
		}
		p.mu.Lock()
		p.published++
		if p.sem == nil { // QoS 0: written is all there is
			p.sent.add(seq)
			p.lastSent = sent
		}
		p.mu.Unlock()
	}
	m.awaitAcks(drainCtx, p)
}

// awaitAcks waits until every inflight slot is free again, i.e. every QoS ≥ 1
// publish has its outcome, or drainCtx ends.
func (m *messageRun) awaitAcks(drainCtx context.Context, p *publisher) {
	if p.sem != nil {
		for range cap(p.sem) {
			select {
			case p.sem <- struct{}{}:
			case <-drainCtx.Done():
				return
			}
		}
	}
	p.mu.Lock()
	p.allAcked = true
	p.mu.Unlock()
}

// expected is the number of first deliveries the sent messages should produce.
func (m *messageRun) expected() uint64 {
	var n uint64
	for _, s := range m.sinks {
		for i, p := range m.pubs {
			if s.only >= 0 && s.only != i {
				continue
			}
			p.mu.Lock()
			n += p.sent.len()
			p.mu.Unlock()
		}
	}
	return n
}

func (m *messageRun) distinct() uint64 {
	var n uint64
	for _, s := range m.sinks {
		n += s.distinct.Load()
	}
	return n
}

func (m *messageRun) allAcked() bool {
	for _, p := range m.pubs {
		p.mu.Lock()
		ok := p.allAcked
		p.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// closeClients closes every client once; only the run goroutine calls it.
// It leaves the conn fields alone: a publisher may still be using its own.
func (m *messageRun) closeClients() {
	if m.closed {
		return
	}
	m.closed = true
	conns := make([]mqttConn, 0, len(m.pubs)+len(m.subs))
	for _, p := range m.pubs {
		conns = append(conns, p.conn)
	}
	for _, s := range m.subs {
		conns = append(conns, s.conn)
	}
	if err := closeAll(conns); err != nil {
		m.log.Warn("closing clients", "error", err)
	}
}

// stats computes the result; every client must be closed.
func (m *messageRun) stats(t0 int64) *MessageStats {
	st := &MessageStats{Publishers: len(m.pubs), Subscribers: len(m.subs)}
	var lastSent int64
	for _, p := range m.pubs {
		p.mu.Lock()
		st.Sent += p.sent.len()
		st.Rejected += p.rejected
		st.Unacked += p.published - p.sent.len() - p.rejected
		lastSent = max(lastSent, p.lastSent)
		p.mu.Unlock()
	}
	var (
		hist     histogram
		lastRecv int64
	)
	for _, s := range m.subs {
		n := s.received.Load()
		st.Received += n
		st.OutOfOrder += s.ooo
		st.Foreign += s.foreign
		hist.merge(&s.hist)
		lastRecv = max(lastRecv, s.last)
		if m.cfg.Scenario == ScenarioQueue {
			st.PerSubscriber = append(st.PerSubscriber, n)
		}
	}
	for _, s := range m.sinks {
		s.mu.Lock()
		st.Duplicates += s.dups
		for i, p := range m.pubs {
			if s.only >= 0 && s.only != i {
				continue
			}
			st.Lost += s.got[i].missingFrom(&p.sent)
		}
		s.mu.Unlock()
	}
	st.Latency = hist.latency()
	if lastSent > t0 {
		st.SendWindow = time.Duration(lastSent - t0)
		st.SendRate = float64(st.Sent) / st.SendWindow.Seconds()
	}
	if lastRecv > t0 {
		st.ReceiveWindow = time.Duration(lastRecv - t0)
		st.ReceiveRate = float64(st.Received) / st.ReceiveWindow.Seconds()
	}
	if len(st.PerSubscriber) > 0 && st.Received > 0 {
		st.MinShare, st.MaxShare = 1, 0
		for _, n := range st.PerSubscriber {
			share := float64(n) / float64(st.Received)
			st.MinShare = min(st.MinShare, share)
			st.MaxShare = max(st.MaxShare, share)
		}
	}
	return st
}
