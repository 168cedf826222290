package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"time"
)

// maxConnectsInFlight bounds concurrent CONNECTs (and DISCONNECTs), so a
// large run neither overwhelms the broker's accept queue nor this process.
const maxConnectsInFlight = 200

// Run runs one validated configuration and returns what it measured. log
// receives progress lines (nil discards them). On error the Result holds
// whatever was measured before it, and Result.Error repeats the error.
// Every client is closed and every goroutine Run started has returned by the
// time Run does.
func Run(ctx context.Context, cfg Config, log io.Writer) (Result, error) {
	res := Result{Config: cfg, Host: thisHost()}
	if err := cfg.Validate(); err != nil {
		err = fmt.Errorf("bench: invalid configuration: %w", err)
		res.Error = err.Error()
		return res, err
	}
	r, err := newRunner(cfg, log)
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	switch cfg.Scenario {
	case ScenarioConns:
		res.Conns, err = r.runConns(ctx, &res.Start)
	default:
		res.Messages, err = r.runMessages(ctx, &res.Start)
	}
	if err != nil {
		res.Error = err.Error()
	}
	return res, err
}

// runner holds what every scenario shares.
type runner struct {
	cfg   Config
	url   *url.URL
	log   *slog.Logger
	run   uint32    // random run id, in every payload header, client id and topic
	base  time.Time // monotonic origin of header timestamps
	topic string    // cfg.Topic + "/" + run id

	errMu  sync.Mutex
	err    error              // first fatal error
	cancel context.CancelFunc // cancels the run context on the first fatal error
}

func newRunner(cfg Config, log io.Writer) (*runner, error) {
	u, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("bench: --url %q: %w", cfg.URL, err)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("bench: run id: %w", err)
	}
	r := &runner{cfg: cfg, url: u, log: newLogger(log), run: binary.LittleEndian.Uint32(b[:]), base: time.Now()}
	r.topic = fmt.Sprintf("%s/%08x", cfg.Topic, r.run)
	return r, nil
}

// now is the time since r.base in nanoseconds, from the monotonic clock.
func (r *runner) now() int64 { return int64(time.Since(r.base)) }

// clientID names a client: prefix, run id, role letter and index.
func (r *runner) clientID(role byte, i int) string {
	return fmt.Sprintf("%s%08x-%c%d", r.cfg.ClientPrefix, r.run, role, i)
}

// fail records the first fatal error and cancels the run.
func (r *runner) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = err
		r.log.Error("run failed", "error", err)
		if r.cancel != nil {
			r.cancel()
		}
	}
}

func (r *runner) firstErr() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// forEach runs fn(ctx, i) for i in [0, n) with at most maxConnectsInFlight at
// once, stopping at the first error, which it returns.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	sem := make(chan struct{}, maxConnectsInFlight)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// closeAll closes every non-nil client, maxConnectsInFlight at a time, and
// returns the close errors joined.
func closeAll(conns []mqttConn) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, maxConnectsInFlight)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{} // bounded: every close is bounded by closeTimeout
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
