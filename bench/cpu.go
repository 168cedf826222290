package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU is the processor time the load generator and (with --pid) the broker
// used during a message scenario's measured window, from the clock's start
// to the end of the drain. Figures are in cores: 1.0 is one CPU busy for the
// whole window. On a machine where both share the cores, a generator close
// to the machine's CPU count, or well above the broker, means the generator
// is the bottleneck, not the broker.
type CPU struct {
	Window    time.Duration `json:"window"`
	Generator float64       `json:"generator"`
	// Broker is -1 when it was not measured (no --pid, or not Linux).
	Broker float64 `json:"broker"`
	// CPUs is the number of CPUs of this machine.
	CPUs int `json:"cpus"`
}

// cpuSample is a point-in-time reading of both processes' CPU time.
type cpuSample struct {
	at     time.Time
	self   time.Duration
	broker time.Duration // -1: unknown
}

func sampleCPU(pid int) cpuSample {
	s := cpuSample{at: time.Now(), self: selfCPU(), broker: -1}
	if pid > 0 {
		if d, err := procCPU(pid); err == nil {
			s.broker = d
		}
	}
	return s
}

// cpuBetween turns two samples into a CPU.
func cpuBetween(a, b cpuSample, cpus int) *CPU {
	w := b.at.Sub(a.at)
	if w <= 0 {
		return nil
	}
	c := &CPU{Window: w, Generator: float64(b.self-a.self) / float64(w), Broker: -1, CPUs: cpus}
	if a.broker >= 0 && b.broker >= 0 {
		c.Broker = float64(b.broker-a.broker) / float64(w)
	}
	return c
}

// userHZ is the unit of /proc/PID/stat's utime and stime: USER_HZ, which
// Linux fixes at 100 for user space on every architecture Go supports.
const userHZ = 100

// procCPU returns a process's user + system CPU time from /proc/PID/stat
// (Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	return parseProcStat(string(b))
}

// parseProcStat reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line; the command name (field 2) may contain spaces and
// parentheses, so fields are counted after its last ')'.
func parseProcStat(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no command name in %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: utime/stime %q: %w", v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
