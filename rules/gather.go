package rules

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// --- aggregate -------------------------------------------------------------------

// aggregateAction keeps open aggregations in memory, keyed by the key
// expression's result. The inputs were acknowledged when they arrived: a
// crash loses what was collected, and Reload or Stop emits it at once,
// marked incomplete.
type aggregateAction struct {
	base
	key     *program
	count   int
	window  time.Duration
	maxKeys int

	mu     sync.Mutex
	open   map[string]*bucket
	closed bool // flushed by Reload or Stop: a late message is emitted alone
}

type bucket struct {
	key   any
	items []any
	topic string // of the latest message
	qos   byte   // the highest of the messages
	depth int
	timer *time.Timer
}

func (a *aggregateAction) do(x *exec, m *msg) (*msg, error) {
	var key any = m.topic
	if a.key != nil {
		v, err := a.key.run(m.env(a.key.needs))
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		key = v
	}
	var sb strings.Builder
	if err := appendText(&sb, key); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	ks := sb.String()
	item := m.value()
	if item == nil && m.format == "" && len(m.payload) > 0 {
		item = string(m.payload) // not JSON: kept as text
	}

	a.mu.Lock()
	if a.closed {
		// A message that was matched just before its set was replaced.
		a.mu.Unlock()
		a.emit(x.e, &bucket{key: key, items: []any{item}, topic: m.topic, qos: m.qos, depth: x.depth}, false)
		return nil, nil
	}
	b := a.open[ks]
	if b == nil {
		if len(a.open) >= a.maxKeys {
			a.mu.Unlock()
			return nil, fmt.Errorf("%d aggregations open: max_keys reached", len(a.open))
		}
		b = &bucket{key: key}
		if a.window > 0 {
			e := x.e
			b.timer = e.after(a.window, func() { a.expire(e, ks, b) })
			if b.timer == nil {
				a.mu.Unlock()
				return nil, ErrStopped
			}
		}
		a.open[ks] = b
	}
	b.items = append(b.items, item)
	b.topic = m.topic
	b.qos = max(b.qos, m.qos)
	b.depth = max(b.depth, x.depth)
	full := a.count > 0 && len(b.items) >= a.count
	if full {
		delete(a.open, ks)
		x.e.cancelTimer(b.timer)
	}
	a.mu.Unlock()
	if full {
		a.emit(x.e, b, true)
	}
	return nil, nil
}

// expire completes b when its window ends (unless it completed already).
func (a *aggregateAction) expire(e *Engine, ks string, b *bucket) {
	a.mu.Lock()
	if a.open[ks] != b {
		a.mu.Unlock()
		return
	}
	delete(a.open, ks)
	a.mu.Unlock()
	a.emit(e, b, a.count == 0) // a window alone completes; with a count it ran out
}

// flush emits every open aggregation now.
func (a *aggregateAction) flush(e *Engine) {
	a.mu.Lock()
	open := a.open
	a.open = map[string]*bucket{}
	a.closed = true
	a.mu.Unlock()
	for _, b := range open {
		e.cancelTimer(b.timer)
		a.emit(e, b, false)
	}
}

// emit runs the rest of the rule on the combined message.
func (a *aggregateAction) emit(e *Engine, b *bucket, complete bool) {
	v := map[string]any{"key": b.key, "count": len(b.items), "complete": complete, "items": b.items}
	payload, err := encodeJSON(v)
	x := later(e, b.depth)
	m := &msg{topic: b.topic, qos: b.qos, ctype: contentType(fmtJSON)}
	m.e = env{Topic: m.topic, QoS: int(m.qos)}
	if err != nil {
		a.r.fail(x, m, a.label, err)
		return
	}
	a.next(x, m.derive(payload, fmtJSON, v))
}

// --- scatter-gather -----------------------------------------------------------------

type sgAction struct {
	base
	targets    []*template
	timeout    time.Duration
	qos        int
	replyTopic *template
}

// gather is one scatter-gather waiting for replies.
type gather struct {
	a       *sgAction
	targets []string
	ids     []string
	topic   string // where the answer goes ("" = nowhere)
	corr    []byte // the request's correlation data
	qos     byte
	depth   int
	props   msgProps
	timer   *time.Timer

	mu      sync.Mutex
	replies map[int]any
	done    bool
}

// gatherRef points a correlation id at a gather's target.
type gatherRef struct {
	g *gather
	i int
}

