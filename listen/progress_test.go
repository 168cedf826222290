package listen

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestAwaitWritten(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	c := Wrap(a, ConnOptions{}, nil)
	defer c.Close()

	// Room made by a writer while waiting.
	done := make(chan [2]bool)
	go func() {
		w, m := c.AwaitWritten(10, 10*time.Second)
		done <- [2]bool{w, m}
	}()
	waitForWaiter(t, c)
	for range 3 {
		if _, err := c.Write([]byte("12345")); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-done; got != [2]bool{true, true} {
		t.Fatalf("wait with writes: waited, made = %v, want true, true", got)
	}
	if n := c.written.Load(); n != 15 {
		t.Fatalf("written = %d, want 15", n)
	}

	// Nothing written in a whole wait: stalled, and the next call does not wait.
	if w, m := c.AwaitWritten(10, 20*time.Millisecond); !w || m {
		t.Fatalf("idle wait: waited, made = %v, %v; want true, false", w, m)
	}
	start := time.Now()
	if w, m := c.AwaitWritten(10, time.Second); w || m {
		t.Fatalf("stalled: waited, made = %v, %v; want false, false", w, m)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("stalled connection held a waiter %v", d)
	}

	// A write ends the stall: the next call waits again.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if w, _ := c.AwaitWritten(10, 10*time.Millisecond); !w {
		t.Fatal("after a write: did not wait")
	}

	// A close releases waiters.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	go func() {
		waitForWaiter(t, c) // the close comes while AwaitWritten waits
		_ = c.Close()
	}()
	if w, m := c.AwaitWritten(1<<40, 10*time.Second); !w || !m {
		t.Fatalf("close: waited, made = %v, %v; want true, true", w, m)
	}
	if w, m := c.AwaitWritten(10, time.Second); w || !m {
		t.Fatalf("closed: waited, made = %v, %v; want false, true", w, m)
	}
}

func TestSendQueuedTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			<-done // holds the connection open and does not read
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := sendQueued(c); !ok && isLinux {
		t.Fatal("sendQueued cannot tell on a TCP connection")
	}
}

// waitForWaiter waits (bounded) until a goroutine is inside c.AwaitWritten.
func waitForWaiter(t *testing.T, c *Conn) {
	deadline := time.Now().Add(5 * time.Second)
	for c.waiters.Load() == 0 {
		if time.Now().After(deadline) {
			t.Error("nobody waits in AwaitWritten after 5s")
			return
		}
		time.Sleep(time.Millisecond)
	}
}
