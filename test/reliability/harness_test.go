package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

// Two builds of cmd/mote: raceBin (-race, like test/e2e) runs the hostile
// input tables, where the race detector is worth its cost; plainBin (no
// -race) runs the load tests, whose figures (memory per connection,
// latency under a flood) must describe the binary operators run.
var raceBin, plainBin string

// soak is set by MOTE_SOAK=1 (`make soak`): the long variants.
var soak = os.Getenv("MOTE_SOAK") == "1"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mote-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if raceBin, err = brokertest.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if plainBin, err = buildPlain(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// buildPlain compiles cmd/mote without the race detector into dir.
func buildPlain(dir string) (string, error) {
	out := filepath.Join(dir, "mote-plain")
	root, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		root = parent
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/mote")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
}

// within is the bound every refusal must meet: from the last byte of the
// offending input to the close (or the reply) arriving at the client.
const within = time.Second

// mote is a broker running as a child process.
type mote struct {
	*brokertest.Process
	dir   string // data directory (unique: used to find the PID)
	addr  string // MQTT over TCP
	ws    string // MQTT over WebSocket
	http  string
	pprof string // net/http/pprof
	// admin credentials for /metrics when users are configured
	adminUser, adminPass string
	h                    *health
}

// start runs bin with the YAML configuration cfg (may be empty) and
// connects a healthy publisher/subscriber pair to it.
func start(t *testing.T, bin, cfg string) *mote {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	var extra []string
	if cfg != "" {
		path := filepath.Join(dir, "mote.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, "--config", path)
	}
	// The profiler's listener lets a test force a garbage collection
	// (/debug/pprof/heap?gc=1) before it reads the live heap.
	extra = append(extra, "--pprof", "127.0.0.1:0")
	p := brokertest.Spawn(t, bin, data, extra...)
	m := &mote{Process: p, dir: data, addr: p.Addr(broker.ListenerMQTT), ws: p.Addr(broker.ListenerWS), http: p.Addr(broker.ListenerHTTP)}
	if sm := pprofAddr.FindStringSubmatch(p.Log()); sm != nil {
		m.pprof = sm[1]
	}
	if m.addr == "" || m.http == "" || m.pprof == "" {
		t.Fatalf("listener addresses not logged:\n%s", p.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log (last 8 KiB):\n%s", tail(p.Log(), 8<<10))
		}
	})
	return m
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// alive fails the test if the broker process has exited (a panic, a
// fatal error), quoting the end of its log.
func (m *mote) alive(t *testing.T) {
	t.Helper()
	select {
	case <-m.Done():
		t.Fatalf("the broker exited:\n%s", tail(m.Log(), 16<<10))
	default:
	}
	if strings.Contains(m.Log(), "panic") {
		t.Fatalf("the broker logged a panic:\n%s", tail(m.Log(), 16<<10))
	}
}

// healthy checks the broker is alive and a well-behaved client still
// round-trips a QoS 1 message, within a second.
func (m *mote) healthy(t *testing.T) {
	t.Helper()
	m.alive(t)
	if m.h == nil {
		m.h = newHealth(t, m.addr, "health", brokertest.Options{})
	}
	m.h.roundTrip(t)
}

var pprofAddr = regexp.MustCompile(`"msg":"profiler listening","address":"([^"]+)"`)

// liveHeap forces a garbage collection in the broker and returns its live
// heap (go_memstats_heap_alloc_bytes right after it).
func (m *mote) liveHeap(t *testing.T) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+m.pprof+"/debug/pprof/heap?gc=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("forcing a GC: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return int64(m.metric(t, "go_memstats_heap_alloc_bytes"))
}

// pid finds the broker's process id: the process whose command line holds
// its (unique) data directory.
func (m *mote) pid(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		if slices.Contains(args, "serve") && slices.Contains(args, m.dir) {
			return pid
		}
	}
	t.Fatalf("no process serving %s", m.dir)
	return 0
}

