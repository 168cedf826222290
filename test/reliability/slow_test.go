package reliability

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"
	"golang.org/x/time/rate"

	"github.com/motemq/mote/broker/brokertest"
)

// sendQueue returns the bytes waiting in the send queue of the TCP socket
// from local port lport to remote port rport (both on 127.0.0.1), read
// from /proc/net/tcp; ok is false when there is no such socket.
func sendQueue(lport, rport int) (n int, ok bool) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X 0100007F:%04X", lport, rport)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fs := strings.Fields(line)
		if len(fs) < 5 || fs[1]+" "+fs[2] != want {
			continue
		}
		tx, _, _ := strings.Cut(fs[4], ":")
		v, err := strconv.ParseInt(tx, 16, 64)
		if err != nil {
			return 0, false
		}
		return int(v), true
	}
	return 0, false
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// stallWatch follows the broker's side of a client's socket (its send
// queue, sampled every 10 ms) and notices when the broker closed it as a
// slow client.
type stallWatch struct {
	closedAt atomic.Int64 // unix nanos
	stop     chan struct{}
	done     chan struct{}
	samples  []queueSample // owned by the watcher until done
}

type queueSample struct {
	at time.Time
	n  int
}

// stalled returns the first time the send queue reached 90 % of the most
// it ever held: about when the broker's writes to the client began to
// block (the kernel keeps enlarging a blocked socket's buffer a little,
// so the last growth is later than that), and that most.
func (w *stallWatch) stalled() (time.Time, int) {
	most := 0
	for _, s := range w.samples {
		most = max(most, s.n)
	}
	for _, s := range w.samples {
		if s.n >= most*9/10 {
			return s.at, most
		}
	}
	return time.Time{}, 0
}

func watchStall(t *testing.T, m *mote, r *brokertest.Raw) *stallWatch {
	t.Helper()
	w := &stallWatch{stop: make(chan struct{}), done: make(chan struct{})}
	lport, rport := port(m.addr), port(r.LocalAddr().String())
	slow0 := m.metric(t, "mote_connections_slow_closed_total")
	go func() {
		defer close(w.done)
		last := -1 // the queue as last sampled
		for tick := 0; ; tick++ {
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if n, ok := sendQueue(lport, rport); ok && n != last {
				last = n
				w.samples = append(w.samples, queueSample{time.Now(), n})
			}
			if tick%10 == 0 && m.metrics(t)["mote_connections_slow_closed_total"] > slow0 {
				w.closedAt.Store(time.Now().UnixNano())
				return
			}
		}
	}()
	return w
}

func (w *stallWatch) end() {
	close(w.stop)
	<-w.done
}

// publishFlood publishes n 1 KiB QoS 1 messages to topic from one client
// with 16 in flight, at most perSecond a second, and returns how long until
// the last PUBACK and the slowest one. It fails the test if a publish
// fails.
func publishFlood(t *testing.T, addr, topic string, n int, perSecond float64) (total, slowest time.Duration) {
	t.Helper()
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "flood-pub", Clean: true})
	pace := rate.NewLimiter(rate.Limit(perSecond), 16)
	var next atomic.Int64
	var slow atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			p := make([]byte, 1024)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || failed.Load() > 0 {
					return
				}
				copy(p, fmt.Sprintf("%06d", i))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_ = pace.Wait(ctx)
				t0 := time.Now()
				r, err := pub.Pub(ctx, topic, p, 1, false)
				d := time.Since(t0)
				cancel()
				for s := slow.Load(); int64(d) > s && !slow.CompareAndSwap(s, int64(d)); s = slow.Load() {
				}
				if err == nil && r != nil && r.ReasonCode >= 0x80 {
					err = fmt.Errorf("PUBACK 0x%02x", r.ReasonCode)
				}
				if err != nil && failed.Add(1) == 1 {
					firstErr.Store(fmt.Sprintf("publish %d after %v: %v", i, d, err))
				}
			}
		})
	}
	wg.Wait()
	total = time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d publishes failed; first: %v", failed.Load(), firstErr.Load())
	}
	return total, time.Duration(slow.Load())
}

// heapPeak samples the broker's heap every 100 ms until stopped.
func heapPeak(t *testing.T, m *mote) (stop func() int64) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(250 * time.Millisecond):
			}
			if h := int64(m.metrics(t)["go_memstats_heap_alloc_bytes"]); h > peak.Load() {
				peak.Store(h)
			}
		}
	}()
	return func() int64 { close(done); <-finished; return peak.Load() }
}

