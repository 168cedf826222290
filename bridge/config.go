package bridge

import (
	"errors"
	"fmt"
	"strings"
	"time"

	topics "github.com/motemq/mote/internal/topic"
)

// Config configures one outbound bridge.
type Config struct {
	// Name identifies the bridge; its durable outbox is the persistence log
	// "bridge/"+Name. Letters, digits, '-', '_' and '.' only.
	Name string
	// Filters are MQTT topic filters (+ and # wildcards); a wildcard at the
	// first level does not match topics starting with '$'.
	Filters []string
	// MaxAttempts is how many failed sends dead-letter a message (default 10).
	MaxAttempts int
	// BackoffMin and BackoffMax bound the exponential backoff with full
	// jitter between attempts (defaults 200ms and 30s).
	BackoffMin, BackoffMax time.Duration
	// Concurrency is how many Send calls may run at once (default 1).
	Concurrency int
	// Ordered keeps per-topic order (nil means true): never two sends with
	// messages of one topic at once, and a failed message blocks later ones
	// of its topic until it succeeds or is dead-lettered. With BatchSize > 1
	// one batch may carry several messages of a topic, in order. Order holds
	// among the QoS 1/2 messages of a topic and among its QoS 0 ones, not
	// between the two kinds.
	Ordered *bool
	// BatchSize is the most messages handed to one Send (default 1).
	BatchSize int
	// BatchWait is how long a partial batch waits for more messages (0: send
	// at once).
	BatchWait time.Duration
	// BreakerFailures consecutive failed sends open the breaker (default 5).
	BreakerFailures int
	// BreakerCooldown is how long the breaker stays open before one probe
	// send (default 10s).
	BreakerCooldown time.Duration
	// MemoryBuffer bounds the QoS 0 messages kept in memory (default 10000);
	// further ones are dropped and counted.
	MemoryBuffer int
	// StopTimeout is how long Stop lets in-flight sends finish before it
	// cancels their context (default 5s).
	StopTimeout time.Duration
}

// Defaults.
const (
	DefaultMaxAttempts     = 10
	DefaultBackoffMin      = 200 * time.Millisecond
	DefaultBackoffMax      = 30 * time.Second
	DefaultConcurrency     = 1
	DefaultBatchSize       = 1
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 10 * time.Second
	DefaultMemoryBuffer    = 10000
	DefaultStopTimeout     = 5 * time.Second
)

// Validate checks cfg. Errors name the field as "bridges[?].field"; a caller
// that knows the bridge's index may replace the "?".
func (cfg Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("bridges[?].%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.Name == "" {
		bad("name", "required")
	} else if strings.IndexFunc(cfg.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		bad("name", "%q: want letters, digits, '-', '_' or '.'", cfg.Name)
	}
	if len(cfg.Filters) == 0 {
		bad("filters", "at least one topic filter is required")
	}
	for i, f := range cfg.Filters {
		if !topics.ValidFilter(f) {
			bad(fmt.Sprintf("filters[%d]", i), "%q is not a valid topic filter", f)
		}
	}
	neg := func(field string, v int64) {
		if v < 0 {
			bad(field, "must not be negative")
		}
	}
	neg("max_attempts", int64(cfg.MaxAttempts))
	neg("backoff_min", int64(cfg.BackoffMin))
	neg("backoff_max", int64(cfg.BackoffMax))
	neg("concurrency", int64(cfg.Concurrency))
	neg("batch_size", int64(cfg.BatchSize))
	neg("batch_wait", int64(cfg.BatchWait))
	neg("breaker_failures", int64(cfg.BreakerFailures))
	neg("breaker_cooldown", int64(cfg.BreakerCooldown))
	neg("memory_buffer", int64(cfg.MemoryBuffer))
	neg("stop_timeout", int64(cfg.StopTimeout))
	if cfg.BackoffMin > 0 && cfg.BackoffMax > 0 && cfg.BackoffMin > cfg.BackoffMax {
		bad("backoff_min", "%s is more than backoff_max %s", cfg.BackoffMin, cfg.BackoffMax)
	}
	return errors.Join(errs...)
}

func (cfg Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxAttempts, DefaultMaxAttempts)
	def(&cfg.Concurrency, DefaultConcurrency)
	def(&cfg.BatchSize, DefaultBatchSize)
	def(&cfg.BreakerFailures, DefaultBreakerFailures)
	def(&cfg.MemoryBuffer, DefaultMemoryBuffer)
	defD(&cfg.BackoffMin, DefaultBackoffMin)
	defD(&cfg.BackoffMax, DefaultBackoffMax)
	defD(&cfg.BreakerCooldown, DefaultBreakerCooldown)
	defD(&cfg.StopTimeout, DefaultStopTimeout)
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.Ordered == nil {
		t := true
		cfg.Ordered = &t
	}
	cfg.Filters = append([]string(nil), cfg.Filters...)
	return cfg
}
