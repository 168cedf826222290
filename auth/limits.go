package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the abuse limits the hook enforces. Zero values turn a limit
// off.
type Limits struct {
	// MaxConnections caps connected clients in total; MaxConnectionsPerUser
	// per authenticated username (anonymous clients share "").
	MaxConnections        int
	MaxConnectionsPerUser int
	// ConnectRate and ConnectBurst limit CONNECTs per source address
	// (CONNACK 0x9F "connection rate exceeded" beyond them).
	ConnectRate  float64
	ConnectBurst int
	// FailedLoginBurst failed logins from one address are allowed, then one
	// more per FailedLoginEvery; further attempts from that address are
	// refused with 0x9F before any password is checked.
	FailedLoginBurst int
	FailedLoginEvery time.Duration
	// PublishRate and PublishBurst limit PUBLISH packets per client;
	// PublishDisconnect chooses what happens beyond them: disconnect with
	// 0x96 "message rate too high" (true) or drop the message (QoS 1/2 on
	// MQTT 5: PUBACK/PUBREC 0x97 "quota exceeded").
	PublishRate       float64
	PublishBurst      int
	PublishDisconnect bool
	// MaxSubscriptions caps the subscriptions one client holds; a SUBSCRIBE
	// beyond it gets 0x97 for the filters over the limit.
	MaxSubscriptions int
}

// addrLimiters keeps one token bucket per source address, forgetting
// addresses idle for longer than a bucket takes to refill.
type addrLimiters struct {
	mu    sync.Mutex
	every rate.Limit
	burst int
	m     map[string]*addrLimiter
	swept time.Time
}

type addrLimiter struct {
	lim  *rate.Limiter
	seen time.Time
}

func newAddrLimiters(r rate.Limit, burst int) *addrLimiters {
	return &addrLimiters{every: r, burst: burst, m: map[string]*addrLimiter{}}
}

// get returns addr's bucket, creating it full.
func (a *addrLimiters) get(addr string, now time.Time) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(now)
	l := a.m[addr]
	if l == nil {
		l = &addrLimiter{lim: rate.NewLimiter(a.every, a.burst)}
		a.m[addr] = l
	}
	l.seen = now
	return l.lim
}

// allow takes a token for addr.
func (a *addrLimiters) allow(addr string, now time.Time) bool {
	return a.get(addr, now).AllowN(now, 1)
}

// exhausted reports whether addr has no token left, without taking one.
func (a *addrLimiters) exhausted(addr string, now time.Time) bool {
	a.mu.Lock()
	l := a.m[addr]
	a.mu.Unlock()
	return l != nil && l.lim.TokensAt(now) < 1
}

// sweepLocked drops buckets that have been idle long enough to be full
// again, at most once a minute.
func (a *addrLimiters) sweepLocked(now time.Time) {
	if now.Sub(a.swept) < time.Minute {
		return
	}
	a.swept = now
	idle := time.Minute
	if a.every > 0 {
		if full := time.Duration(float64(a.burst) / float64(a.every) * float64(time.Second)); full > idle {
			idle = full
		}
	}
	for k, l := range a.m {
		if now.Sub(l.seen) > idle {
			delete(a.m, k)
		}
	}
}

func (a *addrLimiters) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