// R9: a subscriber that never reads (receive buffer 4 KiB) must not stall
// publishers or other subscribers: the publisher's 1 KiB QoS 1 messages
// (paced to take 5 s: R9 asks for 20,000 in ≤ 10 s, and an unpaced
// publisher would measure the test's own CPU use on two cores, not the
// slow subscriber) are all acknowledged in ≤ 10 s, a subscriber whose socket fills up is
// disconnected within write_timeout + 1 s of the broker's writes
// stalling, the heap stays bounded, and a well-behaved client's flow keeps
// its p99.
func TestNonReadingSubscriber(t *testing.T) {
	n, writeTimeout := 10000, time.Second
	if soak {
		n, writeTimeout = 20000, 5*time.Second
	}
	for _, tc := range []struct {
		name       string
		cfg        string
		qos        byte
		stalls     bool // the broker's writes to it must stall (and it be closed)
		persistent bool
		// wide: the configuration lets the broker hold up to 65535
		// unacknowledged messages for the subscriber, so the 64 MiB heap
		// bound (for the default limits) does not apply.
		wide bool
	}{
		{name: "QoS 0 subscriber", qos: 0, stalls: true},
		{name: "QoS 1 subscriber, window wide open", cfg: "  max_inflight: 65535\n", qos: 1, stalls: true, wide: true},
		{name: "QoS 1 subscriber, default window", qos: 1},
		{name: "QoS 1 persistent session", cfg: "  max_queued_messages: 2000\n", qos: 1, persistent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := start(t, plainBin, fmt.Sprintf("log:\n  level: warn\nmqtt:\n  write_timeout: %s\n%s", writeTimeout, tc.cfg))
			m.healthy(t)
			heap0 := m.liveHeap(t)
			dropped0 := m.metrics(t)

			slow := brokertest.DialRaw(t, m.addr, 4096)
			c := conn{version: 5, id: "slow", keepalive: 0, persistent: tc.persistent}
			if tc.persistent {
				c.props = props(prop(0x11, u32(3600)))
			}
			slow.MustSend(t, c.bytes())
			next(t, slow, tConnack)
			slow.MustSend(t, subscribe5(1, props(), tc.qos, "r9/#"))
			next(t, slow, tSuback)
			// From here on it reads nothing.
			w := watchStall(t, m, slow)
			peak := heapPeak(t, m)
			f := m.h.startFlow(10 * time.Millisecond)
			total, slowest := publishFlood(t, m.addr, "r9/x", n, float64(n)/5)
			r := f.stop()
			if tc.stalls {
				waitFor(t, writeTimeout+3*time.Second, "the slow subscriber to be closed", func() bool { return w.closedAt.Load() != 0 })
			}
			w.end()
			heapMax := peak()
			t.Logf("R9 %s: %d × 1 KiB QoS 1 acknowledged in %v (slowest PUBACK %v); broker heap %d MiB live before, peak %d MiB",
				tc.name, n, total.Round(time.Millisecond), slowest.Round(time.Millisecond), heap0>>20, heapMax>>20)
			t.Logf("R9 %s: flow %v", tc.name, r)
			// A stuck persistent session holds its publishers back
			// (mqtt.backpressure, by design): the 10 s bound is for the
			// others.
			if total > 10*time.Second && !tc.persistent {
				t.Errorf("the publisher took %v for %d messages, want ≤ 10s", total, n)
			}
			if heapMax-heap0 > 64<<20 && !tc.wide {
				t.Errorf("broker heap grew by %d MiB, want ≤ 64 MiB", (heapMax-heap0)>>20)
			}
			if tc.stalls {
				stall, most := w.stalled()
				closed := time.Unix(0, w.closedAt.Load())
				t.Logf("R9 %s: the broker's send queue to it filled up (%d KiB); closed %v later (write_timeout %v)",
					tc.name, most>>10, closed.Sub(stall).Round(time.Millisecond), writeTimeout)
				if d := closed.Sub(stall); d > writeTimeout+within+r.Noise {
					t.Errorf("the slow subscriber was closed %v after the broker's writes stalled, want ≤ %v + noise %v", d, writeTimeout+within, r.Noise)
				}
			} else if w.closedAt.Load() != 0 {
				t.Errorf("a subscriber within its window was closed as slow")
			}
			after := m.metrics(t)
			dropped := func(reason string) float64 {
				k := fmt.Sprintf(`mote_messages_dropped_total{reason=%q}`, reason)
				return after[k] - dropped0[k]
			}
			t.Logf("R9 %s: dropped: slow_subscriber %v, session_queue_full %v", tc.name, dropped("slow_subscriber"), dropped("session_queue_full"))
			r.check(t, int(total/(20*time.Millisecond)), 50*time.Millisecond)

			if tc.persistent {
				// The session kept what its queue holds; the rest was
				// dropped and counted. It gets them on reconnecting.
				_ = slow.Close()
				o := brokertest.Options{ID: "slow", SessionExpiry: 3600, Session: state.NewInMemory()}
				back := brokertest.MustV5(t, m.addr, o)
				if !back.Connack.SessionPresent {
					t.Fatal("the persistent session was lost")
				}
				got := 0
				for {
					if _, ok := back.Try(time.Second); !ok {
						break
					}
					got++
				}
				full := dropped("session_queue_full")
				t.Logf("R9 %s: on reconnecting it received %d of %d; %v counted as dropped (queue full)", tc.name, got, n, full)
				if got < 2000 || got+int(full) < n {
					t.Errorf("received %d and %v counted dropped of %d: want the queue limit (2000) kept and the rest counted", got, full, n)
				}
			}
			m.healthy(t)
		})
	}
}
