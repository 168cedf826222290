package listen

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns a wrapped server side and the raw client side of a real
// loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := Wrap(server, ConnOptions{WriteTimeout: 5 * time.Second}, nil)
	t.Cleanup(func() { _ = c.Close(); _ = client.Close() })
	return c, client
}

// readN reads exactly n bytes or fails after a second.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

// nothing asserts that no byte arrives for a while.
func nothing(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	b := make([]byte, 1)
	if n, err := c.Read(b); n > 0 || !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		t.Fatalf("read %q (%v) while writes are held", b[:n], err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Writes after a hold wait for it, in order, and Write does not block.
func TestHoldWritesOrder(t *testing.T) {
	c, client := pair(t)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	first, second := make(chan struct{}), make(chan struct{})
	c.HoldWrites(first, func() error { return nil })
	for _, s := range []string{"b", "c"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	c.HoldWrites(second, func() error { return nil })
	c.Cork()
	_, _ = c.Write([]byte("d"))
	_, _ = c.Write([]byte("e"))
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, 1); got != "a" {
		t.Fatalf("got %q", got)
	}
	nothing(t, client)
	close(first)
	if got := readN(t, client, 2); got != "bc" {
		t.Fatalf("got %q", got)
	}
	nothing(t, client)
	close(second)
	if got := readN(t, client, 2); got != "de" {
		t.Fatalf("got %q", got)
	}
	// Nothing held: writes go straight out again.
	_, _ = c.Write([]byte("f"))
	if got := readN(t, client, 1); got != "f" {
		t.Fatalf("got %q", got)
	}
}

// A hold whose check fails closes the connection: nothing written after
// it reaches the client.
func TestHoldWritesFailureCloses(t *testing.T) {
	c, client := pair(t)
	done := make(chan struct{})
	c.HoldWrites(done, func() error { return errors.New("store failed") })
	_, _ = c.Write([]byte("ack"))
	close(done)
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(client)
	if len(b) != 0 || err != nil {
		t.Fatalf("client read %q, %v; want EOF with nothing", b, err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after a failed hold succeeded")
	}
}

// A hold that is already over costs nothing.
func TestHoldWritesAlreadyDone(t *testing.T) {
	c, client := pair(t)
	done := make(chan struct{})
	close(done)
	c.HoldWrites(done, func() error { return nil })
	_, _ = c.Write([]byte("z"))
	if got := readN(t, client, 1); got != "z" {
		t.Fatalf("got %q", got)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.flushing || len(c.held) != 0 {
		t.Fatal("a finished hold started the sender")
	}
}
