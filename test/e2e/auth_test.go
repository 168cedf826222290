package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/motemq/mote/broker/brokertest"
)

// authSetup writes a password file with alice (bcrypt at the minimum cost:
// the race-enabled binary is slow at the default), an ACL file and a
// configuration naming both, and returns the paths.
func authSetup(t *testing.T, extraAuth string) (dir, passwd, cfg string) {
	t.Helper()
	dir = t.TempDir()
	h, err := bcrypt.GenerateFromPassword([]byte("pw-alice"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	passwd = filepath.Join(dir, "passwd")
	acl := filepath.Join(dir, "acl.conf")
	cfg = filepath.Join(dir, "mote.yaml")
	for name, body := range map[string]string{
		passwd: "# users\nalice:" + string(h) + "\n",
		acl:    "allow user alice sub inbox/#\nallow any pub inbox/%u\n",
		cfg:    fmt.Sprintf("auth:\n  allow_anonymous: false\n  users_file: %s\n  acl_file: %s\n%s", passwd, acl, extraAuth),
	} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, passwd, cfg
}

// setPassword runs `mote passwd --password-stdin FILE USER`.
func setPassword(t *testing.T, file, user, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, moteBin, "passwd", "--password-stdin", file, user)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mote passwd: %v\n%s", err, out)
	}
}

// connectCode connects an MQTT 5 client and returns it (nil when refused)
// with the CONNACK reason code.
func connectCode(t *testing.T, addr, id, user, password string) (*brokertest.V5, byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := brokertest.ConnectV5(ctx, addr, brokertest.Options{ID: id, Clean: true, Username: user, Password: password})
	if err != nil {
		if c == nil || c.Connack == nil {
			t.Fatalf("connect %q: %v", id, err)
		}
		return nil, c.Connack.ReasonCode
	}
	t.Cleanup(c.Close)
	return c, 0
}

// waitLog waits until the broker has logged msg n times.
func waitLog(t *testing.T, p *brokertest.Process, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Log(), `"msg":"`+msg+`"`) < n {
		if time.Now().After(deadline) {
			t.Fatalf("broker did not log %q %d times:\n%s", msg, n, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A user added with `mote passwd` can connect after SIGHUP; connected
// clients are not disturbed by the reload.
func TestAuthReloadOnSIGHUP(t *testing.T) {
	dir, passwd, cfg := authSetup(t, "  watch_interval: 0s\n") // SIGHUP only
	p := brokertest.Spawn(t, moteBin, filepath.Join(dir, "data"), "--config", cfg)
	addr := p.Addr("mqtt")

	alice, rc := connectCode(t, addr, "alice", "alice", "pw-alice")
	if alice == nil {
		t.Fatalf("alice refused: 0x%02x", rc)
	}
	alice.Sub(t, 1, "inbox/#")
	if _, rc := connectCode(t, addr, "bob", "bob", "pw-bob"); rc != 0x86 {
		t.Fatalf("bob before he exists: CONNACK 0x%02x, want 0x86", rc)
	}

	setPassword(t, passwd, "bob", "pw-bob")
	if _, rc := connectCode(t, addr, "bob", "bob", "pw-bob"); rc != 0x86 {
		t.Fatalf("bob before the reload: CONNACK 0x%02x, want 0x86 (no watch configured)", rc)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "auth reloaded", 1)

	bob, rc := connectCode(t, addr, "bob", "bob", "pw-bob")
	if bob == nil {
		t.Fatalf("bob after SIGHUP: CONNACK 0x%02x", rc)
	}
	bob.MustPub(t, "inbox/bob", []byte("hello alice"), 1, false)
	if m := alice.Next(t, 5*time.Second); m.Topic != "inbox/bob" || string(m.Payload) != "hello alice" {
		t.Fatalf("alice got %q %q", m.Topic, m.Payload)
	}
	select {
	case <-alice.Done():
		t.Fatal("alice was disconnected by the reload")
	default:
	}
	// alice's password still works (her cached verification died with the
	// old state, so this is a fresh bcrypt against the reloaded file).
	if c, rc := connectCode(t, addr, "alice-2", "alice", "pw-alice"); c == nil {
		t.Fatalf("alice after the reload: CONNACK 0x%02x", rc)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.Log())
	}
}

// With auth.watch_interval the files are reloaded without SIGHUP.
func TestAuthReloadOnFileChange(t *testing.T) {
	dir, passwd, cfg := authSetup(t, "  watch_interval: 100ms\n")
	p := brokertest.Spawn(t, moteBin, filepath.Join(dir, "data"), "--config", cfg)
	addr := p.Addr("mqtt")
	alice, rc := connectCode(t, addr, "alice", "alice", "pw-alice")
	if alice == nil {
		t.Fatalf("alice refused: 0x%02x", rc)
	}
	alice.Sub(t, 1, "inbox/#")

	setPassword(t, passwd, "carol", "pw-carol")
	waitLog(t, p, "auth reloaded", 1)
	carol, rc := connectCode(t, addr, "carol", "carol", "pw-carol")
	if carol == nil {
		t.Fatalf("carol after the file changed: CONNACK 0x%02x", rc)
	}
	carol.MustPub(t, "inbox/carol", []byte("hi"), 1, false)
	if m := alice.Next(t, 5*time.Second); m.Topic != "inbox/carol" {
		t.Fatalf("alice got %q", m.Topic)
	}

	// Deleting a user takes effect the same way; a broken file keeps the
	// previous users in force.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, moteBin, "passwd", "--delete", passwd, "carol").CombinedOutput(); err != nil {
		t.Fatalf("mote passwd --delete: %v\n%s", err, out)
	}
	waitLog(t, p, "auth reloaded", 2)
	if _, rc := connectCode(t, addr, "carol-2", "carol", "pw-carol"); rc != 0x86 {
		t.Fatalf("carol after her deletion: CONNACK 0x%02x, want 0x86", rc)
	}
	f, err := os.OpenFile(passwd, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("broken line without a hash\n")
	_ = f.Close()
	waitLog(t, p, "auth reload failed; keeping the previous users and ACL", 1)
	if c, rc := connectCode(t, addr, "alice-2", "alice", "pw-alice"); c == nil {
		t.Fatalf("alice after a failed reload: CONNACK 0x%02x", rc)
	}
}

// --check-config loads the files the auth section names.
func TestAuthCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "no-such-passwd")
	acl := write("broken.acl", "# rules\nallow any all ok/#\nallow any frobnicate x/#\n")
	for _, tc := range []struct {
		name string
		cfg  string
		want []string
	}{
		{"missing users file", "auth:\n  users_file: " + missing + "\n", []string{"auth.users_file", missing}},
		{"broken ACL line", "auth:\n  acl_file: " + acl + "\n", []string{"auth.acl_file", acl + ":3"}},
		{"broken inline rule", "auth:\n  acl:\n    - {permission: allow, action: pub, topic: 'a/#/b'}\n", []string{"auth.acl", "a/#/b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runMote(t, "serve", "--check-config", write("c.yaml", tc.cfg))
			if code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
