// Package e2e holds end-to-end tests that run the broker as a real child
// process (so SIGKILL is real) and check delivery like a Jepsen checker.
package e2e

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Checker classifies messages that carry (producer, sequence):
//
//	ok          acknowledged to the producer and delivered
//	lost        acknowledged but never delivered
//	recovered   not acknowledged (the broker died first) but delivered
//	duplicated  delivered more than once
//	unexpected  delivered but never sent
type Checker struct {
	mu        sync.Mutex
	sent      map[key]bool // value: acknowledged
	delivered map[key]int
	order     map[string][]uint64 // per producer, delivery order
}

type key struct {
	producer string
	seq      uint64
}

// NewChecker returns an empty checker.
func NewChecker() *Checker {
	return &Checker{sent: map[key]bool{}, delivered: map[key]int{}, order: map[string][]uint64{}}
}

// Payload encodes producer and sequence (8 bytes of sequence, then the name).
func Payload(producer string, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, seq)
	return append(b, producer...)
}

// Decode reverses Payload.
func Decode(p []byte) (string, uint64, error) {
	if len(p) < 8 {
		return "", 0, fmt.Errorf("payload of %d bytes carries no sequence", len(p))
	}
	return string(p[8:]), binary.BigEndian.Uint64(p[:8]), nil
}

// Sent records an attempt; acked says whether the broker acknowledged it.
func (c *Checker) Sent(producer string, seq uint64, acked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{producer, seq}
	c.sent[k] = c.sent[k] || acked
}

// Delivered records a delivery.
func (c *Checker) Delivered(payload []byte) {
	producer, seq, err := Decode(payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.delivered[key{"?", 0}]++
		return
	}
	c.delivered[key{producer, seq}]++
	c.order[producer] = append(c.order[producer], seq)
}

// Report is the checker's verdict.
type Report struct {
	OK, Lost, Recovered, Duplicated, Unexpected int
	LostSeqs                                    []string // the first lost messages, for the failure message
}

func (r Report) String() string {
	s := fmt.Sprintf("ok=%d lost=%d recovered=%d duplicated=%d unexpected=%d", r.OK, r.Lost, r.Recovered, r.Duplicated, r.Unexpected)
	if len(r.LostSeqs) > 0 {
		s += " first lost: " + strings.Join(r.LostSeqs, ",")
	}
	return s
}

// Report classifies everything recorded so far.
func (c *Checker) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r Report
	var lost []key
	for k, acked := range c.sent {
		n := c.delivered[k]
		switch {
		case acked && n == 0:
			r.Lost++
			lost = append(lost, k)
		case acked:
			r.OK++
		case n > 0:
			r.Recovered++
		}
		if n > 1 {
			r.Duplicated += n - 1
		}
	}
	for k := range c.delivered {
		if _, ok := c.sent[k]; !ok {
			r.Unexpected++
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i].seq < lost[j].seq })
	for i := 0; i < len(lost) && i < 10; i++ {
		r.LostSeqs = append(r.LostSeqs, fmt.Sprintf("%s#%d", lost[i].producer, lost[i].seq))
	}
	return r
}

// Reorderings counts, per producer, deliveries of a lower sequence after a
// higher one (ignoring repeats of already-delivered sequences).
func (c *Checker) Reorderings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, seqs := range c.order {
		seen := map[uint64]bool{}
		var max uint64
		for _, s := range seqs {
			if seen[s] {
				continue
			}
			seen[s] = true
			if s < max {
				n++
			}
			if s > max {
				max = s
			}
		}
	}
	return n
}
