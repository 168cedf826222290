package reliability

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/motemq/mote/broker/brokertest"
)

// health is a well-behaved MQTT 5 publisher and subscriber kept beside the
// hostile connections of a test.
type health struct {
	pub, sub *brokertest.V5
	prefix   string
	n        int
}

// newHealth connects the pair (o supplies credentials) and subscribes to
// name/# at QoS 1.
func newHealth(t *testing.T, addr, name string, o brokertest.Options) *health {
	t.Helper()
	so, po := o, o
	so.ID, so.Clean = name+"-sub", true
	po.ID, po.Clean = name+"-pub", true
	h := &health{sub: brokertest.MustV5(t, addr, so), pub: brokertest.MustV5(t, addr, po), prefix: name}
	h.sub.Sub(t, 1, name+"/#")
	return h
}

// roundTrip publishes one QoS 1 message and fails unless the subscriber gets
// it within a second (skipping what a flow left behind).
func (h *health) roundTrip(t *testing.T) {
	t.Helper()
	h.n++
	want := fmt.Sprintf("rt-%d", h.n)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	start := time.Now()
	r, err := h.pub.Pub(ctx, h.prefix+"/rt", []byte(want), 1, false)
	if err != nil || (r != nil && r.ReasonCode >= 0x80) {
		t.Fatalf("healthy publish: %v %+v", err, r)
	}
	for {
		m, ok := h.sub.Try(within - time.Since(start))
		if !ok {
			t.Fatalf("the healthy subscriber did not get %q within %v", want, within)
		}
		if string(m.Payload) == want {
			break
		}
	}
	select {
	case <-h.sub.Done():
		t.Fatal("the healthy subscriber was disconnected")
	case <-h.pub.Done():
		t.Fatal("the healthy publisher was disconnected")
	default:
	}
}

// flow is a steady stream of QoS 1 messages from the healthy publisher to
// the healthy subscriber, timed from the publish call to the delivery.
type flow struct {
	h        *health
	stopc    chan struct{}
	pubDone  chan struct{}
	recvDone chan struct{}

	noise *noiseMeter

	mu       sync.Mutex
	started  time.Time
	sentAt   map[uint64]time.Time
	lat      []time.Duration // publish → delivery
	slow     []string        // the slowest deliveries: when (since start) and how long
	ackLat   []time.Duration // publish → PUBACK
	errs     int
	firstErr error
	sent     int
}

// flowResult sums a flow up.
type flowResult struct {
	Sent, Received, Lost, Errors int
	P50, P99, Max                time.Duration
	AckP99                       time.Duration
	FirstErr                     error
	Slow                         []string // deliveries over 20 ms: "at+latency"
	// Noise is the p99 of the test process's own scheduling delay while
	// the flow ran (see noiseMeter): what any latency measured here may
	// be off by when other work shares the cores.
	Noise time.Duration
}

func (r flowResult) String() string {
	return fmt.Sprintf("%d sent, %d received, %d lost, %d errors; publish→delivery p50 %v p99 %v max %v; PUBACK p99 %v; scheduling noise p99 %v; over 20ms (at+latency): %v",
		r.Sent, r.Received, r.Lost, r.Errors, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond),
		r.Max.Round(time.Microsecond), r.AckP99.Round(time.Microsecond), r.Noise.Round(time.Microsecond), r.Slow)
}

// startFlow publishes one message every interval until stop.
func (h *health) startFlow(interval time.Duration) *flow {
	f := &flow{h: h, started: time.Now(), noise: startNoise(), stopc: make(chan struct{}), pubDone: make(chan struct{}), recvDone: make(chan struct{}), sentAt: map[uint64]time.Time{}}
	// Drop what earlier round trips left.
	for h.sub.Len() > 0 {
		h.sub.Try(0)
	}
	go f.publish(interval)
	go f.receive()
	return f
}

