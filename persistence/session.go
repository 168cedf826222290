package persistence

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Outbound delivery to a session.
//
// mochi puts every QoS 1/2 delivery into the subscriber's in-flight map and
// either writes it at once or, when the subscriber's send quota is used up,
// marks it "pending" (Expiry -1) for later. Its pending path loses messages
// and order: it hands the next pending message out in random order within a
// second, deletes it from the in-flight map when it sends it (so the PUBACK
// is ignored and the quota leaks until the session stalls), resends whatever
// is in flight on resume regardless of the client's Receive Maximum, and
// drops QoS 1/2 messages when the client's write queue is full.
//
// So every session's send quota is kept at zero (see forceQuota): mochi then
// takes the pending path for every QoS 1/2 delivery, and the session engine
// here sends them itself, in order, within the client's window:
//
//	incoming     deliveries mochi just routed (they still hold mochi's packet id)
//	pending      decided, not yet sent, no packet id (FIFO)
//	outstanding  sent and not yet acknowledged (PUBACK, PUBREC/PUBREL, PUBCOMP)
//
// A per-session pump goroutine, started on demand, moves entries along and
// writes them. Persistent sessions keep one store record per entry.

const (
	stIncoming = iota // routed by mochi, decision (pending or direct send) not seen yet
	stPending         // waiting for window space
	stSent            // written, waiting for PUBACK/PUBREC
	stPubrel          // PUBREC received, PUBREL sent, waiting for PUBCOMP
	stDone            // acknowledged, dropped or expired
)

// record states of a queue record (q␀...).
const (
	qNew    = 0 // not sent (packet id meaningless)
	qSent   = 1 // sent with PacketID
	qPubrel = 2 // PUBREC received for PacketID
)

type entry struct {
	seq   uint64
	id    uint16 // mochi packet id while held in a mochi in-flight map, else 0
	wal   uint64
	state int
	drop  bool         // discard once mochi settles it (queue overflow, replay duplicate)
	owner *mqtt.Client // mochi client object whose in-flight map holds id
	pk    packets.Packet

	tracker Tracker // set for messages offered by another owner (Offer); not stored here
	settled bool
	outcome Outcome // how it ends when finished (for tracker)
	code    byte
}

type session struct {
	id string
	h  *Hook

	mu         sync.Mutex
	persistent atomic.Bool // written with mu held (setPersistent), read without it by durableDestination
	// Guarded by mu.
	cl          *mqtt.Client
	connected   bool
	window      int
	incoming    []*entry
	pending     []*entry
	outstanding map[uint16]*entry
	byID        map[uint16]*entry // entries holding an id in cl's in-flight map
	inbound     map[uint16]uint64 // inbound QoS 2 awaiting PUBREL: id → wal id
	running     bool
	retry       *time.Timer
	sendAfter   *Batch          // the packets step returned may be written once this is durable
	resumedAt   uint64          // entries older than this were stored before the current connection
	drained     chan struct{}   // closed when a congested queue drains to the low mark (or the session goes)
	lastDone    time.Time       // last time a message left the queue (acknowledged, refused, expired)
	have        map[uint64]bool // wal ids already queued here (dedupe during replay)
	username    []byte
	expiry      uint32
	proto       byte
	clean       bool
	listener    string
	overflowed  uint64
}

func newSession(h *Hook, id string) *session {
	return &session{
		id:          id,
		h:           h,
		outstanding: map[uint16]*entry{},
		byID:        map[uint16]*entry{},
		inbound:     map[uint16]uint64{},
	}
}

func (s *session) queued() int { return len(s.incoming) + len(s.pending) + len(s.outstanding) }

// forceQuota pins mochi's send quota for cl at zero (with a non-zero
// maximum) so that mochi queues every QoS 1/2 delivery as pending and never
// writes one itself; the session engine sends them.
func forceQuota(cl *mqtt.Client) {
	cl.State.Inflight.ResetSendQuota(1)
	cl.State.Inflight.DecreaseSendQuota()
}

// kick starts the pump unless it is running. s.mu must be held.
func (s *session) kickLocked() {
	if s.running || s.h.stopping.Load() {
		return
	}
	s.running = true
	s.h.wg.Add(1)
	go s.pump()
}

