package e2e

import (
	"context"
	"errors"
	"github.com/motemq/mote/broker/brokertest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runMote runs the binary to completion and returns its combined output
// and exit code.
func runMote(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, moteBin, args...)
	cmd.Env = append(os.Environ(), "MOTE_CONFIG=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run mote %v: %v", args, err)
	}
	return string(out), 0
}

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "fsync: everysec\nlisteners:\n  mqtt:\n    address: 127.0.0.1:0\n")
	badKey := write("bad-key.yaml", "listeners:\n  mqtt:\n    adress: :1883\n")
	badTLS := write("bad-tls.yaml", "listeners:\n  mqtts:\n    address: :8883\n    cert: /nonexistent/cert.pem\n    key: /nonexistent/key.pem\n")
	badMany := write("bad-many.yaml", "fsync: sometimes\nmqtt:\n  max_packet_size: 12\n  receive_maximum: 0\n")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()

	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"version", []string{"version"}, 0, []string{"mote "}},
		{"help", []string{"--help"}, 0, []string{"mote serve"}},
		{"no command", nil, 2, []string{"Usage"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"serve help", []string{"serve", "--help"}, 0, []string{"-data-dir", "-fsync", "-check-config"}},
		{"check good", []string{"serve", "--check-config", good}, 0, []string{"is valid"}},
		{"check reference config", []string{"serve", "--check-config", referenceConfig(t)}, 0, []string{"is valid"}},
		{"check unknown key", []string{"serve", "--check-config", badKey}, 2, []string{"bad-key.yaml:3: ", `unknown key "adress"`}},
		{"check missing cert", []string{"serve", "--check-config", badTLS}, 2, []string{"listeners.mqtts.cert: file not found: /nonexistent/cert.pem"}},
		{"check reports every error", []string{"serve", "--check-config", badMany}, 2, []string{"fsync: \"sometimes\"", "mqtt.max_packet_size", "mqtt.receive_maximum"}},
		{"missing config file", []string{"serve", "--config", filepath.Join(dir, "nope.yaml")}, 2, []string{"nope.yaml: file not found"}},
		{"bad flag value", []string{"serve", "--fsync", "never", "--data-dir", dir}, 2, []string{"fsync"}},
		{"port in use", []string{"serve", "--data-dir", filepath.Join(dir, "d1"), "--mqtt", busy, "--ws", "", "--http", ""}, 1, []string{"listener mqtt", busy, "address already in use"}},
		{"http port in use", []string{"serve", "--data-dir", filepath.Join(dir, "d2"), "--mqtt", "127.0.0.1:0", "--ws", "", "--http", busy}, 1, []string{"listener http", busy}},
		{"all listeners off", []string{"serve", "--data-dir", dir, "--mqtt", "", "--ws", ""}, 2, []string{"every MQTT listener is off"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runMote(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// Two brokers on one data directory would corrupt it: the second refuses.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	_ = spawnQuiet(t, dir)
	out, code := runMote(t, "serve", "--data-dir", dir, "--mqtt", "127.0.0.1:0", "--ws", "", "--http", "")
	if code != 1 || !strings.Contains(out, "in use by another process") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func spawnQuiet(t *testing.T, dir string) string {
	t.Helper()
	p := brokertest.Spawn(t, moteBin, dir)
	return p.Addr("mqtt")
}

// referenceConfig is testdata/mote.yaml, the commented configuration the
// README points to: it must stay valid.
func referenceConfig(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "mote.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("reference configuration: %v", err)
	}
	return p
}
