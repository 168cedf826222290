package broker_test

import (
	"context"
	"fmt"
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
