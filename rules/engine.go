package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// Origins (client ids) of what the engine publishes.
const (
	// OriginRules prefixes the client ids the rules publish with:
	// "mote-rules/1" publishes the output of client messages, "mote-rules/2"
	// the output of a chain rule acting on that, up to MaxHops.
	OriginRules = "mote-rules"
	// OriginEvents is the client id events are published with.
	OriginEvents = "mote-events"
)

// MaxHops bounds how many rules' outputs a message may pass through (only
// rules with chain: true act on rules' outputs at all). A rule whose output
// would exceed it fails with ErrHopLimit.
const MaxHops = 8

// Reserved topics.
const (
	// EventsPrefix starts every event topic.
	EventsPrefix = "$events/"
	// RulesPrefix starts dead-letter topics ($rules/{name}/dead) and the
	// scatter-gather reply topics ($rules/reply/{id}).
	RulesPrefix = "$rules/"
	replyLevel  = "reply"
	replyPrefix = RulesPrefix + replyLevel + "/"
)

// Errors.
var (
	// ErrUnknownRule is returned by Enable for a name no rule has.
	ErrUnknownRule = errors.New("rules: no such rule")
	// ErrHopLimit fails an action whose output would pass more than
	// MaxHops rules.
	ErrHopLimit = fmt.Errorf("rules: a message passed %d rules' outputs (chain rules republishing into each other?)", MaxHops)
	// ErrStopped fails actions that start timers once the engine stops.
	ErrStopped = errors.New("rules: engine stopped")
)

// Options configure an Engine.
type Options struct {
	// Server is the broker the engine publishes into.
	Server *mqtt.Server
	// Store keeps history, enrich tables and nothing else of the engine's.
	Store *persistence.Store
	// Persist is the storage hook: a publish's acknowledgement waits for
	// the engine's own writes (history, bridge outboxes) through WaitFor,
	// and nothing runs while it replays. Nil in tests without persistence.
	Persist *persistence.Hook
	// Bridges resolves bridge actions (nil: there are none).
	Bridges BridgeLookup
	// Log is the engine's logger.
	Log *slog.Logger
	// HTTP makes the enrich lookups (nil: a plain client; every lookup has
	// its own timeout).
	HTTP *http.Client
	// Events publishes events under $events/.
	Events bool
	// EventQueue bounds the events waiting to be published (default
	// 4096); more are dropped and counted.
	EventQueue int
}

// Counters are the engine's running totals.
type Counters struct {
	Matched        atomic.Uint64 // rule runs (topic matched, when held)
	Errors         atomic.Uint64 // rule errors
	Dropped        atomic.Uint64 // messages not delivered because of a rule
	DeadLettered   atomic.Uint64 // messages sent to $rules/{name}/dead
	Refused        atomic.Uint64 // client publishes to $events/ or $rules/ refused
	Events         atomic.Uint64 // events published
	EventsDropped  atomic.Uint64 // events lost because the queue was full
	EventsUnheard  atomic.Uint64 // events not published: no subscriber, no rule
	LateReplies    atomic.Uint64 // scatter-gather replies after the answer went out
	HistoryWritten atomic.Uint64 // messages kept by store actions
}

// Engine runs the rules. It is the mochi hook with id "rules": it must come
// after the auth and guard hooks and before persistence (so drop stops a
// message before it is written ahead for subscribers).
//
// Rules run on the publisher's goroutine inside OnPublish, before the
// publisher is acknowledged: republished messages, history and bridge
// outboxes of a QoS 1/2 message are durable before its PUBACK. Timed work
// (aggregate windows, scatter-gather timeouts) runs on timers the engine
// owns, and events go out from one goroutine.
//
// Lock order: aggregateAction.mu and gather.mu → Engine.lifeMu (starting a
// timer); Engine.stateMu, Engine.gmu, Engine.lifeMu, history.mu and lru.mu
// are leaves. Nothing publishes or calls out while holding any of them.
type Engine struct {
	mqtt.HookBase
	opts    Options
	server  *mqtt.Server
	store   *persistence.Store
	persist *persistence.Hook
	log     *slog.Logger
	http    *http.Client

	set     atomic.Pointer[Set]
	clients [MaxHops + 1]*mqtt.Client // clients[d] publishes depth d outputs (d ≥ 1)
	events  *mqtt.Client

	stateMu sync.Mutex
	states  map[string]*ruleState

	gmu     sync.Mutex
	gathers map[string]gatherRef // correlation id → pending scatter-gather target

	hist history

	evq  chan event
	quit chan struct{}
	ctx  context.Context
	stop context.CancelFunc

	lifeMu   sync.Mutex
	stopped  bool
	wg       sync.WaitGroup // goroutines and pending timers
	started  bool
	stopOnce sync.Once

	Counters Counters
}

