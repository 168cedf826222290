package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/motemq/mote/persistence"
)

var discard = slog.New(slog.DiscardHandler)

func openStore(t *testing.T, dir string) *persistence.Store {
	t.Helper()
	s, err := persistence.Open(persistence.Config{Dir: dir}, discard)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func pub(topic string, qos byte, payload string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     []byte(payload),
	}
}

// fakeSender records sends; fn decides each call's outcome.
type fakeSender struct {
	mu    sync.Mutex
	calls [][]packets.Packet
	times []time.Time
	ok    []string // payloads delivered, in order
	fn    func(call int, msgs []packets.Packet) error
}

func (f *fakeSender) Send(ctx context.Context, msgs []packets.Packet) error {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, slices.Clone(msgs))
	f.times = append(f.times, time.Now())
	fn := f.fn
	f.mu.Unlock()
	var err error
	if fn != nil {
		err = fn(n, msgs)
	}
	if err == nil {
		f.mu.Lock()
		for _, m := range msgs {
			f.ok = append(f.ok, string(m.Payload))
		}
		f.mu.Unlock()
	}
	return err
}

func (f *fakeSender) delivered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ok)
}

func (f *fakeSender) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type deadRec struct {
	payload  string
	reason   string
	attempts int
}

type deadBox struct {
	mu   sync.Mutex
	recs []deadRec
}

func (d *deadBox) fn(pk packets.Packet, reason string, attempts int) {
	d.mu.Lock()
	d.recs = append(d.recs, deadRec{string(pk.Payload), reason, attempts})
	d.mu.Unlock()
}

func (d *deadBox) get() []deadRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.recs)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func fastCfg(name string) Config {
	return Config{
		Name:        name,
		Filters:     []string{"out/#"},
		BackoffMin:  time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		StopTimeout: time.Second,
	}
}

