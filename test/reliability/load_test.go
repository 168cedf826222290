package reliability

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/motemq/mote/broker/brokertest"
)

// The load tests run one at a time (no t.Parallel) on the plain binary:
// their figures are the product's, and two of them at once on two cores
// would measure each other.

// dialMany opens n connections with workers goroutines; each connection
// gets first written on it (if any) and, with connack, must be answered
// with a CONNACK accepting it. It returns the connections in order.
func dialMany(t *testing.T, addr string, n, workers int, first func(i int) []byte, connack bool) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() > 0 {
					return
				}
				err := func() error {
					c, err := dialTCP(addr)
					if err != nil {
						return err
					}
					conns[i] = c
					if first == nil {
						return nil
					}
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(first(i)); err != nil {
						return err
					}
					if connack {
						var b [4]byte
						if _, err := io.ReadFull(c, b[:]); err != nil {
							return fmt.Errorf("connection %d: no CONNACK: %w", i, err)
						}
						if b[0] != 0x20 || b[3] != 0 {
							return fmt.Errorf("connection %d: CONNACK % x", i, b)
						}
					}
					return c.SetDeadline(time.Time{})
				}()
				if err != nil && failed.Add(1) == 1 {
					firstErr.Store(err)
				}
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	})
	if failed.Load() > 0 {
		t.Fatalf("%d of %d connections failed; first: %v", failed.Load(), n, firstErr.Load())
	}
	return conns
}