func (f *flow) publish(interval time.Duration) {
	defer close(f.pubDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := uint64(0); ; seq++ {
		select {
		case <-f.stopc:
			return
		case <-tick.C:
		}
		now := time.Now()
		f.mu.Lock()
		f.sentAt[seq] = now
		f.sent++
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := f.h.pub.Pub(ctx, f.h.prefix+"/flow", strconv.AppendUint(nil, seq, 10), 1, false)
		cancel()
		d := time.Since(now)
		f.mu.Lock()
		if err == nil && r != nil && r.ReasonCode >= 0x80 {
			err = fmt.Errorf("PUBACK 0x%02x", r.ReasonCode)
		}
		if err != nil {
			f.errs++
			if f.firstErr == nil {
				f.firstErr = err
			}
		} else {
			f.ackLat = append(f.ackLat, d)
		}
		f.mu.Unlock()
	}
}

func (f *flow) receive() {
	defer close(f.recvDone)
	for {
		m, ok := f.h.sub.Try(20 * time.Millisecond)
		if !ok {
			select {
			case <-f.stopc:
				f.mu.Lock()
				waiting := len(f.sentAt)
				f.mu.Unlock()
				if waiting == 0 {
					return
				}
				select {
				case <-f.pubDone:
				default:
					continue
				}
				// The publisher stopped; give stragglers a moment.
				if m, ok = f.h.sub.Try(2 * time.Second); !ok {
					return
				}
			default:
				continue
			}
		}
		at := time.Now()
		seq, err := strconv.ParseUint(string(m.Payload), 10, 64)
		if err != nil || !strings.HasSuffix(m.Topic, "/flow") {
			continue
		}
		f.mu.Lock()
		if t0, ok := f.sentAt[seq]; ok {
			d := at.Sub(t0)
			f.lat = append(f.lat, d)
			if d > 20*time.Millisecond && len(f.slow) < 20 {
				f.slow = append(f.slow, fmt.Sprintf("%v+%v", t0.Sub(f.started).Round(time.Millisecond), d.Round(time.Millisecond)))
			}
			delete(f.sentAt, seq)
		}
		f.mu.Unlock()
	}
}

// stop ends the flow and returns its figures.
func (f *flow) stop() flowResult {
	close(f.stopc)
	<-f.pubDone
	<-f.recvDone
	noise := f.noise.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := flowResult{Sent: f.sent, Received: len(f.lat), Lost: len(f.sentAt), Errors: f.errs, FirstErr: f.firstErr, Slow: f.slow, Noise: noise}
	r.P50, r.P99, r.Max = percentiles(f.lat)
	_, r.AckP99, _ = percentiles(f.ackLat)
	return r
}

// check fails the test unless the flow kept going: nothing lost, no
// errors, at least min messages, delivery p99 within p99 plus the
// scheduling noise measured meanwhile (on a quiet machine about 0.1 ms;
// when other tests or processes share the two cores, the test's own
// delays add to every latency it measures, and must not be blamed on the
// broker).
func (r flowResult) check(t *testing.T, min int, p99 time.Duration) {
	t.Helper()
	if r.Errors > 0 || r.Lost > 0 || r.Received < min || r.P99 > p99+r.Noise {
		t.Fatalf("the well-behaved client lost its flow (want ≥ %d messages, none lost, p99 ≤ %v + noise %v): %v (first error: %v)",
			min, p99, r.Noise, r, r.FirstErr)
	}
}

// noiseMeter measures how late the test process's goroutines run: a
// goroutine sleeps 2 ms over and over and records by how much it
// overslept. On an idle machine that is tens of microseconds; when the
// cores are oversubscribed it is what any latency measured by this process
// may be inflated by.
type noiseMeter struct {
	stopc chan struct{}
	done  chan struct{}
	late  []time.Duration
}

func startNoise() *noiseMeter {
	n := &noiseMeter{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		const step = 2 * time.Millisecond
		for {
			select {
			case <-n.stopc:
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(step)
			n.late = append(n.late, max(0, time.Since(t0)-step))
		}
	}()
	return n
}

// stop ends the measurement and returns the p99 of the oversleep.
func (n *noiseMeter) stop() time.Duration {
	close(n.stopc)
	<-n.done
	_, p99, _ := percentiles(n.late)
	return p99
}

func percentiles(ds []time.Duration) (p50, p99, max time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.5), at(0.99), s[len(s)-1]
}

// connectTime connects a fresh MQTT 5 client and returns how long the
// CONNECT → CONNACK took.
func connectTime(t *testing.T, addr, id string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := brokertest.ConnectV5(ctx, addr, brokertest.Options{ID: id, Clean: true})
	d := time.Since(start)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	c.Close()
	return d
}
