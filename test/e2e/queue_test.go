package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// qDrain reads the inboxes into c concurrently until done reports true or
// nothing arrived for quiet, then lets duplicates trail in for linger. It
// returns how many each inbox received.
func qDrain(c *Checker, done func() bool, quiet, linger time.Duration, inboxes ...*brokertest.Inbox) []int {
	counts := make([]int64, len(inboxes))
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, in := range inboxes {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if m, ok := in.Try(20 * time.Millisecond); ok {
					c.Delivered(m.Payload)
					atomic.AddInt64(&counts[i], 1)
					last.Store(time.Now().UnixNano())
				}
			}
		})
	}
	for !done() && time.Since(time.Unix(0, last.Load())) < quiet {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(linger)
	close(stop)
	wg.Wait()
	out := make([]int, len(counts))
	for i := range counts {
		out[i] = int(atomic.LoadInt64(&counts[i]))
	}
	return out
}

// qConfig writes a configuration file and returns its path.
func qConfig(t *testing.T, yaml string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "mote.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A declared queue's backlog survives SIGKILL: 10,000 messages published
// while no consumer is online all reach the two consumers that attach
// after the restart, each once (none was in flight at the kill).
func TestKill9QueueBacklog(t *testing.T) {
	for _, fsync := range []string{"", "everysec"} {
		name := "fsync=" + fsync
		if fsync == "" {
			name = "fsync=default(always)"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"--config", qConfig(t, "queues:\n  - name: work\n    filter: work/#\n")}
			if fsync != "" {
				args = append(args, "--fsync", fsync)
			}
			p := brokertest.Spawn(t, moteBin, dir, args...)

			c := NewChecker()
			const n = 10000
			start := time.Now()
			Flood(t, p.Addr(broker.ListenerMQTT), "work/job", 2, n, c)
			t.Logf("published %d in %v", n, time.Since(start))
			p.Kill()

			p = brokertest.Spawn(t, moteBin, dir, args...)
			var inboxes []*brokertest.Inbox
			for i := range 2 {
				w := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: fmt.Sprintf("worker-%d", i), Clean: true})
				w.Sub(t, 1, "$share/work/work/#")
				inboxes = append(inboxes, w.Inbox)
			}
			counts := qDrain(c, func() bool { return c.Report().OK == n }, 10*time.Second, 300*time.Millisecond, inboxes...)
			r := c.Report()
			t.Logf("after kill -9: %v, per worker %v", r, counts)
			if r.OK != n || r.Lost != 0 || r.Unexpected != 0 || r.Duplicated != 0 {
				t.Fatalf("queue backlog after kill -9 (fsync %s): %v", fsync, r)
			}
			if counts[0] == 0 || counts[1] == 0 {
				t.Errorf("one worker got nothing: %v", counts)
			}
		})
	}
}

// SIGKILL while two consumers take a stream from a queue: every
// acknowledged message arrives after the restart; duplicates stay within
// what was in flight to the consumers (64 each).
func TestKill9QueueMidStream(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--config", qConfig(t, "queues:\n  - name: live\n    filter: live/#\n")}
	p := brokertest.Spawn(t, moteBin, dir, args...)
	c := NewChecker()
	sub := func(p *brokertest.Process) []*brokertest.V5 {
		var ws []*brokertest.V5
		for i := range 2 {
			w := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: fmt.Sprintf("worker-%d", i), Clean: true})
			w.Sub(t, 1, "$share/live/live/#")
			ws = append(ws, w)
		}
		return ws
	}
	workers := sub(p)
	inboxes := make([]*brokertest.Inbox, len(workers))
	for i, w := range workers {
		inboxes[i] = w.Inbox
	}
	stopRead := Collect(c, inboxes...)

	pub, err := brokertest.ConnectV5(context.Background(), p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	killAt := uint64(n/5 + rand.IntN(n*3/5))
	var acked uint64
	for i := range uint64(n) {
		if i == killAt {
			p.Kill()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := pub.Pub(ctx, "live/x", Payload("pub", i), 1, false)
		cancel()
		ok := err == nil && (r == nil || r.ReasonCode < 0x80)
		c.Sent("pub", i, ok)
		if !ok {
			break
		}
		acked++
	}
	stopRead()
	for _, w := range workers {
		w.Drop()
	}
	pub.Drop()
	t.Logf("killed after %d acknowledged publishes", acked)

	p = brokertest.Spawn(t, moteBin, dir, args...)
	inboxes = nil
	for _, w := range sub(p) {
		inboxes = append(inboxes, w.Inbox)
	}
	qDrain(c, func() bool { return c.Report().Lost == 0 }, 10*time.Second, 500*time.Millisecond, inboxes...)
	r := c.Report()
	t.Logf("after kill -9 mid-stream: %v", r)
	if r.Lost != 0 || r.Unexpected != 0 {
		t.Fatalf("lost or unexpected messages: %v", r)
	}
	if r.Duplicated > 2*64 {
		t.Fatalf("%d duplicates exceed what two consumers can hold in flight (2×64)", r.Duplicated)
	}
}
