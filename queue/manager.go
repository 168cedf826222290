// Package queue turns MQTT shared subscriptions ($share/{group}/{filter})
// into workload queues: every message for a group is appended to the
// group's durable log before the publisher's acknowledgement, handed to one
// member at a time within its credit, taken off the log when acknowledged,
// handed to another member when its member disconnects or refuses it, and
// dead-lettered after too many deliveries. Plain MQTT clients are the
// consumers.
//
// Delivery goes through the persistence session engine (Hook.Offer), so a
// consumer's queue messages and its other messages share one window and one
// order, and leases live in memory: after a crash every unacknowledged
// message is waiting again.
package queue

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/motemq/mote/internal/hookset"
	"github.com/motemq/mote/persistence"
)

// metaPrefix keys a queue's record in the store (its group and settings
// survive restarts, so undeclared queues come back with their messages).
const metaPrefix = "u\x00"

type queueMeta struct {
	Group   string   `json:"group"`
	Filters []string `json:"filters"`
}

type event struct {
	t       *tracker
	outcome persistence.Outcome
	code    byte
}

// Manager is the mochi hook that runs the queues.
type Manager struct {
	mqtt.HookBase
	server  *mqtt.Server
	store   *persistence.Store
	persist *persistence.Hook
	entries []Settings
	defs    Settings
	log     *slog.Logger
	inline  *mqtt.Client
	routes  routes // which queues a publish goes to (routes.go)

	mu        sync.Mutex
	queues    map[string]*queue
	redriveMu sync.Mutex       // one Redrive at a time
	acking    sync.WaitGroup   // queue deletes waiting for their dead letters' copies
	outbox    []packets.Packet // dead letters to publish after mu is released

	evMu   sync.Mutex
	events []event
	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// New returns the manager for the configured queues (entries are matched
// by group name in order; defs applies to the rest).
func New(server *mqtt.Server, store *persistence.Store, persist *persistence.Hook, entries []Settings, defs Settings, log *slog.Logger) *Manager {
	mg := &Manager{
		server:  server,
		store:   store,
		persist: persist,
		entries: entries,
		defs:    defs,
		log:     log,
		queues:  map[string]*queue{},
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	mg.Log = log
	return mg
}

// ID is the hook's id.
func (mg *Manager) ID() string { return "queue" }

var provides = hookset.Of(
	mqtt.OnPublish,
	mqtt.OnSelectSubscribers,
	mqtt.OnSubscribed,
	mqtt.OnUnsubscribed,
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnSysInfoTick,
)

// Provides reports the events the hook handles.
func (mg *Manager) Provides(b byte) bool { return provides.Has(b) }

// Restore opens the declared queues and those the store holds, and makes
// every restored session subscribed to a group a member (offline until it
// reconnects). Call it after persistence.Hook.Restore, before serving; it
// starts the dispatcher.
func (mg *Manager) Restore() error {
	mg.inline = mg.server.NewClient(nil, mqtt.LocalListener, "mote-queue", true)
	mg.mu.Lock()
	defer mg.mu.Unlock()
	for _, s := range mg.entries {
		if s.Filter == "" {
			continue
		}
		q, err := mg.open(s.Name)
		if err != nil {
			return err
		}
		q.declared = true
		mg.routes.declare(q.group, q.set.Filter) // q.set: the first entry naming the group
	}
	var metas []queueMeta
	err := mg.store.Scan(metaPrefix, func(_, v string) bool {
		var m queueMeta
		if json.Unmarshal([]byte(v), &m) == nil && m.Group != "" {
			metas = append(metas, m)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("queue: restore: %w", err)
	}
	for _, m := range metas {
		if _, err := mg.open(m.Group); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, cl := range mg.server.Clients.GetAll() {
		for filter, sub := range cl.State.Subscriptions.GetAll() {
			if group, f, ok := memberOf(filter); ok {
				mg.routes.add(group, f, cl.ID)
				q, err := mg.open(group)
				if err != nil {
					return err
				}
				q.addMember(cl.ID, f, sub.Qos, false, isV5(cl))
			}
		}
	}
	for _, q := range mg.queues {
		if !q.set.Durable {
			n, _ := q.log.Purge()
			if n > 0 {
				mg.log.Info("queue: dropped the messages of a non-durable queue", "group", q.group, "messages", n)
			}
		}
		if len(q.members) == 0 && !q.declared {
			q.expireAt = now.Add(q.set.QueueExpiry)
		}
		mg.log.Info("queue restored", "group", q.group, "messages", q.log.Len(), "members", len(q.members))
	}
	mg.wg.Add(1)
	go mg.run()
	return nil
}

// open returns the group's queue, creating it. mg.mu is held.
func (mg *Manager) open(group string) (*queue, error) {
	if q := mg.queues[group]; q != nil {
		return q, nil
	}
	l, err := mg.store.Log("queue/" + group)
	if err != nil {
		return nil, fmt.Errorf("queue %q: %w", group, err)
	}
	dead, err := mg.store.Log(deadLogPrefix + group)
	if err != nil {
		return nil, fmt.Errorf("queue %q: dead letters: %w", group, err)
	}
	q := &queue{
		group:    group,
		set:      match(mg.entries, mg.defs, group),
		log:      l,
		dead:     dead,
		members:  map[string]*member{},
		inflight: map[uint64]*delivery{},
		counts:   map[uint64]int{},
		avoid:    map[uint64]string{},
	}
	q.st.Group = group
	mg.queues[group] = q
	mg.saveMeta(q)
	return q, nil
}

func (mg *Manager) saveMeta(q *queue) {
	b, _ := json.Marshal(queueMeta{Group: q.group, Filters: q.filters()})
	mg.store.Write(persistence.Set(metaPrefix+q.group, string(b)))
}

// Stop stops the dispatcher.
func (mg *Manager) Stop() error {
	mg.once.Do(func() { close(mg.stop) })
	mg.wg.Wait()
	mg.acking.Wait() // the store commits them (it closes after the hooks stop)
	return nil
}

func (mg *Manager) post(ev event) {
	mg.evMu.Lock()
	mg.events = append(mg.events, ev)
	mg.evMu.Unlock()
	mg.poke()
}

func (mg *Manager) poke() {
	select {
	case mg.kick <- struct{}{}:
	default:
	}
}

// run is the dispatcher: it applies delivery outcomes and hands out
// messages when something changed, and every 50 ms for credit that came
// back through the consumers' other traffic, expiry and TTL.
func (mg *Manager) run() {
	defer mg.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-mg.stop:
			return
		case <-mg.kick:
		case <-t.C:
		}
		mg.evMu.Lock()
		evs := mg.events
		mg.events = nil
		mg.evMu.Unlock()
		now := time.Now()
		mg.mu.Lock()
		for _, ev := range evs {
			mg.settle(ev)
		}
		for group, q := range mg.queues {
			if !q.expireAt.IsZero() && now.After(q.expireAt) {
				mg.deleteQueue(group, q)
				continue
			}
			mg.revokeStale(q, now)
			mg.dispatch(q, now)
		}
		out := mg.outbox
		mg.outbox = nil
		mg.mu.Unlock()
		for _, pk := range out {
			if err := mg.server.InjectPacket(mg.inline, pk); err != nil {
				mg.log.Error("queue: dead letter not published", "topic", pk.TopicName, "error", err)
			}
		}
	}
}

// deleteQueue drops an expired queue and its messages. mg.mu is held.
func (mg *Manager) deleteQueue(group string, q *queue) {
	n, _ := q.log.Purge()
	q.dead.Purge()
	delete(mg.queues, group)
	mg.store.Write(persistence.Del(metaPrefix + group))
	mg.log.Info("queue expired: deleted with its messages", "group", group, "dropped_messages", n, "queue_expiry", q.set.QueueExpiry.String())
}

// publish queues a message (a dead letter) for run to inject as the
// broker once mg.mu is released: routing it may append to a queue. mg.mu
// is held.
func (mg *Manager) publish(pk packets.Packet) { mg.outbox = append(mg.outbox, pk) }

// OnPublish appends the message to every matching queue; for QoS 1/2 the
// publisher's acknowledgement waits for the append (persistence.WaitFor).
func (mg *Manager) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if mg.persist.Replaying() || pk.FixedHeader.Retain && len(pk.Payload) == 0 {
		return pk, nil // a replayed message was appended before the crash
	}
	groups := mg.routes.match(pk.TopicName)
	if len(groups) == 0 {
		return pk, nil
	}
	if pk.Created == 0 {
		pk.Created = time.Now().Unix()
	}
	value := persistence.EncodeMessageAt(pk, 0, time.Now())
	mg.mu.Lock()
	defer mg.mu.Unlock()
	for _, g := range groups {
		q, err := mg.open(g)
		if err != nil {
			mg.log.Error("queue: cannot open", "group", g, "error", err)
			continue
		}
		if n := q.set.MaxLength; n > 0 && q.log.Len() >= n {
			if q.set.Overflow == RejectNew {
				q.st.Rejected++
				if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 && !cl.Net.Inline {
					return pk, packets.ErrQuotaExceeded
				}
				return pk, packets.ErrRejectPacket
			}
			if old, err := q.log.Lease(1); err == nil && len(old) == 1 {
				q.st.Dropped++
				q.ack(old[0].ID)
			}
		}
		_, b := q.log.Append(value)
		if q.set.Durable && pk.FixedHeader.Qos > 0 {
			mg.persist.WaitFor(&pk, b)
		}
	}
	mg.poke()
	return pk, nil
}

// OnSelectSubscribers takes the shared groups out of mochi's routing: the
// queues deliver them.
func (mg *Manager) OnSelectSubscribers(subs *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	subs.Shared = map[string]map[string]packets.Subscription{}
	subs.SharedSelected = map[string]packets.Subscription{}
	return subs
}

// OnSubscribed makes the client a member of the groups it joined.
func (mg *Manager) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if cl.Net.Inline {
		return
	}
	mg.mu.Lock()
	defer mg.mu.Unlock()
	for i, sub := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue
		}
		group, f, ok := memberOf(sub.Filter)
		if !ok {
			continue
		}
		// Indexed even if the queue cannot open: mochi holds the
		// subscription, and OnPublish tries (and reports) again.
		mg.routes.add(group, f, cl.ID)
		q, err := mg.open(group)
		if err != nil {
			mg.log.Error("queue: cannot open", "group", group, "error", err)
			continue
		}
		q.addMember(cl.ID, f, codes[i], !cl.Closed(), isV5(cl))
		mg.saveMeta(q)
	}
	mg.poke()
}