func (s *session) kick() {
	s.mu.Lock()
	s.kickLocked()
	s.mu.Unlock()
}

// retryPump is how long a pump waits for mochi to finish routing a
// delivery at the head of the session before it looks again.
//
// A timer, not a wakeup from the routing goroutine: mochi calls no hook
// right after it marks a delivery pending, and not every routing path ends
// with one (OnPublished, OnPacketProcessed, OnWillSent; a delayed will of a
// client that is gone has none), so a wakeup would still need this as a
// fallback. It is rare: the pump yields three times first, and at 5,000
// msg/s to one subscriber 23 timers were armed in 46,662 pump steps (0 when
// saturated, none at idle), too few to show in CPU or p99.
const retryPump = 50 * time.Microsecond

// pump resolves and sends until there is nothing it can do.
func (s *session) pump() {
	defer s.h.wg.Done()
	for {
		s.mu.Lock()
		out, retry := s.step()
		if len(out) == 0 {
			s.running = false
			if retry && s.retry == nil && !s.h.stopping.Load() {
				// The head is a delivery mochi is still routing: look again
				// very soon (everything behind it waits for this; 2 ms here
				// made p99 at 5k msg/s 3.7 ms, 50 µs makes it 1.6 ms).
				s.retry = time.AfterFunc(retryPump, func() {
					s.mu.Lock()
					s.retry = nil
					s.kickLocked()
					s.mu.Unlock()
				})
			}
			s.mu.Unlock()
			return
		}
		cl := s.cl
		durable := s.sendAfter
		s.sendAfter = nil
		s.mu.Unlock()
		if durable != nil {
			// A QoS 2 PUBLISH goes out only once its packet id is on disk:
			// after a crash it must be resent with the same id, or the
			// receiver would take it for a new message [MQTT-4.3.3].
			if err := durable.Wait(); err != nil {
				s.h.Log.Error("session state not stored; holding QoS 2 deliveries", "client", s.id, "error", err)
				s.mu.Lock()
				s.running = false
				s.mu.Unlock()
				return
			}
		}
		if err := s.h.write(cl, out); err != nil {
			// The connection is failing; its disconnect will follow and the
			// entries stay outstanding, to be resent on resume.
			s.h.Log.Debug("session write failed", "client", s.id, "error", err)
			s.mu.Lock()
			s.running = false
			s.mu.Unlock()
			return
		}
	}
}

// step moves entries along and returns packets to write. retry reports an
// entry whose fate mochi has not settled yet. s.mu must be held.
func (s *session) step() (out []packets.Packet, retry bool) {
	now := time.Now().Unix()
	spins := 0
	for len(s.incoming) > 0 {
		e := s.incoming[0]
		if e.state != stIncoming {
			s.popIncoming()
			continue
		}
		if e.owner != s.cl || e.owner == nil {
			// Routed into a client object that has since been replaced.
			if s.byID[e.id] == e {
				delete(s.byID, e.id) // its id belongs to that old client
			}
			if e.drop {
				s.popIncoming()
				e.state = stDone
				continue
			}
			s.toPending(e)
			continue
		}
		got, ok := e.owner.State.Inflight.Get(e.id)
		switch {
		case !ok:
			// mochi rolled it back (write queue full) or an inbound packet
			// with the same id displaced it: it is ours to send.
			delete(s.byID, e.id)
			e.id = 0
			if e.drop {
				s.popIncoming()
				e.state = stDone
				continue
			}
			s.toPending(e)
		case got.Expiry == -1 && got.FixedHeader.Type == packets.Publish:
			// mochi queued it as pending: ours to send.
			if !s.connected && !e.owner.Closed() {
				// Routed into a connection being established. When its
				// session is present, mochi resends whatever is in its
				// in-flight map after CONNACK, from a copy taken before:
				// taking the message out of the map now could not stop
				// that write, and the message would go out twice.
				// OnQosPublish takes mochi's resend as the delivery;
				// OnSessionEstablished kicks the pump for the rest.
				goto send
			}
			if e.drop {
				s.popIncoming()
				e.owner.State.Inflight.Delete(e.id)
				atomic.AddInt64(&s.h.server.Info.Inflight, -1)
				delete(s.byID, e.id)
				e.state = stDone
				continue
			}
			if s.connected && len(s.pending) == 0 && len(s.outstanding) < s.window && !expired(&e.pk, now) {
				s.popIncoming()
				e.pk.PacketID = e.id
				e.owner.State.Inflight.Set(e.pk)
				s.markSent(e)
				out = append(out, e.pk)
				continue
			}
			e.owner.State.Inflight.Delete(e.id)
			atomic.AddInt64(&s.h.server.Info.Inflight, -1)
			delete(s.byID, e.id)
			e.id = 0
			s.toPending(e)
		default:
			// mochi has not finished routing it (it marks it pending just
			// after our hook returns), or is writing it itself through the
			// client's write queue (OnPacketEncode will mark it sent).
			if e.owner.Closed() {
				// Nor will it ever write it: a closed client writes
				// nothing. Looking again would poll until the session
				// resumes (OnSessionEstablish takes the entry over) or
				// ends (dropAll).
				goto send
			}
			if spins < 3 {
				spins++
				s.mu.Unlock()
				runtime.Gosched()
				s.mu.Lock()
				continue
			}
			retry = true
			goto send
		}
	}
send:
	for s.connected && len(s.pending) > 0 && len(s.outstanding) < s.window {
		e := s.pending[0]
		s.pending[0] = nil
		s.pending = s.pending[1:]
		if e.state != stPending {
			continue
		}
		if expired(&e.pk, now) {
			e.outcome = Expired
			s.finish(e)
			continue
		}
		if e.seq < s.resumedAt && s.h.opts.CanDeliver != nil && !s.h.opts.CanDeliver(s.cl, e.pk.TopicName) {
			s.h.Counters.Denied.Add(1)
			s.finish(e)
			continue
		}
		id, err := s.cl.NextPacketID()
		if err != nil {
			s.pending = append([]*entry{e}, s.pending...)
			retry = true
			break
		}
		e.id = uint16(id)
		e.owner = s.cl
		e.pk.PacketID = e.id
		if e.tracker == nil {
			e.pk.FixedHeader.Dup = false // an offered message says itself whether it is a redelivery
		}
		if s.cl.State.Inflight.Set(e.pk) {
			atomic.AddInt64(&s.h.server.Info.Inflight, 1)
		}
		s.byID[e.id] = e
		s.markSent(e)
		out = append(out, e.pk)
	}
	if len(s.pending) == 0 {
		s.pending = nil
	}
	return out, retry
}

func (s *session) popIncoming() {
	s.incoming[0] = nil
	s.incoming = s.incoming[1:]
	if len(s.incoming) == 0 {
		s.incoming = nil
	}
}

func (s *session) toPending(e *entry) {
	s.popIncoming()
	e.state = stPending
	e.owner = nil
	s.pending = append(s.pending, e)
}

func expired(pk *packets.Packet, now int64) bool { return pk.Expiry > 0 && pk.Expiry < now }

// markSent records e as written with its current id. s.mu must be held.
func (s *session) markSent(e *entry) {
	e.state = stSent
	s.outstanding[e.id] = e
	if b := s.save(e, qSent); b != nil && e.pk.FixedHeader.Qos == 2 {
		s.sendAfter = b
	}
}

// waitStored waits, without s.mu, until b is durable (a state the receiver
// is about to see must survive a crash). s.mu must be held; it is again on
// return.
func (s *session) waitStored(b *Batch) {
	s.mu.Unlock()
	err := b.Wait()
	s.mu.Lock()
	if err != nil {
		s.h.Log.Error("session state not stored", "client", s.id, "error", err)
	}
}

// save writes e's queue record for persistent sessions and returns the
// batch that makes it durable (nil for other sessions).
func (s *session) save(e *entry, st byte) *Batch {
	if !s.persistent.Load() || e.tracker != nil {
		return nil
	}
	rec := record{WAL: e.wal, Seq: e.seq, State: st, PacketID: e.id, Packet: e.pk}
	return s.h.store.Write(Set(queueKey(s.id, e.seq), string(encodeRecord(nil, &rec))))
}

