package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// A connected consumer that holds a message past visibility_timeout loses
// it to another consumer; its late PUBACK changes nothing.
func TestQueueVisibilityTimeout(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Queues = []broker.QueueConfig{{Name: "vt", VisibilityTimeout: broker.Duration(300 * time.Millisecond)}}
	})
	addr := b.Addr(broker.ListenerMQTT)
	holder := brokertest.MustV5(t, addr, brokertest.Options{ID: "holder", Clean: true, NoAck: true})
	holder.Sub(t, 1, "$share/vt/vt/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "vt/1", []byte("job"), 1, false)
	held := holder.Next(t, wait)

	other := brokertest.MustV5(t, addr, brokertest.Options{ID: "other", Clean: true})
	other.Sub(t, 1, "$share/vt/vt/#")
	m := other.Next(t, 5*time.Second)
	if string(m.Payload) != "job" || !m.Dup {
		t.Fatalf("other consumer got %q dup=%v, want the held job redelivered", m.Payload, m.Dup)
	}
	_ = holder.Ack(held) // too late: ignored
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := b.Queues().Stats()
		if len(st) == 1 && st[0].Depth == 0 && st[0].TimedOut == 1 && st[0].Acked == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want depth 0, one timeout, one ack", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Members with persistent sessions survive a restart as members: messages
// published while they are away wait for them, and the queue comes back
// with its messages.
func TestQueueSurvivesGracefulRestart(t *testing.T) {
	dir := t.TempDir()
	stop := func(b *broker.Broker) {
		t.Helper()
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := brokertest.StartIn(t, dir)
	addr := b.Addr(broker.ListenerMQTT)
	o := brokertest.Options{ID: "worker", SessionExpiry: 3600}
	w := brokertest.MustV5(t, addr, o)
	w.Sub(t, 1, "$share/rs/rs/#")
	w.Close()
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 50 {
		pub.MustPub(t, "rs/x", fmt.Appendf(nil, "%02d", i), 1, false)
	}
	pub.Close()
	stop(b)

	b = brokertest.StartIn(t, dir)
	st := b.Queues().Stats()
	if len(st) != 1 || st[0].Depth != 50 || st[0].Consumers != 1 {
		t.Fatalf("after restart: %+v, want the queue with 50 messages and its member", st)
	}
	w = brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), o)
	for i := range 50 {
		if m := w.Next(t, wait); string(m.Payload) != fmt.Sprintf("%02d", i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// sticky_client keeps each publisher on one consumer; random spreads.
func TestQueueStickyClientAndRandom(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Queues = []broker.QueueConfig{{Name: "sc", Strategy: "sticky_client"}, {Name: "rnd", Strategy: "random"}}
	})
	addr := b.Addr(broker.ListenerMQTT)
	for _, group := range []string{"sc", "rnd"} {
		var consumers []*brokertest.V5
		for i := range 3 {
			c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("%s-c%d", group, i), Clean: true})
			c.Sub(t, 1, "$share/"+group+"/"+group+"/#")
			consumers = append(consumers, c)
		}
		const pubs, per = 6, 20
		for p := range pubs {
			pub := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("%s-p%d", group, p), Clean: true})
			for i := range per {
				pub.MustPub(t, group+"/x", fmt.Appendf(nil, "%d-%d", p, i), 1, false)
			}
			pub.Close()
		}
		owner := map[string]int{} // publisher → consumer
		counts := make([]int, len(consumers))
		deadline := time.Now().Add(10 * time.Second)
		for total := 0; total < pubs*per; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d messages arrived", group, total, pubs*per)
			}
			for ci, c := range consumers {
				m, ok := c.Try(5 * time.Millisecond)
				if !ok {
					continue
				}
				total++
				counts[ci]++
				p, _, _ := strings.Cut(string(m.Payload), "-")
				if o, seen := owner[p]; group == "sc" && seen && o != ci {
					t.Fatalf("sticky_client: publisher %s on consumers %d and %d", p, o, ci)
				}
				owner[p] = ci
			}
		}
		used := 0
		for _, n := range counts {
			if n > 0 {
				used++
			}
		}
		if used < 2 {
			t.Fatalf("%s: all messages on one consumer: %v", group, counts)
		}
		t.Logf("%s: per consumer %v", group, counts)
	}
}
