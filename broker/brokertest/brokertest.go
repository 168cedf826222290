// Package brokertest starts real Mote brokers for tests — in-process
// (Start) or as a child process that can be killed with SIGKILL (Spawn) —
// on 127.0.0.1 with ephemeral ports, and connects real MQTT clients to
// them (paho.golang for MQTT 5, paho.mqtt.golang for 3.1.1).
package brokertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/persistence"
)

// Config returns a configuration for tests: every listener on
// 127.0.0.1:0, data in dir.
func Config(dir string) *broker.Config {
	c := broker.Defaults()
	c.DataDir = dir
	c.Listeners.MQTT.Address = "127.0.0.1:0"
	c.Listeners.WS.Address = "127.0.0.1:0"
	c.Listeners.HTTP.Address = "127.0.0.1:0"
	c.Log.Level = "warn"
	c.Fsync = persistence.FsyncAlways
	// Tests of other features connect anonymously, also through proxies
	// that forward non-loopback addresses; auth tests set their own.
	anyone := true
	c.Auth.AllowAnonymous = &anyone
	return c
}

// Start starts an in-process broker with Config(t.TempDir()) changed by
// the mutators, and stops it when the test ends.
func Start(t testing.TB, mutate ...func(*broker.Config)) *broker.Broker {
	t.Helper()
	return StartIn(t, t.TempDir(), mutate...)
}

// StartIn is Start with a given data directory (to restart on the same one).
func StartIn(t testing.TB, dir string, mutate ...func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := Config(dir)
	for _, m := range mutate {
		m(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("brokertest: config: %v", err)
	}
	b, err := broker.New(cfg, Logger(t, cfg.Log.Level))
	if err != nil {
		t.Fatalf("brokertest: new broker: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("brokertest: start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("brokertest: shutdown: %v", err)
		}
	})
	return b
}

// Logger writes to t.Log at level or above.
func Logger(t testing.TB, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: l}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Build compiles cmd/mote into dir and returns the binary's path. Call it
// once from TestMain.
func Build(dir string) (string, error) {
	out := filepath.Join(dir, "mote")
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-race", "-o", out, "./cmd/mote")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("brokertest: go build: %v\n%s", err, b)
	}
	return out, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("brokertest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Process is a broker running as a child process.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	addrs  map[string]string
	done   chan struct{}
	err    error
	mu     sync.Mutex
	logBuf strings.Builder
}

// Spawn runs `bin serve` on dataDir with every listener on 127.0.0.1:0 and
// extra flags, waits until it is ready and returns it. The process is
// killed when the test ends if still running.
func Spawn(t testing.TB, bin, dataDir string, extra ...string) *Process {
	t.Helper()
	args := append([]string{"serve", "--data-dir", dataDir, "--mqtt", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "info"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "MOTE_CONFIG=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("brokertest: pipe: %v", err)
	}
	p := &Process{t: t, cmd: cmd, addrs: map[string]string{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("brokertest: start %s: %v", bin, err)
	}
	ready := make(chan struct{})
	go p.readLog(stderr, ready)
	t.Cleanup(func() { p.Kill() })
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("brokertest: broker exited before it was ready: %v\n%s", p.err, p.Log())
	case <-time.After(30 * time.Second):
		p.Kill()
		t.Fatalf("brokertest: broker not ready within 30s\n%s", p.Log())
	}
	return p
}

func (p *Process) readLog(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.logBuf.WriteString(line)
		p.logBuf.WriteByte('\n')
		var rec struct {
			Msg     string `json:"msg"`
			ID      string `json:"id"`
			Address string `json:"address"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil {
			if rec.Msg == "attached listener" {
				p.addrs[rec.ID] = rec.Address
			}
			if rec.Msg == "mochi mqtt server started" && !signalled {
				signalled = true
				close(ready)
			}
		}
		p.mu.Unlock()
	}
	p.err = p.cmd.Wait()
	close(p.done)
}

// Addr returns a listener's address (broker.ListenerMQTT, ...).
func (p *Process) Addr(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[id]
}

// Log returns what the broker logged so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logBuf.String()
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and returns the exit error (nil for status 0).
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("brokertest: broker did not stop within %v", timeout)
	}
}

// Signal sends sig to the process (syscall.SIGHUP reloads the users and
// ACL files).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }
