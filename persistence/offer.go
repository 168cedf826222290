package persistence

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Outcome is how a delivery offered with Offer ended.
type Outcome int

// Delivery outcomes.
const (
	// Acked: PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success code.
	Acked Outcome = iota
	// Refused: the client answered with a reason code >= 0x80 (a NACK).
	Refused
	// Returned: not delivered, or delivered without an acknowledgement
	// before the connection ended; the owner should hand it out again.
	Returned
	// Expired: the message expired before it was sent.
	Expired
)

// Tracker follows a delivery offered with Offer. Settled is called exactly
// once, with session locks held: it must not block or call into the Hook.
type Tracker interface {
	Settled(o Outcome, code byte)
}

// Credit is how many more QoS 1/2 messages the client's session can take
// now without exceeding its window (0 when it is not connected).
func (h *Hook) Credit(clientID string) int {
	s := h.session(clientID)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected || s.cl == nil {
		return 0
	}
	return max(s.window-s.queued(), 0)
}

// Offer hands a QoS 1/2 message owned by someone else (a workload queue)
// to a connected client's session: it is sent in order with the session's
// own messages, within the same window, and t learns how it ended. The
// session does not store it: the owner keeps it durable. Offer reports
// false when the client is not connected.
func (h *Hook) Offer(clientID string, pk packets.Packet, t Tracker) bool {
	s := h.session(clientID)
	if s == nil || pk.FixedHeader.Qos == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected || s.cl == nil {
		return false
	}
	pk.Connect = packets.ConnectParams{}
	e := &entry{seq: h.next(), state: stPending, pk: pk, tracker: t}
	s.pending = append(s.pending, e)
	s.kickLocked()
	return true
}

// WaitFor makes the acknowledgement of pk (a QoS 1/2 publish being
// processed) wait for b as well, for features that store the message
// themselves (a queue append). b must have been opened after the publish's
// own writes (as it is when called from a later hook's OnPublish).
func (h *Hook) WaitFor(pk *packets.Packet, b *Batch) {
	id := tagID(pk)
	if id == 0 || b == nil {
		return
	}
	h.walMu.Lock()
	e := h.wal[id]
	if e == nil {
		e = &walEntry{id: id}
		h.wal[id] = e
	}
	e.batch = b
	h.walMu.Unlock()
}

// settle reports e's end to its tracker. s.mu is held.
func (e *entry) settle(o Outcome, code byte) {
	if e.tracker != nil && !e.settled {
		e.settled = true
		e.tracker.Settled(o, code)
	}
}

// returnForeign gives back offered messages when the connection ended
// without ending the session: QoS 1 (in any state) and QoS 2 not yet sent
// go back to their owner; QoS 2 deliveries already started stay until the
// session ends [MQTT-4.8.2-5]. s.mu must be held.
func (s *session) returnForeign(cl *mqtt.Client) {
	var back []*entry
	keep := s.pending[:0]
	for _, e := range s.pending {
		if e.tracker != nil && e.state == stPending {
			back = append(back, e)
			continue
		}
		keep = append(keep, e)
	}
	clear(s.pending[len(keep):])
	s.pending = keep
	for _, e := range s.outstanding {
		if e.tracker != nil && e.pk.FixedHeader.Qos == 1 {
			back = append(back, e)
		}
	}
	// In the order they were offered, so the owner gets them back in order.
	slices.SortFunc(back, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	for _, e := range back {
		if e.state != stPending {
			delete(s.outstanding, e.id)
			delete(s.byID, e.id)
			if cl != nil && cl.State.Inflight.Delete(e.id) {
				atomic.AddInt64(&s.h.server.Info.Inflight, -1)
			}
		}
		e.state = stDone
		e.settle(Returned, 0)
	}
	s.lastDone = time.Now()
}

// Replaying reports whether Restore is routing write-ahead records again
// (features that stored the message themselves skip it then).
func (h *Hook) Replaying() bool { return h.replaying.Load() }

// Revoke takes back a message offered with Offer that the client still
// holds unacknowledged (QoS 1, or QoS 2 not yet sent): its tracker is
// settled as Returned. A late PUBACK for it is then ignored. It reports
// whether the message was found.
func (h *Hook) Revoke(clientID string, t Tracker) bool {
	s := h.session(clientID)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.pending {
		if e.tracker == t && e.state == stPending {
			s.pending = append(s.pending[:i:i], s.pending[i+1:]...)
			e.state = stDone
			e.settle(Returned, 0)
			return true
		}
	}
	for id, e := range s.outstanding {
		if e.tracker != t || e.pk.FixedHeader.Qos != 1 {
			continue
		}
		delete(s.outstanding, id)
		delete(s.byID, id)
		if s.cl != nil && s.cl.State.Inflight.Delete(id) {
			atomic.AddInt64(&h.server.Info.Inflight, -1)
		}
		e.state = stDone
		e.settle(Returned, 0)
		s.kickLocked()
		return true
	}
	return false
}