var _ mqtt.Hook = (*Engine)(nil)

// New returns an engine with no rules; Reload gives it some, Start starts
// its goroutines.
func New(opts Options) *Engine {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{}
	}
	if opts.EventQueue <= 0 {
		opts.EventQueue = 4096
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		opts:    opts,
		server:  opts.Server,
		store:   opts.Store,
		persist: opts.Persist,
		log:     opts.Log,
		http:    opts.HTTP,
		states:  map[string]*ruleState{},
		gathers: map[string]gatherRef{},
		evq:     make(chan event, opts.EventQueue),
		quit:    make(chan struct{}),
		ctx:     ctx,
		stop:    cancel,
	}
	e.Log = opts.Log
	e.hist.init(opts.Store)
	for d := 1; d <= MaxHops; d++ {
		e.clients[d] = opts.Server.NewClient(nil, mqtt.LocalListener, OriginRules+"/"+strconv.Itoa(d), true)
		e.clients[d].Properties.ProtocolVersion = 5
	}
	e.events = opts.Server.NewClient(nil, mqtt.LocalListener, OriginEvents, true)
	e.events.Properties.ProtocolVersion = 5
	return e
}

// ID is the hook's id.
func (e *Engine) ID() string { return "rules" }

// Provides reports the events the hook handles.
func (e *Engine) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed,
		mqtt.OnUnsubscribed, mqtt.OnPublishDropped, mqtt.OnQosDropped:
		return true
	}
	return false
}

// Compile compiles rules against the engine's bridges (see Compile).
func (e *Engine) Compile(rules []Rule) (*Set, error) { return Compile(rules, e.opts.Bridges) }

// Start loads the history index and starts the event publisher and the
// history janitor. Call it once, after the first Reload.
func (e *Engine) Start() error {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.started || e.stopped {
		return errors.New("rules: Start called twice or after Stop")
	}
	if err := e.hist.load(); err != nil {
		return err
	}
	e.started = true
	e.wg.Go(e.publishEvents)
	e.wg.Go(e.janitor)
	return nil
}

// Stop finishes what is in flight (open aggregations are emitted as
// incomplete, scatter-gathers answer with what came), stops every timer and
// goroutine and waits for them. It is idempotent.
func (e *Engine) Stop() error {
	e.stopOnce.Do(func() {
		e.lifeMu.Lock()
		e.stopped = true
		e.lifeMu.Unlock()
		if s := e.set.Load(); s != nil {
			s.flush(e)
		}
		e.finishGathers()
		e.stop()
		close(e.quit)
	})
	e.wg.Wait()
	return nil
}

// after runs fn after d on a timer the engine owns; nil once stopped.
func (e *Engine) after(d time.Duration, fn func()) *time.Timer {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.stopped {
		return nil
	}
	e.wg.Add(1)
	return time.AfterFunc(d, func() {
		defer e.wg.Done()
		fn()
	})
}

// cancelTimer stops t; if it had not fired, its share of wg is released.
func (e *Engine) cancelTimer(t *time.Timer) {
	if t != nil && t.Stop() {
		e.wg.Done()
	}
}

// ruleState is what outlives a reload of a rule of the same name: its
// counters and whether it is switched on.
type ruleState struct {
	enabled    atomic.Bool
	configured bool // disabled as last loaded
	matched    atomic.Uint64
	errors     atomic.Uint64

	mu        sync.Mutex
	lastErr   string
	lastErrAt time.Time
}

