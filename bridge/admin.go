package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// Operator actions on a bridge (the admin API): pause and resume sending,
// look at the dead letters it keeps and send them again.

// MaxDeadLetters is how many dead letters a bridge keeps for RetryDead;
// past it the oldest kept one is forgotten (it was still published to
// $bridge/{name}/dead).
const MaxDeadLetters = 10000

// deadLogPrefix names a bridge's dead-letter log in the store.
const deadLogPrefix = "bridge-dead/"

// pausedKey marks a paused bridge in the store, so a pause survives a
// restart (an operator paused it for a reason the restart does not undo).
func pausedKey(name string) string { return "b\x00paused\x00" + name }

// DeadLetter is a message a bridge gave up on.
type DeadLetter struct {
	ID       uint64 // ascending in the order they were given up on (pass it as after to page on)
	Packet   packets.Packet
	Reason   string // the last error
	Attempts int
	At       time.Time
}

// Pause stops starting sends (those running finish); messages keep
// entering the outbox. The pause is stored and survives a restart.
func (b *Bridge) Pause() error {
	return b.setPaused(true)
}

// Resume undoes Pause.
func (b *Bridge) Resume() error {
	return b.setPaused(false)
}

func (b *Bridge) setPaused(on bool) error {
	op := persistence.Del(pausedKey(b.cfg.Name))
	if on {
		op = persistence.Set(pausedKey(b.cfg.Name), "1")
	}
	if err := b.store.Write(op).Wait(); err != nil {
		return fmt.Errorf("bridge %s: store the pause: %w", b.cfg.Name, err)
	}
	b.mu.Lock()
	changed := b.paused != on
	b.paused = on
	b.mu.Unlock()
	if changed {
		if on {
			b.log.Info("bridge paused")
		} else {
			b.log.Info("bridge resumed")
		}
	}
	b.wake()
	return nil
}

// OnSend sets fn to be called after every Send call (not those cancelled
// by Stop) with its duration, how many messages it carried and its error:
// for a latency histogram. fn runs on the sending goroutine and must not
// block.
func (b *Bridge) OnSend(fn func(d time.Duration, msgs int, err error)) {
	b.onSend.Store(&fn)
}

// keepDead stores a dead letter for RetryDead, forgetting the oldest
// beyond MaxDeadLetters, and returns the batch that makes it durable.
func (b *Bridge) keepDead(pk packets.Packet, reason string, attempts int) *persistence.Batch {
	_, batch := b.deadLog.Append(encodeDead(pk, reason, attempts, time.Now()))
	for b.deadLog.Len() > MaxDeadLetters {
		var oldest uint64
		_ = b.deadLog.Scan(0, func(e persistence.Entry) bool { oldest = e.ID; return false })
		if oldest == 0 {
			break
		}
		b.deadLog.Ack(oldest)
	}
	return batch
}

// DeadLetters returns up to limit of the kept dead letters with ids above
// after, oldest first.
func (b *Bridge) DeadLetters(after uint64, limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	var bad error
	err := b.deadLog.Scan(after, func(e persistence.Entry) bool {
		if len(out) >= limit {
			return false
		}
		d, err := decodeDead(e.Value)
		if err != nil {
			bad = fmt.Errorf("bridge %s: dead letter %d: %w", b.cfg.Name, e.ID, err)
			return false
		}
		d.ID = e.ID
		out = append(out, d)
		return true
	})
	if err == nil {
		err = bad
	}
	return out, err
}

// RetryDead moves up to limit (0: all) kept dead letters back into the
// outbox, with their attempts reset, and returns how many it moved once
// that is durable. The dead letters are deleted only after the outbox
// copies are durable: a crash in between sends a duplicate, never loses
// one.
func (b *Bridge) RetryDead(limit int) (int, error) {
	b.retryMu.Lock() // two at once would both move the same dead letters
	defer b.retryMu.Unlock()
	var values [][]byte
	var ids []uint64
	err := b.deadLog.Scan(0, func(e persistence.Entry) bool {
		if limit > 0 && len(ids) >= limit {
			return false
		}
		d, err := decodeDead(e.Value)
		if err != nil {
			b.log.Error("bridge: dropping an unreadable dead letter", "id", e.ID, "error", err)
			b.deadLog.Ack(e.ID)
			return true
		}
		values = append(values, persistence.EncodeMessage(d.Packet, 0))
		ids = append(ids, e.ID)
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("bridge %s: retry dead letters: %w", b.cfg.Name, err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	_, batch := b.outbox.Append(values...)
	err = batch.Wait()
	b.wake()
	if err == nil {
		err = b.deadLog.Ack(ids...).Wait()
	}
	if err != nil {
		return 0, fmt.Errorf("bridge %s: retry dead letters: %w", b.cfg.Name, err)
	}
	b.log.Info("bridge: dead letters sent again", "messages", len(ids))
	return len(ids), nil
}

// Bridge returns the registered bridge called name, or nil.
func (h *Hook) Bridge(name string) *Bridge {
	for _, b := range h.bridges {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// A dead letter record: version 1, unix milliseconds, attempts, the
// reason, then the message as EncodeMessage writes it.
const deadVersion = 1

var errDeadRecord = errors.New("bad dead letter record")

func encodeDead(pk packets.Packet, reason string, attempts int, at time.Time) []byte {
	b := []byte{deadVersion}
	b = binary.AppendVarint(b, at.UnixMilli())
	b = binary.AppendUvarint(b, uint64(max(attempts, 0)))
	b = binary.AppendUvarint(b, uint64(len(reason)))
	b = append(b, reason...)
	return append(b, persistence.EncodeMessage(pk, 0)...)
}

func decodeDead(v []byte) (DeadLetter, error) {
	if len(v) < 1 || v[0] != deadVersion {
		return DeadLetter{}, errDeadRecord
	}
	v = v[1:]
	ms, n := binary.Varint(v)
	if n <= 0 {
		return DeadLetter{}, errDeadRecord
	}
	v = v[n:]
	attempts, n := binary.Uvarint(v)
	if n <= 0 {
		return DeadLetter{}, errDeadRecord
	}
	v = v[n:]
	rl, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < rl {
		return DeadLetter{}, errDeadRecord
	}
	reason := string(v[n : n+int(rl)])
	pk, _, err := persistence.DecodeMessage(v[n+int(rl):])
	if err != nil {
		return DeadLetter{}, err
	}
	return DeadLetter{Packet: pk, Reason: reason, Attempts: int(attempts), At: time.UnixMilli(ms)}, nil
}
