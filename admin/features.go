package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/queue"
)

// --- queues -------------------------------------------------------------------

// Queue is a workload queue and its figures.
type Queue struct {
	Group            string   `json:"group"`
	Filters          []string `json:"filters"`
	Depth            int      `json:"depth"`
	InFlight         int      `json:"inflight"`
	Consumers        int      `json:"consumers"`
	Online           int      `json:"online"`
	Delivered        uint64   `json:"delivered"`
	Acked            uint64   `json:"acked"`
	Redelivered      uint64   `json:"redelivered"`
	Refused          uint64   `json:"refused"`
	DeadLettered     uint64   `json:"dead_lettered"`
	Expired          uint64   `json:"expired"`
	Dropped          uint64   `json:"dropped"`
	Rejected         uint64   `json:"rejected"`
	TimedOut         uint64   `json:"timed_out"`
	DeadLetters      int      `json:"dead_letters"` // kept, for redrive
	OldestAgeSeconds float64  `json:"oldest_age_seconds"`
}

func queueOf(s queue.Stats) Queue {
	return Queue{
		Group: s.Group, Filters: nonNil(s.Filters), Depth: s.Depth, InFlight: s.InFlight,
		Consumers: s.Consumers, Online: s.Online, Delivered: s.Delivered, Acked: s.Acked,
		Redelivered: s.Redelivered, Refused: s.Refused, DeadLettered: s.DeadLettered,
		Expired: s.Expired, Dropped: s.Dropped, Rejected: s.Rejected, TimedOut: s.TimedOut,
		DeadLetters: s.DeadLetters, OldestAgeSeconds: s.OldestAge.Seconds(),
	}
}

func (a *API) listQueues(*http.Request) (any, error) {
	out := []Queue{}
	for _, s := range a.o.Queues.Stats() {
		out = append(out, queueOf(s))
	}
	return map[string]any{"items": out}, nil
}

func (a *API) getQueue(r *http.Request) (any, error) {
	group := r.PathValue("group")
	for _, s := range a.o.Queues.Stats() {
		if s.Group == group {
			return queueOf(s), nil
		}
	}
	return nil, noQueue(group)
}

func noQueue(group string) error {
	return errorf(http.StatusNotFound, "no queue %q: a queue exists once a client subscribes to $share/%s/... or it is declared under queues: with a filter; list them with GET /api/v1/queues", group, group)
}

func queueErr(group string, err error) error {
	if errors.Is(err, queue.ErrNoQueue) {
		return noQueue(group)
	}
	return err
}

// QueuedMessage is a message in a queue (or one of its dead letters).
type QueuedMessage struct {
	ID uint64 `json:"id"`
	Message
	Deliveries int       `json:"deliveries"`
	Stored     time.Time `json:"stored,omitzero"` // queued at; for a dead letter, dead-lettered at
	InFlight   bool      `json:"inflight,omitempty"`
	Consumer   string    `json:"consumer,omitempty"`
}

func queuedPage(ms []queue.Message, limit int) List[QueuedMessage] {
	out := List[QueuedMessage]{Items: []QueuedMessage{}, Total: -1}
	for i, m := range ms {
		if i == limit {
			out.NextCursor = idCursor(ms[i-1].ID)
			break
		}
		out.Items = append(out.Items, QueuedMessage{
			ID: m.ID, Message: messageOf(m.Packet, previewBytes), Deliveries: m.Deliveries,
			Stored: m.Stored.UTC(), InFlight: m.InFlight, Consumer: m.Consumer,
		})
	}
	return out
}

func (a *API) peekQueue(r *http.Request) (any, error) {
	return a.queueMessages(r, a.o.Queues.Peek, func(s queue.Stats) int { return s.Depth })
}

func (a *API) queueDead(r *http.Request) (any, error) {
	return a.queueMessages(r, a.o.Queues.DeadLetters, func(s queue.Stats) int { return s.DeadLetters })
}

func (a *API) queueMessages(r *http.Request, read func(group string, after uint64, limit int) ([]queue.Message, error), total func(queue.Stats) int) (any, error) {
	group := r.PathValue("group")
	p, err := parsePage(r.URL.Query())
	if err != nil {
		return nil, err
	}
	after, err := idAfter(p)
	if err != nil {
		return nil, err
	}
	ms, err := read(group, after, p.limit+1)
	if err != nil {
		return nil, queueErr(group, err)
	}
	l := queuedPage(ms, p.limit)
	for _, s := range a.o.Queues.Stats() {
		if s.Group == group {
			l.Total = total(s)
		}
	}
	return l, nil
}

func (a *API) purgeQueue(r *http.Request) (any, error) {
	group := r.PathValue("group")
	n, err := a.o.Queues.Purge(group)
	if err != nil {
		return nil, queueErr(group, err)
	}
	a.o.Log.Info("queue purged by the admin API", "group", group, "messages", n)
	return map[string]any{"group": group, "purged": n}, nil
}

func (a *API) redriveQueue(r *http.Request) (any, error) {
	group := r.PathValue("group")
	limit, err := countParam(r.URL.Query(), "limit")
	if err != nil {
		return nil, err
	}
	n, err := a.o.Queues.Redrive(group, limit)
	if err != nil {
		return nil, queueErr(group, err)
	}
	return map[string]any{"group": group, "moved": n}, nil
}

// --- bridges ------------------------------------------------------------------