// procStatus reads a kB field (VmRSS, VmHWM, Threads...) of
// /proc/PID/status, in bytes (Threads: the count).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			fs := strings.Fields(v)
			n, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if len(fs) > 1 && fs[1] == "kB" {
				n <<= 10
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// metrics scrapes /metrics: "name{labels}" → value, plus "name" → the sum
// over its labels.
func (m *mote) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+m.http+"/metrics", nil)
	if m.adminUser != "" {
		req.SetBasicAuth(m.adminUser, m.adminPass)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := line[:i]
		out[key] = v
		if j := strings.IndexByte(key, '{'); j >= 0 {
			out[key[:j]] += v
		}
	}
	return out
}

// metric is one value of /metrics.
func (m *mote) metric(t *testing.T, key string) float64 {
	t.Helper()
	return m.metrics(t)[key]
}

// waitFor polls cond every 20ms until it holds or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// --- raw packets ----------------------------------------------------------

var (
	pkt = brokertest.Pkt
	str = brokertest.Str
	u16 = brokertest.U16
	vbi = brokertest.VBI
)

func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// props is a v5 property list: its length, then the properties.
func props(ps ...[]byte) []byte {
	body := bytes.Join(ps, nil)
	return append(vbi(len(body)), body...)
}

// prop is one property: identifier, then value bytes.
func prop(id byte, v ...[]byte) []byte { return append([]byte{id}, bytes.Join(v, nil)...) }

// userProp is a User Property (0x26).
func userProp(k, v string) []byte { return prop(0x26, str(k), str(v)) }

// conn is a raw CONNECT's fields.
type conn struct {
	version     byte // 4 or 5 (3: MQIsdp)
	id          string
	keepalive   uint16
	persistent  bool // clean start / clean session off
	props       []byte
	will        bool
	willProps   []byte
	willTopic   string
	willPayload string
	willQoS     byte
	user, pass  *string
}

func (c conn) bytes() []byte {
	name := "MQTT"
	if c.version == 3 {
		name = "MQIsdp"
	}
	flags := byte(0x02)
	if c.persistent {
		flags = 0
	}
	var payload [][]byte
	payload = append(payload, str(c.id))
	if c.will {
		flags |= 0x04 | c.willQoS<<3
		if c.version == 5 {
			wp := c.willProps
			if wp == nil {
				wp = props()
			}
			payload = append(payload, wp)
		}
		payload = append(payload, str(c.willTopic), str(c.willPayload))
	}
	if c.user != nil {
		flags |= 0x80
		payload = append(payload, str(*c.user))
	}
	if c.pass != nil {
		flags |= 0x40
		payload = append(payload, str(*c.pass))
	}
	ka := c.keepalive
	if ka == 0 {
		ka = 30
	}
	vh := append(str(name), c.version, flags)
	vh = append(vh, u16(ka)...)
	if c.version == 5 {
		p := c.props
		if p == nil {
			p = props()
		}
		vh = append(vh, p...)
	}
	return pkt(0x10, append([][]byte{vh}, payload...)...)
}

func strp(s string) *string { return &s }

// publish5 is a v5 PUBLISH with the given properties (already a property
// list, with its length).
func publish5(topic string, qos byte, id uint16, ps []byte, payload string) []byte {
	vh := str(topic)
	if qos > 0 {
		vh = append(vh, u16(id)...)
	}
	return pkt(0x30|qos<<1, vh, ps, []byte(payload))
}

// subscribe5 is a v5 SUBSCRIBE of filters with options byte opts.
func subscribe5(id uint16, ps []byte, opts byte, filters ...string) []byte {
	body := [][]byte{u16(id), ps}
	for _, f := range filters {
		body = append(body, str(f), []byte{opts})
	}
	return pkt(0x82, body...)
}

// dialRaw opens a raw TCP connection; with version it first connects
// (CONNACK 0 expected) as id.
func dialRaw(t *testing.T, addr string, version byte, id string) *brokertest.Raw {
	t.Helper()
	r := brokertest.DialRaw(t, addr, 0)
	if version != 0 {
		r.Connect(t, version, id)
	}
	return r
}

// Packet types as read back.
const (
	tConnack    = 2
	tPublish    = 3
	tPuback     = 4
	tPubrec     = 5
	tPubrel     = 6
	tPubcomp    = 7
	tSuback     = 9
	tUnsuback   = 11
	tPingresp   = 13
	tDisconnect = 14
)

