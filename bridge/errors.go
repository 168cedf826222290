package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Sender delivers messages to the far side. A nil error means every message
// of msgs was delivered. Errors: wrap with Permanent for failures that will
// never succeed (the messages are dead-lettered at once); RetryAfter asks
// for a delay; anything else is retried with backoff.
type Sender interface {
	Send(ctx context.Context, msgs []packets.Packet) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, msgs []packets.Packet) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, msgs []packets.Packet) error { return f(ctx, msgs) }

// BatchError reports a Send's outcome per message: Errs[i] is the error of
// msgs[i], nil when that message was delivered. Each may be wrapped with
// Permanent. A sender returns it when some messages of a batch made it and
// others did not, so that only the failed ones are retried or
// dead-lettered.
type BatchError struct {
	Errs []error
}

// Error summarises the failures.
func (e *BatchError) Error() string {
	failed := 0
	var first error
	for _, err := range e.Errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return "bridge: batch delivered"
	}
	return fmt.Sprintf("%d of %d messages failed, first: %v", failed, len(e.Errs), first)
}

// Unwrap returns the per-message errors, so errors.Is and errors.As look
// at them.
func (e *BatchError) Unwrap() []error { return e.Errs }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that will never succeed.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type retryAfterError struct {
	err error
	d   time.Duration
}

func (e *retryAfterError) Error() string {
	return e.err.Error() + " (retry after " + e.d.String() + ")"
}
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks err as a failure to retry no sooner than d from now (a
// far side asking to slow down): the whole bridge holds off for d.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err, d}
}

// retryDelay returns the delay asked with RetryAfter, if any.
func retryDelay(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.d, true
	}
	return 0, false
}

// RetryAfterOf returns the delay an error asked for with RetryAfter.
func RetryAfterOf(err error) (time.Duration, bool) { return retryDelay(err) }
