package queue

import (
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// stickySeed keys the sticky strategies' hash (stable while the process runs).
var stickySeed = maphash.MakeSeed()

// Stats describe one queue.
type Stats struct {
	Group        string
	Filters      []string
	Depth        int // messages waiting or in flight
	InFlight     int // handed to a member, not yet acknowledged
	Consumers    int // members (connected or not)
	Online       int // connected members
	Delivered    uint64
	Acked        uint64
	Redelivered  uint64
	Refused      uint64 // NACKs (reason code >= 0x80)
	DeadLettered uint64
	Expired      uint64
	Dropped      uint64 // by drop_oldest
	Rejected     uint64 // publishes refused by reject_new
	TimedOut     uint64 // deliveries taken back by the visibility timeout
	OldestAge    time.Duration
	DeadLetters  int // dead letters kept (see Manager.DeadLetters), at most MaxDeadLetters
}

type member struct {
	id       string
	qos      byte
	filters  map[string]bool
	online   bool
	v5       bool
	inflight int
}

type delivery struct {
	m       *member
	n       int       // delivery number (1 = first)
	at      time.Time // when it was handed to m
	t       *tracker
	revoked bool
}

// queue is one group's queue. All fields are guarded by Manager.mu.
type queue struct {
	group    string
	set      Settings
	declared bool
	log      *persistence.Log
	dead     *persistence.Log // dead letters kept for Redrive (newest MaxDeadLetters)
	members  map[string]*member
	order    []string // member ids, sorted
	rr       int
	inflight map[uint64]*delivery
	counts   map[uint64]int    // deliveries so far, for messages delivered at least once
	avoid    map[uint64]string // member that gave the message back: another one gets it if it can
	expireAt time.Time         // zero: not expiring
	st       Stats
}

func (q *queue) filters() []string {
	seen := map[string]bool{}
	if q.declared {
		seen[q.set.Filter] = true
	}
	for _, m := range q.members {
		for f := range m.filters {
			seen[f] = true
		}
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

func (q *queue) addMember(id, filter string, qos byte, online, v5 bool) {
	m := q.members[id]
	if m == nil {
		m = &member{id: id, filters: map[string]bool{}}
		q.members[id] = m
		q.order = append(q.order, id)
		slices.Sort(q.order)
	}
	m.filters[filter] = true
	m.qos = max(m.qos, qos)
	m.online = m.online || online
	m.v5 = v5
	q.expireAt = time.Time{}
}

// removeFilter drops filter from member id; the member leaves when it has
// none left. It reports whether the queue has no members any more.
func (q *queue) removeFilter(id, filter string) bool {
	m := q.members[id]
	if m == nil {
		return len(q.members) == 0
	}
	delete(m.filters, filter)
	if len(m.filters) == 0 {
		delete(q.members, id)
		q.order = slices.DeleteFunc(q.order, func(s string) bool { return s == id })
	}
	return len(q.members) == 0
}

// credit is how many more messages member m may take now.
func (mg *Manager) credit(q *queue, m *member) int {
	if !m.online {
		return 0
	}
	c := mg.persist.Credit(m.id)
	if n := q.set.InflightPerConsumer; n > 0 {
		c = min(c, n-m.inflight)
	}
	return c
}

// pick chooses the member for pk, or nil when the one the strategy wants
// (or every member) has no credit now. A member other than avoid is
// preferred when one has credit.
func (mg *Manager) pick(q *queue, pk *packets.Packet, avoid string) *member {
	if avoid != "" && len(q.order) > 1 {
		if m := q.members[avoid]; m != nil {
			saved := m.online
			m.online = false // hide it for one choice
			best := mg.pick(q, pk, "")
			m.online = saved
			if best != nil {
				return best
			}
		}
	}
	n := len(q.order)
	if n == 0 {
		return nil
	}
	switch q.set.Strategy {
	case StickyClient, StickyTopic:
		key := pk.TopicName
		if q.set.Strategy == StickyClient {
			key = pk.Origin
		}
		// Rendezvous hashing over the connected members: a key stays with
		// its member while that member is connected.
		var best *member
		var bestScore uint64
		for _, id := range q.order {
			m := q.members[id]
			if !m.online {
				continue
			}
			if s := maphash.String(stickySeed, id+"\x00"+key); best == nil || s > bestScore {
				best, bestScore = m, s
			}
		}
		if best == nil || mg.credit(q, best) <= 0 {
			return nil
		}
		return best
	case LeastInflight:
		var best *member
		for i := range n {
			m := q.members[q.order[(q.rr+i)%n]]
			if mg.credit(q, m) > 0 && (best == nil || m.inflight < best.inflight) {
				best = m
			}
		}
		q.rr = (q.rr + 1) % n
		return best
	case Random:
		start := rand.IntN(n)
		for i := range n {
			if m := q.members[q.order[(start+i)%n]]; mg.credit(q, m) > 0 {
				return m
			}
		}
		return nil
	default: // round robin
		for i := range n {
			idx := (q.rr + i) % n
			if m := q.members[q.order[idx]]; mg.credit(q, m) > 0 {
				q.rr = (idx + 1) % n
				return m
			}
		}
		return nil
	}
}

// dispatch hands out waiting messages while members have credit. mg.mu is
// held.
func (mg *Manager) dispatch(q *queue, now time.Time) {
	for q.log.Len() > q.log.Leased() {
		entries, err := q.log.Lease(1)
		if err != nil || len(entries) == 0 {
			return
		}
		e := entries[0]
		pk, n, stored, err := persistence.DecodeMessageAt(e.Value)
		n = max(n, q.counts[e.ID])
		if err != nil {
			mg.log.Error("queue: dropping an unreadable message", "group", q.group, "id", e.ID, "error", err)
			q.ack(e.ID)
			continue
		}
		if q.expired(&pk, stored, now) {
			q.st.Expired++
			q.ack(e.ID)
			continue
		}
		if n >= q.set.MaxDeliveries {
			mg.deadLetter(q, pk, n, "max_deliveries", e.ID)
			continue
		}
		m := mg.pick(q, &pk, q.avoid[e.ID])
		if m == nil {
			q.log.Release(e.ID)
			return
		}
		n++
		q.counts[e.ID] = n
		delete(q.avoid, e.ID)
		out := pk.Copy(false)
		out.FixedHeader.Qos = min(pk.FixedHeader.Qos, m.qos)
		out.FixedHeader.Retain = false
		out.Origin = pk.Origin
		out.Expiry = pk.Expiry
		if n > 1 {
			out.FixedHeader.Dup = out.FixedHeader.Qos > 0
			q.st.Redelivered++
			if m.v5 {
				out.Properties.User = append(slices.Clone(out.Properties.User),
					packets.UserProperty{Key: "delivery-count", Val: strconv.Itoa(n)})
			}
		}
		if out.FixedHeader.Qos == 0 {
			// At most once: it leaves the queue as it is sent.
			if cl, ok := mg.server.Clients.Get(m.id); ok && !cl.Closed() {
				_ = cl.WritePacket(out)
			}
			q.st.Delivered++
			q.ack(e.ID)
			continue
		}
		if n > 1 {
			// The count is stored from the second delivery on: after a
			// crash a message is delivered at most once more than counted.
			if _, err := q.log.Put(e.ID, persistence.EncodeMessageAt(pk, n, stored)); err != nil {
				continue // purged meanwhile: nothing to deliver
			}
		}
		d := &delivery{m: m, n: n, at: now}
		d.t = &tracker{mg: mg, q: q, id: e.ID, d: d}
		q.inflight[e.ID] = d
		m.inflight++
		if !mg.persist.Offer(m.id, out, d.t) {
			delete(q.inflight, e.ID)
			m.inflight--
			m.online = false
			q.log.Release(e.ID)
			continue
		}
		q.st.Delivered++
	}
}

// revokeStale takes back deliveries a member has held longer than the
// visibility timeout, so another member gets them. mg.mu is held.
func (mg *Manager) revokeStale(q *queue, now time.Time) {
	vt := q.set.VisibilityTimeout
	if vt <= 0 {
		return
	}
	for _, d := range q.inflight {
		if now.Sub(d.at) > vt && !d.revoked {
			d.revoked = true
			if mg.persist.Revoke(d.m.id, d.t) {
				q.st.TimedOut++
				mg.log.Info("queue: visibility timeout; redelivering", "group", q.group, "client", d.m.id, "held", now.Sub(d.at).Round(time.Millisecond).String())
			}
		}
	}
}

// ack removes a message for good.
func (q *queue) ack(id uint64) {
	delete(q.counts, id)
	delete(q.avoid, id)
	q.log.Ack(id)
}

func (q *queue) expired(pk *packets.Packet, stored, now time.Time) bool {
	if pk.Expiry > 0 && pk.Expiry < now.Unix() {
		return true
	}
	if stored.IsZero() && pk.Created > 0 {
		stored = time.Unix(pk.Created, 0)
	}
	return q.set.MessageTTL > 0 && !stored.IsZero() && now.Sub(stored) > q.set.MessageTTL
}

// deadLetter publishes pk to the queue's dead-letter topic with why.
// The message leaves the queue (id) once its kept copy is durable.
func (mg *Manager) deadLetter(q *queue, pk packets.Packet, deliveries int, why string, id uint64) {
	q.st.DeadLettered++
	topic := strings.ReplaceAll(q.set.DeadLetterTopic, "{group}", q.group)
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: pk.FixedHeader.Qos},
		PacketID:    uint16(min(pk.FixedHeader.Qos, 1)), // as mochi's Server.Publish: an id for QoS > 0, none for 0
		TopicName:   topic,
		Payload:     pk.Payload,
		Properties: packets.Properties{
			ContentType:       pk.Properties.ContentType,
			CorrelationData:   pk.Properties.CorrelationData,
			ResponseTopic:     pk.Properties.ResponseTopic,
			PayloadFormat:     pk.Properties.PayloadFormat,
			PayloadFormatFlag: pk.Properties.PayloadFormatFlag,
			User: append(slices.Clone(pk.Properties.User),
				packets.UserProperty{Key: "original-topic", Val: pk.TopicName},
				packets.UserProperty{Key: "reason", Val: why},
				packets.UserProperty{Key: "delivery-count", Val: strconv.Itoa(deliveries)},
				packets.UserProperty{Key: "queue", Val: q.group}),
		},
	}
	mg.log.Warn("queue: message dead-lettered", "group", q.group, "topic", pk.TopicName, "reason", why, "deliveries", deliveries, "dead_letter_topic", topic)
	mg.keepDead(q, pk, deliveries, id)
	mg.publish(out)
}

// tracker reports a delivery's end to the manager.
type tracker struct {
	mg *Manager
	q  *queue
	id uint64
	d  *delivery
}

// Settled is called by the session engine with its locks held: it only
// records the event for the manager's goroutine.
func (t *tracker) Settled(o persistence.Outcome, code byte) {
	t.mg.post(event{t: t, outcome: o, code: code})
}

// settle applies a delivery's end. mg.mu is held.
func (mg *Manager) settle(ev event) {
	t := ev.t
	q := t.q
	if q.inflight[t.id] != t.d {
		return // the queue was deleted meanwhile, or already settled
	}
	delete(q.inflight, t.id)
	t.d.m.inflight--
	switch ev.outcome {
	case persistence.Acked:
		q.st.Acked++
		q.ack(t.id)
	case persistence.Expired:
		q.st.Expired++
		q.ack(t.id)
	case persistence.Refused:
		q.st.Refused++
		q.avoid[t.id] = t.d.m.id
		q.log.Release(t.id) // to another member (or the dead letters) at once
	default:
		q.avoid[t.id] = t.d.m.id
		q.log.Release(t.id)
	}
}

// memberOf parses "$share/{group}/{filter}".
func memberOf(filter string) (group, f string, ok bool) {
	rest, ok := strings.CutPrefix(filter, "$share/")
	if !ok {
		return "", "", false
	}
	group, f, ok = strings.Cut(rest, "/")
	return group, f, ok && group != "" && f != ""
}

func isV5(cl *mqtt.Client) bool { return cl.Properties.ProtocolVersion == 5 }
