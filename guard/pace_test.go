package guard_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// fanIn publishes pubs×each QoS 0 messages from raw publishers to one
// topic read by one slow subscriber (about 10 messages, 10 KB, per millisecond)
// and returns how many it received.
func fanIn(t *testing.T, pace time.Duration, pubs, each int) int {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MQTT.QoS0Backpressure = broker.Duration(pace)
	})
	addr := b.Addr(broker.ListenerMQTT)
	const topic = "pace/fanin"
	payload := bytes.Repeat([]byte{'x'}, 1000)

	sub := brokertest.DialRaw(t, addr, 8<<10)
	sub.Connect(t, 4, "slow-sub")
	sub.MustSend(t, brokertest.RawSubscribe(4, 1, topic, 0))
	sub.Expect(t, 9, 5*time.Second)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := sub.ReadPacket(time.Second) // a second of quiet: all sent
			if err != nil {
				return
			}
			if p.Type == 3 && got.Add(1)%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()

	var batch []byte
	for range 100 {
		batch = append(batch, brokertest.RawPublish(4, topic, 0, 0, payload)...)
	}
	var wg sync.WaitGroup
	for i := range pubs {
		pub := brokertest.DialRaw(t, addr, 0)
		pub.Connect(t, 4, fmt.Sprintf("pub-%d", i))
		wg.Go(func() {
			for range each / 100 {
				if err := pub.Send(batch); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
			// PINGRESP comes after every PUBLISH before it was handled.
			if err := pub.Send([]byte{0xC0, 0}); err != nil {
				t.Errorf("pingreq: %v", err)
				return
			}
			if p, err := pub.ReadPacket(time.Minute); err != nil || p.Type != 13 {
				t.Errorf("want PINGRESP: %v %v", p, err)
			}
		})
	}
	wg.Wait()
	<-done
	return int(got.Load())
}

// TestPaceFanIn: many QoS 0 publishers into one subscriber that reads
// slowly lose most messages without pacing and few with it.
func TestPaceFanIn(t *testing.T) {
	const pubs, each = 8, 5000
	total := float64(pubs * each)
	off := fanIn(t, 0, pubs, each)
	on := fanIn(t, 20*time.Millisecond, pubs, each)
	lossOff, lossOn := 1-float64(off)/total, 1-float64(on)/total
	t.Logf("loss without pacing %.1f %% (%d of %.0f), with pacing %.1f %% (%d)", 100*lossOff, off, total, 100*lossOn, on)
	if lossOff < 0.3 {
		t.Skipf("the subscriber kept up without pacing (loss %.1f %%): nothing to compare", 100*lossOff)
	}
	if lossOn > lossOff/3 {
		t.Errorf("loss with pacing %.1f %%, want well under a third of %.1f %% without", 100*lossOn, 100*lossOff)
	}
}

// TestPaceStalledSubscriber: a subscriber that never reads holds a
// publisher at most about once, not once per message.
func TestPaceStalledSubscriber(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MQTT.QoS0Backpressure = broker.Duration(20 * time.Millisecond)
		c.MQTT.WriteTimeout = broker.Duration(time.Minute) // stays connected, stuck
		c.MQTT.WriteQueue = 64
	})
	addr := b.Addr(broker.ListenerMQTT)
	const topic = "pace/stalled"

	dead := brokertest.DialRaw(t, addr, 4<<10)
	dead.Connect(t, 4, "dead-sub")
	dead.MustSend(t, brokertest.RawSubscribe(4, 1, topic, 0))
	dead.Expect(t, 9, 5*time.Second)
	// Never read from dead again.

	pub := brokertest.DialRaw(t, addr, 0)
	pub.Connect(t, 4, "pub")
	payload := bytes.Repeat([]byte{'x'}, 1000)
	msg := brokertest.RawPublish(4, topic, 0, 0, payload)
	start := time.Now()
	for range 5000 {
		pub.MustSend(t, msg)
	}
	pub.MustSend(t, []byte{0xC0, 0})
	pub.Expect(t, 13, 30*time.Second)
	// 5,000 drops held 20 ms each would take 100 s.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("5000 messages to a stalled subscriber took %v", d)
	} else {
		t.Logf("5000 messages to a stalled subscriber took %v", d)
	}
}
