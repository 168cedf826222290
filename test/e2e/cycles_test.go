package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// Crash cycles: the broker runs as a child process and is SIGKILLed at a
// random moment of mixed QoS 1 and QoS 2 traffic on three durable paths,
// restarted on the same data directory, and checked after every restart:
//
//	session-online   a persistent MQTT 5 session (clean start false,
//	                 session expiry 1 h) connected during the traffic
//	session-offline  a persistent session that is offline during the
//	                 traffic and connects only to collect, after the restart
//	queue            a declared workload queue ($share/work/cyc/w/#) with two
//	                 persistent consumers
//	webhook          an HTTP bridge's durable outbox to an httptest server
//
// Each path has one QoS 1 and one QoS 2 publisher; every message carries
// (producer, seq). After each restart the test waits until every
// acknowledged message has arrived on every path (lost = 0), lets late
// duplicates trail in, and logs ok/lost/recovered/duplicated/unexpected per
// path and QoS.
//
// Bounds asserted per kill (the in-flight windows):
//
//   - QoS 2 to a persistent session: never duplicated (exactly once; the
//     subscriber keeps its paho session state across connections, as an
//     application must for exactly once).
//   - QoS 1 to a session: at most cyclesRecvMax per subscriber (its Receive
//     Maximum: deliveries unacknowledged at the kill), plus cyclesAckSlack.
//   - queue: at most 2 × cyclesRecvMax (two consumers' windows) plus
//     cyclesAckSlack, for QoS 1 and QoS 2 alike: README "Workload queues"
//     says queue deliveries are at least once across a crash, QoS 2
//     included, so exactly once is asserted for sessions only.
//   - webhook: at most concurrency × batch_size requests' messages that were
//     sent but whose outbox delete was not yet on disk, plus cyclesAckSlack.
//
// cyclesAckSlack covers acknowledgements that the broker had processed but
// whose store delete had not reached the disk when it died (they are in no
// window any more: the window slot is free once the ack is read).
const (
	cyclesRecvMax   = 32
	cyclesHookConc  = 2
	cyclesHookBatch = 16
	cyclesAckSlack  = 64
	cyclesInflight  = 8 // concurrent publishes per publisher
)

func TestCrashCycles(t *testing.T) {
	cycles := 20
	if os.Getenv("MOTE_SOAK") == "1" {
		cycles = 100
	}
	start := time.Now()
	cy := newCycles(t)
	for i := range cycles {
		cy.cycle(i+1, cycles)
		if t.Failed() {
			break
		}
	}
	cy.finish()
	t.Logf("%d kill cycles in %v", cycles, time.Since(start).Round(time.Millisecond))
}

// cyclePaths are the checkers' names: path/qosN.
var cyclePaths = []string{"session-online", "session-offline", "queue", "webhook"}

// cycles holds the state that outlives one broker process.
type cycles struct {
	t        *testing.T
	dir      string
	args     []string
	p        *brokertest.Process
	checkers map[string]*Checker // "path/qosN"
	prevDup  map[string]int
	sink     *httptest.Server
	seqs     map[string]*atomic.Uint64 // per producer, across cycles

	online, offline *cycleSub
	workers         []*cycleSub
	sinkHits        atomic.Int64 // webhook requests answered
}

// cycleSub is a persistent MQTT 5 subscriber that keeps its session state
// across connections (and so across broker restarts).
type cycleSub struct {
	o      brokertest.Options
	filter string
	path   string
	cli    *brokertest.V5
	stop   func()
}

// producers: topic level → destination path(s).
var cycleProducers = []struct {
	name  string // producer name; the last character is its QoS
	topic string
	qos   byte
	paths []string
}{
	{"s1", "cyc/s/q1", 1, []string{"session-online", "session-offline"}},
	{"s2", "cyc/s/q2", 2, []string{"session-online", "session-offline"}},
	{"w1", "cyc/w/q1", 1, []string{"queue"}},
	{"w2", "cyc/w/q2", 2, []string{"queue"}},
	{"h1", "cyc/h/q1", 1, []string{"webhook"}},
	{"h2", "cyc/h/q2", 2, []string{"webhook"}},
}

