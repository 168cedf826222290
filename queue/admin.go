package queue

import (
	"errors"
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// Operator actions on queues (the admin API): look at waiting messages and
// dead letters, purge, and move dead letters back to their queue.

// MaxDeadLetters is how many dead letters a queue keeps for Redrive; past
// it the oldest kept one is forgotten (it was still published to the
// dead-letter topic).
const MaxDeadLetters = 10000

// deadLogPrefix names a queue's dead-letter log in the store.
const deadLogPrefix = "queue-dead/"

// ErrNoQueue is returned for a group that has no queue.
var ErrNoQueue = errors.New("no such queue")

// Message is a message held by a queue, or one of its dead letters.
type Message struct {
	ID         uint64 // log id: ascending in arrival order (pass it as after to page on)
	Packet     packets.Packet
	Deliveries int       // times handed to a consumer so far
	Stored     time.Time // when it was queued (for a dead letter: when it was dead-lettered)
	InFlight   bool      // handed to Consumer and not yet acknowledged
	Consumer   string
}

// keepDead stores a dead letter for Redrive, forgetting the oldest beyond
// MaxDeadLetters, and takes message id off q once the copy is durable: a
// crash can apply part of one store transaction, so the delete waits for
// the append instead of sharing its batch. mg.mu is held.
func (mg *Manager) keepDead(q *queue, pk packets.Packet, deliveries int, id uint64) {
	_, batch := q.dead.Append(persistence.EncodeMessageAt(pk, deliveries, time.Now()))
	delete(q.counts, id)
	delete(q.avoid, id)
	// Until then the record stays leased here, so nobody hands it out.
	mg.acking.Add(1)
	mg.store.Afterwards(batch, func(err error) {
		defer mg.acking.Done()
		if err == nil {
			q.log.Ack(id)
		}
	})
	for q.dead.Len() > MaxDeadLetters {
		var oldest uint64
		_ = q.dead.Scan(0, func(e persistence.Entry) bool { oldest = e.ID; return false })
		if oldest == 0 {
			return
		}
		q.dead.Ack(oldest)
	}
}

// Peek returns up to limit messages of group's queue with ids above after,
// oldest first, without changing them.
func (mg *Manager) Peek(group string, after uint64, limit int) ([]Message, error) {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	q := mg.queues[group]
	if q == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoQueue, group)
	}
	return scanMessages(q.log, after, limit, func(m *Message) {
		if d := q.inflight[m.ID]; d != nil {
			m.InFlight = true
			m.Consumer = d.m.id
		}
		m.Deliveries = max(m.Deliveries, q.counts[m.ID])
	})
}

// DeadLetters returns up to limit of group's kept dead letters with ids
// above after, oldest first.
func (mg *Manager) DeadLetters(group string, after uint64, limit int) ([]Message, error) {
	mg.mu.Lock()
	q := mg.queues[group]
	mg.mu.Unlock()
	if q == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoQueue, group)
	}
	return scanMessages(q.dead, after, limit, nil)
}

func scanMessages(l *persistence.Log, after uint64, limit int, fill func(*Message)) ([]Message, error) {
	var out []Message
	var bad error
	err := l.Scan(after, func(e persistence.Entry) bool {
		if len(out) >= limit {
			return false
		}
		pk, n, stored, err := persistence.DecodeMessageAt(e.Value)
		if err != nil {
			bad = fmt.Errorf("queue: message %d: %w", e.ID, err)
			return false
		}
		m := Message{ID: e.ID, Packet: pk, Deliveries: n, Stored: stored}
		if fill != nil {
			fill(&m)
		}
		out = append(out, m)
		return true
	})
	if err == nil {
		err = bad
	}
	return out, err
}

// Purge deletes the messages of group's queue that are waiting; those
// handed to a consumer stay until it acknowledges them (as RabbitMQ's
// purge). It returns how many it deleted.
func (mg *Manager) Purge(group string) (int, error) {
	mg.mu.Lock()
	q := mg.queues[group]
	if q == nil {
		mg.mu.Unlock()
		return 0, fmt.Errorf("%w: %q", ErrNoQueue, group)
	}
	var ids []uint64
	if err := q.log.Scan(0, func(e persistence.Entry) bool {
		if q.inflight[e.ID] == nil {
			ids = append(ids, e.ID)
		}
		return true
	}); err != nil {
		mg.mu.Unlock()
		return 0, fmt.Errorf("queue %q: purge: %w", group, err)
	}
	for _, id := range ids {
		delete(q.counts, id)
		delete(q.avoid, id)
	}
	batch := q.log.Ack(ids...)
	mg.mu.Unlock()
	// Answer once the deletes are durable (and a peek no longer sees them).
	if err := batch.Wait(); err != nil {
		return 0, fmt.Errorf("queue %q: purge: %w", group, err)
	}
	if len(ids) > 0 {
		mg.log.Info("queue purged", "group", group, "messages", len(ids))
	}
	return len(ids), nil
}

// Redrive moves up to limit (0: all) of group's dead letters back to the
// end of its queue, with their delivery count reset, and returns how many
// it moved once that is durable. The dead letters are deleted only after
// the appended copies are durable: a crash in between leaves a duplicate,
// never a loss.
func (mg *Manager) Redrive(group string, limit int) (int, error) {
	mg.redriveMu.Lock() // two at once would both move the same dead letters
	defer mg.redriveMu.Unlock()
	q, ids, batch, err := mg.redrive(group, limit)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	if err := batch.Wait(); err != nil {
		return 0, fmt.Errorf("queue %q: redrive: %w", group, err)
	}
	if err := q.dead.Ack(ids...).Wait(); err != nil {
		return 0, fmt.Errorf("queue %q: redrive: %w", group, err)
	}
	mg.log.Info("queue: dead letters moved back to the queue", "group", group, "messages", len(ids))
	return len(ids), nil
}

// redrive appends the dead letters to the queue and returns their ids and
// the batch that makes the copies durable.
func (mg *Manager) redrive(group string, limit int) (*queue, []uint64, *persistence.Batch, error) {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	q := mg.queues[group]
	if q == nil {
		return nil, nil, nil, fmt.Errorf("%w: %q", ErrNoQueue, group)
	}
	var values [][]byte
	var ids []uint64
	now := time.Now()
	err := q.dead.Scan(0, func(e persistence.Entry) bool {
		if limit > 0 && len(ids) >= limit {
			return false
		}
		pk, _, _, err := persistence.DecodeMessageAt(e.Value)
		if err != nil {
			mg.log.Error("queue: dropping an unreadable dead letter", "group", group, "id", e.ID, "error", err)
			q.dead.Ack(e.ID)
			return true
		}
		values = append(values, persistence.EncodeMessageAt(pk, 0, now))
		ids = append(ids, e.ID)
		return true
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("queue %q: redrive: %w", group, err)
	}
	if len(ids) == 0 {
		return q, nil, nil, nil
	}
	_, batch := q.log.Append(values...)
	mg.poke()
	return q, ids, batch, nil
}
