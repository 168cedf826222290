package rules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/motemq/mote/persistence"
)

// histPrefix keys kept messages in the store: h␀{topic}␀{seq:16x}. Topics
// never contain NUL (the frame checker and topic.CheckName refuse it), so a
// topic's keys are exactly those under h␀{topic}␀, in the order they were
// kept.
const histPrefix = "h\x00"

func histTopicPrefix(topic string) string { return histPrefix + topic + "\x00" }

func histKey(topic string, seq uint64) string {
	return histTopicPrefix(topic) + fmt.Sprintf("%016x", seq)
}

// StoredMessage is a message kept by a store action.
type StoredMessage struct {
	Topic       string    `json:"topic"`
	Payload     []byte    `json:"payload"`
	QoS         byte      `json:"qos"`
	Retain      bool      `json:"retain,omitempty"`
	ClientID    string    `json:"client_id,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Rule        string    `json:"rule"`
	Time        time.Time `json:"time"`
	Expires     time.Time `json:"expires,omitzero"`
}

// history indexes the kept messages in memory (sequence and expiry per
// topic) so trimming a topic needs no scan. Several store actions on one
// topic share its list: each trims it to its own limits.
type history struct {
	store  *persistence.Store
	mu     sync.Mutex
	topics map[string][]histEntry // ascending seq
	seq    uint64
}

type histEntry struct {
	seq     uint64
	expires int64 // unix nanoseconds; 0: never
}

func (h *history) init(s *persistence.Store) {
	h.store = s
	h.topics = map[string][]histEntry{}
}

// load builds the index from the store and deletes what expired while the
// broker was down.
func (h *history) load() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now().UnixNano()
	var expired []persistence.Op
	err := h.store.Scan(histPrefix, func(k, v string) bool {
		body := k[len(histPrefix):]
		i := strings.LastIndexByte(body, 0)
		if i < 0 {
			return true
		}
		seq, err := strconv.ParseUint(body[i+1:], 16, 64)
		if err != nil {
			return true
		}
		var sm StoredMessage
		var exp int64
		if json.Unmarshal([]byte(v), &sm) == nil && !sm.Expires.IsZero() {
			exp = sm.Expires.UnixNano()
		}
		h.seq = max(h.seq, seq)
		if exp != 0 && exp <= now {
			expired = append(expired, persistence.Del(k))
			return true
		}
		topic := body[:i]
		h.topics[topic] = append(h.topics[topic], histEntry{seq: seq, expires: exp})
		return true
	})
	if err != nil {
		return fmt.Errorf("rules: load history: %w", err)
	}
	if len(expired) > 0 {
		h.store.Write(expired...)
	}
	return nil
}

type storeAction struct {
	base
	max    int
	maxAge time.Duration
}

func (a *storeAction) do(x *exec, m *msg) (*msg, error) {
	x.join(x.e.hist.add(m, a.r.name, a.max, a.maxAge))
	x.e.Counters.HistoryWritten.Add(1)
	return m, nil
}

// add keeps m and trims its topic to max messages and maxAge.
func (h *history) add(m *msg, rule string, maxN int, maxAge time.Duration) *persistence.Batch {
	now := m.when()
	sm := StoredMessage{
		Topic: m.topic, Payload: m.payload, QoS: m.qos, Retain: m.retain, ClientID: m.clientID,
		ContentType: m.ctype, Rule: rule, Time: now.UTC(),
	}
	if sm.ContentType == "" {
		sm.ContentType = m.props.contentType
	}
	var exp int64
	if maxAge > 0 {
		sm.Expires = now.Add(maxAge).UTC()
		exp = sm.Expires.UnixNano()
	}
	b, _ := json.Marshal(sm) // plain fields: cannot fail
	h.mu.Lock()
	h.seq = max(h.seq+1, uint64(now.UnixNano()))
	seq := h.seq
	list := append(h.topics[m.topic], histEntry{seq: seq, expires: exp})
	ops := []persistence.Op{persistence.Set(histKey(m.topic, seq), string(b))}
	cut := 0
	if maxN > 0 && len(list) > maxN {
		cut = len(list) - maxN
	}
	for cut < len(list) && maxAge > 0 && list[cut].seq <= uint64(now.Add(-maxAge).UnixNano()) {
		cut++
	}
	for _, e := range list[:cut] {
		ops = append(ops, persistence.Del(histKey(m.topic, e.seq)))
	}
	list = append(list[:0:0], list[cut:]...)
	h.topics[m.topic] = list
	h.mu.Unlock()
	return h.store.Write(ops...)
}

// sweep deletes expired messages.
func (h *history) sweep(now time.Time) {
	t := now.UnixNano()
	var ops []persistence.Op
	h.mu.Lock()
	for topic, list := range h.topics {
		keep := list[:0]
		for _, e := range list {
			if e.expires != 0 && e.expires <= t {
				ops = append(ops, persistence.Del(histKey(topic, e.seq)))
				continue
			}
			keep = append(keep, e)
		}
		if len(keep) == 0 {
			delete(h.topics, topic)
		} else {
			h.topics[topic] = keep
		}
	}
	h.mu.Unlock()
	if len(ops) > 0 {
		h.store.Write(ops...)
	}
}

// History returns up to limit kept messages of topic, newest first
// (limit ≤ 0: all of them).
func (e *Engine) History(topic string, limit int) ([]StoredMessage, error) {
	prefix := histTopicPrefix(topic)
	now := time.Now()
	var out []StoredMessage
	var derr error
	err := e.store.DB().View(func(tx *buntdb.Tx) error {
		// Sequence numbers are 16 hex digits, all below 'g'.
		return tx.DescendRange("", prefix+"g", prefix, func(k, v string) bool {
			var sm StoredMessage
			if err := json.Unmarshal([]byte(v), &sm); err != nil {
				derr = fmt.Errorf("rules: history record %q: %w", k, err)
				return false
			}
			if !sm.Expires.IsZero() && !sm.Expires.After(now) {
				return true
			}
			out = append(out, sm)
			return limit <= 0 || len(out) < limit
		})
	})
	if err != nil {
		return nil, fmt.Errorf("rules: read history: %w", err)
	}
	return out, derr
}

// HistoryTopics names the topics with kept messages.
func (e *Engine) HistoryTopics() []string {
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	out := make([]string, 0, len(e.hist.topics))
	for t := range e.hist.topics {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// janitor deletes expired history every few seconds.
func (e *Engine) janitor() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.quit:
			return
		case now := <-t.C:
			e.hist.sweep(now)
		}
	}
}
