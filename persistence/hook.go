package persistence

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/motemq/mote/internal/hookset"
)

// Options configures the session engine of a Hook.
type Options struct {
	// MaxInflight is how many QoS 1/2 messages may be sent to one client and
	// not yet acknowledged; an MQTT 5 client's smaller Receive Maximum wins.
	MaxInflight int
	// MaxQueued is how many QoS 1/2 messages one session may hold (queued
	// plus in flight); further messages for it are dropped and counted.
	MaxQueued int
	// OnEvent receives notable events (queue overflow). It must not block.
	OnEvent func(Event)
	// CanDeliver, when set, is asked again before a resumed session's stored
	// messages go to the new connection (its access may have changed since
	// they were routed); refused messages are dropped and counted.
	CanDeliver func(cl *mqtt.Client, topic string) bool
	// Backpressure is how long a QoS 1/2 publisher is held when a connected
	// subscriber it feeds has 512 messages (at most half of MaxQueued)
	// waiting: its next publish is acknowledged only once that queue has
	// drained by half (or after this long, whichever comes first). Holding the publisher slows it to
	// the subscriber's pace instead of letting the queue overflow and drop
	// messages that were acknowledged. 0 turns it off.
	Backpressure time.Duration
}

// Event is something an operator or a rule may want to react to.
type Event struct {
	Kind    string // "queue_overflow"
	Client  string
	Topic   string
	Dropped uint64 // messages dropped for this client so far
	Queued  int
	Limit   int
}

// Counters are the hook's running totals.
type Counters struct {
	WALWrites       atomic.Uint64 // messages written ahead before their acknowledgement
	WALSkipped      atomic.Uint64 // QoS 1/2 messages with no durable destination
	Replayed        atomic.Uint64 // messages routed again at start-up
	QueueOverflow   atomic.Uint64 // messages dropped because a session was full
	Expired         atomic.Uint64 // queued messages dropped on expiry
	Denied          atomic.Uint64 // stored messages a resumed session may no longer read
	Held            atomic.Uint64 // publishes held back for a congested subscriber
	HeldTimeouts    atomic.Uint64 // ...released by the time limit, not by the drain
	StoreErrors     atomic.Uint64 // writes refused because the store failed
	SessionsRestore atomic.Uint64 // sessions restored at start-up
}

// Hook is the mochi storage hook: it makes sessions, subscriptions,
// in-flight and queued QoS 1/2 messages both ways, retained messages and
// $SYS counters durable, and restores them (see Restore).
//
// Durability of a publish: mochi acknowledges a QoS 1/2 PUBLISH before it
// routes the message, so the message is written ahead (a WAL record, or for
// a QoS 2 message from a persistent session an inbound record) in OnPublish
// and the Barrier hook, registered last, waits for that batch to be durable
// before mochi writes PUBACK/PUBREC. After routing, the WAL record is
// deleted in a later batch than the subscribers' queue records, so at any
// crash point either the WAL record or every queue record exists. A
// subscriber record carries the WAL id; its delete on PUBACK waits for the
// WAL record's delete to be durable, so a replay never redelivers a message
// a subscriber already acknowledged (QoS 2 stays exactly once).
//
// Lock order: session.mu → Hook.walMu; Hook.sessMu and the Store's locks
// are leaves.
type Hook struct {
	mqtt.HookBase
	store  *Store
	server *mqtt.Server
	opts   Options

	seq      atomic.Uint64
	stopping atomic.Bool
	wg       sync.WaitGroup

	// sessions maps a client id to its *session. It is read on every
	// packet (acknowledgements, deliveries, publishes), by every connection
	// at once: a sync.Map reads without a shared lock. sessMu makes
	// creating and removing a session atomic with the check before it.
	sessMu     sync.Mutex
	sessions   sync.Map
	persistent atomic.Int64 // persistent sessions (durable destinations may exist)

	walMu sync.Mutex
	wal   map[uint64]*walEntry

	// congested maps a publisher's client id to a connected session its
	// messages went to whose queue passed the high mark (see Backpressure).
	congestMu sync.Mutex
	congested map[string]*session

	tombMu sync.Mutex
	tombs  []tombstone // retained tombstones written since start, to delete once no older WAL record remains

	replaying    atomic.Bool
	replayOrigin map[uint64]string // written before replay starts, read-only during it
	ticks        atomic.Uint64

	Counters Counters
}

