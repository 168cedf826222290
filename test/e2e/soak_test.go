package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// Soak (R15): 200 clients for MOTE_SOAK_DURATION (default 5m) against one
// broker process — 40 publishers at QoS 0/1/2, 100 persistent subscribers,
// 30 consumers of an undeclared shared group and 30 of a declared durable
// queue — while about 5 % of the clients reconnect every second (half
// dropping the connection, half disconnecting cleanly, all resuming their
// sessions). Every 10 s it samples the broker's RSS (VmRSS of the child),
// goroutines (go_goroutines on /metrics) and the store file's size. It
// fails if, after the warm-up, RSS grows faster than 1 MB/min, goroutines
// grow, or the store file keeps growing (compaction must bound it); and if
// any acknowledged QoS 1/2 message never reached a subscriber or group that
// should have it.
//
// The broker is built without the race detector for this test: the race
// runtime's shadow memory and history grow with the work done, which would
// hide or fake a leak. The test process itself may run with -race.
func TestSoak(t *testing.T) {
	if os.Getenv("MOTE_SOAK") != "1" {
		t.Skip("soak: set MOTE_SOAK=1 to run it (make soak, nightly): 200 clients with reconnect churn for MOTE_SOAK_DURATION (default 5m), leak checks on RSS, goroutines and the store file")
	}
	dur := 5 * time.Minute
	if s := os.Getenv("MOTE_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 30*time.Second || d > 2*time.Hour {
			t.Fatalf("MOTE_SOAK_DURATION=%q: want a duration between 30s and 2h", s)
		}
		dur = d
	}
	rate := 10.0 // messages per second per publisher
	if s := os.Getenv("MOTE_SOAK_RATE"); s != "" {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r <= 0 || r > 1000 {
			t.Fatalf("MOTE_SOAK_RATE=%q: want messages per second per publisher, 0 < r ≤ 1000", s)
		}
		rate = r
	}
	bin := buildPlain(t)
	so := newSoak(t, bin)
	so.run(dur, rate)
}

const (
	soakPubs       = 40
	soakSessions   = 100
	soakShared     = 30
	soakDurable    = 30
	soakTopics     = 10
	soakSample     = 10 * time.Second
	soakChurnEvery = 100 * time.Millisecond // 10 reconnects/s = 5 %/s of 200 clients
	soakShrinkMin  = 4 << 20
)

