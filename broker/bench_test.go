package broker_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
	"github.com/motemq/mote/persistence"
)

// Benchmarks of the broker's own publish path: an in-process broker on
// 127.0.0.1:0 (brokertest.Start), one paho.golang publisher and one
// subscriber over TCP. Each iteration is one message published and
// received; an iteration ends only when the subscriber has it, so msgs/s is
// end-to-end throughput, not just what the publisher wrote.
//
//	go test -run xxx -bench . -benchtime 2000x ./broker/
//
// QoS 1 publishers keep up to benchInflight PUBLISHes outstanding (paho
// blocks Publish beyond the broker's Receive Maximum), so the store's group
// commit has something to batch; QoS1Sync publishes one message at a time
// (the latency-bound case). The store only has work when the subscriber's
// session outlives its connection (QoS1Persistent): with a clean-session
// subscriber fsync=always and everysec measure about the same.
//
// Results depend on the machine; docs/benchmarks.md has figures and the
// comparison with plain mochi and Mosquitto.

const (
	benchTopic    = "bench/publish"
	benchPayload  = 64
	benchInflight = 64
	benchTimeout  = 60 * time.Second
	benchQuiet    = 200 * time.Millisecond
)

type benchCase struct {
	qos        byte
	fsync      persistence.Fsync
	persistent bool // subscriber's session outlives the connection (Session Expiry 300 s)
	inflight   int  // concurrent publishes in flight (1: publish, wait, repeat)
	// window (QoS 0) is how many messages may be published but not yet
	// received; 0 publishes as fast as the connection takes them.
	window int
}

// BenchmarkPublishQoS0 keeps at most benchInflight messages published but
// not yet received, below the subscriber's write queue, so nothing is
// dropped.
func BenchmarkPublishQoS0(b *testing.B) {
	runPublishBench(b, benchCase{qos: 0, fsync: persistence.FsyncAlways, inflight: 1, window: benchInflight})
}

// BenchmarkPublishQoS0Unpaced publishes as fast as the connection takes the
// messages. mochi drops a QoS 0 message when the subscriber's write queue
// (mqtt.write_queue) is full, so it reports lost%; msgs/s counts what was
// received. ns/op includes the quiet period (benchQuiet) used to detect the
// end: read msgs/s.
func BenchmarkPublishQoS0Unpaced(b *testing.B) {
	runPublishBench(b, benchCase{qos: 0, fsync: persistence.FsyncAlways, inflight: 1})
}

func BenchmarkPublishQoS1(b *testing.B) {
	b.Run("fsync=always", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncAlways, inflight: benchInflight})
	})
	b.Run("fsync=everysec", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncEverySecond, inflight: benchInflight})
	})
}

// BenchmarkPublishQoS1Sync publishes one QoS 1 message at a time: each
// iteration is a full publish → PUBACK → delivery round trip.
func BenchmarkPublishQoS1Sync(b *testing.B) {
	b.Run("fsync=always", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncAlways, inflight: 1})
	})
	b.Run("fsync=everysec", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncEverySecond, inflight: 1})
	})
}

// BenchmarkPublishQoS1Persistent has a subscriber with a persistent session
// (Session Expiry > 0): its subscription and in-flight messages are stored.
func BenchmarkPublishQoS1Persistent(b *testing.B) {
	b.Run("fsync=always", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncAlways, persistent: true, inflight: benchInflight})
	})
	b.Run("fsync=everysec", func(b *testing.B) {
		runPublishBench(b, benchCase{qos: 1, fsync: persistence.FsyncEverySecond, persistent: true, inflight: benchInflight})
	})
}

// benchSub is a subscriber that counts messages instead of queueing them
// (brokertest's Inbox holds at most 100000), and checks their order.
type benchSub struct {
	mu       sync.Mutex
	got      int
	want     int
	next     uint64 // sequence expected next
	disorder int
	last     time.Time // when the last message arrived
	done     chan struct{}
	progress chan struct{} // signalled (without blocking) on every message
}

func (s *benchSub) reset(want int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got, s.want, s.next, s.disorder = 0, want, 0, 0
	s.done = make(chan struct{})
	if want == 0 {
		close(s.done)
	}
}

func (s *benchSub) receive(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p.Payload) >= 8 {
		seq := binary.BigEndian.Uint64(p.Payload)
		if seq < s.next {
			s.disorder++ // a gap (seq > next) is loss, counted at the end
		}
		s.next = max(s.next, seq+1)
	}
	s.got++
	s.last = time.Now()
	select {
	case s.progress <- struct{}{}:
	default:
	}
	if s.got == s.want {
		close(s.done)
	}
	return true, nil
}

