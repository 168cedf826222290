package broker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// TestRetainedScanRace stresses what mochi v2.7.9 does without a lock:
// reading a topic's retained path (TopicsIndex.Messages) for a new wildcard
// subscription while publishes set or clear retained messages and the $SYS
// ticker rewrites its own (see internal/retaingate). Under -race it reports
// the data race unless the gate is in place; without -race it checks that
// retained delivery still works after the churn.
func TestRetainedScanRace(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.SysInterval = broker.Duration(time.Second) })
	addr := b.Addr(broker.ListenerMQTT)

	const nTopics = 24
	topic := func(i int) string {
		if i == 0 {
			return "a/b/c"
		}
		return fmt.Sprintf("a/%d/c", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup

	// Retained sets and clears: two MQTT publishers and the inline client
	// (the path Mote's rules, bridges and HTTP API take).
	for p := range 2 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("pub%d", p), Clean: true})
		wg.Go(func() {
			for i := 0; i < 20000 && ctx.Err() == nil; i++ {
				var payload []byte
				if i%4 != 3 {
					payload = fmt.Appendf(nil, "p%d-%d", p, i)
				}
				if _, err := c.Pub(ctx, topic((i*7+p)%nTopics), payload, 0, true); err != nil {
					break
				}
			}
			// QoS 0 publishes may still be queued in the broker: a QoS 1
			// one behind them returns once they are all processed.
			bctx, bcancel := context.WithTimeout(context.Background(), wait)
			defer bcancel()
			if _, err := c.Pub(bctx, "barrier", nil, 1, false); err != nil {
				t.Errorf("pub%d: barrier: %v", p, err)
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			var payload []byte
			if i%5 != 4 {
				payload = fmt.Appendf(nil, "inline-%d", i)
			}
			_ = b.Server().Publish(topic(i%nTopics), payload, true, 0)
		}
	})

	// Wildcard subscribes, each followed by its retained messages, racing
	// the writers above and the $SYS ticker.
	for s, filters := range [][]string{{"#"}, {"a/+/c"}, {"$SYS/#"}, {"a/#", "$SYS/broker/+"}} {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("sub%d", s), Clean: true})
		wg.Go(func() {
			for ctx.Err() == nil {
				c.Try(20 * time.Millisecond)
			}
		})
		wg.Go(func() {
			sub := &paho.Subscribe{}
			for _, f := range filters {
				sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f})
			}
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				if _, err := c.Subscribe(ctx, sub); err != nil {
					return
				}
				if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters}); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()

	// After the churn: one retained message per topic, delivered to a new
	// wildcard subscription; the $SYS values to a $SYS one.
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "final", Clean: true})
	for i := range nTopics {
		pub.MustPub(t, topic(i), fmt.Appendf(nil, "final-%d", i), 1, true)
	}
	check := brokertest.MustV5(t, addr, brokertest.Options{ID: "check", Clean: true})
	check.Sub(t, 1, "a/+/c")
	got := map[string]string{}
	for range nTopics {
		m := check.Next(t, wait)
		if !m.Retain {
			t.Fatalf("%s: retain flag not set on a retained message", m.Topic)
		}
		got[m.Topic] = string(m.Payload)
	}
	for i := range nTopics {
		if want := fmt.Sprintf("final-%d", i); got[topic(i)] != want {
			t.Errorf("%s: got %q, want %q", topic(i), got[topic(i)], want)
		}
	}
	sys := brokertest.MustV5(t, addr, brokertest.Options{ID: "sys", Clean: true})
	sys.Sub(t, 0, "$SYS/broker/+")
	m := sys.Next(t, wait)
	if !strings.HasPrefix(m.Topic, "$SYS/broker/") || !m.Retain {
		t.Fatalf("$SYS/broker/+ first got %q retain=%v, want a retained $SYS/broker/ value", m.Topic, m.Retain)
	}
}
