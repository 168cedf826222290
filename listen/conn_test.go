package listen

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
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

// connect311 is a whole MQTT 3.1.1 CONNECT with client id "x".
var connect311 = []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'}

// AwaitConnect returns once a CONNECT dripped in pieces is whole, and Read
// then gives it (and what came after it) to mochi unchanged.
func TestAwaitConnectDripped(t *testing.T) {
	c, client := pair(t)
	done := make(chan error, 1)
	go func() { done <- c.AwaitConnect() }()
	for i := range connect311 {
		if _, err := client.Write(connect311[i : i+1]); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("AwaitConnect returned %v after %d of %d bytes", err, i+1, len(connect311))
		case <-time.After(5 * time.Millisecond):
		}
		if i == len(connect311)-2 {
			// The last byte comes with a PINGREQ.
			if _, err := client.Write(append(connect311[i+1:], 0xC0, 0)); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("AwaitConnect did not return for a whole CONNECT")
	}
	b := make([]byte, 64)
	n, err := io.ReadAtLeast(c, b, len(connect311)+2)
	if err != nil || string(b[:n]) != string(append(append([]byte(nil), connect311...), 0xC0, 0)) {
		t.Fatalf("Read after AwaitConnect: % x, %v", b[:n], err)
	}
}

// A silent connection fails at the connect timeout without ever holding a
// read buffer; a refused CONNECT gets its reply.
func TestAwaitConnectSilentAndRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accept := func() (*Conn, net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c := Wrap(server, ConnOptions{ConnectTimeout: 100 * time.Millisecond, WriteTimeout: time.Second}, nil)
		t.Cleanup(func() { _ = c.Close(); _ = client.Close() })
		return c, client
	}

	c, _ := accept()
	start := time.Now()
	if err := c.AwaitConnect(); !isTimeout(err) {
		t.Fatalf("silent connection: %v, want the connect timeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > time.Second {
		t.Fatalf("silent connection failed after %v", d)
	}
	if c.buf != nil {
		t.Fatalf("a silent connection held a %d-byte buffer", cap(c.buf))
	}

	// A v5 CONNECT with Receive Maximum 0: CONNACK 0x82, then the error.
	c, client := accept()
	bad := []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 30, 3, 0x21, 0, 0, 0, 1, 'x'}
	bad[1] = byte(len(bad) - 2)
	if _, err := client.Write(bad); err != nil {
		t.Fatal(err)
	}
	if err := c.AwaitConnect(); err == nil {
		t.Fatal("a refused CONNECT was accepted")
	}
	if got := readN(t, client, 5); got != string([]byte{0x20, 3, 0, 0x82, 0}) {
		t.Fatalf("reply % x, want CONNACK 0x82", got)
	}

	// Not a CONNECT: refused at the first byte.
	c, client = accept()
	if _, err := client.Write([]byte{0x82}); err != nil {
		t.Fatal(err)
	}
	if err := c.AwaitConnect(); err == nil || isTimeout(err) {
		t.Fatalf("first byte of a SUBSCRIBE: %v, want a refusal", err)
	}
}

// The listener hands mochi only connections whose CONNECT is whole: silent
// sockets and oversized CONNECT headers never reach it.
func TestListenerEstablishesAfterConnect(t *testing.T) {
	l := NewTCP("t", "127.0.0.1:0", nil, Common{Conn: ConnOptions{ConnectTimeout: 200 * time.Millisecond}})
	if err := l.Init(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 10)
	go l.Serve(func(_ string, c net.Conn) error {
		b := make([]byte, len(connect311))
		_, err := io.ReadFull(c, b)
		got <- b
		return err
	})
	t.Cleanup(func() { l.Close(func(string) {}) })

	var hostile []net.Conn
	for i := range 6 {
		c, err := net.Dial("tcp", l.Address())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i%2 == 1 {
			_, _ = c.Write([]byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F})
		}
		hostile = append(hostile, c)
	}
	for _, c := range hostile {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("hostile connection: %v, want closed by the listener", err)
		}
	}
	select {
	case b := <-got:
		t.Fatalf("mochi was handed a connection without a CONNECT: % x", b)
	default:
	}
	c, err := net.Dial("tcp", l.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(connect311); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != string(connect311) {
			t.Fatalf("mochi read % x", b)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a connection with a whole CONNECT was not handed to mochi")
	}
}