// walEntry tracks a write-ahead record from OnPublish until its delete (or
// stub, for inbound QoS 2) is durable.
type walEntry struct {
	id     uint64
	key    string // record key; "" when only a feature's writes were added (WaitFor)
	stub   string // value written after routing instead of a delete
	batch  *Batch // latest batch to wait for before acknowledging
	routed bool
	deps   []Op // ops that may only be written once the record is gone
}

var (
	_ mqtt.Hook = (*Hook)(nil)
	_ mqtt.Hook = (*Barrier)(nil)
)

// NewHook returns a hook on store. server is the broker it serves; it is
// used to look up clients and to route replayed messages.
func NewHook(store *Store, server *mqtt.Server, opts Options) *Hook {
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 64
	}
	if opts.MaxQueued <= 0 {
		opts.MaxQueued = 10000
	}
	return &Hook{
		store:  store,
		server: server,
		opts:   opts,
		wal:    map[uint64]*walEntry{},
	}
}

// ID is the hook's id.
func (h *Hook) ID() string { return "persistence" }

var provides = hookset.Of(
	mqtt.OnSessionEstablish,
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnSubscribed,
	mqtt.OnUnsubscribed,
	mqtt.OnPacketRead,
	mqtt.OnPacketEncode,
	mqtt.OnPacketProcessed,
	mqtt.OnPublish,
	mqtt.OnPublished,
	mqtt.OnRetainMessage,
	mqtt.OnRetainedExpired,
	mqtt.OnQosPublish,
	mqtt.OnQosComplete,
	mqtt.OnQosDropped,
	mqtt.OnClientExpired,
	mqtt.OnSysInfoTick,
)

// Provides reports the events the hook handles.
func (h *Hook) Provides(b byte) bool { return provides.Has(b) }

// Stop stops the pumps. The store is closed by its owner.
func (h *Hook) Stop() error {
	h.stopping.Store(true)
	h.eachSession(func(s *session) {
		s.mu.Lock()
		if s.retry != nil {
			s.retry.Stop()
			s.retry = nil
		}
		s.mu.Unlock()
	})
	h.wg.Wait()
	return nil
}

// Store is the hook's store.
func (h *Hook) Store() *Store { return h.store }

// next returns a fresh sequence number (WAL ids, queue order, retained order).
func (h *Hook) next() uint64 { return h.seq.Add(1) }

// --- tagging ---------------------------------------------------------------

// A PUBLISH carries its WAL id in Connect.ClientIdentifier, a field mochi
// copies with the packet (Packet.Copy) to every subscriber's copy, to the
// retained copy and to in-flight entries, and never encodes for a PUBLISH.
// mochi has no per-message context; this is the one field that travels.
const tagPrefix = "\x00w"

func tag(pk *packets.Packet, id uint64) { pk.Connect.ClientIdentifier = tagPrefix + hex16(id) }

func tagID(pk *packets.Packet) uint64 {
	s := pk.Connect.ClientIdentifier
	if len(s) != len(tagPrefix)+16 || !strings.HasPrefix(s, tagPrefix) {
		return 0
	}
	v, err := parseHex(s[len(tagPrefix):])
	if err != nil {
		return 0
	}
	return v
}

// --- sessions ----------------------------------------------------------------

// session returns the session of client id, or nil.
func (h *Hook) session(id string) *session {
	if v, ok := h.sessions.Load(id); ok {
		return v.(*session)
	}
	return nil
}

// sessionFor returns cl's session, creating it (bound to cl) if there is
// none.
func (h *Hook) sessionFor(cl *mqtt.Client) *session {
	if s := h.session(cl.ID); s != nil {
		return s
	}
	h.sessMu.Lock()
	defer h.sessMu.Unlock()
	if s := h.session(cl.ID); s != nil {
		return s
	}
	s := newSession(h, cl.ID)
	s.cl = cl
	s.window = h.opts.MaxInflight
	h.sessions.Store(cl.ID, s)
	return s
}

// addSession makes s the session of its client id (Restore).
func (h *Hook) addSession(s *session) {
	h.sessMu.Lock()
	h.sessions.Store(s.id, s)
	h.sessMu.Unlock()
}

// removeSession forgets s unless another session has taken its id.
func (h *Hook) removeSession(s *session) {
	h.sessMu.Lock()
	h.sessions.CompareAndDelete(s.id, s)
	h.sessMu.Unlock()
}

// eachSession calls fn for every session.
func (h *Hook) eachSession(fn func(*session)) {
	h.sessions.Range(func(_, v any) bool {
		fn(v.(*session))
		return true
	})
}