func (a *sgAction) do(x *exec, m *msg) (*msg, error) {
	g := &gather{a: a, qos: qosOr(a.qos, m.qos), depth: x.depth, replies: map[int]any{}}
	g.corr = m.props.correlation
	g.topic = m.props.responseTopic
	if a.replyTopic != nil {
		t, err := renderTopic(a.replyTopic, m)
		if err != nil {
			return nil, fmt.Errorf("reply_topic: %w", err)
		}
		g.topic = t
	}
	seen := map[string]bool{}
	for i, tt := range a.targets {
		t, err := renderTopic(tt, m)
		if err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		if seen[t] {
			return nil, fmt.Errorf("targets[%d]: %q is listed twice", i, t)
		}
		seen[t] = true
		g.targets = append(g.targets, t)
		g.ids = append(g.ids, newID())
	}
	g.props = m.props
	g.props.user = slices.Clone(g.props.user)
	if x.depth+1 > MaxHops {
		return nil, ErrHopLimit
	}
	// Register before publishing: a replier may answer before the last
	// request is out.
	e := x.e
	e.gmu.Lock()
	for i, id := range g.ids {
		e.gathers[id] = gatherRef{g: g, i: i}
	}
	e.gmu.Unlock()
	g.mu.Lock()
	g.timer = e.after(a.timeout, func() { g.finish(e) })
	stopped := g.timer == nil
	g.mu.Unlock()
	if stopped {
		e.forget(g)
		return nil, ErrStopped
	}
	for i, t := range g.targets {
		pk := m.packet(t, m.payload, g.qos, false)
		pk.Properties.ResponseTopic = replyPrefix + g.ids[i]
		pk.Properties.CorrelationData = []byte(g.ids[i])
		if err := e.publish(x.depth+1, pk); err != nil {
			e.log.Warn("scatter-gather request not published", "rule", a.r.name, "topic", t, "error", err)
		}
	}
	return nil, nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// reply takes a reply to a scatter-gather request: by its correlation data,
// else by the last level of its topic ($rules/reply/{id}).
func (e *Engine) reply(pk packets.Packet) {
	id := string(pk.Properties.CorrelationData)
	e.gmu.Lock()
	ref, ok := e.gathers[id]
	if !ok {
		id = strings.TrimPrefix(pk.TopicName, replyPrefix)
		ref, ok = e.gathers[id]
	}
	if ok {
		delete(e.gathers, id)
	}
	e.gmu.Unlock()
	if !ok {
		e.Counters.LateReplies.Add(1)
		return
	}
	var v any
	if j, err := decodeJSON(pk.Payload); err == nil {
		v = j
	} else {
		v = string(pk.Payload)
	}
	g := ref.g
	g.mu.Lock()
	if g.done {
		g.mu.Unlock()
		return
	}
	g.replies[ref.i] = v
	all := len(g.replies) == len(g.targets)
	g.mu.Unlock()
	if all {
		g.finish(e)
	}
}

// forget drops g's correlation ids.
func (e *Engine) forget(g *gather) {
	e.gmu.Lock()
	for _, id := range g.ids {
		delete(e.gathers, id)
	}
	e.gmu.Unlock()
}

// finishGathers answers every pending scatter-gather now (Stop).
func (e *Engine) finishGathers() {
	e.gmu.Lock()
	var gs []*gather
	seen := map[*gather]bool{}
	for _, ref := range e.gathers {
		if !seen[ref.g] {
			seen[ref.g] = true
			gs = append(gs, ref.g)
		}
	}
	e.gmu.Unlock()
	for _, g := range gs {
		g.finish(e)
	}
}

// finish answers once, with the replies that came and the targets that
// did not answer, then runs the rest of the rule on the answer.
func (g *gather) finish(e *Engine) {
	g.mu.Lock()
	if g.done {
		g.mu.Unlock()
		return
	}
	g.done = true
	timer := g.timer
	replies := make(map[string]any, len(g.replies))
	missing := []string{}
	for i, t := range g.targets {
		if v, ok := g.replies[i]; ok {
			replies[t] = v
		} else {
			missing = append(missing, t)
		}
	}
	g.mu.Unlock()
	e.cancelTimer(timer)
	e.forget(g)

	v := map[string]any{"complete": len(missing) == 0, "replies": replies, "missing": missing}
	x := later(e, g.depth)
	m := &msg{topic: g.topic, qos: g.qos, props: g.props, ctype: contentType(fmtJSON)}
	m.e = env{Topic: m.topic, QoS: int(m.qos)}
	payload, err := encodeJSON(v)
	if err != nil {
		g.a.r.fail(x, m, g.a.label, err)
		return
	}
	m = m.derive(payload, fmtJSON, v)
	if g.topic != "" {
		pk := m.packet(g.topic, payload, g.qos, false)
		pk.Properties.ResponseTopic = ""
		pk.Properties.CorrelationData = g.corr
		if err := e.publish(g.depth+1, pk); err != nil {
			g.a.r.fail(x, m, g.a.label, fmt.Errorf("answer to %q: %w", g.topic, err))
		}
	}
	g.a.next(x, m)
}