// buildPlain builds cmd/mote without -race into a temporary directory.
func buildPlain(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	out := filepath.Join(t.TempDir(), "mote")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/mote")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// soakPub is one publisher.
type soakPub struct {
	idx   int
	name  string
	topic string
	qos   byte
	sinks []int // sinks that must receive its QoS ≥ 1 messages

	// busy is held by a QoS 2 publisher around each publish, and by the
	// churn while it replaces that publisher's connection: paho.golang
	// v0.23.0 writes a PUBREL to the session's connection without its lock
	// (state.PacketReceived, PUBREC case) while a closing client clears it
	// under the lock (ConnectionLost) — a data race in the client library,
	// not the broker. So QoS 2 publishers are churned between their
	// publishes; QoS 0/1 publishers and every subscriber are churned at any
	// moment.
	busy sync.Mutex

	mu      sync.Mutex
	cli     *brokertest.V5
	acked   bitset          // acknowledged sequence numbers
	sent    uint64          // attempts
	ackedAt []time.Duration // per seq: when the acknowledgement came (since start), for diagnosis
	events  []string        // reconnects, for diagnosis
}

func (pb *soakPub) eventList() []string {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return slices.Clone(pb.events)
}

// soakSub is one subscribing client with a persistent session.
type soakSub struct {
	o      brokertest.Options
	filter string
	qos    byte
	sink   int

	mu     sync.Mutex
	cli    *brokertest.V5
	stop   func()
	events []string // reconnects, for diagnosis
	trace  *tracingSession
}

// tracingSession is paho's session state that also records, for diagnosis,
// every QoS 1/2 PUBLISH and PUBREL it is handed (before it decides whether
// the application sees the PUBLISH).
type tracingSession struct {
	*state.State
	start  *time.Time
	mu     sync.Mutex
	events []traceEvent
}

type traceEvent struct {
	at       time.Duration
	kind     byte // packets.PUBLISH, packets.PUBREL, or packets.CONNACK / packets.DISCONNECT marking a connection's start and end
	id       uint16
	dup      bool
	qos2     bool
	producer string
	seq      uint64
}

func (s *tracingSession) ConAckReceived(w io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	s.mark(packets.CONNACK)
	return s.State.ConAckReceived(w, cp, ca)
}

func (s *tracingSession) ConnectionLost(dp *packets.Disconnect) error {
	s.mark(packets.DISCONNECT)
	return s.State.ConnectionLost(dp)
}

func (s *tracingSession) mark(kind byte) {
	s.mu.Lock()
	s.events = append(s.events, traceEvent{at: time.Since(*s.start), kind: kind})
	s.mu.Unlock()
}

// unreleased lists, per connection, the QoS 2 PUBLISHes (by packet id)
// that got no PUBREL on that connection — and whether one came on a
// later connection.
func (s *tracingSession) unreleased(until time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	open := map[uint16]traceEvent{}
	conn := 0
	for _, ev := range s.events {
		if ev.at > until {
			break
		}
		switch ev.kind {
		case packets.CONNACK:
			conn++
			for id, p := range open {
				out = append(out, fmt.Sprintf("connection %d: id %d (%s#%d at %v) still awaiting PUBREL", conn, id, p.producer, p.seq, p.at.Round(time.Millisecond)))
			}
		case packets.PUBREL:
			delete(open, ev.id)
		case packets.PUBLISH:
			if ev.qos2 {
				open[ev.id] = ev
			}
		}
	}
	return out
}

func (s *tracingSession) PacketReceived(p *packets.ControlPacket, ch chan<- *packets.Publish) error {
	ev := traceEvent{at: time.Since(*s.start), kind: p.Type, id: p.PacketID()}
	switch c := p.Content.(type) {
	case *packets.Publish:
		if c.QoS == 0 {
			return s.State.PacketReceived(p, ch)
		}
		ev.dup, ev.qos2 = c.Duplicate, c.QoS == 2
		ev.producer, ev.seq, _ = Decode(c.Payload)
	case *packets.Pubrel:
	default:
		return s.State.PacketReceived(p, ch)
	}
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	return s.State.PacketReceived(p, ch)
}

// about returns the events that concern producer#seq: its PUBLISHes, and
// the other packets with the same packet identifiers shortly before.
func (s *tracingSession) about(producer string, seq uint64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for i, ev := range s.events {
		if ev.kind != packets.PUBLISH || ev.producer != producer || ev.seq != seq {
			continue
		}
		// The history of this packet identifier before it.
		var hist []string
		for j := i - 1; j >= 0 && len(hist) < 4; j-- {
			if e := s.events[j]; e.id == ev.id {
				hist = append(hist, e.String())
			}
		}
		out = append(out, fmt.Sprintf("%v; before it with id %d: %v", ev, ev.id, hist))
	}
	return out
}

// around returns the packets received within d of at.
func (s *tracingSession) around(at, d time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ev := range s.events {
		if ev.at >= at-d && ev.at <= at+d {
			out = append(out, ev.String())
		}
	}
	return out
}

func (ev traceEvent) String() string {
	switch ev.kind {
	case packets.PUBREL:
		return fmt.Sprintf("%v PUBREL id=%d", ev.at.Round(time.Millisecond), ev.id)
	case packets.CONNACK:
		return fmt.Sprintf("%v CONNECTED", ev.at.Round(time.Millisecond))
	case packets.DISCONNECT:
		return fmt.Sprintf("%v CONNECTION LOST", ev.at.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v PUBLISH id=%d dup=%v %s#%d", ev.at.Round(time.Millisecond), ev.id, ev.dup, ev.producer, ev.seq)
}

// soakSink is where one subscriber (or one whole group) records what it
// received: per producer, a bitset of sequence numbers.
type soakSink struct {
	name string
	mu   sync.Mutex
	got  []bitset
	dups [3]uint64 // per QoS of the delivery
	n    uint64
}

type soak struct {
	t          *testing.T
	p          *brokertest.Process
	dir        string
	pid        int
	addr       string
	http       string
	pubs       []*soakPub
	subs       []*soakSub
	sinks      []*soakSink
	reconns    atomic.Int64
	churnFails atomic.Int64
	start      time.Time // when the traffic began
}

func newSoak(t *testing.T, bin string) *soak {
	so := &soak{t: t, dir: t.TempDir(), start: time.Now()}
	cfg := filepath.Join(so.dir, "mote.yaml")
	yaml := fmt.Sprintf(`queues:
  - name: durable
    filter: soak/d/#
persistence:
  shrink_min_size: %d
  shrink_interval: 10s
`, soakShrinkMin)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(so.dir, "data")
	so.p = brokertest.Spawn(t, bin, data, "--config", cfg)
	so.addr = so.p.Addr(broker.ListenerMQTT)
	so.http = so.p.Addr(broker.ListenerHTTP)
	so.pid = findPID(t, data)

	// Sinks: one per session subscriber, one per group.
	for i := range soakSessions {
		so.sinks = append(so.sinks, &soakSink{name: fmt.Sprintf("session-%d", i), got: make([]bitset, soakPubs)})
	}
	sharedSink, durableSink := len(so.sinks), len(so.sinks)+1
	so.sinks = append(so.sinks, &soakSink{name: "shared-group", got: make([]bitset, soakPubs)}, &soakSink{name: "durable-queue", got: make([]bitset, soakPubs)})

	// Publishers: QoS 0,1,1,2 by index mod 4; destination by index mod 5:
	// 0-2 a session topic, 3 the shared group, 4 the durable queue.
	for i := range soakPubs {
		pb := &soakPub{idx: i, name: fmt.Sprintf("p%d", i), qos: [4]byte{0, 1, 1, 2}[i%4]}
		switch i % 5 {
		case 3:
			pb.topic = fmt.Sprintf("soak/s/%d", i)
			pb.sinks = []int{sharedSink}
		case 4:
			pb.topic = fmt.Sprintf("soak/d/%d", i)
			pb.sinks = []int{durableSink}
		default:
			k := i % soakTopics
			pb.topic = fmt.Sprintf("soak/t/%d", k)
			for j := range soakSessions {
				if j%soakTopics == k {
					pb.sinks = append(pb.sinks, j)
				}
			}
		}
		so.pubs = append(so.pubs, pb)
	}
	sub := func(id, filter string, qos byte, sink int) *soakSub {
		tr := &tracingSession{State: state.NewInMemory(), start: &so.start}
		return &soakSub{o: brokertest.Options{ID: id, SessionExpiry: 600, Session: tr}, filter: filter, qos: qos, sink: sink, trace: tr}
	}
	for j := range soakSessions {
		so.subs = append(so.subs, sub(fmt.Sprintf("soak-s%d", j), fmt.Sprintf("soak/t/%d", j%soakTopics), byte(1+j%2), j))
	}
	for j := range soakShared {
		so.subs = append(so.subs, sub(fmt.Sprintf("soak-g%d", j), "$share/g/soak/s/#", byte(1+j%2), sharedSink))
	}
	for j := range soakDurable {
		so.subs = append(so.subs, sub(fmt.Sprintf("soak-d%d", j), "$share/durable/soak/d/#", byte(1+j%2), durableSink))
	}
	for _, s := range so.subs {
		if err := so.connectSub(s); err != nil {
			t.Fatal(err)
		}
		s.cli.Sub(t, s.qos, s.filter)
	}
	for _, pb := range so.pubs {
		cli, err := brokertest.ConnectV5(context.Background(), so.addr, brokertest.Options{ID: "soak-" + pb.name, Clean: true})
		if err != nil {
			t.Fatal(err)
		}
		pb.cli = cli
	}
	t.Logf("soak: times below are since %s", so.start.UTC().Format("15:04:05.000"))
	t.Logf("soak: broker pid %d, %d clients (%d publishers, %d persistent subscribers, %d shared, %d durable-queue consumers)",
		so.pid, len(so.pubs)+len(so.subs), len(so.pubs), soakSessions, soakShared, soakDurable)
	return so
}

// findPID finds the broker child serving dataDir.
func findPID(t *testing.T, dataDir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("soak needs /proc: %v", err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(b), "\x00"), dataDir) {
			return pid
		}
	}
	t.Fatalf("no process serves %s", dataDir)
	return 0
}

// connectSub connects s (resuming its session) and starts its reader.
func (so *soak) connectSub(s *soakSub) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := brokertest.ConnectV5(ctx, so.addr, s.o)
	if err != nil {
		return fmt.Errorf("connect %s: %w", s.o.ID, err)
	}
	s.cli = cli
	s.stop = Read(func(m brokertest.Message) { so.deliver(s.sink, m.Payload, m.QoS) }, cli.Inbox)
	return nil
}