// finish removes e for good (acknowledged, refused, expired). s.mu must be held.
func (s *session) finish(e *entry) {
	if e.state == stDone {
		return
	}
	e.state = stDone
	e.settle(e.outcome, e.code)
	s.lastDone = time.Now()
	if s.drained != nil && s.queued()-1 <= s.h.lowMark() {
		s.release()
	}
	if e.id != 0 {
		if s.outstanding[e.id] == e {
			delete(s.outstanding, e.id)
		}
		if s.byID[e.id] == e {
			delete(s.byID, e.id)
		}
	}
	if s.persistent.Load() && e.tracker == nil {
		s.h.deleteAfterWAL(e.wal, Del(queueKey(s.id, e.seq)))
	}
}

// ack handles PUBACK, PUBREC and PUBCOMP from the client. It is called from
// OnPacketRead, before mochi processes the packet, and returns the packet
// mochi should process instead.
//
// mochi raises the client's send quota when it completes a PUBACK or
// PUBCOMP, and a delivery routed by another goroutine in that instant would
// be written by mochi directly, overtaking older pending messages. So a
// completion the engine owns is finished here: the entry leaves mochi's
// in-flight map now, and mochi gets a PUBACK for an id it no longer holds,
// which it ignores without touching the quota.
func (s *session) ack(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != cl {
		return pk
	}
	e := s.outstanding[pk.PacketID]
	if e == nil {
		return pk
	}
	switch pk.FixedHeader.Type {
	case packets.Puback:
		if e.state != stSent || e.pk.FixedHeader.Qos != 1 {
			return pk
		}
		if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			e.outcome, e.code = Refused, pk.ReasonCode
		}
	case packets.Pubrec:
		if e.state != stSent || e.pk.FixedHeader.Qos != 2 {
			return pk
		}
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			e.state = stPubrel
			if b := s.save(e, qPubrel); b != nil {
				// mochi sends PUBREL when this returns. The receiver then
				// forgets the packet id, so after a crash the broker must
				// resend PUBREL, not the PUBLISH: the state is stored first.
				s.waitStored(b)
			}
			return pk // the window stays taken until PUBCOMP
		}
		// The receiver refused it [MQTT-4.3.3-4]: mochi drops it (no quota change).
		e.outcome, e.code = Refused, pk.ReasonCode
		s.finish(e)
		s.kickLocked()
		return pk
	case packets.Pubcomp:
		if e.state != stPubrel {
			return pk
		}
	default:
		return pk
	}
	if pk.FixedHeader.Type == packets.Pubcomp {
		cl.State.Inflight.IncreaseReceiveQuota() // mochi took it when it sent PUBREL
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		atomic.AddInt64(&s.h.server.Info.Inflight, -1)
	}
	s.finish(e)
	s.kickLocked()
	pk.FixedHeader.Type = packets.Puback
	return pk
}

// stalled reports whether the session has messages waiting but none has
// left its queue for stallAfter. s.mu must be held.
func (s *session) stalled(now time.Time) bool {
	return len(s.outstanding) > 0 && now.Sub(s.lastDone) > stallAfter
}

// release lets go of publishers held for this session. s.mu must be held.
func (s *session) release() {
	if s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// dropAll forgets the session's messages; records are deleted when the
// session was persistent. s.mu must be held.
func (s *session) dropAll() {
	for _, e := range s.pending {
		e.outcome = Returned
	}
	for _, e := range s.outstanding {
		e.outcome = Returned
	}
	for _, e := range s.incoming {
		s.finish(e)
	}
	for _, e := range s.pending {
		s.finish(e)
	}
	for _, e := range s.outstanding {
		s.finish(e)
	}
	s.incoming, s.pending = nil, nil
	s.outstanding = map[uint16]*entry{}
	s.byID = map[uint16]*entry{}
	for id, wal := range s.inbound {
		if s.persistent.Load() && wal != 0 {
			s.h.deleteAfterWAL(wal, Del(inboundKey(s.id, id, wal)))
		}
	}
	s.inbound = map[uint16]uint64{}
	s.release()
	if s.retry != nil {
		s.retry.Stop()
		s.retry = nil
	}
}