func dialBench(b *testing.B, addr string, id string, persistent bool, onPub func(paho.PublishReceived) (bool, error)) *paho.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := brokertest.Dial(ctx, addr, brokertest.Options{})
	if err != nil {
		b.Fatalf("dial %s: %v", addr, err)
	}
	cfg := paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)}
	if onPub != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPub}
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30, Properties: &paho.ConnectProperties{}}
	if persistent {
		exp := uint32(300)
		cp.Properties.SessionExpiryInterval = &exp
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		b.Fatalf("connect %s: %v", id, err)
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		b.Fatalf("connect %s: reason 0x%02x", id, ca.ReasonCode)
	}
	b.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		_ = conn.Close()
	})
	return c
}

func runPublishBench(b *testing.B, bc benchCase) {
	br := brokertest.Start(b, func(c *broker.Config) {
		c.Fsync = bc.fsync
		c.Log.Level = "error"
		c.Listeners.WS.Address = ""
		c.Listeners.HTTP.Address = ""
	})
	addr := br.Addr(broker.ListenerMQTT)
	sub := &benchSub{progress: make(chan struct{}, 1)}
	sc := dialBench(b, addr, "bench-sub", bc.persistent, sub.receive)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	sa, err := sc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: benchTopic, QoS: bc.qos}}})
	cancel()
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		b.Fatalf("subscribe: %v %v", err, sa)
	}
	pc := dialBench(b, addr, "bench-pub", false, nil)

	// Warm up: one message through the whole path.
	sub.reset(1)
	publishN(b, pc, bc, 1, sub)
	waitSub(b, sub)

	sub.reset(b.N)
	b.SetBytes(benchPayload)
	b.ResetTimer()
	start := time.Now()
	publishN(b, pc, bc, b.N, sub)
	if bc.qos == 0 && bc.window == 0 {
		// QoS 0 may be dropped (mochi drops a message when the subscriber's
		// write queue, mqtt.write_queue, is full): wait until everything
		// arrived or nothing more arrives, and report the loss.
		waitQuiet(b, sub, benchQuiet)
	} else {
		waitSub(b, sub)
	}
	b.StopTimer()
	sub.mu.Lock()
	got, disorder, elapsed := sub.got, sub.disorder, sub.last.Sub(start)
	sub.mu.Unlock()

	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	if bc.qos == 0 && bc.window == 0 {
		b.ReportMetric(100*float64(b.N-got)/float64(b.N), "lost%")
	}
	if disorder > 0 && bc.inflight == 1 {
		b.Errorf("%d messages out of order with one publish in flight", disorder)
	}
}

func waitSub(b *testing.B, s *benchSub) {
	b.Helper()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(benchTimeout):
		s.mu.Lock()
		defer s.mu.Unlock()
		b.Fatalf("subscriber received %d of %d messages within %v", s.got, s.want, benchTimeout)
	}
}

// awaitWindow waits until fewer than window of the messages before seq are
// still on their way to sub.
func awaitWindow(ctx context.Context, s *benchSub, seq uint64, window int) error {
	for {
		s.mu.Lock()
		behind := int(seq) - s.got
		s.mu.Unlock()
		if behind < window {
			return nil
		}
		select {
		case <-s.progress:
		case <-ctx.Done():
			return fmt.Errorf("message %d: the subscriber stopped receiving (%d behind): %w", seq, behind, ctx.Err())
		}
	}
}

// waitQuiet waits until s has every message, or none arrived for quiet.
func waitQuiet(b *testing.B, s *benchSub, quiet time.Duration) {
	b.Helper()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	t := time.NewTicker(quiet / 5)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.mu.Lock()
			idle := time.Since(s.last)
			s.mu.Unlock()
			if idle >= quiet {
				return
			}
		}
	}
}

// publishN publishes n messages with bc.inflight publishes outstanding (and,
// with bc.window, at most that many not yet received by sub); the payload
// starts with the big-endian sequence number.
func publishN(b *testing.B, c *paho.Client, bc benchCase, n int, sub *benchSub) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	workers := max(1, min(bc.inflight, n))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		nextSeq  uint64
	)
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				if firstErr != nil || nextSeq >= uint64(n) {
					mu.Unlock()
					return
				}
				seq := nextSeq
				nextSeq++
				mu.Unlock()
				if bc.window > 0 {
					if err := awaitWindow(ctx, sub, seq, bc.window); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
				}
				payload := make([]byte, benchPayload)
				binary.BigEndian.PutUint64(payload, seq)
				r, err := c.Publish(ctx, &paho.Publish{Topic: benchTopic, QoS: bc.qos, Payload: payload})
				if err == nil && r != nil && r.ReasonCode >= 0x80 {
					err = fmt.Errorf("reason 0x%02x", r.ReasonCode)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("publish %d: %w", seq, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}