// closedWith waits (up to within) for the broker to close r and checks what
// it sent before: with codes nil nothing at all (MQTT 3.1.1, or before
// CONNECT); otherwise exactly one DISCONNECT with a reason among codes.
func closedWith(t *testing.T, r *brokertest.Raw, codes ...byte) {
	t.Helper()
	closedAfter(t, r, nil, codes...)
}

// closedAfter is closedWith where the broker first sends the packets of
// the types in before (e.g. a PUBACK for a packet in the same write).
func closedAfter(t *testing.T, r *brokertest.Raw, before []byte, codes ...byte) {
	t.Helper()
	got, err := r.WaitClosed(within)
	if err != nil {
		t.Fatalf("not closed within %v: %v", within, err)
	}
	n := len(before)
	if len(got) < n {
		t.Fatalf("broker sent %v before closing, want packet types %v first", got, before)
	}
	for i, typ := range before {
		if got[i].Type != typ {
			t.Fatalf("broker sent %v before closing, want packet types %v first", got, before)
		}
	}
	got = got[n:]
	if len(codes) == 0 {
		if len(got) != 0 {
			t.Fatalf("broker sent %v before closing, want nothing", got)
		}
		return
	}
	if len(got) != 1 || got[0].Type != tDisconnect {
		t.Fatalf("broker sent %v before closing, want one DISCONNECT with a reason in % x", got, codes)
	}
	if rc := got[0].ReasonCode(); !slices.Contains(codes, rc) {
		t.Fatalf("DISCONNECT reason 0x%02x, want one of % x", rc, codes)
	}
}

// connackThenClosed expects a CONNACK with code (v5 reason or 3.1.1 return
// code) and then the close, within the bound.
func connackThenClosed(t *testing.T, r *brokertest.Raw, code byte) {
	t.Helper()
	got, err := r.WaitClosed(within)
	if err != nil {
		t.Fatalf("not closed within %v: %v", within, err)
	}
	if len(got) != 1 || got[0].Type != tConnack {
		t.Fatalf("broker sent %v, want one CONNACK 0x%02x then the close", got, code)
	}
	if rc := got[0].ReasonCode(); rc != code {
		t.Fatalf("CONNACK 0x%02x, want 0x%02x", rc, code)
	}
}

// stillOpen checks r is still connected: a PINGREQ gets its PINGRESP
// (skipping other packets the broker may send first).
func stillOpen(t *testing.T, r *brokertest.Raw) {
	t.Helper()
	r.MustSend(t, []byte{0xC0, 0})
	deadline := time.Now().Add(within)
	for {
		p, err := r.ReadPacket(time.Until(deadline))
		if err != nil {
			t.Fatalf("connection not usable after the packet: %v", err)
		}
		if p.Type == tPingresp {
			return
		}
		if p.Type == tDisconnect {
			t.Fatalf("broker disconnected: %v", p)
		}
	}
}

// next reads the next packet within the bound, failing the test unless
// it has type typ.
func next(t *testing.T, r *brokertest.Raw, typ byte) brokertest.RawPacket {
	t.Helper()
	return r.Expect(t, typ, within)
}

// ackReason is the reason code of a v5 PUBACK/PUBREC/PUBREL/PUBCOMP (0
// when absent).
func ackReason(p brokertest.RawPacket) byte {
	if len(p.Body) >= 3 {
		return p.Body[2]
	}
	return 0
}

// subackReasons are a SUBACK's reason codes (v5: after the properties).
func subackReasons(t *testing.T, p brokertest.RawPacket, version byte) []byte {
	t.Helper()
	b := p.Body[2:]
	if version == 5 {
		n, size := 0, 0
		for i, mult := 0, 1; i < 4 && i < len(b); i++ {
			n += int(b[i]&0x7F) * mult
			mult *= 128
			size++
			if b[i]&0x80 == 0 {
				break
			}
		}
		b = b[size+n:]
	}
	return b
}

// dialTimeout is net.DialTimeout with the test's bound.
func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
