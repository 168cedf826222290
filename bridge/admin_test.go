package bridge

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A paused bridge sends nothing (messages keep entering its outbox), the
// pause survives a restart, and Resume sends what waited, in order.
func TestPauseResumeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	snd := &fakeSender{}
	b, err := New(fastCfg("pz"), s, snd, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	if err := b.Pause(); err != nil {
		t.Fatal(err)
	}
	offer(t, b, pub("out/a", 1, "1"))
	offer(t, b, pub("out/a", 1, "2"))
	eventually(t, "a backlog of 2", func() bool { st := b.Status(); return st.Backlog == 2 && st.Paused })
	if n := snd.numCalls(); n != 0 {
		t.Fatalf("a paused bridge made %d send calls", n)
	}
	b.Stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir)
	defer s2.Close()
	b2 := newBridge(t, s2, fastCfg("pz"), snd, nil)
	if !b2.Status().Paused {
		t.Fatal("the pause did not survive the restart")
	}
	// Give the dispatcher a chance to (wrongly) send.
	time.Sleep(50 * time.Millisecond)
	if n := snd.numCalls(); n != 0 {
		t.Fatalf("a paused bridge made %d send calls after the restart", n)
	}
	if err := b2.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery after resume", func() bool { return len(snd.delivered()) == 2 })
	if got := snd.delivered(); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("delivered %v", got)
	}
	if b2.Status().Paused {
		t.Fatal("still paused")
	}
}

// Dead letters are kept (with reason and attempts) across a restart and
// RetryDead sends them again with fresh attempts.
func TestDeadLettersKeptAndRetried(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var fail atomic.Bool
	fail.Store(true)
	snd := &fakeSender{fn: func(int, []packets.Packet) error {
		if fail.Load() {
			return Permanent(errors.New("422 unprocessable"))
		}
		return nil
	}}
	dead := &deadBox{}
	b, err := New(fastCfg("dl"), s, snd, dead.fn, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	pk := pub("out/x", 1, "payload")
	pk.Properties.ContentType = "text/plain"
	pk.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
	offer(t, b, pk)
	offer(t, b, pub("out/y", 0, "volatile"))
	eventually(t, "two dead letters", func() bool { return b.Status().DeadLetters == 2 })
	if len(dead.get()) != 2 {
		t.Fatalf("the dead-letter callback saw %d", len(dead.get()))
	}
	b.Stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir)
	defer s2.Close()
	b2 := newBridge(t, s2, fastCfg("dl"), snd, nil)
	ds, err := b2.DeadLetters(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("%d dead letters after the restart, want 2", len(ds))
	}
	// The QoS 0 one (kept in memory, sent at once) may have gone first.
	i := slices.IndexFunc(ds, func(d DeadLetter) bool { return d.Packet.TopicName == "out/x" })
	if i < 0 {
		t.Fatalf("no dead letter of out/x: %+v", ds)
	}
	d := ds[i]
	if d.Packet.TopicName != "out/x" || string(d.Packet.Payload) != "payload" || d.Attempts != 1 ||
		!strings.Contains(d.Reason, "422") || d.Packet.Properties.ContentType != "text/plain" ||
		len(d.Packet.Properties.User) != 1 || time.Since(d.At) > time.Minute {
		t.Fatalf("dead letter %+v", d)
	}
	if page, _ := b2.DeadLetters(ds[0].ID, 10); len(page) != 1 || page[0].ID != ds[1].ID {
		t.Fatalf("page after the first: %+v", page)
	}
	var sends atomic.Int64
	b2.OnSend(func(d time.Duration, msgs int, err error) {
		if d < 0 || msgs != 1 || err != nil {
			t.Errorf("OnSend(%v, %d, %v)", d, msgs, err)
		}
		sends.Add(1)
	})
	fail.Store(false)
	n, err := b2.RetryDead(1)
	if err != nil || n != 1 {
		t.Fatalf("RetryDead(1) = %d, %v", n, err)
	}
	eventually(t, "the retried message sent", func() bool { return len(snd.delivered()) == 1 })
	if st := b2.Status(); st.DeadLetters != 1 {
		t.Fatalf("dead letters left: %+v", st)
	}
	if n, err := b2.RetryDead(0); err != nil || n != 1 {
		t.Fatalf("RetryDead(0) = %d, %v", n, err)
	}
	eventually(t, "every dead letter sent", func() bool { return len(snd.delivered()) == 2 && b2.Status().DeadLetters == 0 })
	eventually(t, "OnSend called", func() bool { return sends.Load() == 2 })
	if n, err := b2.RetryDead(0); err != nil || n != 0 {
		t.Fatalf("RetryDead with none = %d, %v", n, err)
	}
}

func TestDeadRecordRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	pk := pub("a/b", 2, "x")
	pk.Properties.ResponseTopic = "r"
	d, err := decodeDead(encodeDead(pk, "reason ✓", 7, at))
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != "reason ✓" || d.Attempts != 7 || !d.At.Equal(at) || d.Packet.TopicName != "a/b" || d.Packet.FixedHeader.Qos != 2 || d.Packet.Properties.ResponseTopic != "r" {
		t.Fatalf("round trip: %+v", d)
	}
	for _, bad := range [][]byte{nil, {9}, {deadVersion}, {deadVersion, 2, 1, 200}} {
		if _, err := decodeDead(bad); err == nil {
			t.Errorf("decodeDead(%x) accepted", bad)
		}
	}
}
