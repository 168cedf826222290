package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

var moteBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mote-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	moteBin, err = brokertest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// drain reads messages into c until want distinct messages arrived or
// nothing came for quiet.
func drain(c *Checker, in *brokertest.Inbox, want int, quiet time.Duration) {
	seen := 0
	for seen < want {
		m, ok := in.Try(quiet)
		if !ok {
			return
		}
		c.Delivered(m.Payload)
		seen++
	}
	// Catch duplicates that trail behind.
	for {
		m, ok := in.Try(200 * time.Millisecond)
		if !ok {
			return
		}
		c.Delivered(m.Payload)
	}
}

// An offline persistent session's messages and the retained messages
// survive SIGKILL.
func TestKill9OfflineSessionAndRetained(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			dir := t.TempDir()
			p := brokertest.Spawn(t, moteBin, dir)
			o := brokertest.Options{ID: "offline-sub", SessionExpiry: 3600, Session: state.NewInMemory()}
			sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
			sub.Sub(t, qos, "crash/#")
			sub.Close()

			pub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
			c := NewChecker()
			const n = 1000
			for i := range uint64(n) {
				pub.MustPub(t, "crash/x", Payload("pub", i), qos, false)
				c.Sent("pub", i, true)
			}
			for i := range 10 {
				pub.MustPub(t, fmt.Sprintf("ret/%d", i), []byte("v"), 1, true)
			}
			pub.MustPub(t, "ret/3", nil, 1, true) // cleared before the crash
			p.Kill()

			p = brokertest.Spawn(t, moteBin, dir)
			sub = brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
			drain(c, sub.Inbox, n, 10*time.Second)
			r := c.Report()
			t.Logf("after kill -9: %v", r)
			if r.Lost != 0 || r.Unexpected != 0 || r.Duplicated != 0 {
				t.Fatalf("offline session after kill -9: %v", r)
			}
			if n := c.Reorderings(); n != 0 {
				t.Fatalf("%d messages out of order", n)
			}
			fresh := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "fresh", Clean: true})
			fresh.Sub(t, 1, "ret/#")
			got := map[string]bool{}
			for range 9 {
				got[fresh.Next(t, 5*time.Second).Topic] = true
			}
			if got["ret/3"] || len(got) != 9 {
				t.Fatalf("retained after kill -9: %v (want ret/0..9 without ret/3)", got)
			}
			if m, ok := fresh.Try(300 * time.Millisecond); ok {
				t.Fatalf("extra retained message %q", m.Topic)
			}
		})
	}
}

// SIGKILL at a random point of a stream to a connected persistent
// subscriber: every acknowledged message arrives after the restart;
// QoS 2 is never duplicated, QoS 1 duplicates stay within the in-flight
// window.
func TestKill9MidStream(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			dir := t.TempDir()
			p := brokertest.Spawn(t, moteBin, dir)
			o := brokertest.Options{ID: "live-sub", SessionExpiry: 3600, Session: state.NewInMemory()}
			sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
			sub.Sub(t, qos, "stream/#")
			c := NewChecker()
			stopRead := Collect(c, sub.Inbox)

			pub, err := brokertest.ConnectV5(context.Background(), p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
			if err != nil {
				t.Fatal(err)
			}
			const n = 3000
			killAt := uint64(n/5 + rand.IntN(n*3/5))
			var acked atomic.Uint64
			for i := range uint64(n) {
				if i == killAt {
					p.Kill()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				r, err := pub.Pub(ctx, "stream/x", Payload("pub", i), qos, false)
				cancel()
				ok := err == nil && (r == nil || r.ReasonCode < 0x80)
				c.Sent("pub", i, ok)
				if !ok {
					break
				}
				acked.Add(1)
			}
			stopRead()
			t.Logf("killed after %d acknowledged publishes", acked.Load())

			p = brokertest.Spawn(t, moteBin, dir)
			sub.Drop()
			sub = brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
			drain(c, sub.Inbox, int(acked.Load()), 5*time.Second)
			r := c.Report()
			t.Logf("after kill -9 mid-stream: %v", r)
			if r.Lost != 0 || r.Unexpected != 0 {
				t.Fatalf("lost or unexpected messages: %v", r)
			}
			if qos == 2 && r.Duplicated != 0 {
				t.Fatalf("QoS 2 duplicated: %v", r)
			}
			if r.Duplicated > 64 {
				t.Fatalf("QoS 1 duplicates %d exceed the in-flight window 64", r.Duplicated)
			}
		})
	}
}

// SIGTERM flushes and exits 0; nothing acknowledged is lost.
func TestSigtermGraceful(t *testing.T) {
	dir := t.TempDir()
	p := brokertest.Spawn(t, moteBin, dir, "--fsync", "everysec")
	o := brokertest.Options{ID: "sub", SessionExpiry: 3600}
	sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	sub.Sub(t, 1, "t/#")
	sub.Close()
	pub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	c := NewChecker()
	for i := range uint64(500) {
		pub.MustPub(t, "t/x", Payload("pub", i), 1, false)
		c.Sent("pub", i, true)
	}
	if err := p.Stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: exit %v\n%s", err, p.Log())
	}
	if !strings.Contains(p.Log(), `"msg":"stopped"`) {
		t.Fatalf("no orderly stop in the log:\n%s", p.Log())
	}
	p = brokertest.Spawn(t, moteBin, dir)
	sub = brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), o)
	drain(c, sub.Inbox, 500, 5*time.Second)
	if r := c.Report(); r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("after SIGTERM: %v", r)
	}
}

// A damaged store stops the broker with a message naming the file; a
// torn final write is dropped and reported.
func TestCorruptStore(t *testing.T) {
	dir := t.TempDir()
	p := brokertest.Spawn(t, moteBin, dir)
	pub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	for i := range 20 {
		pub.MustPub(t, fmt.Sprintf("c/%d", i), []byte("retained value"), 1, true)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "mote.db")
	orig, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("torn tail", func(t *testing.T) {
		torn := append(append([]byte(nil), orig...), "*3\r\n$3\r\nset\r\n$5\r\nab"...)
		if err := os.WriteFile(db, torn, 0o600); err != nil {
			t.Fatal(err)
		}
		p := brokertest.Spawn(t, moteBin, dir)
		if !strings.Contains(p.Log(), "dropped an incomplete write") {
			t.Fatalf("torn write not reported:\n%s", p.Log())
		}
		sub := brokertest.MustV5(t, p.Addr(broker.ListenerMQTT), brokertest.Options{ID: "s", Clean: true})
		sub.Sub(t, 1, "c/#")
		for range 20 {
			sub.Next(t, 5*time.Second)
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("garbage in the middle", func(t *testing.T) {
		bad := append([]byte(nil), orig...)
		copy(bad[len(bad)/2:], "#GARBAGE#GARBAGE#")
		if err := os.WriteFile(db, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := runMote(t, "serve", "--data-dir", dir, "--mqtt", "127.0.0.1:0", "--ws", "", "--http", "")
		if code != 1 || !strings.Contains(out, "is corrupt") || !strings.Contains(out, "mote.db") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
}