// R7: 10,000 MQTT 3.1.1 clients connect, idle, 1 % ping, and leave; the
// broker's memory per idle connection is reported and its goroutines come
// back to the baseline.
func TestTenThousandConnections(t *testing.T) {
	n, idle := 10000, 2*time.Second
	if soak {
		idle = 10 * time.Second
	}
	m := start(t, plainBin, "log:\n  level: warn\n")
	m.healthy(t)
	pid := m.pid(t)
	g0 := m.metric(t, "go_goroutines")
	rss0 := procStatus(t, pid, "VmRSS")
	heap0 := m.liveHeap(t)

	start := time.Now()
	conns := dialMany(t, m.addr, n, 64, func(i int) []byte {
		return brokertest.RawConnect(4, fmt.Sprintf("idle-%05d", i), 120)
	}, true)
	connectTime := time.Since(start)
	if connectTime > 10*time.Second {
		t.Errorf("%d CONNACKs took %v, want ≤ 10s", n, connectTime)
	}
	waitFor(t, 10*time.Second, "every client to be counted", func() bool {
		return m.metric(t, "mote_clients_connected") >= float64(n)
	})
	rss1 := procStatus(t, pid, "VmRSS")
	heap1 := m.liveHeap(t)
	g1 := m.metric(t, "go_goroutines")

	time.Sleep(idle) // the scenario is "idle 10 s": nothing to wait for

	// 1 % ping (every 100th connection) and get a PINGRESP within a second.
	pingStart := time.Now()
	var slowest time.Duration
	for i := 0; i < n; i += 100 {
		c := conns[i]
		t0 := time.Now()
		_ = c.SetDeadline(time.Now().Add(within))
		if _, err := c.Write([]byte{0xC0, 0}); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		var b [2]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 0xD0 {
			t.Fatalf("ping %d: % x %v", i, b, err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	pingTime := time.Since(pingStart)
	m.healthy(t)
	rssHWM := procStatus(t, pid, "VmHWM")

	// All leave (half with DISCONNECT, half by closing).
	leave := time.Now()
	for i, c := range conns {
		if i%2 == 0 {
			_, _ = c.Write([]byte{0xE0, 0})
		}
		_ = c.Close()
	}
	var g2 float64
	back := waitFor(t, 10*time.Second, fmt.Sprintf("goroutines back to the baseline %v ± 50", g0), func() bool {
		g2 = m.metric(t, "go_goroutines")
		return g2 <= g0+50
	})
	_ = leave
	heap2 := m.liveHeap(t)
	t.Logf("R7: %d MQTT 3.1.1 connections: all CONNACKed in %v; idle %v; %d PINGs in %v (slowest %v)",
		n, connectTime.Round(time.Millisecond), idle, n/100, pingTime.Round(time.Millisecond), slowest.Round(time.Microsecond))
	t.Logf("R7: broker RSS %d MiB → %d MiB (peak %d MiB): %.1f KiB per idle connection; live heap %d → %d MiB: %.1f KiB per connection",
		rss0>>20, rss1>>20, rssHWM>>20, float64(rss1-rss0)/float64(n)/1024, heap0>>20, heap1>>20, float64(heap1-heap0)/float64(n)/1024)
	t.Logf("R7: goroutines %v before, %v connected (%.2f per connection), %v %v after the last close (live heap %d MiB)",
		g0, g1, (g1-g0)/float64(n), g2, back.Round(time.Millisecond), heap2>>20)
	if rss1 > 400<<20 {
		t.Errorf("broker RSS %d MiB with %d idle connections, want ≤ 400 MiB", rss1>>20, n)
	}
	m.healthy(t)
}

// R8: a connect flood (silent connections and CONNECT headers announcing
// 256 MiB) and a slowloris (CONNECTs dripped a byte a second) while a
// legitimate client connects and publishes: every hostile connection is
// closed within the connect timeout + 1 s, the broker's heap barely
// moves, the legitimate client connects within 1 s and its publish p99
// stays under 50 ms.
func TestConnectFloodAndSlowloris(t *testing.T) {
	silentN, headerN, dripN := 2000, 2000, 500
	connectTimeout := 2 * time.Second
	if soak {
		connectTimeout = 10 * time.Second
	}
	m := start(t, plainBin, fmt.Sprintf("log:\n  level: warn\nmqtt:\n  connect_timeout: %s\n", connectTimeout))
	m.healthy(t)
	heap0 := m.metric(t, "go_memstats_heap_alloc_bytes")
	f := m.h.startFlow(5 * time.Millisecond)

	type hostile struct {
		c      net.Conn
		opened time.Time
		closed chan time.Duration // how long after opening the broker closed it
	}
	watch := func(c net.Conn) *hostile {
		h := &hostile{c: c, opened: time.Now(), closed: make(chan time.Duration, 1)}
		go func() {
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					h.closed <- time.Since(h.opened)
					return
				}
			}
		}()
		return h
	}
	var heapMax atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if h := int64(m.metrics(t)["go_memstats_heap_alloc_bytes"]); h > heapMax.Load() {
				heapMax.Store(h)
			}
		}
	}()

	// The three kinds are opened at once, 32 dialers each.
	floodStart := time.Now()
	header := []byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F}
	kinds := []struct {
		n     int
		first []byte
		hs    []*hostile
	}{{n: silentN}, {n: headerN, first: header}, {n: dripN}}
	var opened sync.WaitGroup
	for k := range kinds {
		kind := &kinds[k]
		kind.hs = make([]*hostile, kind.n)
		opened.Go(func() {
			var wg sync.WaitGroup
			var next atomic.Int64
			for range 32 {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= kind.n {
							return
						}
						c, err := dialTCP(m.addr)
						if err != nil {
							t.Errorf("flood dial: %v", err)
							return
						}
						kind.hs[i] = watch(c)
						if kind.first != nil {
							_, _ = c.Write(kind.first)
						}
					}
				})
			}
			wg.Wait()
		})
	}
	opened.Wait()
	if t.Failed() {
		t.FailNow()
	}
	floodOpened := time.Since(floodStart)
	// The slowloris: a CONNECT dripped a byte a second into each.
	connect := brokertest.RawConnect(4, "slowloris-with-a-long-client-identifier", 30)
	dripDone := make(chan struct{})
	go func() {
		defer close(dripDone)
		for i := range connect {
			alive := 0
			for _, h := range kinds[2].hs {
				if _, err := h.c.Write(connect[i : i+1]); err == nil {
					alive++
				}
			}
			if alive == 0 {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	var hs []*hostile
	for _, k := range kinds {
		hs = append(hs, k.hs...)
	}

	// A legitimate client connects during the flood.
	var connects []time.Duration
	for i := range 5 {
		connects = append(connects, connectTime(t, m.addr, fmt.Sprintf("legit-%d", i)))
	}
	// Every hostile connection is closed within the connect timeout + 1 s
	// (checked below, with the scheduling noise the flow measured).
	var worst time.Duration
	for i, h := range hs {
		select {
		case d := <-h.closed:
			worst = max(worst, d)
		case <-time.After(time.Until(h.opened.Add(connectTimeout + 3*within))):
			t.Fatalf("hostile connection %d still open %v after it opened", i, time.Since(h.opened))
		}
	}
	for _, h := range hs {
		_ = h.c.Close()
	}
	<-dripDone
	close(stopSampling)
	<-sampled
	r := f.stop()
	_, maxConnect, _ := percentiles(connects)
	t.Logf("R8: %d silent + %d 256 MiB headers + %d slowloris opened in %v; all closed, the last %v after opening (connect timeout %v)",
		silentN, headerN, dripN, floodOpened.Round(time.Millisecond), worst.Round(time.Millisecond), connectTimeout)
	t.Logf("R8: broker heap %d MiB before, at most %d MiB during; legitimate connects %v (slowest %v); flow: %v",
		int64(heap0)>>20, heapMax.Load()>>20, connects, maxConnect, r)
	if worst > connectTimeout+within+r.Noise {
		t.Errorf("a hostile connection was closed %v after it opened, want ≤ %v + noise %v", worst, connectTimeout+within, r.Noise)
	}
	if grew := heapMax.Load() - int64(heap0); grew > 50<<20 {
		t.Errorf("broker heap grew by %d MiB during the flood, want ≤ 50 MiB", grew>>20)
	}
	if maxConnect > within+r.Noise {
		t.Errorf("a legitimate connect took %v during the flood, want ≤ %v + noise %v", maxConnect, within, r.Noise)
	}
	r.check(t, int(connectTimeout/(10*time.Millisecond)), 50*time.Millisecond)
	m.healthy(t)
}
