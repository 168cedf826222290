package mqtt

import (
	"hash/maphash"
	"sync"
	"time"
)

// MQTT 3.1.1 has no "no local" subscription option: a remote sends the
// bridge's own messages back when its subscriptions cover what it
// publishes. echoes remembers, for echoWindow, a fingerprint of each
// message published to a topic the bridge subscribes to; a message that
// comes in with a remembered fingerprint is taken as the echo and dropped
// (each fingerprint is used once).
const (
	echoWindow   = 30 * time.Second
	echoCapacity = 65536 // fingerprints remembered at most; the oldest go first
)

type echoEntry struct {
	key, seq uint64
	at       time.Time
}

type echoes struct {
	seed   maphash.Seed
	window time.Duration
	cap    int
	now    func() time.Time

	mu    sync.Mutex
	seq   uint64
	fifo  []echoEntry         // in the order added, from head
	head  int                 // first live entry of fifo
	byKey map[uint64][]uint64 // fingerprint → seqs not yet taken, oldest first
}

func newEchoes(window time.Duration, capacity int) *echoes {
	return &echoes{seed: maphash.MakeSeed(), window: window, cap: capacity, now: time.Now, byKey: map[uint64][]uint64{}}
}

func (e *echoes) key(topic string, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	h.WriteString(topic)
	h.WriteByte(0) // no NUL in topics: topic and payload cannot run together
	h.Write(payload)
	return h.Sum64()
}

// add remembers a message published to topic.
func (e *echoes) add(topic string, payload []byte) {
	k := e.key(topic, payload)
	e.mu.Lock()
	now := e.now()
	defer e.mu.Unlock()
	e.expire(now)
	if len(e.fifo)-e.head >= e.cap {
		e.evict()
	}
	e.seq++
	e.fifo = append(e.fifo, echoEntry{key: k, seq: e.seq, at: now})
	e.byKey[k] = append(e.byKey[k], e.seq)
}

// take reports whether a message received on topic is the echo of one
// added in the window, and forgets that one.
func (e *echoes) take(topic string, payload []byte) bool {
	k := e.key(topic, payload)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(e.now())
	seqs := e.byKey[k]
	if len(seqs) == 0 {
		return false
	}
	if len(seqs) == 1 {
		delete(e.byKey, k)
	} else {
		e.byKey[k] = seqs[1:]
	}
	return true
}

// len is the number of fingerprints remembered.
func (e *echoes) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(e.now())
	n := 0
	for _, s := range e.byKey {
		n += len(s)
	}
	return n
}

func (e *echoes) expire(now time.Time) {
	for e.head < len(e.fifo) && now.Sub(e.fifo[e.head].at) >= e.window {
		e.evict()
	}
}

// evict forgets the oldest entry (unless taken already: take removes the
// oldest seq of a key, and entries leave fifo oldest first, so a taken
// entry is one whose seq is below the key's first).
func (e *echoes) evict() {
	old := e.fifo[e.head]
	e.fifo[e.head] = echoEntry{}
	e.head++
	if seqs := e.byKey[old.key]; len(seqs) > 0 && seqs[0] == old.seq {
		if len(seqs) == 1 {
			delete(e.byKey, old.key)
		} else {
			e.byKey[old.key] = seqs[1:]
		}
	}
	if e.head > 1024 && e.head*2 >= len(e.fifo) {
		e.fifo = append(e.fifo[:0], e.fifo[e.head:]...)
		e.head = 0
	}
}
