package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/motemq/mote/broker/brokertest"
)

// Flood publishes n QoS 1 messages to topic from publishers clients, each
// with 16 publishes in flight, recording them in c (producer
// "{topic}/pub{i}", so floods of different topics count separately).
// It fails the test if any is not acknowledged.
func Flood(t *testing.T, addr, topic string, publishers, n int, c *Checker) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	per := n / publishers
	for p := range publishers {
		name := fmt.Sprintf("%s/pub%d", topic, p)
		pub := brokertest.MustV5(t, addr, brokertest.Options{ID: name, Clean: true})
		var next atomic.Uint64
		for range 16 {
			wg.Go(func() {
				for {
					seq := next.Add(1) - 1
					if seq >= uint64(per) || failed.Load() > 0 {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					r, err := pub.Pub(ctx, topic, Payload(name, seq), 1, false)
					cancel()
					ok := err == nil && (r == nil || r.ReasonCode < 0x80)
					c.Sent(name, seq, ok)
					if !ok && failed.Add(1) == 1 {
						firstErr.Store(fmt.Sprintf("%v (response %+v)", err, r))
					}
				}
			})
		}
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d publishes to %q failed, first: %v", failed.Load(), topic, firstErr.Load())
	}
}

// Collect records every message arriving in the inboxes as delivered to c,
// until the returned stop function is called (it waits for the readers).
func Collect(c *Checker, inboxes ...*brokertest.Inbox) (stop func()) {
	return Read(func(m brokertest.Message) { c.Delivered(m.Payload) }, inboxes...)
}

// Read calls fn for every message arriving in the inboxes, one reader
// goroutine per inbox, until the returned stop function is called. stop
// first lets the readers take what has already arrived (bounded: at most
// a second), then stops them and waits for them.
func Read(fn func(brokertest.Message), inboxes ...*brokertest.Inbox) (stop func()) {
	done := make(chan struct{})
	var readers sync.WaitGroup
	for _, in := range inboxes {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if m, ok := in.Try(20 * time.Millisecond); ok {
					fn(m)
				}
			}
		})
	}
	return func() {
		for range 100 {
			if !slices.ContainsFunc(inboxes, func(in *brokertest.Inbox) bool { return in.Len() > 0 }) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(done)
		readers.Wait()
	}
}