func (st *ruleState) setLast(err string) {
	st.mu.Lock()
	st.lastErr, st.lastErrAt = err, time.Now()
	st.mu.Unlock()
}

// Reload puts s in force at once; messages being processed finish under the
// rules they started with. The previous set's open aggregations are emitted
// (incomplete) now; scatter-gathers in flight keep waiting for their
// replies. A rule keeps its counters, and a state set with Enable, across
// reloads unless its disabled setting changed. Reload(nil) removes every
// rule.
func (e *Engine) Reload(s *Set) {
	if s == nil {
		s = &Set{}
	}
	e.stateMu.Lock()
	keep := map[string]*ruleState{}
	for _, r := range s.rules {
		st := e.states[r.name]
		if st == nil || st.configured != r.disabled {
			if st == nil {
				st = &ruleState{}
			}
			st.configured = r.disabled
			st.enabled.Store(!r.disabled)
		}
		r.st = st
		keep[r.name] = st
	}
	e.states = keep
	e.stateMu.Unlock()
	old := e.set.Swap(s)
	if old != nil && old != s {
		old.flush(e)
	}
	e.log.Info("rules loaded", "rules", len(s.rules))
}

// Load reads cfg's rules (the inline ones, then File's) and tables,
// compiles the rules, then replaces the tables and puts the rules in
// force: the start-up and SIGHUP path. On any error nothing changes (the
// rules and tables in force stay) and the error says why, every problem
// at once; the caller logs it.
func (e *Engine) Load(cfg *Config) error {
	rs, err := cfg.Load()
	if err != nil {
		return err
	}
	set, err := e.Compile(rs)
	if err != nil {
		return err
	}
	if err := e.LoadTables(cfg.Tables); err != nil {
		return err
	}
	e.Reload(set)
	return nil
}

// Set is the rule set in force (nil before the first Reload).
func (e *Engine) Set() *Set { return e.set.Load() }