// deliver records a delivery to sink at qos (as received).
func (so *soak) deliver(sink int, payload []byte, qos byte) {
	producer, seq, err := Decode(payload)
	sk := so.sinks[sink]
	i, perr := strconv.Atoi(strings.TrimPrefix(producer, "p"))
	if err != nil || perr != nil || i < 0 || i >= len(so.pubs) {
		so.t.Errorf("soak: %s got a message it cannot decode", sk.name)
		return
	}
	sk.mu.Lock()
	defer sk.mu.Unlock()
	sk.n++
	if sk.got[i].add(seq) {
		sk.dups[min(qos, 2)]++
	}
}

// reconnectSub drops (or cleanly closes) s's connection and resumes its
// session on a new one.
func (so *soak) reconnectSub(s *soakSub, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	began := time.Since(so.start)
	defer func() {
		s.events = append(s.events, fmt.Sprintf("reconnect(graceful=%v) %v–%v", graceful, began.Round(time.Millisecond), time.Since(so.start).Round(time.Millisecond)))
	}()
	if graceful {
		s.cli.Close()
	} else {
		s.cli.Drop()
	}
	select {
	case <-s.cli.Done():
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: client did not shut down within 10s", s.o.ID)
	}
	s.stop()
	var err error
	for range 5 { // bounded: a takeover can race the broker noticing the drop
		if err = so.connectSub(s); err == nil {
			return nil
		}
		s.events = append(s.events, fmt.Sprintf("connect failed at %v: %v", time.Since(so.start).Round(time.Millisecond), err))
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// reconnectPub replaces a publisher's connection.
func (so *soak) reconnectPub(pb *soakPub, graceful bool) error {
	if pb.qos == 2 {
		pb.busy.Lock() // bounded: a publish times out after 10 s
		defer pb.busy.Unlock()
	}
	began := time.Since(so.start)
	defer func() {
		pb.mu.Lock()
		pb.events = append(pb.events, fmt.Sprintf("reconnect(graceful=%v) %v–%v", graceful, began.Round(time.Millisecond), time.Since(so.start).Round(time.Millisecond)))
		pb.mu.Unlock()
	}()
	pb.mu.Lock()
	old := pb.cli
	pb.mu.Unlock()
	if graceful {
		old.Close()
	} else {
		old.Drop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := brokertest.ConnectV5(ctx, so.addr, brokertest.Options{ID: "soak-" + pb.name, Clean: true})
	if err != nil {
		return fmt.Errorf("reconnect %s: %w", pb.name, err)
	}
	pb.mu.Lock()
	pb.cli = cli
	pb.mu.Unlock()
	return nil
}

// publish is one publisher's loop, paced at rate messages per second.
func (so *soak) publish(ctx context.Context, pb *soakPub, rate float64) {
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := uint64(0); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if pb.qos == 2 {
			pb.busy.Lock()
		}
		pb.mu.Lock()
		cli := pb.cli
		pb.sent++
		pb.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := cli.Pub(pctx, pb.topic, Payload(pb.name, seq), pb.qos, false)
		cancel()
		if pb.qos == 2 {
			pb.busy.Unlock()
		}
		if err == nil && (r == nil || r.ReasonCode < 0x80) && pb.qos > 0 {
			pb.mu.Lock()
			pb.acked.add(seq)
			for uint64(len(pb.ackedAt)) <= seq {
				pb.ackedAt = append(pb.ackedAt, 0)
			}
			pb.ackedAt[seq] = time.Since(so.start)
			pb.mu.Unlock()
		}
	}
}

// soakSampleT is one 10-second sample.
type soakSampleT struct {
	at          time.Duration
	rss         int64
	goroutines  int64
	store       int64
	keys        int64
	compactions int64
	clients     int64
}

func (so *soak) sample(start time.Time) (soakSampleT, error) {
	s := soakSampleT{at: time.Since(start)}
	var err error
	if s.rss, err = vmRSS(so.pid); err != nil {
		return s, err
	}
	m, err := scrape("http://" + so.http + "/metrics")
	if err != nil {
		return s, err
	}
	s.goroutines, s.keys = int64(m["go_goroutines"]), int64(m["mote_store_keys"])
	s.compactions, s.clients = int64(m["mote_store_compactions_total"]), int64(m["mote_clients_connected"])
	fi, err := os.Stat(filepath.Join(so.dir, "data", "mote.db"))
	if err != nil {
		return s, err
	}
	s.store = fi.Size()
	return s, nil
}

func (so *soak) run(dur time.Duration, rate float64) {
	t := so.t
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, pb := range so.pubs {
		wg.Go(func() { so.publish(ctx, pb, rate) })
	}
	// Churn: one client every 100 ms, publishers included.
	wg.Go(func() {
		tick := time.NewTicker(soakChurnEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			graceful := rand.IntN(2) == 0
			n := rand.IntN(len(so.pubs) + len(so.subs))
			var err error
			if n < len(so.pubs) {
				err = so.reconnectPub(so.pubs[n], graceful)
			} else {
				err = so.reconnectSub(so.subs[n-len(so.pubs)], graceful)
			}
			so.reconns.Add(1)
			if err != nil {
				so.churnFails.Add(1)
				t.Errorf("soak churn: %v", err)
				if so.churnFails.Load() > 10 {
					return
				}
			}
		}
	})

	start := so.start
	var samples []soakSampleT
	tick := time.NewTicker(soakSample)
	for time.Since(start) < dur && !t.Failed() {
		<-tick.C
		s, err := so.sample(start)
		if err != nil {
			t.Errorf("soak: sample: %v", err)
			break
		}
		samples = append(samples, s)
		t.Logf("soak t=%3.0fs rss=%6.1f MiB goroutines=%5d store=%6.1f MiB keys=%6d compactions=%d clients=%d reconnects=%d",
			s.at.Seconds(), mib(s.rss), s.goroutines, mib(s.store), s.keys, s.compactions, s.clients, so.reconns.Load())
	}
	tick.Stop()
	cancel()
	wg.Wait()
	so.drain()
	so.judge(samples, dur)
	for _, pb := range so.pubs {
		pb.cli.Close()
	}
	for _, s := range so.subs {
		s.cli.Close()
	}
	if err := so.p.Stop(30 * time.Second); err != nil {
		t.Errorf("soak: stop: %v", err)
	}
}

// missing counts acknowledged QoS ≥ 1 messages a sink does not have.
func (so *soak) missing() (total int, per map[string]int) {
	per = map[string]int{}
	for _, pb := range so.pubs {
		if pb.qos == 0 {
			continue
		}
		pb.mu.Lock()
		acked := pb.acked.clone()
		pb.mu.Unlock()
		for _, si := range pb.sinks {
			sk := so.sinks[si]
			sk.mu.Lock()
			n := sk.got[pb.idx].missingFrom(&acked)
			sk.mu.Unlock()
			if n > 0 {
				per[fmt.Sprintf("%s<-%s(qos%d)", sk.name, pb.name, pb.qos)] += n
				total += n
			}
		}
	}
	return total, per
}

// drain waits until every acknowledged message has arrived (bounded).
func (so *soak) drain() {
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, per := so.missing()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			so.t.Errorf("soak: %d acknowledged QoS 1/2 messages never arrived: %v", n, per)
			so.explain()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// explain logs, for each missing message, when it was acknowledged and
// what its subscriber went through, and the broker's log about that client.
func (so *soak) explain() {
	t := so.t
	shown := 0
	for _, pb := range so.pubs {
		if pb.qos == 0 {
			continue
		}
		pb.mu.Lock()
		acked, at := pb.acked.clone(), slices.Clone(pb.ackedAt)
		pb.mu.Unlock()
		for _, si := range pb.sinks {
			sk := so.sinks[si]
			sk.mu.Lock()
			got := sk.got[pb.idx].clone()
			sk.mu.Unlock()
			for w, word := range acked.words {
				var have uint64
				if w < len(got.words) {
					have = got.words[w]
				}
				for miss := word &^ have; miss != 0 && shown < 10; miss &= miss - 1 {
					seq := uint64(w*64 + bits.TrailingZeros64(miss))
					shown++
					t.Logf("soak: missing %s#%d (qos %d) at %s, acknowledged at %v; publisher events: %v", pb.name, seq, pb.qos, sk.name, at[seq].Round(time.Millisecond), pb.eventList())
					for _, s := range so.subs {
						if s.sink == si {
							t.Logf("soak:   %s received it at the session layer: %v", s.o.ID, s.trace.about(pb.name, seq))
							t.Logf("soak:   %s received within 300ms of the acknowledgement: %v", s.o.ID, s.trace.around(at[seq], 300*time.Millisecond))
							t.Logf("soak:   %s QoS 2 deliveries left awaiting PUBREL at a reconnect before then: %v", s.o.ID, s.trace.unreleased(at[seq]))
							s.mu.Lock()
							t.Logf("soak:   %s (sub qos %d) events: %v", s.o.ID, s.qos, s.events)
							s.mu.Unlock()
							for _, line := range strings.Split(so.p.Log(), "\n") {
								if strings.Contains(line, `"`+s.o.ID+`"`) {
									t.Logf("soak:   broker: %s", line)
								}
							}
						}
					}
				}
			}
		}
	}
}

// judge applies the pass criteria to the samples and the deliveries.
func (so *soak) judge(samples []soakSampleT, dur time.Duration) {
	t := so.t
	var sent, acked [3]uint64
	for _, pb := range so.pubs {
		pb.mu.Lock()
		sent[pb.qos] += pb.sent
		acked[pb.qos] += pb.acked.n
		pb.mu.Unlock()
	}
	var dups [3]uint64
	var recv uint64
	q2 := map[string]uint64{} // QoS 2 duplicates by kind of sink
	for _, sk := range so.sinks {
		sk.mu.Lock()
		for q := range 3 {
			dups[q] += sk.dups[q]
		}
		if sk.dups[2] > 0 {
			q2[strings.TrimRight(sk.name, "-0123456789")] += sk.dups[2]
		}
		recv += sk.n
		sk.mu.Unlock()
	}
	if len(q2) > 0 {
		t.Logf("soak: QoS 2 deliveries seen twice by the application, by kind: %v", q2)
	}
	t.Logf("soak: published qos0/1/2 = %d/%d/%d (acknowledged qos1/2 = %d/%d), %d deliveries, duplicated deliveries at qos0/1/2 = %d/%d/%d, %d reconnects",
		sent[0], sent[1], sent[2], acked[1], acked[2], recv, dups[0], dups[1], dups[2], so.reconns.Load())

	warm := max(60*time.Second, dur/3)
	var after []soakSampleT
	for _, s := range samples {
		if s.at >= warm {
			after = append(after, s)
		}
	}
	if len(after) < 4 {
		t.Logf("soak: only %d samples after the %v warm-up: too few to judge growth (run longer)", len(after), warm)
		return
	}
	xs := make([]float64, len(after))
	rss := make([]float64, len(after))
	gor := make([]float64, len(after))
	for i, s := range after {
		xs[i] = s.at.Minutes()
		rss[i] = float64(s.rss) / 1e6
		gor[i] = float64(s.goroutines)
	}
	rssSlope := theilSen(xs, rss) // robust against single GC-phase outliers
	gorSlope := slope(xs, gor)
	half := len(after) / 2
	g1, g2 := median(gor[:half]), median(gor[half:])
	var m1, m2 int64
	for i, s := range after {
		if i < half {
			m1 = max(m1, s.store)
		} else {
			m2 = max(m2, s.store)
		}
	}
	last := samples[len(samples)-1]
	t.Logf("soak: after the %v warm-up: RSS slope %.2f MB/min (Theil–Sen; limit 1), goroutines median %.0f → %.0f (slope %.1f/min), store max %.1f → %.1f MiB, %d compactions",
		warm, rssSlope, g1, g2, gorSlope, mib(m1), mib(m2), last.compactions)
	switch span := after[len(after)-1].at - after[0].at; {
	case span < 2*time.Minute:
		t.Logf("soak: RSS slope not judged: %v of samples after the warm-up is too short to tell 1 MB/min from GC noise (run 5m)", span)
	case rssSlope > 1:
		t.Errorf("soak: RSS grows %.2f MB/min after the warm-up (limit 1 MB/min)", rssSlope)
	}
	if g2 > g1*1.05+20 {
		t.Errorf("soak: goroutines grow: median %.0f in the first half after the warm-up, %.0f in the second", g1, g2)
	}
	if m2 > 2*m1+soakShrinkMin {
		t.Errorf("soak: the store file keeps growing: max %.1f MiB, then %.1f MiB", mib(m1), mib(m2))
	}
	if last.store > 2*soakShrinkMin && last.compactions == 0 {
		t.Errorf("soak: store file %.1f MiB and never compacted (shrink_min_size %d MiB)", mib(last.store), soakShrinkMin>>20)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// theilSen is the median of the pairwise slopes of ys over xs.
func theilSen(xs, ys []float64) float64 {
	var ss []float64
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if xs[j] != xs[i] {
				ss = append(ss, (ys[j]-ys[i])/(xs[j]-xs[i]))
			}
		}
	}
	return median(ss)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// vmRSS reads a process's resident set size from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 2 {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// scrape reads a Prometheus text page into name → value (unlabelled
// series only).
func scrape(url string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// bitset is a growable set of sequence numbers.
type bitset struct {
	words []uint64
	n     uint64
}

// add inserts seq and reports whether it was there already.
func (b *bitset) add(seq uint64) bool {
	w := int(seq / 64)
	if w >= len(b.words) {
		b.words = append(b.words, make([]uint64, w-len(b.words)+1+len(b.words)/2)...)
	}
	bit := uint64(1) << (seq % 64)
	if b.words[w]&bit != 0 {
		return true
	}
	b.words[w] |= bit
	b.n++
	return false
}

func (b *bitset) clone() bitset { return bitset{words: slices.Clone(b.words), n: b.n} }

// missingFrom counts members of want not in b.
func (b *bitset) missingFrom(want *bitset) int {
	n := 0
	for i, w := range want.words {
		var have uint64
		if i < len(b.words) {
			have = b.words[i]
		}
		n += bits.OnesCount64(w &^ have)
	}
	return n
}
