package retaingate

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newLock() *classLock {
	l := &classLock{}
	l.init()
	return l
}

// TestLockExcludesClasses runs holders of both classes at once: a holder
// never sees the other class inside, and holders of one class do overlap.
func TestLockExcludesClasses(t *testing.T) {
	l := newLock()
	var inside [2]atomic.Int32
	var overlap [2]atomic.Bool
	var wg sync.WaitGroup
	for w := range 8 {
		c := w % 2
		wg.Go(func() {
			for range 2000 {
				l.acquire(c)
				if n := inside[c].Add(1); n > 1 {
					overlap[c].Store(true)
				}
				if inside[1-c].Load() != 0 {
					t.Errorf("class %d inside together with class %d", c, 1-c)
				}
				inside[c].Add(-1)
				l.release(c)
			}
		})
	}
	wg.Wait()
	if l.active != [2]int{} || l.waiting != [2]int{} {
		t.Fatalf("after all releases: active %v waiting %v", l.active, l.waiting)
	}
	t.Logf("overlap within a class: scan %v, retain %v", overlap[classScan].Load(), overlap[classRetain].Load())
}

// TestLockFair: once a writer waits for the readers inside, a new reader
// queues behind it rather than joining them, and the waiting readers all
// get in together when the writer leaves.
func TestLockFair(t *testing.T) {
	l := newLock()
	l.acquire(classScan)

	writerIn := make(chan struct{})
	go func() {
		l.acquire(classRetain)
		close(writerIn)
	}()
	waitFor(t, func() bool { return l.count(classRetain, false) == 1 })

	readersIn := make(chan struct{}, 2)
	for range 2 {
		go func() {
			l.acquire(classScan)
			readersIn <- struct{}{}
		}()
	}
	waitFor(t, func() bool { return l.count(classScan, false) == 2 })
	select {
	case <-writerIn:
		t.Fatal("writer got in while a reader held the lock")
	default:
	}

	l.release(classScan)
	<-writerIn
	if l.count(classScan, true) != 0 {
		t.Fatal("readers got in together with the writer")
	}
	l.release(classRetain)
	<-readersIn
	<-readersIn
	if n := l.count(classScan, true); n != 2 {
		t.Fatalf("%d readers inside, want 2", n)
	}
	l.release(classScan)
	l.release(classScan)
}

// count returns how many hold (active) or wait for class c.
func (l *classLock) count(c int, active bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if active {
		return l.active[c]
	}
	return l.waiting[c]
}

// waitFor polls cond until it holds or fails the test after 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