// isPersistent reports whether cl's session outlives its connection.
func (h *Hook) isPersistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *Hook) expiryOf(cl *mqtt.Client) uint32 {
	limit := h.server.Options.Capabilities.MaximumSessionExpiryInterval
	if cl.Properties.ProtocolVersion == 5 {
		return min(cl.Properties.Props.SessionExpiryInterval, limit)
	}
	if cl.Properties.Clean {
		return 0
	}
	return limit
}

func (h *Hook) windowOf(cl *mqtt.Client) int {
	w := h.opts.MaxInflight
	if rm := int(cl.Properties.Props.ReceiveMaximum); cl.Properties.ProtocolVersion == 5 && rm > 0 && rm < w {
		w = rm
	}
	return w
}

// setPersistent updates the persistent flag and the count. s.mu must be held.
func (h *Hook) setPersistent(s *session, p bool) {
	if s.persistent.Load() == p {
		return
	}
	s.persistent.Store(p)
	if p {
		h.persistent.Add(1)
	} else {
		h.persistent.Add(-1)
	}
}

// sessionRecord is the stored form of a session.
type sessionRecord struct {
	ID             string `json:"id"`
	Username       []byte `json:"username,omitempty"`
	Listener       string `json:"listener,omitempty"`
	Protocol       byte   `json:"protocol"`
	Clean          bool   `json:"clean,omitempty"`
	Expiry         uint32 `json:"expiry"`
	ReceiveMaximum uint16 `json:"receive_maximum,omitempty"`
	Disconnected   int64  `json:"disconnected,omitempty"` // unix seconds; 0 while connected
}

func (h *Hook) saveSession(s *session, disconnected int64) {
	if !s.persistent.Load() {
		return
	}
	rec := sessionRecord{
		ID: s.id, Username: s.username, Listener: s.listener, Protocol: s.proto,
		Clean: s.clean, Expiry: s.expiry, Disconnected: disconnected,
	}
	if s.cl != nil {
		rec.ReceiveMaximum = s.cl.Properties.Props.ReceiveMaximum
	}
	b, err := json.Marshal(rec)
	if err != nil {
		h.Log.Error("encode session record", "error", err, "client", s.id)
		return
	}
	h.store.Write(Set(sessionKey(s.id), string(b)))
}

// deleteSessionRecords deletes everything stored for a session except queue
// and inbound records (dropAll handles those).
func (h *Hook) deleteSessionRecords(id string) {
	ops := []Op{Del(sessionKey(id))}
	_ = h.store.Scan(subPrefix(id), func(k, _ string) bool {
		ops = append(ops, Del(k))
		return true
	})
	h.store.Write(ops...)
}

// OnSessionEstablish takes over the state of a resumed session before mochi
// does (see session.go), so the new connection starts with exactly the
// messages that were in flight, with their original packet ids.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	forceQuota(cl)
	existing, found := h.server.Clients.Get(cl.ID)
	present := found && !pk.Connect.Clean &&
		!(existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) // as mochi's inheritClientSession
	old := h.session(cl.ID)
	if old != nil && !present {
		old.mu.Lock()
		old.dropAll()
		h.setPersistent(old, false)
		old.cl = nil
		old.mu.Unlock()
		h.removeSession(old)
		h.deleteSessionRecords(cl.ID)
		old = nil
	}
	s := h.sessionFor(cl)
	s.mu.Lock()
	defer s.mu.Unlock()
	if present {
		// Entries routed into the old client object become ours to resend.
		for len(s.incoming) > 0 {
			e := s.incoming[0]
			if e.state != stIncoming || e.drop {
				s.popIncoming()
				e.state = stDone
				continue
			}
			s.toPending(e)
		}
		// Empty the old in-flight map so mochi does not clone it (and with
		// it reset the send quota); collect inbound QoS 2 states.
		for _, p := range existing.State.Inflight.GetAll(false) {
			existing.State.Inflight.Delete(p.PacketID)
			atomic.AddInt64(&h.server.Info.Inflight, -1)
			if p.FixedHeader.Type == packets.Pubrec {
				if _, ok := s.inbound[p.PacketID]; !ok {
					s.inbound[p.PacketID] = 0
				}
			}
		}
		// Put what is in flight into the new client, original ids kept; mochi
		// resends these after CONNACK [MQTT-4.4.0-1].
		s.byID = map[uint16]*entry{}
		s.resumedAt = h.next()
		for id, e := range s.outstanding {
			if e.state == stSent && h.opts.CanDeliver != nil && !h.opts.CanDeliver(cl, e.pk.TopicName) {
				h.Counters.Denied.Add(1)
				s.finish(e)
				continue
			}
			p := e.pk
			p.PacketID = id
			if e.state == stPubrel {
				p = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id, Created: e.pk.Created}
			}
			if cl.State.Inflight.Set(p) {
				atomic.AddInt64(&h.server.Info.Inflight, 1)
			}
			e.owner = cl
			s.byID[id] = e
		}
		for id := range s.inbound {
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: id, Created: time.Now().Unix()}
			if cl.State.Inflight.Set(ack) {
				atomic.AddInt64(&h.server.Info.Inflight, 1)
			}
			cl.State.Inflight.DecreaseReceiveQuota()
		}
	}
	s.cl = cl
	s.connected = false
	s.username = append([]byte(nil), cl.Properties.Username...)
	s.listener = cl.Net.Listener
	s.proto = cl.Properties.ProtocolVersion
	s.clean = cl.Properties.Clean
	s.expiry = h.expiryOf(cl)
	wasPersistent := s.persistent.Load()
	h.setPersistent(s, h.isPersistent(cl))
	if wasPersistent && !s.persistent.Load() {
		// A resumed persistent session reconnects with expiry 0: it ends
		// with this connection, so its records go now.
		h.deleteSessionRecords(s.id)
		for _, e := range s.outstanding {
			h.deleteAfterWAL(e.wal, Del(queueKey(s.id, e.seq)))
		}
		for _, e := range s.pending {
			h.deleteAfterWAL(e.wal, Del(queueKey(s.id, e.seq)))
		}
	}
}

