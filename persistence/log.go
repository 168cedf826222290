package persistence

import (
	"container/heap"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ErrUnknownEntry is returned for an id that is not in the log.
var ErrUnknownEntry = errors.New("persistence: no such log entry")

// Entry is one log record.
type Entry struct {
	ID    uint64
	Value []byte
}

// Log is a durable, ordered log of opaque records (a workload queue or a
// bridge outbox) with in-memory leases:
//
//   - Append writes records in order; wait on the returned batch before
//     acknowledging them to anyone.
//   - Lease hands out the oldest records not leased to someone else. Leases
//     live in memory only: after a restart every record is ready again,
//     which is exactly "unacknowledged work is redelivered".
//   - Release gives a leased record back (it is handed out again, in id
//     order, before newer ones); Ack deletes it for good.
//
// A Log is safe for concurrent use.
type Log struct {
	store  *Store
	name   string
	prefix string

	mu      sync.Mutex
	nextID  uint64
	fresh   []uint64 // never-leased ids, ascending (appended at the end)
	back    idHeap   // released ids, handed out before fresh ones
	leased  map[uint64]struct{}
	live    map[uint64]struct{} // every id in the log
	deleted uint64              // acked or purged since open
}

// Log opens the named log, loading its ids. Names must not contain NUL.
func (s *Store) Log(name string) (*Log, error) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("persistence: invalid log name %q", name)
	}
	l := &Log{
		store:  s,
		name:   name,
		prefix: logPrefix(name),
		leased: map[uint64]struct{}{},
		live:   map[uint64]struct{}{},
	}
	var bad error
	err := s.Scan(l.prefix, func(k, _ string) bool {
		id, err := parseHex(k[len(l.prefix):])
		if err != nil {
			bad = fmt.Errorf("%w: log %s key %q", ErrCorruptRecord, name, k)
			return false
		}
		l.fresh = append(l.fresh, id)
		l.live[id] = struct{}{}
		if id >= l.nextID {
			l.nextID = id + 1
		}
		return true
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	if l.nextID == 0 {
		l.nextID = 1
	}
	return l, nil
}

// Name is the log's name.
func (l *Log) Name() string { return l.name }

func (l *Log) key(id uint64) string { return l.prefix + hex16(id) }

// Append adds records at the end of the log and returns their ids and the
// batch that makes them durable.
func (l *Log) Append(values ...[]byte) ([]uint64, *Batch) {
	ops := make([]Op, len(values))
	ids := make([]uint64, len(values))
	l.mu.Lock()
	for i, v := range values {
		id := l.nextID
		l.nextID++
		ids[i] = id
		ops[i] = Set(l.key(id), string(v))
		l.fresh = append(l.fresh, id)
		l.live[id] = struct{}{}
	}
	// Write under l.mu so ids enter the store in id order.
	b := l.store.Write(ops...)
	l.mu.Unlock()
	return ids, b
}

// Put rewrites the value of an existing record (for example an attempt
// counter) and returns the batch that makes it durable.
func (l *Log) Put(id uint64, value []byte) (*Batch, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.live[id]; !ok {
		return nil, ErrUnknownEntry
	}
	return l.store.Write(Set(l.key(id), string(value))), nil
}

// Get reads one record.
func (l *Log) Get(id uint64) ([]byte, error) {
	v, ok, err := l.store.Get(l.key(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrUnknownEntry
	}
	return []byte(v), nil
}

// Lease marks up to n of the oldest ready records as leased and returns them
// in id order.
func (l *Log) Lease(n int) ([]Entry, error) {
	if n <= 0 {
		return nil, nil
	}
	l.mu.Lock()
	ids := make([]uint64, 0, min(n, len(l.live)))
	for len(ids) < n {
		id, ok := l.popReady()
		if !ok {
			break
		}
		l.leased[id] = struct{}{}
		ids = append(ids, id)
	}
	l.mu.Unlock()
	out := make([]Entry, 0, len(ids))
	for i, id := range ids {
		v, err := l.Get(id)
		if errors.Is(err, ErrUnknownEntry) {
			// Acked concurrently, or appended but not committed yet: give
			// the lease back (a no-op for an acked record).
			l.Release(id)
			continue
		}
		if err != nil {
			l.Release(ids[i:]...)
			return out, err
		}
		out = append(out, Entry{ID: id, Value: v})
	}
	return out, nil
}

// popReady returns the oldest ready id. l.mu must be held.
func (l *Log) popReady() (uint64, bool) {
	for {
		var id uint64
		switch {
		case len(l.back) > 0 && (len(l.fresh) == 0 || l.back[0] < l.fresh[0]):
			id = heap.Pop(&l.back).(uint64)
		case len(l.fresh) > 0:
			id = l.fresh[0]
			l.fresh = l.fresh[1:]
			if len(l.fresh) == 0 {
				l.fresh = nil // let the backing array go
			}
		default:
			return 0, false
		}
		if _, ok := l.live[id]; ok {
			return id, true
		}
	}
}

// Release returns leased records to the ready set.
func (l *Log) Release(ids ...uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if _, ok := l.leased[id]; !ok {
			continue
		}
		delete(l.leased, id)
		if _, ok := l.live[id]; ok {
			heap.Push(&l.back, id)
		}
	}
}

// Ack deletes records for good and returns the batch that makes it durable.
func (l *Log) Ack(ids ...uint64) *Batch {
	ops := make([]Op, 0, len(ids))
	l.mu.Lock()
	for _, id := range ids {
		if _, ok := l.live[id]; !ok {
			continue
		}
		delete(l.live, id)
		delete(l.leased, id)
		l.deleted++
		ops = append(ops, Del(l.key(id)))
	}
	b := l.store.Write(ops...)
	l.mu.Unlock()
	return b
}

// Len is the number of records in the log (leased or not).
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

// Leased is the number of records currently leased.
func (l *Log) Leased() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.leased)
}

// Scan calls fn for records with id > after, in id order, until it returns
// false. It reads the store and does not change leases.
func (l *Log) Scan(after uint64, fn func(Entry) bool) error {
	from := l.key(after + 1)
	if after == ^uint64(0) {
		return nil
	}
	return l.store.ScanRange(from, l.prefix+"\xff", func(k, v string) bool {
		id, err := parseHex(k[len(l.prefix):])
		if err != nil {
			return true
		}
		return fn(Entry{ID: id, Value: []byte(v)})
	})
}

// Purge deletes every record and returns how many there were.
func (l *Log) Purge() (int, *Batch) {
	l.mu.Lock()
	ops := make([]Op, 0, len(l.live))
	for id := range l.live {
		ops = append(ops, Del(l.key(id)))
	}
	n := len(l.live)
	l.deleted += uint64(n)
	l.live = map[uint64]struct{}{}
	l.leased = map[uint64]struct{}{}
	l.fresh = nil
	l.back = nil
	b := l.store.Write(ops...)
	l.mu.Unlock()
	return n, b
}

type idHeap []uint64

func (h idHeap) Len() int           { return len(h) }
func (h idHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h idHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idHeap) Push(x any)        { *h = append(*h, x.(uint64)) }
func (h *idHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