// RuleStatus describes one rule for the admin API.
type RuleStatus struct {
	Name        string    `json:"name"`
	Enabled     bool      `json:"enabled"`
	Topics      []string  `json:"topics"`
	Chain       bool      `json:"chain,omitempty"`
	OnError     string    `json:"on_error"`
	Matched     uint64    `json:"matched"`
	Errors      uint64    `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Rules describes the rules in force, in order.
func (e *Engine) Rules() []RuleStatus {
	s := e.set.Load()
	if s == nil {
		return nil
	}
	out := make([]RuleStatus, 0, len(s.rules))
	for _, r := range s.rules {
		st := r.st
		st.mu.Lock()
		last, at := st.lastErr, st.lastErrAt
		st.mu.Unlock()
		out = append(out, RuleStatus{
			Name: r.name, Enabled: st.enabled.Load(), Topics: slices.Clone(r.topics), Chain: r.chain,
			OnError: r.onError, Matched: st.matched.Load(), Errors: st.errors.Load(),
			LastError: last, LastErrorAt: at,
		})
	}
	return out
}

// Enable switches a rule on or off until the broker restarts or a reload
// changes the rule's disabled setting.
func (e *Engine) Enable(name string, on bool) error {
	s := e.set.Load()
	if s != nil {
		for _, r := range s.rules {
			if r.name == name {
				r.st.enabled.Store(on)
				e.log.Info("rule switched", "rule", name, "enabled", on)
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %q", ErrUnknownRule, name)
}

// --- publish path ------------------------------------------------------------

// depthOf is how many rules' outputs the message has passed.
func depthOf(origin string) int {
	if len(origin) != len(OriginRules)+2 || !strings.HasPrefix(origin, OriginRules+"/") {
		return 0
	}
	d := int(origin[len(origin)-1] - '0')
	if d < 1 || d > MaxHops {
		return 0
	}
	return d
}

// OnPublish runs the matching rules on a message.
func (e *Engine) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.Ignore {
		return pk, nil
	}
	t := pk.TopicName
	if len(t) > 0 && t[0] == '$' {
		if strings.HasPrefix(t, replyPrefix) {
			e.reply(pk)
			return pk, packets.CodeSuccessIgnore // consumed: an answer to the engine
		}
		if !cl.Net.Inline && (strings.HasPrefix(t, EventsPrefix) || strings.HasPrefix(t, RulesPrefix)) {
			return pk, e.refuse(cl, pk)
		}
	}
	s := e.set.Load()
	if s == nil || len(s.rules) == 0 {
		return pk, nil
	}
	depth := depthOf(pk.Origin)
	if depth > 0 && !s.anyChain {
		return pk, nil
	}
	if e.persist != nil && e.persist.Replaying() {
		return pk, nil // its outputs were made before the restart
	}
	var buf [32]int32
	matched := s.trie.match(t, buf[:0])
	if len(matched) == 0 {
		return pk, nil
	}
	return pk, e.apply(cl, &pk, s, matched, depth)
}

// run is the state of one message's rules, pooled: a matched message costs
// no allocation of its own beyond what its rules do.
type run struct {
	x exec
	m msg
}

var runPool = sync.Pool{New: func() any { return new(run) }}

// apply runs the matched rules on pk. Nothing keeps pk or the pooled run
// after it returns (actions that work later copy what they need).
func (e *Engine) apply(cl *mqtt.Client, pk *packets.Packet, s *Set, matched []int32, depth int) error {
	st := runPool.Get().(*run)
	defer func() {
		*st = run{}
		runPool.Put(st)
	}()
	m := &st.m
	m.reset(cl, pk)
	x := &st.x
	*x = exec{e: e, orig: m, depth: depth, event: isEvent(pk.TopicName)}
	for _, i := range matched {
		r := s.rules[i]
		if (depth > 0 && !r.chain) || !r.st.enabled.Load() {
			continue
		}
		r.run(x, m)
	}
	if x.batch != nil && pk.FixedHeader.Qos > 0 {
		// The acknowledgement waits for the rules' own writes. A dropped
		// message skips the later hooks (and the barrier), so wait here.
		if x.drop || cl.Net.Inline || e.persist == nil {
			if err := x.batch.Wait(); err != nil {
				e.log.Error("message not acknowledged: store write failed", "client", cl.ID, "error", err)
				return packets.ErrRejectPacket
			}
		} else {
			e.persist.WaitFor(pk, x.batch)
		}
	}
	if x.drop {
		e.Counters.Dropped.Add(1)
		if !x.event {
			e.Emit(EventMessageDropped, map[string]any{
				"client_id": cl.ID, "username": string(cl.Properties.Username), "topic": pk.TopicName,
				"qos": pk.FixedHeader.Qos, "reason": x.dropWhy,
			})
		}
		return packets.CodeSuccessIgnore
	}
	return nil
}

// refuse turns away a client's publish to a topic only the broker writes:
// as mochi treats one the ACL refuses (QoS 0: dropped; MQTT 3 QoS 1/2:
// disconnected; MQTT 5: "not authorized" in the acknowledgement).
func (e *Engine) refuse(cl *mqtt.Client, pk packets.Packet) error {
	e.Counters.Refused.Add(1)
	e.log.Debug("publish to a broker topic refused", "client", cl.ID, "topic", pk.TopicName)
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion < 5 {
		_ = e.server.DisconnectClient(cl, packets.ErrNotAuthorized) // the connection is closing either way
		return packets.ErrRejectPacket
	}
	typ := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	if err := cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID,
		ReasonCode:  packets.ErrNotAuthorized.Code,
		Properties:  packets.Properties{ReasonString: "topics under $events/ and $rules/ are the broker's"},
	}); err != nil {
		e.log.Debug("write refusal", "client", cl.ID, "error", err)
	}
	return packets.ErrRejectPacket
}

// publish injects pk as the rules' client for depth d.
func (e *Engine) publish(d int, pk packets.Packet) error {
	if d > MaxHops {
		return ErrHopLimit
	}
	if pk.FixedHeader.Qos > 0 && pk.PacketID == 0 {
		pk.PacketID = 1 // mochi wants one; the inline client never uses it
	}
	return e.server.InjectPacket(e.clients[d], pk)
}