// OnSessionEstablished starts delivery on the new connection.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s := h.session(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != cl {
		return
	}
	s.connected = true
	s.lastDone = time.Now() // the stall clock starts with the connection
	s.window = h.windowOf(cl)
	if s.persistent.Load() {
		h.saveSession(s, 0)
	} else {
		h.store.Write(Del(sessionKey(s.id)))
	}
	s.kickLocked()
}

// OnDisconnect stops delivery; a session that ends with its connection is
// forgotten, a persistent one remembers when it went away (for expiry).
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if cl.Net.Inline {
		return
	}
	s := h.session(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.cl != cl || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		s.mu.Unlock()
		return
	}
	s.connected = false
	s.release()         // an offline session no longer holds publishers back
	s.returnForeign(cl) // queue messages go to another consumer
	if expire {
		s.dropAll()
		h.setPersistent(s, false)
		s.cl = nil
		s.mu.Unlock()
		h.removeSession(s)
		h.deleteSessionRecords(cl.ID)
		return
	}
	h.saveSession(s, time.Now().Unix())
	s.mu.Unlock()
}

// OnClientExpired forgets an expired session and its messages.
func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	s := h.session(cl.ID)
	if s != nil {
		s.mu.Lock()
		if s.cl != cl && s.cl != nil {
			s.mu.Unlock()
			return
		}
		s.dropAll()
		h.setPersistent(s, false)
		s.cl = nil
		s.mu.Unlock()
		h.removeSession(s)
	}
	h.deleteSessionRecords(cl.ID)
	h.Log.Info("session expired", "client", cl.ID)
}