// OnUnsubscribed removes memberships; a queue left without members expires
// after queue_expiry (declared queues stay). mochi runs it for UNSUBSCRIBE
// and from UnsubscribeClient: a session that ends at disconnect, and an
// expired one (the guard hook).
func (mg *Manager) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	for _, sub := range pk.Filters {
		group, f, ok := memberOf(sub.Filter)
		if !ok {
			continue
		}
		mg.routes.remove(group, f, cl.ID)
		q := mg.queues[group]
		if q == nil {
			continue
		}
		if q.removeFilter(cl.ID, f) && !q.declared {
			q.expireAt = time.Now().Add(q.set.QueueExpiry)
			mg.log.Info("queue has no members: it expires unless one joins", "group", group, "queue_expiry", q.set.QueueExpiry, "messages", q.log.Len())
		}
	}
}

// OnSessionEstablished marks a (re)connected member online.
func (mg *Manager) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	mg.setOnline(cl, true)
}

// OnDisconnect marks a member offline; the session engine gives its
// unacknowledged messages back (see persistence.Hook.Offer).
func (mg *Manager) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cur, ok := mg.server.Clients.Get(cl.ID); ok && cur != cl {
		return // taken over: the new connection is already online
	}
	mg.setOnline(cl, false)
}

func (mg *Manager) setOnline(cl *mqtt.Client, online bool) {
	if cl.Net.Inline {
		return
	}
	mg.mu.Lock()
	for _, q := range mg.queues {
		if m := q.members[cl.ID]; m != nil {
			m.online = online
			m.v5 = isV5(cl)
		}
	}
	mg.mu.Unlock()
	mg.poke()
}