// Bridge is an outbound bridge's state.
type Bridge struct {
	Name         string     `json:"name"`
	Connected    bool       `json:"connected"`
	Paused       bool       `json:"paused"`
	BreakerOpen  bool       `json:"breaker_open"`
	Backlog      int        `json:"backlog"`
	InFlight     int        `json:"inflight"`
	Sent         uint64     `json:"sent"`
	Failed       uint64     `json:"failed"`
	DeadLettered uint64     `json:"dead_lettered"`
	Dropped      uint64     `json:"dropped"`
	DeadLetters  int        `json:"dead_letters"` // kept, for retry
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
}

func bridgeOf(s bridge.Status) Bridge {
	b := Bridge{
		Name: s.Name, Connected: s.Connected, Paused: s.Paused, BreakerOpen: s.BreakerOpen,
		Backlog: s.Backlog, InFlight: s.InFlight, Sent: s.Sent, Failed: s.Failed,
		DeadLettered: s.DeadLettered, Dropped: s.Dropped, DeadLetters: s.DeadLetters, LastError: s.LastError,
	}
	if !s.LastErrorAt.IsZero() {
		t := s.LastErrorAt.UTC()
		b.LastErrorAt = &t
	}
	return b
}

func (a *API) listBridges(*http.Request) (any, error) {
	out := []Bridge{}
	for _, b := range a.o.Bridges.Bridges() {
		out = append(out, bridgeOf(b.Status()))
	}
	return map[string]any{"items": out}, nil
}

func (a *API) bridge(r *http.Request) (*bridge.Bridge, error) {
	name := r.PathValue("name")
	if b := a.o.Bridges.Bridge(name); b != nil {
		return b, nil
	}
	return nil, errorf(http.StatusNotFound, "no bridge %q: bridges are configured under bridges:; list them with GET /api/v1/bridges", name)
}

func (a *API) getBridge(r *http.Request) (any, error) {
	b, err := a.bridge(r)
	if err != nil {
		return nil, err
	}
	return bridgeOf(b.Status()), nil
}

func (a *API) pauseBridge(on bool) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		b, err := a.bridge(r)
		if err != nil {
			return nil, err
		}
		if on {
			err = b.Pause()
		} else {
			err = b.Resume()
		}
		if err != nil {
			return nil, err
		}
		return bridgeOf(b.Status()), nil
	}
}

// BridgeDeadLetter is a message a bridge gave up on.
type BridgeDeadLetter struct {
	ID uint64 `json:"id"`
	Message
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"dead_lettered_at"`
}

func (a *API) bridgeDead(r *http.Request) (any, error) {
	b, err := a.bridge(r)
	if err != nil {
		return nil, err
	}
	p, err := parsePage(r.URL.Query())
	if err != nil {
		return nil, err
	}
	after, err := idAfter(p)
	if err != nil {
		return nil, err
	}
	ds, err := b.DeadLetters(after, p.limit+1)
	if err != nil {
		return nil, err
	}
	out := List[BridgeDeadLetter]{Items: []BridgeDeadLetter{}, Total: b.Status().DeadLetters}
	for i, d := range ds {
		if i == p.limit {
			out.NextCursor = idCursor(ds[i-1].ID)
			break
		}
		out.Items = append(out.Items, BridgeDeadLetter{ID: d.ID, Message: messageOf(d.Packet, previewBytes), Reason: d.Reason, Attempts: d.Attempts, At: d.At.UTC()})
	}
	return out, nil
}

func (a *API) retryBridge(r *http.Request) (any, error) {
	b, err := a.bridge(r)
	if err != nil {
		return nil, err
	}
	limit, err := countParam(r.URL.Query(), "limit")
	if err != nil {
		return nil, err
	}
	n, err := b.RetryDead(limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"bridge": b.Name(), "retried": n}, nil
}

// --- rules ----------------------------------------------------------------------

func (a *API) listRules(*http.Request) (any, error) {
	rs, err := a.rules()
	if err != nil {
		return nil, err
	}
	return map[string]any{"items": nonNil(rs.Rules())}, nil
}

func (a *API) enableRule(on bool) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		rs, err := a.rules()
		if err != nil {
			return nil, err
		}
		name := r.PathValue("name")
		if err := rs.Enable(name, on); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, errorf(http.StatusNotFound, "no rule %q: list them with GET /api/v1/rules", name)
			}
			return nil, err
		}
		for _, st := range rs.Rules() {
			if st.Name == name {
				return st, nil
			}
		}
		return map[string]any{"name": name, "enabled": on}, nil
	}
}

// History is a topic's kept messages, newest first.
type History struct {
	Topic    string         `json:"topic"`
	Messages []HistoryEntry `json:"messages"`
}

// HistoryEntry is one kept message.
type HistoryEntry struct {
	Message
	Rule string    `json:"rule,omitempty"`
	Time time.Time `json:"time"`
}

func (a *API) history(r *http.Request) (any, error) {
	rs, err := a.rules()
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	topic := q.Get("topic")
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	p, err := parsePage(q)
	if err != nil {
		return nil, err
	}
	hs, err := rs.History(topic, p.limit)
	if err != nil {
		return nil, err
	}
	out := History{Topic: topic, Messages: []HistoryEntry{}}
	for _, h := range hs {
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: h.QoS, Retain: h.Retain},
			TopicName:   h.Topic,
			Payload:     h.Payload,
			Origin:      h.ClientID,
		}
		pk.Properties.ContentType = h.ContentType
		out.Messages = append(out.Messages, HistoryEntry{Message: messageOf(pk, 0), Rule: h.Rule, Time: h.Time.UTC()})
	}
	return out, nil
}