func newCycles(t *testing.T) *cycles {
	cy := &cycles{t: t, dir: t.TempDir(), checkers: map[string]*Checker{}, prevDup: map[string]int{}, seqs: map[string]*atomic.Uint64{}}
	for _, path := range cyclePaths {
		for _, q := range []string{"qos1", "qos2"} {
			cy.checkers[path+"/"+q] = NewChecker()
		}
	}
	for _, pr := range cycleProducers {
		cy.seqs[pr.name] = &atomic.Uint64{}
	}
	cy.sink = httptest.NewServer(http.HandlerFunc(cy.hook))
	t.Cleanup(cy.sink.Close)

	cfg := filepath.Join(cy.dir, "mote.yaml")
	yaml := fmt.Sprintf(`queues:
  - name: work
    filter: cyc/w/#
    max_deliveries: 255
bridges:
  - name: hook
    type: http
    filters: ["cyc/h/#"]
    url: "%s/in"
    body: json
    concurrency: %d
    batch_size: %d
    batch_wait: 2ms
    max_attempts: 100000
    backoff_min: 10ms
    backoff_max: 100ms
    breaker_cooldown: 100ms
`, cy.sink.URL, cyclesHookConc, cyclesHookBatch)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cy.args = []string{"--config", cfg}

	cy.p = brokertest.Spawn(t, moteBin, filepath.Join(cy.dir, "data"), cy.args...)
	sub := func(id, filter, path string) *cycleSub {
		return &cycleSub{
			o:      brokertest.Options{ID: id, SessionExpiry: 3600, ReceiveMaximum: cyclesRecvMax, Session: state.NewInMemory()},
			filter: filter, path: path,
		}
	}
	cy.online = sub("cyc-online", "cyc/s/#", "session-online")
	cy.offline = sub("cyc-offline", "cyc/s/#", "session-offline")
	cy.workers = []*cycleSub{sub("cyc-worker-0", "$share/work/cyc/w/#", "queue"), sub("cyc-worker-1", "$share/work/cyc/w/#", "queue")}
	for _, s := range append([]*cycleSub{cy.online, cy.offline}, cy.workers...) {
		cy.connect(s)
		s.cli.Sub(t, 2, s.filter)
	}
	cy.disconnect(cy.offline) // offline from now on, except to collect
	return cy
}