// Stats describe every queue, sorted by group.
func (mg *Manager) Stats() []Stats {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	now := time.Now()
	out := make([]Stats, 0, len(mg.queues))
	for _, q := range mg.queues {
		s := q.st
		s.Filters = q.filters()
		s.Depth = q.log.Len()
		s.InFlight = len(q.inflight)
		s.Consumers = len(q.members)
		s.DeadLetters = q.dead.Len()
		for _, m := range q.members {
			if m.online {
				s.Online++
			}
		}
		_ = q.log.Scan(0, func(e persistence.Entry) bool {
			if _, _, stored, err := persistence.DecodeMessageAt(e.Value); err == nil && !stored.IsZero() {
				s.OldestAge = now.Sub(stored)
			}
			return false
		})
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Stats) int {
		if a.Group < b.Group {
			return -1
		}
		if a.Group > b.Group {
			return 1
		}
		return 0
	})
	return out
}

// OnSysInfoTick publishes each queue's figures under $SYS/queues/{group}/.
func (mg *Manager) OnSysInfoTick(*system.Info) {
	for _, s := range mg.Stats() {
		base := "$SYS/queues/" + s.Group + "/"
		for _, v := range []struct {
			name string
			n    uint64
		}{
			{"depth", uint64(s.Depth)},
			{"inflight", uint64(s.InFlight)},
			{"consumers", uint64(s.Consumers)},
			{"online", uint64(s.Online)},
			{"delivered", s.Delivered},
			{"acked", s.Acked},
			{"redelivered", s.Redelivered},
			{"refused", s.Refused},
			{"dead_lettered", s.DeadLettered},
			{"expired", s.Expired},
			{"dropped", s.Dropped},
			{"rejected", s.Rejected},
			{"timed_out", s.TimedOut},
			{"oldest_age_seconds", uint64(s.OldestAge / time.Second)},
		} {
			_ = mg.server.Publish(base+v.name, strconv.AppendUint(nil, v.n, 10), false, 0)
		}
	}
}
