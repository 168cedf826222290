package retaingate

import "sync"

// The two classes of classLock.
const (
	classScan   = 0 // mochi reads the retained paths of its topic index
	classRetain = 1 // mochi writes one of them
)

// classLock is a lock with two shared classes: any number of holders of one
// class run together, the two classes exclude each other. It is fair
// between the classes: once a holder of one class waits, later arrivals of
// the other class queue behind it, and when the last holder of a class
// leaves, every waiter of the other class is let in together. So neither
// class starves the other as long as every holder releases.
//
// A goroutine must not acquire a class it (or anything it waits for)
// already holds: with the other class waiting, the second acquisition waits
// for the first release. The hooks are built so that it never does (see the
// package documentation).
type classLock struct {
	mu      sync.Mutex
	cond    sync.Cond // on mu (set by init); broadcast when waiters are let in
	active  [2]int    // holders per class
	waiting [2]int    // waiters per class
	gen     [2]uint64 // per class: bumped when its waiters are let in
}

// init makes l ready for use.
func (l *classLock) init() { l.cond.L = &l.mu }

// acquire waits until class c may run and takes a share of it.
func (l *classLock) acquire(c int) {
	l.mu.Lock()
	o := 1 - c
	if l.active[o] == 0 && l.waiting[o] == 0 {
		l.active[c]++
		l.mu.Unlock()
		return
	}
	l.waiting[c]++
	g := l.gen[c]
	for l.gen[c] == g {
		l.cond.Wait()
	}
	// release counted us in active[c].
	l.mu.Unlock()
}

// release gives back a share of class c, which the caller holds.
func (l *classLock) release(c int) {
	l.mu.Lock()
	o := 1 - c
	l.active[c]--
	if l.active[c] == 0 && l.waiting[o] > 0 {
		l.active[o] += l.waiting[o]
		l.waiting[o] = 0
		l.gen[o]++
		l.cond.Broadcast()
	}
	l.mu.Unlock()
}
