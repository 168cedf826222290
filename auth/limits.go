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
	// MaxRetainedPerUser and MaxRetainedBytesPerUser cap the retained
	// messages one user holds (by username; anonymous clients share ""),
	// in number and in topic + payload bytes. A retained PUBLISH that would
	// go beyond either is refused: MQTT 5 QoS 1/2 get PUBACK/PUBREC 0x97
	// "quota exceeded", MQTT 3.1.1 QoS 1/2 publishers are disconnected (as
	// for an ACL refusal), QoS 0 messages are dropped; all are counted.
	// Replacing one's own retained message within the limits, or clearing
	// one, is always allowed. Messages are counted from the broker's start
	// (those restored from the store belong to nobody), and concurrent
	// publishes by one user's several connections can pass a limit by one
	// each. Against a retained-message flood filling memory and the store.
	MaxRetainedPerUser      int
	MaxRetainedBytesPerUser int64
}

// addrLimiters keeps one token bucket per source address, forgetting
// addresses idle for longer than a bucket takes to refill.
type addrLimiters struct {
	mu    sync.Mutex
	every rate.Limit
	burst int
	m     map[string]*addrLimiter
	swept time.Time
	ended *sync.Cond // signalled by end
}

type addrLimiter struct {
	lim     *rate.Limiter
	seen    time.Time
	pending int // checks begun and not ended (see begin)
}

func newAddrLimiters(r rate.Limit, burst int) *addrLimiters {
	a := &addrLimiters{every: r, burst: burst, m: map[string]*addrLimiter{}}
	a.ended = sync.NewCond(&a.mu)
	return a
}

// get returns addr's bucket, creating it full.
func (a *addrLimiters) get(addr string, now time.Time) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.getLocked(addr, now).lim
}

func (a *addrLimiters) getLocked(addr string, now time.Time) *addrLimiter {
	a.sweepLocked(now)
	l := a.m[addr]
	if l == nil {
		l = &addrLimiter{lim: rate.NewLimiter(a.every, a.burst)}
		a.m[addr] = l
	}
	l.seen = now
	return l
}

// allow takes a token for addr.
func (a *addrLimiters) allow(addr string, now time.Time) bool {
	return a.get(addr, now).AllowN(now, 1)
}

// begin starts a check that may cost addr a token (a password check whose
// failure is spent with end). It reports false when addr has no token
// left. While the checks in progress could take every remaining token, it
// waits for one to end, so concurrent attempts cannot get past the limit
// while earlier ones are still being checked, and concurrent good logins
// are delayed, not refused.
func (a *addrLimiters) begin(addr string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		now := time.Now()
		l := a.getLocked(addr, now)
		tokens := l.lim.TokensAt(now)
		if tokens < 1 {
			return false
		}
		if tokens-float64(l.pending) >= 1 {
			l.pending++
			return true
		}
		a.ended.Wait()
	}
}

// end ends a check begun with begin, taking a token when it failed.
func (a *addrLimiters) end(addr string, failed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	l := a.getLocked(addr, now)
	if l.pending > 0 {
		l.pending--
	}
	if failed {
		l.lim.AllowN(now, 1)
	}
	a.ended.Broadcast()
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

// retainedOwners keeps who set each retained message and what every user
// holds, for the retained caps. It is only kept while a cap is configured.
type retainedOwners struct {
	mu     sync.Mutex
	topics map[string]retainedEntry // retained topic → who set it (absent: nobody counted)
	users  map[string]retainedUse   // username → what they hold
}

type retainedEntry struct {
	user string
	size int64
}

type retainedUse struct {
	count int
	bytes int64
}

func newRetainedOwners() *retainedOwners {
	return &retainedOwners{topics: map[string]retainedEntry{}, users: map[string]retainedUse{}}
}

// allows reports whether user may set a retained message of size bytes on
// topic under the caps (0: no cap).
func (r *retainedOwners) allows(user, topic string, size int64, maxCount int, maxBytes int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.users[user]
	if prev, ok := r.topics[topic]; ok && prev.user == user {
		u.count--
		u.bytes -= prev.size
	}
	return (maxCount <= 0 || u.count+1 <= maxCount) && (maxBytes <= 0 || u.bytes+size <= maxBytes)
}

// set records that user's retained message of size bytes is on topic
// (counted: false for messages set by the broker itself, which count
// against no one).
func (r *retainedOwners) set(user, topic string, size int64, counted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked(topic)
	if counted {
		r.topics[topic] = retainedEntry{user: user, size: size}
		u := r.users[user]
		u.count++
		u.bytes += size
		r.users[user] = u
	}
}

// clear forgets the retained message on topic (cleared or expired).
func (r *retainedOwners) clear(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked(topic)
}

func (r *retainedOwners) dropLocked(topic string) {
	prev, ok := r.topics[topic]
	if !ok {
		return
	}
	delete(r.topics, topic)
	u := r.users[prev.user]
	u.count--
	u.bytes -= prev.size
	if u.count <= 0 {
		delete(r.users, prev.user)
	} else {
		r.users[prev.user] = u
	}
}

// use returns what user holds.
func (r *retainedOwners) use(user string) retainedUse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users[user]
}
