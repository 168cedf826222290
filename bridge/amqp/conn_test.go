package amqp

import (
	"testing"
	"time"
)

// The reconnect backoff doubles from lo up to hi, with half of it random.
func TestBackoffBounds(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceil *= time.Millisecond
		for range 200 {
			if d := backoff(n, lo, hi); d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
			}
		}
	}
	if d := backoff(1000, lo, hi); d > hi {
		t.Fatalf("backoff(1000) = %s, more than %s", d, hi)
	}
}