// newBridge opens a started bridge on s; it is stopped at cleanup.
func newBridge(t *testing.T, s *persistence.Store, cfg Config, snd Sender, dead *deadBox) *Bridge {
	t.Helper()
	var dl func(packets.Packet, string, int)
	if dead != nil {
		dl = dead.fn
	}
	b, err := New(cfg, s, snd, dl, discard)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

func offer(t *testing.T, b *Bridge, pk packets.Packet) {
	t.Helper()
	batch := b.Offer(pk)
	if pk.FixedHeader.Qos == 0 {
		if batch != nil {
			t.Fatalf("Offer(QoS 0) returned a batch")
		}
		return
	}
	if batch == nil {
		t.Fatalf("Offer(QoS %d) returned no batch", pk.FixedHeader.Qos)
	}
	select {
	case <-batch.Done():
		if err := batch.Wait(); err != nil {
			t.Fatalf("batch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch not committed")
	}
}

func outboxLen(t *testing.T, s *persistence.Store, name string) int {
	t.Helper()
	n := 0
	l, err := s.Log("bridge/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Scan(0, func(persistence.Entry) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMain(m *testing.M) {
	// buntdb's background goroutine ends up to a second after Close: it is
	// the store's, not the bridge's.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
}

func TestValidate(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Filters: []string{"a"}}, "bridges[?].name: required"},
		{Config{Name: "a/b", Filters: []string{"a"}}, "bridges[?].name:"},
		{Config{Name: "x"}, "bridges[?].filters: at least one"},
		{Config{Name: "x", Filters: []string{"a/#/b"}}, "bridges[?].filters[0]:"},
		{Config{Name: "x", Filters: []string{"a", "a+"}}, "bridges[?].filters[1]:"},
		{Config{Name: "x", Filters: []string{"a"}, MaxAttempts: -1}, "bridges[?].max_attempts:"},
		{Config{Name: "x", Filters: []string{"a"}, Concurrency: -1}, "bridges[?].concurrency:"},
		{Config{Name: "x", Filters: []string{"a"}, BackoffMin: time.Second, BackoffMax: time.Millisecond}, "bridges[?].backoff_min:"},
		{Config{Name: "x", Filters: []string{"a"}, MemoryBuffer: -2}, "bridges[?].memory_buffer:"},
	}
	for _, c := range cases {
		_, err := New(c.cfg, s, &fakeSender{}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", c.cfg, err, c.want)
		}
	}
	b, err := New(Config{Name: "ok", Filters: []string{"a/+"}}, s, &fakeSender{}, nil, nil)
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	b.Stop() // Stop without Start is fine
	c := b.cfg
	if c.MaxAttempts != 10 || c.BackoffMin != 200*time.Millisecond || c.BackoffMax != 30*time.Second ||
		c.Concurrency != 1 || !*c.Ordered || c.BatchSize != 1 || c.BreakerFailures != 5 ||
		c.BreakerCooldown != 10*time.Second || c.MemoryBuffer != 10000 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestMatches(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	b, err := New(Config{Name: "m", Filters: []string{"a/+/c", "b/#", "#"}}, s, &fakeSender{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{"a/b/c": true, "x": true, "b": true, "$SYS/x": false} {
		if got := b.Matches(topic); got != want {
			t.Errorf("Matches(%q) = %v, want %v", topic, got, want)
		}
	}
	b2, _ := New(Config{Name: "m2", Filters: []string{"a/+/c", "b/#", "$SYS/+"}}, s, &fakeSender{}, nil, nil)
	for topic, want := range map[string]bool{"a/b/c": true, "a/b": false, "a/b/c/d": false, "b": true, "b/x/y": true, "c": false, "$SYS/x": true, "+/x": false} {
		if got := b2.Matches(topic); got != want {
			t.Errorf("Matches(%q) = %v, want %v", topic, got, want)
		}
	}
}

func TestDeliveryAndRemoval(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	snd := &fakeSender{}
	b := newBridge(t, s, fastCfg("d"), snd, nil)
	for i := range 5 {
		offer(t, b, pub("out/a", 1, fmt.Sprint(i)))
	}
	offer(t, b, pub("out/b", 0, "q0"))
	eventually(t, "6 deliveries", func() bool { return len(snd.delivered()) == 6 })
	got := snd.delivered()
	if want := []string{"0", "1", "2", "3", "4"}; !slices.Equal(slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s == "q0" }), want) {
		t.Errorf("delivered %v, want %v in order plus q0", got, want)
	}
	eventually(t, "outbox empty", func() bool { return b.outbox.Len() == 0 })
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := outboxLen(t, s, "d"); n != 0 {
		t.Errorf("outbox holds %d records on disk, want 0", n)
	}
	st := b.Status()
	if st.Sent != 6 || st.Backlog != 0 || st.InFlight != 0 || st.Failed != 0 || !st.Connected || st.Name != "d" {
		t.Errorf("status %+v", st)
	}
}

func TestRetryThenSuccess(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	snd := &fakeSender{fn: func(call int, _ []packets.Packet) error {
		if call < 3 {
			return errors.New("boom")
		}
		return nil
	}}
	dead := &deadBox{}
	b := newBridge(t, s, fastCfg("r"), snd, dead)
	offer(t, b, pub("out/a", 1, "x"))
	eventually(t, "delivery", func() bool { return len(snd.delivered()) == 1 })
	if n := snd.numCalls(); n != 4 {
		t.Errorf("%d send calls, want 4", n)
	}
	eventually(t, "outbox empty", func() bool { return b.outbox.Len() == 0 })
	st := b.Status()
	if st.Sent != 1 || st.Failed != 3 || st.LastError != "boom" || st.LastErrorAt.IsZero() || !st.Connected {
		t.Errorf("status %+v", st)
	}
	if len(dead.get()) != 0 {
		t.Errorf("dead letters %v", dead.get())
	}
}

func TestPermanentDeadLettersAtOnce(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	snd := &fakeSender{fn: func(int, []packets.Packet) error { return Permanent(errors.New("400 bad request")) }}
	dead := &deadBox{}
	b := newBridge(t, s, fastCfg("p"), snd, dead)
	offer(t, b, pub("out/a", 1, "bad"))
	eventually(t, "dead letter", func() bool { return len(dead.get()) == 1 })
	d := dead.get()[0]
	if d.payload != "bad" || d.attempts != 1 || !strings.Contains(d.reason, "400 bad request") {
		t.Errorf("dead letter %+v", d)
	}
	if n := snd.numCalls(); n != 1 {
		t.Errorf("%d send calls, want 1", n)
	}
	eventually(t, "outbox empty", func() bool { return b.outbox.Len() == 0 })
	if st := b.Status(); st.DeadLettered != 1 || st.Sent != 0 || st.BreakerOpen {
		t.Errorf("status %+v", st)
	}
}

func TestMaxAttemptsDeadLetters(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	snd := &fakeSender{fn: func(call int, _ []packets.Packet) error { return fmt.Errorf("fail %d", call) }}
	dead := &deadBox{}
	cfg := fastCfg("m")
	cfg.MaxAttempts = 3
	cfg.BreakerFailures = 100
	b := newBridge(t, s, cfg, snd, dead)
	offer(t, b, pub("out/a", 1, "x"))
	offer(t, b, pub("out/a", 1, "y"))
	eventually(t, "dead letters", func() bool { return len(dead.get()) == 2 })
	want := []deadRec{{"x", "fail 2", 3}, {"y", "fail 5", 3}}
	if got := dead.get(); !slices.Equal(got, want) {
		t.Errorf("dead letters %+v, want %+v", got, want)
	}
	if n := snd.numCalls(); n != 6 {
		t.Errorf("%d send calls, want 6", n)
	}
	eventually(t, "outbox empty", func() bool { return b.outbox.Len() == 0 })
	if st := b.Status(); st.DeadLettered != 2 || st.Failed != 6 || st.Connected {
		t.Errorf("status %+v", st)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const delay = 150 * time.Millisecond
	snd := &fakeSender{fn: func(call int, _ []packets.Packet) error {
		if call == 0 {
			return RetryAfter(errors.New("429"), delay)
		}
		return nil
	}}
	b := newBridge(t, s, fastCfg("ra"), snd, nil)
	offer(t, b, pub("out/a", 1, "x"))
	eventually(t, "delivery", func() bool { return len(snd.delivered()) == 1 })
	snd.mu.Lock()
	gap := snd.times[1].Sub(snd.times[0])
	snd.mu.Unlock()
	if gap < delay {
		t.Errorf("retried after %v, want >= %v", gap, delay)
	}
}

func TestOrderedPerTopicWithFailures(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	var mu sync.Mutex
	inflight := map[string]int{}
	var overlap atomic.Bool
	var calls atomic.Int64
	snd := &fakeSender{fn: func(_ int, msgs []packets.Packet) error {
		topic := msgs[0].TopicName
		mu.Lock()
		inflight[topic]++
		if inflight[topic] > 1 {
			overlap.Store(true)
		}
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inflight[topic]--
		mu.Unlock()
		if calls.Add(1)%3 == 0 { // every third send fails
			return errors.New("flaky")
		}
		return nil
	}}
	cfg := fastCfg("o")
	cfg.Concurrency = 4
	cfg.BreakerFailures = 1000
	cfg.MaxAttempts = 1000
	b := newBridge(t, s, cfg, snd, nil)
	topics := []string{"out/a", "out/b", "out/c", "out/d"}
	const per = 25
	for i := range per {
		for _, tp := range topics {
			offer(t, b, pub(tp, 1, fmt.Sprintf("%s:%d", tp, i)))
		}
	}
	eventually(t, "all delivered", func() bool { return len(snd.delivered()) == per*len(topics) })
	if overlap.Load() {
		t.Error("two messages of one topic were in flight at once")
	}
	next := map[string]int{}
	for _, p := range snd.delivered() {
		tp, n, _ := strings.Cut(p, ":")
		if want := fmt.Sprint(next[tp]); n != want {
			t.Fatalf("topic %s delivered %s, want %s (order broken)", tp, n, want)
		}
		next[tp]++
	}
	if st := b.Status(); st.Failed == 0 {
		t.Errorf("no failures injected: %+v", st)
	}
}

func TestUnorderedSendsInParallel(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	var cur, peak atomic.Int64
	release := make(chan struct{})
	snd := &fakeSender{fn: func(int, []packets.Packet) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
		return nil
	}}
	cfg := fastCfg("u")
	cfg.Concurrency = 4
	f := false
	cfg.Ordered = &f
	b := newBridge(t, s, cfg, snd, nil)
	for i := range 8 {
		offer(t, b, pub("out/same", 1, fmt.Sprint(i)))
	}
	eventually(t, "4 parallel sends", func() bool { return cur.Load() == 4 })
	if st := b.Status(); st.InFlight != 4 || st.Backlog != 4 {
		t.Errorf("status %+v, want 4 in flight and 4 waiting", st)
	}
	close(release)
	eventually(t, "all delivered", func() bool { return len(snd.delivered()) == 8 })
	if p := peak.Load(); p != 4 {
		t.Errorf("peak concurrency %d, want 4", p)
	}
}

func TestOrderedSameTopicNotParallel(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	var cur, peak atomic.Int64
	snd := &fakeSender{fn: func(int, []packets.Packet) error {
		n := cur.Add(1)
		if n > peak.Load() {
			peak.Store(n)
		}
		time.Sleep(2 * time.Millisecond)
		cur.Add(-1)
		return nil
	}}
	cfg := fastCfg("os")
	cfg.Concurrency = 4
	b := newBridge(t, s, cfg, snd, nil)
	for i := range 10 {
		offer(t, b, pub("out/same", 1, fmt.Sprint(i)))
	}
	eventually(t, "all delivered", func() bool { return len(snd.delivered()) == 10 })
	if p := peak.Load(); p != 1 {
		t.Errorf("peak concurrency on one topic %d, want 1", p)
	}
}

func TestBreakerOpensAndProbes(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	var healthy atomic.Bool
	snd := &fakeSender{fn: func(int, []packets.Packet) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("down")
	}}
	cfg := fastCfg("br")
	cfg.BreakerFailures = 3
	cfg.BreakerCooldown = 200 * time.Millisecond
	cfg.MaxAttempts = 1000
	f := false
	cfg.Ordered = &f
	b := newBridge(t, s, cfg, snd, nil)
	for i := range 5 {
		offer(t, b, pub("out/x", 1, fmt.Sprint(i)))
	}
	eventually(t, "breaker open", func() bool { return b.Status().BreakerOpen })
	opened := time.Now()
	if st := b.Status(); st.Connected {
		t.Errorf("connected with the breaker open: %+v", st)
	}
	n := snd.numCalls()
	if n != 3 {
		t.Errorf("%d sends before the breaker opened, want 3", n)
	}
	time.Sleep(100 * time.Millisecond)
	if m := snd.numCalls(); m != n {
		t.Errorf("%d sends while the breaker was open", m-n)
	}
	// The probe after the cooldown fails: one send, breaker open again.
	eventually(t, "probe", func() bool { return snd.numCalls() == n+1 })
	snd.mu.Lock()
	probeAt := snd.times[n]
	snd.mu.Unlock()
	if probeAt.Sub(opened) < 100*time.Millisecond {
		t.Errorf("probe %v after opening, want about the cooldown", probeAt.Sub(opened))
	}
	time.Sleep(50 * time.Millisecond)
	if m := snd.numCalls(); m != n+1 || !b.Status().BreakerOpen {
		t.Errorf("after a failed probe: %d sends (want %d), status %+v", m, n+1, b.Status())
	}
	healthy.Store(true)
	eventually(t, "all delivered", func() bool { return len(snd.delivered()) == 5 })
	if st := b.Status(); st.BreakerOpen || !st.Connected || st.Sent != 5 {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestRestartRedelivers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	snd := &fakeSender{}
	var calls atomic.Int64
	cfg := fastCfg("rs")
	cfg.StopTimeout = 20 * time.Millisecond
	b, err := New(cfg, s, SenderFunc(func(ctx context.Context, msgs []packets.Packet) error {
		if calls.Add(1) == 1 {
			return snd.Send(ctx, msgs)
		}
		<-ctx.Done() // later sends hang until Stop cancels them
		return ctx.Err()
	}), nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	for i := range 3 {
		offer(t, b, pub("out/a", 1, fmt.Sprint(i)))
	}
	offer(t, b, pub("out/a", 0, "volatile"))
	eventually(t, "second send in flight", func() bool { return calls.Load() == 2 })
	b.Stop()
	if got := snd.delivered(); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("delivered before restart %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir)
	defer s2.Close()
	if n := outboxLen(t, s2, "rs"); n != 2 {
		t.Fatalf("outbox holds %d records after restart, want 2", n)
	}
	snd2 := &fakeSender{}
	b2 := newBridge(t, s2, fastCfg("rs"), snd2, nil)
	if st := b2.Status(); st.Backlog+st.InFlight+int(st.Sent) != 2 {
		t.Errorf("status after restart %+v, want 2 messages", st)
	}
	eventually(t, "redelivery", func() bool { return len(snd2.delivered()) == 2 })
	if got := snd2.delivered(); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("redelivered %v, want [1 2]", got)
	}
	eventually(t, "outbox empty", func() bool { return b2.outbox.Len() == 0 })
}

func TestAttemptsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	snd := &fakeSender{fn: func(int, []packets.Packet) error { return errors.New("no") }}
	cfg := fastCfg("as")
	cfg.MaxAttempts = 4
	cfg.BackoffMin = time.Hour // one attempt, then wait
	cfg.BackoffMax = time.Hour
	b, err := New(cfg, s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	offer(t, b, pub("out/a", 1, "x"))
	eventually(t, "first attempt", func() bool { return b.Status().Failed == 1 })
	b.Stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir)
	defer s2.Close()
	dead := &deadBox{}
	cfg2 := fastCfg("as")
	cfg2.MaxAttempts = 4
	b2 := newBridge(t, s2, cfg2, snd, dead)
	eventually(t, "dead letter", func() bool { return len(dead.get()) == 1 })
	if d := dead.get()[0]; d.attempts != 4 {
		t.Errorf("dead-lettered after %d attempts, want 4", d.attempts)
	}
	if n := snd.numCalls(); n != 4 {
		t.Errorf("%d sends in all, want 4 (1 before restart, 3 after)", n)
	}
	_ = b2
}

func TestQoS0BufferBounded(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	release := make(chan struct{})
	snd := &fakeSender{fn: func(int, []packets.Packet) error { <-release; return nil }}
	cfg := fastCfg("q0")
	cfg.MemoryBuffer = 5
	b := newBridge(t, s, cfg, snd, nil)
	for i := range 12 {
		offer(t, b, pub("out/a", 0, fmt.Sprint(i)))
	}
	st := b.Status()
	if st.Dropped != 7 || st.Backlog+st.InFlight != 5 {
		t.Errorf("status %+v, want 7 dropped and 5 held", st)
	}
	if b.outbox.Len() != 0 {
		t.Errorf("QoS 0 messages written to the outbox")
	}
	close(release)
	eventually(t, "5 delivered", func() bool { return len(snd.delivered()) == 5 })
	if got := snd.delivered(); !slices.Equal(got, []string{"0", "1", "2", "3", "4"}) {
		t.Errorf("delivered %v", got)
	}
	// Room again.
	offer(t, b, pub("out/a", 0, "later"))
	eventually(t, "6 delivered", func() bool { return len(snd.delivered()) == 6 })
	if st := b.Status(); st.Dropped != 7 || st.Sent != 6 {
		t.Errorf("status %+v", st)
	}
}

func TestBatching(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	snd := &fakeSender{}
	cfg := fastCfg("bt")
	cfg.BatchSize = 4
	cfg.BatchWait = 300 * time.Millisecond
	b, err := New(cfg, s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	var last *persistence.Batch
	for i := range 6 { // one commit for all, so the first four are ready together
		last = b.Offer(pub("out/a", 1, fmt.Sprint(i)))
	}
	if err := last.Wait(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.Start() // everything is in the outbox: the first batch is full at once
	eventually(t, "6 delivered", func() bool { return len(snd.delivered()) == 6 })
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if len(snd.calls) != 2 || len(snd.calls[0]) != 4 || len(snd.calls[1]) != 2 {
		sizes := []int{}
		for _, c := range snd.calls {
			sizes = append(sizes, len(c))
		}
		t.Fatalf("batch sizes %v, want [4 2]", sizes)
	}
	// The full batch goes at once; the partial one waits for BatchWait.
	if d := snd.times[0].Sub(start); d >= cfg.BatchWait {
		t.Errorf("full batch sent after %v, want before BatchWait", d)
	}
	if d := snd.times[1].Sub(snd.times[0]); d < cfg.BatchWait-10*time.Millisecond {
		t.Errorf("partial batch sent %v after the full one, want about BatchWait %v", d, cfg.BatchWait)
	}
	if !slices.Equal(snd.ok, []string{"0", "1", "2", "3", "4", "5"}) {
		t.Errorf("delivered %v", snd.ok)
	}
}

func TestStopCancelsSendsAndLeavesNoGoroutines(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ignore := goleak.IgnoreCurrent() // the store's own goroutines are not ours
	started := make(chan struct{}, 1)
	var sawCancel atomic.Bool
	snd := SenderFunc(func(ctx context.Context, _ []packets.Packet) error {
		started <- struct{}{}
		<-ctx.Done()
		sawCancel.Store(true)
		return ctx.Err()
	})
	cfg := fastCfg("st")
	cfg.StopTimeout = 30 * time.Millisecond
	b, err := New(cfg, s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	offer(t, b, pub("out/a", 1, "x"))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("send not started")
	}
	t0 := time.Now()
	b.Stop()
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Stop took %v", d)
	}
	if !sawCancel.Load() {
		t.Error("in-flight send not cancelled")
	}
	if st := b.Status(); st.Failed != 0 || st.InFlight != 0 {
		t.Errorf("a cancelled send counted as an attempt: %+v", st)
	}
	b.Stop() // idempotent
	if b.outbox.Len() != 1 {
		t.Errorf("outbox %d, want the unsent message kept", b.outbox.Len())
	}
	if err := goleak.Find(ignore); err != nil {
		t.Error(err)
	}
}

func TestStopWaitsForRunningSend(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	started := make(chan struct{}, 1)
	snd := &fakeSender{fn: func(int, []packets.Packet) error {
		started <- struct{}{}
		time.Sleep(50 * time.Millisecond)
		return nil
	}}
	cfg := fastCfg("sw")
	cfg.StopTimeout = 5 * time.Second
	b, err := New(cfg, s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	offer(t, b, pub("out/a", 1, "x"))
	<-started
	b.Stop()
	if got := snd.delivered(); len(got) != 1 {
		t.Errorf("delivered %v", got)
	}
	if n := b.outbox.Len(); n != 0 {
		t.Errorf("outbox %d after a send that finished during Stop, want 0", n)
	}
}

func TestBackoffBounds(t *testing.T) {
	b := &Bridge{cfg: Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}}
	for n := 1; n < 20; n++ {
		c := min(10*time.Millisecond<<min(n-1, 10), 100*time.Millisecond)
		for range 50 {
			if d := b.backoff(n); d < 0 || d > c {
				t.Fatalf("backoff(%d) = %v, want in [0, %v]", n, d, c)
			}
		}
	}
}

func TestRetryAfterHoldsWholeBridge(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	const delay = 150 * time.Millisecond
	snd := &fakeSender{fn: func(call int, msgs []packets.Packet) error {
		if call == 0 {
			return RetryAfter(errors.New("429"), delay)
		}
		return nil
	}}
	cfg := fastCfg("rh")
	cfg.Concurrency = 2
	b, err := New(cfg, s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	offer(t, b, pub("out/a", 1, "a"))
	offer(t, b, pub("out/b", 1, "b"))
	b.Start()
	eventually(t, "both delivered", func() bool { return len(snd.delivered()) == 2 })
	snd.mu.Lock()
	defer snd.mu.Unlock()
	// The first send was refused with RetryAfter; nothing else was sent
	// during the hold, except possibly b's send started alongside it.
	for i := 1; i < len(snd.times); i++ {
		if gap := snd.times[i].Sub(snd.times[0]); gap < delay && i > 1 {
			t.Errorf("send %d after %v, inside the RetryAfter hold", i, gap)
		}
	}
}

func TestSenderPanicIsAFailure(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	snd := &fakeSender{fn: func(call int, _ []packets.Packet) error {
		if call == 0 {
			panic("oops")
		}
		return nil
	}}
	b := newBridge(t, s, fastCfg("pn"), snd, nil)
	offer(t, b, pub("out/a", 1, "x"))
	eventually(t, "delivery", func() bool { return len(snd.delivered()) == 1 })
	if st := b.Status(); st.Failed != 1 || !strings.Contains(st.LastError, "panicked") {
		t.Errorf("status %+v", st)
	}
}

func TestOfferAfterStop(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	b, err := New(fastCfg("as2"), s, &fakeSender{}, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	b.Stop()
	if b.Offer(pub("out/a", 0, "x")) != nil || b.Status().Dropped != 1 {
		t.Errorf("QoS 0 after Stop not dropped: %+v", b.Status())
	}
	offer(t, b, pub("out/a", 1, "y")) // still durable, for the next start
	if n := outboxLen(t, s, "as2"); n != 1 {
		t.Errorf("outbox %d, want 1", n)
	}
}

// A BatchError settles each message on its own: delivered ones leave the
// outbox, permanent failures are dead-lettered, the others retried.
func TestBatchErrorPerMessage(t *testing.T) {
	store := openStore(t, t.TempDir())
	defer store.Close()
	var mu sync.Mutex
	calls := 0
	var dead []string
	delivered := map[string]int{}
	sender := SenderFunc(func(ctx context.Context, msgs []packets.Packet) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			switch {
			case m.TopicName == "t/bad":
				errs[i] = Permanent(errors.New("refused"))
			case m.TopicName == "t/flaky" && calls == 1:
				errs[i] = errors.New("try again")
			default:
				delivered[m.TopicName]++
			}
		}
		return &BatchError{Errs: errs}
	})
	b, err := New(Config{Name: "batch", Filters: []string{"t/#"}, BatchSize: 3, BatchWait: 50 * time.Millisecond, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond},
		store, sender, func(pk packets.Packet, reason string, attempts int) {
			mu.Lock()
			dead = append(dead, pk.TopicName+": "+reason)
			mu.Unlock()
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"t/ok", "t/bad", "t/flaky"} {
		if batch := b.Offer(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: topic, Payload: []byte("x")}); batch != nil {
			if err := batch.Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.Start()
	defer b.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		ok := delivered["t/flaky"] == 1 && len(dead) == 1
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v dead %v", delivered, dead)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if delivered["t/ok"] != 1 || !strings.Contains(dead[0], "t/bad: permanent: refused") {
		t.Fatalf("delivered %v dead %v", delivered, dead)
	}
	if st := b.Status(); st.Sent != 2 || st.DeadLettered != 1 || st.BreakerOpen {
		t.Fatalf("status %+v", st)
	}
}