// hook is the webhook target: JSON envelopes, one or a batch.
func (cy *cycles) hook(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var envs []map[string]any
	if strings.HasPrefix(strings.TrimSpace(string(b)), "[") {
		err = json.Unmarshal(b, &envs)
	} else {
		var one map[string]any
		err = json.Unmarshal(b, &one)
		envs = append(envs, one)
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, env := range envs {
		s, _ := env["payload"].(string)
		pl := []byte(s)
		if env["payload_encoding"] == "base64" {
			pl = decodeB64(s)
		}
		cy.deliver("webhook", pl)
	}
	cy.sinkHits.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// deliver records a delivery on path, in the checker of the message's QoS.
func (cy *cycles) deliver(path string, payload []byte) {
	q := "qos1"
	if producer, _, err := Decode(payload); err == nil && strings.HasSuffix(producer, "2") {
		q = "qos2"
	}
	cy.checkers[path+"/"+q].Delivered(payload)
}

// connect connects s to the current broker and starts reading its inbox.
func (cy *cycles) connect(s *cycleSub) {
	t := cy.t
	t.Helper()
	s.cli = brokertest.MustV5(t, cy.p.Addr(broker.ListenerMQTT), s.o)
	s.stop = Read(func(m brokertest.Message) { cy.deliver(s.path, m.Payload) }, s.cli.Inbox)
}

// disconnect closes s's connection (DISCONNECT; the session stays) and
// stops its reader once the client has shut down.
func (cy *cycles) disconnect(s *cycleSub) {
	s.cli.Close()
	cy.waitDown(s)
}

// waitDown waits (bounded) for s's client to shut down, so that its
// session state is not used by two clients at once, then stops the reader
// (which first takes what arrived).
func (cy *cycles) waitDown(s *cycleSub) {
	select {
	case <-s.cli.Done():
	case <-time.After(10 * time.Second):
		cy.t.Fatalf("client %s did not shut down within 10s", s.o.ID)
	}
	s.stop()
}

// cycle runs traffic, SIGKILLs the broker at a random moment, restarts it
// and checks every path.
func (cy *cycles) cycle(n, of int) {
	t := cy.t
	addr := cy.p.Addr(broker.ListenerMQTT)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var acked atomic.Int64
	for _, pr := range cycleProducers {
		pub, err := brokertest.ConnectV5(ctx, addr, brokertest.Options{ID: "cyc-pub-" + pr.name, Clean: true})
		if err != nil {
			t.Fatalf("cycle %d: publisher %s: %v", n, pr.name, err)
		}
		next := cy.seqs[pr.name]
		for range cyclesInflight {
			wg.Go(func() {
				for ctx.Err() == nil {
					seq := next.Add(1) - 1
					pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
					r, err := pub.Pub(pctx, pr.topic, Payload(pr.name, seq), pr.qos, false)
					pcancel()
					ok := err == nil && (r == nil || r.ReasonCode < 0x80)
					for _, path := range pr.paths {
						cy.checkers[fmt.Sprintf("%s/qos%d", path, pr.qos)].Sent(pr.name, seq, ok)
					}
					if !ok {
						if err == nil {
							t.Errorf("cycle %d: %s#%d refused: 0x%02x", n, pr.name, seq, r.ReasonCode)
						}
						return
					}
					acked.Add(1)
				}
			})
		}
		defer pub.Drop()
	}
	// Kill at a random moment of the traffic.
	killAfter := 200*time.Millisecond + rand.N(1300*time.Millisecond)
	time.Sleep(killAfter)
	cy.p.Kill()
	killedAt := time.Now()
	cancel() // publishes still waiting count as not acknowledged
	wg.Wait()

	// The connected subscribers see the connection drop.
	for _, s := range append([]*cycleSub{cy.online}, cy.workers...) {
		cy.waitDown(s)
	}

	restart := time.Now()
	cy.p = brokertest.Spawn(t, moteBin, filepath.Join(cy.dir, "data"), cy.args...)
	ready := time.Since(restart)
	for _, s := range append([]*cycleSub{cy.online, cy.offline}, cy.workers...) {
		cy.connect(s)
		if !s.cli.Connack.SessionPresent {
			t.Errorf("cycle %d: %s: session not present after the restart", n, s.o.ID)
		}
	}

	// Wait until every acknowledged message arrived everywhere.
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, c := range cy.checkers {
			missing += c.Report().Lost
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cycle %d: %d acknowledged messages still missing 60s after the restart", n, missing)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // late duplicates trail in
	cy.disconnect(cy.offline)

	var size int64
	if fi, err := os.Stat(filepath.Join(cy.dir, "data", "mote.db")); err == nil {
		size = fi.Size()
	}
	t.Logf("cycle %d/%d: killed after %v and %d acknowledged publishes; restart ready in %v (store %d KiB); all checked %v after the kill",
		n, of, killAfter, acked.Load(), ready.Round(time.Millisecond), size>>10, time.Since(killedAt).Round(time.Millisecond))
	cy.check(n)
}

// check logs and asserts every checker's verdict after cycle n.
func (cy *cycles) check(n int) {
	t := cy.t
	names := make([]string, 0, len(cy.checkers))
	for name := range cy.checkers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		r := cy.checkers[name].Report()
		dup := r.Duplicated - cy.prevDup[name]
		cy.prevDup[name] = r.Duplicated
		t.Logf("  %-22s %v (+%d duplicates this cycle)", name, r, dup)
		if r.Lost != 0 || r.Unexpected != 0 {
			t.Errorf("cycle %d: %s: lost or unexpected messages: %v", n, name, r)
		}
		bound := cyclesRecvMax + cyclesAckSlack
		switch {
		case name == "session-online/qos2" || name == "session-offline/qos2":
			bound = 0
		case strings.HasPrefix(name, "queue/"):
			bound = 2*cyclesRecvMax + cyclesAckSlack
		case strings.HasPrefix(name, "webhook/"):
			bound = cyclesHookConc*cyclesHookBatch + cyclesAckSlack
		}
		if dup > bound {
			t.Errorf("cycle %d: %s: %d duplicates after one kill exceed the in-flight bound %d", n, name, dup, bound)
		}
	}
}

// finish disconnects the subscribers and stops the broker.
func (cy *cycles) finish() {
	for _, s := range append([]*cycleSub{cy.online}, cy.workers...) {
		cy.disconnect(s)
	}
	if err := cy.p.Stop(20 * time.Second); err != nil {
		cy.t.Errorf("stop: %v", err)
	}
	cy.t.Logf("webhook target answered %d requests", cy.sinkHits.Load())
}
