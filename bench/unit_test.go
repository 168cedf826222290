package bench

import (
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100_000)
	for i := range vals {
		// Log-uniform from 1µs to 1s, like latencies.
		vals[i] = int64(math.Exp(r.Float64()*math.Log(1e6)) * 1e3)
		h.record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99, 0.999, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64 {
			t.Errorf("q%.3f = %d, exact %d: want within +1/64", q, got, exact)
		}
	}
	l := h.latency()
	if l.Count != uint64(len(vals)) || l.Min != time.Duration(vals[0]) || l.Max != time.Duration(vals[len(vals)-1]) {
		t.Errorf("latency %+v", l)
	}
	if !(l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("not ordered: %+v", l)
	}
}

func TestHistogramEdges(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1e9, math.MaxInt64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		if up := histUpper(i); up < v || (i > 0 && histUpper(i-1) >= v) {
			t.Errorf("value %d in bucket %d with upper %d (previous upper %d)", v, i, up, histUpper(i-1))
		}
	}
	var a, b, empty histogram
	a.record(5)
	b.record(-3) // clamped to 0
	b.record(1000)
	a.merge(&b)
	a.merge(&empty)
	if l := a.latency(); l.Count != 3 || l.Min != 0 || l.Max != 1000 || l.P50 != 5 {
		t.Errorf("merged %+v", l)
	}
	if l := empty.latency(); l != (Latency{}) {
		t.Errorf("empty %+v", l)
	}
}

func TestSeqSet(t *testing.T) {
	var sent, got seqSet
	for i := range uint64(1000) {
		sent.add(i)
		if i%10 != 3 {
			got.add(i)
		}
	}
	if !got.add(5) || got.add(5000) {
		t.Error("add: wrong duplicate report")
	}
	if got.has(3) || !got.has(5000) || got.has(1<<40) {
		t.Error("has: wrong membership")
	}
	if n := got.missingFrom(&sent); n != 100 {
		t.Errorf("missing %d, want 100", n)
	}
	var empty seqSet
	if n := empty.missingFrom(&sent); n != 1000 || sent.len() != 1000 {
		t.Errorf("missing %d of %d", n, sent.len())
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(uint32(1), uint32(2), uint64(3), int64(4), 0)
	f.Add(^uint32(0), ^uint32(0), ^uint64(0), int64(-1), 40)
	f.Fuzz(func(t *testing.T, run, producer uint32, seq uint64, sent int64, extra int) {
		extra = max(0, min(extra, 1024))
		in := header{run: run, producer: producer, seq: seq, sent: sent}
		b := make([]byte, HeaderSize+extra)
		in.put(b)
		out, err := parseHeader(b)
		if err != nil || out != in {
			t.Fatalf("round trip: %+v → %+v, %v", in, out, err)
		}
		if _, err := parseHeader(b[:HeaderSize-1]); err == nil {
			t.Fatal("short payload accepted")
		}
	})
}

func TestParseVmRSS(t *testing.T) {
	const status = "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t   10168 kB\nThreads:\t1\n"
	if n, err := parseVmRSS(strings.NewReader(status), "status"); err != nil || n != 10168<<10 {
		t.Errorf("parseVmRSS = %d, %v", n, err)
	}
	if _, err := parseVmRSS(strings.NewReader("Name:\tkthreadd\n"), "status"); err == nil {
		t.Error("no VmRSS line accepted")
	}
	if _, err := readRSS(-1); err == nil {
		t.Error("readRSS(-1) succeeded")
	}
}

func TestConfigDefaultsValid(t *testing.T) {
	for _, s := range []string{ScenarioPubSub, ScenarioLatency, ScenarioQueue, ScenarioConns} {
		c := DefaultConfig(s)
		if err := c.Validate(); err != nil {
			t.Errorf("DefaultConfig(%q) invalid: %v", s, err)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		line string
		want time.Duration
		err  bool
	}{
		{"plain", "1234 (mote) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 0 0", 3 * time.Second, false},
		{"spaces and parens in the name", "77 (a) b) c) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 0 0 0", 100 * time.Millisecond, false},
		{"truncated", "77 (x) R 1 2", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(tt.line)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("parseProcStat = %v, %v; want %v, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestProcCPUSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	d, err := procCPU(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("procCPU(self) = %v, %v", d, err)
	}
}