// subRecord is the stored form of a subscription.
type subRecord struct {
	Filter            string `json:"filter"`
	Qos               byte   `json:"qos"`
	Identifier        int    `json:"identifier,omitempty"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
}

// OnSubscribed stores the granted subscriptions of a persistent session.
func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if cl.Net.Inline || !h.isPersistent(cl) {
		return
	}
	ops := make([]Op, 0, len(pk.Filters))
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		b, err := json.Marshal(subRecord{
			Filter: f.Filter, Qos: f.Qos, Identifier: f.Identifier, NoLocal: f.NoLocal,
			RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling,
		})
		if err != nil {
			h.Log.Error("encode subscription record", "error", err, "client", cl.ID)
			continue
		}
		ops = append(ops, Set(subKey(cl.ID, f.Filter), string(b)))
	}
	h.store.Write(ops...)
}

// OnUnsubscribed deletes stored subscriptions.
func (h *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	ops := make([]Op, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		ops = append(ops, Del(subKey(cl.ID, f.Filter)))
	}
	h.store.Write(ops...)
}

// --- publish path ------------------------------------------------------------

// OnPacketRead tags every QoS 1/2 PUBLISH with a fresh WAL id and tracks
// acknowledgements from subscribers.
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Qos > 0 {
			tag(&pk, h.next())
		}
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		if s := h.session(cl.ID); s != nil {
			pk = s.ack(cl, pk)
		}
	}
	return pk, nil
}

// OnPacketProcessed keeps mochi's send quota pinned at zero (mochi raises it
// on every acknowledgement) and cleans up after a publish that a later hook
// refused.
func (h *Hook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if !cl.Net.Inline {
		cl.State.Inflight.DecreaseSendQuota()
	}
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return
	}
	id := tagID(&pk)
	if id == 0 {
		return
	}
	h.walMu.Lock()
	e := h.wal[id]
	if e == nil || e.routed {
		h.walMu.Unlock()
		return
	}
	// Not routed: a hook refused it, or the store failed. Forget it.
	e.routed = true
	h.walMu.Unlock()
	h.retire(e, Del(e.key))
}

// OnPacketEncode notices QoS 1/2 messages that mochi writes itself (a
// delivery that slipped through while the quota was briefly above zero).
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return pk
	}
	s := h.session(cl.ID)
	if s == nil {
		return pk
	}
	s.mu.Lock()
	if e := s.byID[pk.PacketID]; e != nil && e.owner == cl && e.state == stIncoming {
		s.markSent(e)
		s.kickLocked()
	}
	s.mu.Unlock()
	return pk
}

// durableDestination reports whether a message on topic could reach a
// persistent session (and so must survive a crash).
func (h *Hook) durableDestination(topic string) bool {
	if h.persistent.Load() == 0 {
		return false
	}
	subs := h.server.Topics.Subscribers(topic)
	for id := range subs.Subscriptions {
		if s := h.session(id); s != nil && s.persistent.Load() {
			return true
		}
	}
	for _, group := range subs.Shared {
		for id := range group {
			if s := h.session(id); s != nil && s.persistent.Load() {
				return true
			}
		}
	}
	return false
}

// OnPublish writes a QoS 1/2 message ahead when it may need to survive a
// crash. The Barrier hook waits for the write.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.Ignore || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	id := tagID(&pk)
	if id == 0 {
		id = h.next()
		tag(&pk, id)
	}
	if h.replaying.Load() {
		if origin, ok := h.replayOrigin[id]; ok {
			pk.Origin = origin // mochi set the inline client's id
		}
		return pk, nil // the record exists already
	}
	inbound := pk.FixedHeader.Qos == 2 && !cl.Net.Inline && h.isPersistent(cl)
	if !inbound && !pk.FixedHeader.Retain && !h.durableDestination(pk.TopicName) {
		h.Counters.WALSkipped.Add(1)
		return pk, nil
	}
	rec := record{WAL: id, Seq: id, Packet: pk}
	key := walKey(id)
	e := &walEntry{id: id, key: key}
	if inbound {
		key = inboundKey(cl.ID, pk.PacketID, id)
		e.key = key
		s := h.sessionFor(cl)
		s.mu.Lock()
		s.inbound[pk.PacketID] = id
		s.mu.Unlock()
		rec.PacketID = pk.PacketID
		stub := record{WAL: id, Seq: id, State: inRouted, PacketID: pk.PacketID}
		stub.Packet.FixedHeader.Qos = 2
		e.stub = string(encodeRecord(nil, &stub))
	}
	h.walMu.Lock()
	h.wal[id] = e
	e.batch = h.store.Write(Set(key, string(encodeRecord(nil, &rec))))
	h.walMu.Unlock()
	h.Counters.WALWrites.Add(1)
	return pk, nil
}

// inbound record states.
const (
	inUnrouted = 0 // full message, routing not finished
	inRouted   = 1 // stub: routed, waiting for PUBREL
)

// OnPublished retires the write-ahead record once the message is routed.
func (h *Hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	id := tagID(&pk)
	if id == 0 {
		return
	}
	h.walMu.Lock()
	e := h.wal[id]
	if e == nil || e.routed {
		h.walMu.Unlock()
		return
	}
	e.routed = true
	h.walMu.Unlock()
	if e.key == "" {
		h.walMu.Lock()
		delete(h.wal, id)
		h.walMu.Unlock()
		return
	}
	op := Del(e.key)
	if e.stub != "" {
		op = Set(e.key, e.stub)
	}
	h.retire(e, op)
}

// retire writes op (the record's delete or stub) strictly after every
// record written so far, then releases the ops that waited for it.
func (h *Hook) retire(e *walEntry, op Op) {
	if e.key == "" {
		h.walMu.Lock()
		delete(h.wal, e.id)
		h.walMu.Unlock()
		return
	}
	b := h.store.WriteAfter(op)
	h.store.Afterwards(b, func(err error) {
		h.walMu.Lock()
		deps := e.deps
		e.deps = nil
		delete(h.wal, e.id)
		h.walMu.Unlock()
		if len(deps) > 0 {
			h.store.Write(deps...)
		}
	})
}

// deleteAfterWAL writes op once the WAL record wal is durably retired (or
// at once if it is). Used for records that carry a message from that WAL.
func (h *Hook) deleteAfterWAL(wal uint64, op Op) {
	if wal != 0 {
		h.walMu.Lock()
		if e := h.wal[wal]; e != nil && e.key != "" {
			e.deps = append(e.deps, op)
			h.walMu.Unlock()
			return
		}
		h.walMu.Unlock()
	}
	h.store.Write(op)
}

// tombstone is a retained clear whose record is kept for a while.
type tombstone struct {
	key, value string
	seq        uint64
	tick       uint64 // sys tick when written
}

// OnRetainMessage stores or clears a retained message. A clear leaves a
// tombstone with its sequence so a replay of an older message cannot bring
// the topic back; tombstones are deleted once no older write-ahead record
// remains (sweepTombstones), and all of them after start-up replay.
func (h *Hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	seq := tagID(&pk)
	if seq == 0 {
		seq = h.next()
	}
	rec := record{Seq: seq, WAL: seq, Packet: pk}
	if len(pk.Payload) == 0 {
		rec = record{Seq: seq, State: retTombstone}
		rec.Packet.TopicName = pk.TopicName
	}
	rec.Packet.Connect = packets.ConnectParams{}
	h.setRetained(pk.TopicName, &rec)
}

func (h *Hook) setRetained(topic string, rec *record) {
	key, val := retainedKey(topic), string(encodeRecord(nil, rec))
	h.store.Write(Set(key, val))
	if rec.State == retTombstone {
		h.tombMu.Lock()
		h.tombs = append(h.tombs, tombstone{key: key, value: val, seq: rec.Seq, tick: h.ticks.Load()})
		h.tombMu.Unlock()
	}
}

// sweepTombstones deletes tombstones that no replay can need any more: at
// least one $SYS tick old and older than every live write-ahead record. A
// retained message set on the topic since then is kept (DelIf).
func (h *Hook) sweepTombstones() {
	now := h.ticks.Load()
	h.walMu.Lock()
	oldest := h.seq.Load() + 1 // every sequence issued so far is older
	for id := range h.wal {
		oldest = min(oldest, id)
	}
	h.walMu.Unlock()
	h.tombMu.Lock()
	var ops []Op
	keep := h.tombs[:0]
	for _, t := range h.tombs {
		if t.tick < now && t.seq < oldest {
			ops = append(ops, DelIf(t.key, t.value))
			continue
		}
		keep = append(keep, t)
	}
	clear(h.tombs[len(keep):])
	h.tombs = keep
	h.tombMu.Unlock()
	if len(ops) > 0 {
		h.store.Write(ops...)
	}
}

// retained record states.
const (
	retLive      = 0
	retTombstone = 1
)

// OnRetainedExpired deletes an expired retained message.
func (h *Hook) OnRetainedExpired(topic string) {
	rec := record{Seq: h.next(), State: retTombstone}
	rec.Packet.TopicName = topic
	h.setRetained(topic, &rec)
}

// --- deliveries ----------------------------------------------------------------

// OnQosPublish takes every new QoS 1/2 delivery into the subscriber's session.
func (h *Hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return
	}
	s := h.sessionFor(cl)
	s.mu.Lock()
	defer s.mu.Unlock()
	// mochi resending what is in cl's in-flight map (after CONNACK on
	// resume: ResendInflightMessages sets DUP; a new delivery never has it,
	// Packet.Copy clears it [MQTT-3.3.1-3]). Anything else is a new
	// delivery, even if the index still holds its packet id for an older
	// entry: taking it for a resend would drop it.
	if e := s.byID[pk.PacketID]; e != nil && pk.FixedHeader.Dup && e.id == pk.PacketID && e.owner == cl {
		if e.state == stIncoming && !e.drop {
			// Routed into cl after the session was taken over and before
			// the resend: mochi writes it now, with this id, so it is sent
			// (the pump must not send it again), and no longer pending in
			// mochi's map.
			p := e.pk
			p.PacketID = e.id
			cl.State.Inflight.Set(p)
			s.markSent(e)
			if b := s.sendAfter; b != nil && e.pk.FixedHeader.Qos == 2 {
				// As the pump does: a QoS 2 packet id is on disk before the
				// receiver sees it.
				s.waitStored(b)
			}
		}
		return
	}
	if s.cl != cl {
		// A delivery into a client object that is being replaced: it still
		// belongs to the session, as a pending message.
		if s.cl == nil {
			return
		}
	}
	wal := tagID(&pk)
	e := &entry{seq: h.next(), id: pk.PacketID, wal: wal, state: stIncoming, owner: cl, pk: pk}
	e.pk.Connect = packets.ConnectParams{}
	e.pk.FixedHeader.Dup = false
	if s.cl == cl {
		// byID holds the packet ids of the current client's in-flight map
		// only: an id of a replaced client object would, once the new
		// connection reuses it, make a new delivery look like a resend and
		// be dropped.
		s.byID[pk.PacketID] = e
	}
	s.incoming = append(s.incoming, e)
	switch {
	case h.replaying.Load() && wal != 0 && s.have[wal]:
		e.drop = true // it survived in this session's queue already
	case s.queued() > h.opts.MaxQueued:
		e.drop = true
		s.overflowed++
		h.Counters.QueueOverflow.Add(1)
		if s.overflowed == 1 || s.overflowed%1000 == 0 {
			h.Log.Warn("session queue full: dropping messages", "client", s.id, "limit", h.opts.MaxQueued, "dropped", s.overflowed)
		}
		if h.opts.OnEvent != nil {
			h.opts.OnEvent(Event{Kind: "queue_overflow", Client: s.id, Topic: pk.TopicName, Dropped: s.overflowed, Queued: s.queued(), Limit: h.opts.MaxQueued})
		}
	default:
		s.save(e, qNew)
	}
	if h.opts.Backpressure > 0 && s.connected && pk.Origin != "" && s.queued() >= h.highMark() && !s.stalled(time.Now()) {
		h.congest(pk.Origin, s)
	}
	s.kickLocked()
}

// highMark is the queue length that holds publishers back: enough to keep
// a subscriber's window full many times over, far below the overflow.
func (h *Hook) highMark() int { return max(min(h.opts.MaxQueued/2, 512), 1) }
func (h *Hook) lowMark() int  { return h.highMark() / 2 }

// congest remembers that publisher fed s past the high mark. s.mu is held.
func (h *Hook) congest(publisher string, s *session) {
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	h.congestMu.Lock()
	if h.congested == nil {
		h.congested = map[string]*session{}
	}
	h.congested[publisher] = s
	h.congestMu.Unlock()
}

// hold waits, for at most Backpressure, until the session publisher last
// congested has drained (or disconnected).
func (h *Hook) hold(publisher string) {
	h.congestMu.Lock()
	s := h.congested[publisher]
	delete(h.congested, publisher)
	h.congestMu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	ch := s.drained
	s.mu.Unlock()
	if ch == nil {
		return
	}
	h.Counters.Held.Add(1)
	deadline := time.Now().Add(h.opts.Backpressure)
	tick := time.NewTicker(stallCheck)
	defer tick.Stop()
	for {
		select {
		case <-ch:
			return
		case now := <-tick.C:
			s.mu.Lock()
			stalled := s.stalled(now)
			s.mu.Unlock()
			if stalled || now.After(deadline) {
				// A subscriber that stopped acknowledging holds nobody: it
				// gets the overflow policy (and the write timeout) instead.
				h.Counters.HeldTimeouts.Add(1)
				return
			}
		}
	}
}

const (
	stallAfter = time.Second            // no acknowledgement for this long: the subscriber is stuck
	stallCheck = 100 * time.Millisecond // how often a held publisher looks
)

// OnQosComplete deletes an inbound QoS 2 record once its PUBREL arrived.
func (h *Hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Pubrel || cl.Net.Inline {
		return
	}
	// mochi has just raised the send quota for this inbound completion;
	// lower it at once rather than after the packet (see session.ack).
	cl.State.Inflight.DecreaseSendQuota()
	h.inboundDone(cl, pk.PacketID)
}

func (h *Hook) inboundDone(cl *mqtt.Client, id uint16) {
	s := h.session(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != cl {
		return
	}
	wal, ok := s.inbound[id]
	delete(s.inbound, id)
	if s.persistent.Load() && ok && wal != 0 {
		h.deleteAfterWAL(wal, Del(inboundKey(s.id, id, wal)))
	}
}

// OnQosDropped forgets a message mochi gave up on (expired in flight, or
// refused by the receiver).
func (h *Hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s := h.session(cl.ID)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.cl != cl {
		s.mu.Unlock()
		return
	}
	if e := s.outstanding[pk.PacketID]; e != nil {
		h.Counters.Expired.Add(1)
		e.outcome = Expired
		s.finish(e)
		s.kickLocked()
		s.mu.Unlock()
		return
	}
	_, inbound := s.inbound[pk.PacketID]
	s.mu.Unlock()
	if inbound {
		h.inboundDone(cl, pk.PacketID)
	}
}

// OnSysInfoTick deletes old retained tombstones and stores the $SYS
// counters every ten ticks.
func (h *Hook) OnSysInfoTick(info *system.Info) {
	h.sweepTombstones()
	if h.ticks.Add(1)%10 != 1 {
		return
	}
	b, err := json.Marshal(info)
	if err != nil {
		h.Log.Error("encode $SYS counters", "error", err)
		return
	}
	h.store.Write(Set(keySysInfo, string(b)))
}

// holder is implemented by Mote's connections: later writes wait until a
// channel is closed, without blocking the writer.
type holder interface {
	HoldWrites(until <-chan struct{}, check func() error)
}

// corker is implemented by Mote's connections: writes between Cork and
// Uncork are sent together.
type corker interface {
	Cork()
	Uncork() error
}

// write sends packets to cl in one go where the connection supports it.
func (h *Hook) write(cl *mqtt.Client, out []packets.Packet) error {
	c, ok := cl.Net.Conn.(corker)
	if ok {
		c.Cork()
	}
	var err error
	for i := range out {
		if werr := cl.WritePacket(out[i]); werr != nil && err == nil {
			err = werr
		}
	}
	if ok {
		if uerr := c.Uncork(); uerr != nil && err == nil {
			err = uerr
		}
	}
	return err
}

// Barrier is registered after every other OnPublish hook: it waits until the
// publish's writes are durable, so the acknowledgement mochi writes next is
// true. A store failure refuses the message instead (MQTT 5: reason 0x80;
// MQTT 3: no acknowledgement, so the client resends).
type Barrier struct {
	mqtt.HookBase
	h *Hook
}

// NewBarrier returns the barrier for h.
func NewBarrier(h *Hook) *Barrier { return &Barrier{h: h} }

// ID is the hook's id.
func (b *Barrier) ID() string { return "persistence-barrier" }

// Provides reports the events the hook handles.
func (b *Barrier) Provides(e byte) bool { return e == mqtt.OnPublish }

// OnPublish waits for the publish's durability point.
func (b *Barrier) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	id := tagID(&pk)
	if id == 0 || pk.Ignore {
		return pk, nil
	}
	if b.h.opts.Backpressure > 0 {
		b.h.hold(cl.ID)
	}
	b.h.walMu.Lock()
	e := b.h.wal[id]
	var batch *Batch
	if e != nil {
		batch = e.batch
	}
	b.h.walMu.Unlock()
	if batch == nil {
		return pk, nil
	}
	// QoS 1 from a network client: let the PUBACK (and whatever is written
	// after it) wait for the commit on the connection, so mochi reads and
	// handles the client's next publishes meanwhile and one commit covers
	// many of them. Subscribers may see the message before it is durable;
	// if the broker dies before, the publisher sends it again (QoS 1
	// allows the duplicate). QoS 2 waits here: exactly once needs the
	// message stored before anyone sees it.
	if h, ok := cl.Net.Conn.(holder); ok && pk.FixedHeader.Qos == 1 {
		h.HoldWrites(batch.Done(), func() error {
			err := batch.Wait()
			if err != nil {
				b.h.Counters.StoreErrors.Add(1)
			}
			return err
		})
		return pk, nil
	}
	if err := batch.Wait(); err != nil {
		b.h.Counters.StoreErrors.Add(1)
		b.h.Log.Error("message not acknowledged: store write failed", "client", cl.ID, "error", err)
		if cl.Properties.ProtocolVersion == 5 {
			return pk, packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "store unavailable"}
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// logger used before SetOpts (tests constructing hooks directly).
var discard = slog.New(slog.DiscardHandler)
