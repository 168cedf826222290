package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleReceiveMax is the v5 Receive Maximum of idle connections: they receive
// nothing, and paho.golang allocates 8 bytes per unit per connection.
const idleReceiveMax = 16

// fdReserve is how many file descriptors the conns scenario leaves for
// everything else (stdio, /proc reads, the Go runtime).
const fdReserve = 64

// runConns opens cfg.Conns idle connections, holds them for cfg.Hold and
// closes them.
func (r *runner) runConns(ctx context.Context, start *time.Time) (*ConnStats, error) {
	cfg := &r.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	st := &ConnStats{Requested: cfg.Conns}
	limit, err := raiseNoFile()
	if err != nil {
		r.log.Warn("raising RLIMIT_NOFILE to the hard limit", "error", err, "soft_limit", limit)
	}
	st.NoFileLimit = limit
	if limit > 0 && uint64(cfg.Conns)+fdReserve > limit {
		return st, fmt.Errorf("bench: --conns %d needs %d file descriptors but RLIMIT_NOFILE is %d; raise the hard limit (ulimit -Hn) first",
			cfg.Conns, cfg.Conns+fdReserve, limit)
	}
	if cfg.PID != 0 {
		if st.RSSBefore, err = readRSS(cfg.PID); err != nil {
			return st, fmt.Errorf("bench: --pid %d: %w", cfg.PID, err)
		}
	}

	conns := make([]mqttConn, cfg.Conns)
	defer func() {
		if err := closeAll(conns); err != nil {
			r.log.Warn("closing connections", "error", err)
		}
	}()

	var (
		dropped atomic.Int64
		holding atomic.Bool // drops count only once every connection is up
		mu      sync.Mutex  // guards failed, firstErr, last
		failed  int
		first   error
		last    time.Time
	)
	// The connect phase is bounded by --duration.
	connectCtx, cancelConnect := context.WithTimeout(ctx, cfg.Duration)
	defer cancelConnect()
	*start = time.Now()
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, maxConnectsInFlight)
		timer = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	attempted := 0
connecting:
	for i := range cfg.Conns {
		if cfg.ConnectRate > 0 {
			due := start.Add(time.Duration(float64(i) * float64(time.Second) / cfg.ConnectRate))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-connectCtx.Done():
					break connecting
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-connectCtx.Done():
			break connecting
		}
		attempted++
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := connect(connectCtx, clientOpts{
				cfg: cfg, url: r.url, id: r.clientID('c', i), receiveMax: idleReceiveMax,
				onLost: func(err error) {
					if holding.Load() {
						dropped.Add(1)
						r.log.Warn("connection lost", "client", r.clientID('c', i), "error", err)
					}
				},
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if first == nil {
					first = fmt.Errorf("connection %d: connect %s: %w", i, cfg.URL, err)
				}
				return
			}
			conns[i] = c
			last = time.Now()
		})
	}
	wg.Wait()
	holding.Store(true)
	st.Failed = failed + cfg.Conns - attempted
	st.Connected = cfg.Conns - st.Failed
	if first == nil && attempted < cfg.Conns {
		first = errors.New("--duration ran out before every connection was attempted")
	}
	if first != nil {
		st.FirstError = first.Error()
	}
	if st.Connected > 0 {
		st.ConnectTime = last.Sub(*start)
		if st.ConnectTime > 0 {
			st.ConnectRate = float64(st.Connected) / st.ConnectTime.Seconds()
		}
	}
	r.log.Info("connected", "connected", st.Connected, "failed", st.Failed, "took", st.ConnectTime.Round(time.Millisecond))

	holdStart := time.Now()
	if ctx.Err() == nil {
		timer.Reset(cfg.Hold)
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	st.Held = time.Since(holdStart)
	holding.Store(false)
	st.Dropped = int(dropped.Load())

	var rssErr error
	if cfg.PID != 0 {
		if st.RSSAfter, rssErr = readRSS(cfg.PID); rssErr != nil {
			rssErr = fmt.Errorf("bench: --pid %d after the hold: %w", cfg.PID, rssErr)
		} else if st.Connected > 0 {
			st.BytesPerConn = float64(st.RSSAfter-st.RSSBefore) / float64(st.Connected)
		}
	}

	switch {
	case ctx.Err() != nil:
		return st, fmt.Errorf("bench: interrupted: %w", ctx.Err())
	case rssErr != nil:
		return st, rssErr
	case st.Failed > 0:
		return st, fmt.Errorf("bench: %d of %d connections failed; first: %s", st.Failed, st.Requested, st.FirstError)
	case st.Dropped > 0:
		return st, fmt.Errorf("bench: %d of %d connections were lost during the hold", st.Dropped, st.Connected)
	}
	return st, nil
}

// readRSS returns the VmRSS of a process in bytes, from /proc/PID/status
// (Linux).
func readRSS(pid int) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read VmRSS: %w", err)
	}
	defer f.Close()
	return parseVmRSS(f, path)
}

func parseVmRSS(f io.Reader, path string) (int64, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected VmRSS line %q", path, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: VmRSS: %w", path, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, fmt.Errorf("%s: no VmRSS line (a kernel thread or a zombie?)", path)
}
