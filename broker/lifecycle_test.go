package broker_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
	"github.com/motemq/mote/internal/testpki"
)

// TLS listeners (mqtts and wss) with a client CA: a client with a
// certificate the CA signed talks to a plain TCP client through the broker;
// one without a certificate is refused in the handshake.
func TestTLSListenersWithClientCA(t *testing.T) {
	pki := testpki.New(t)
	files := broker.TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile, ClientCA: pki.CAFile}
	b := brokertest.Start(t, func(c *broker.Config) {
		c.Listeners.MQTTS = broker.TCPListener{Address: "127.0.0.1:0", TLSFiles: files}
		c.Listeners.WSS = broker.WSListener{Address: "127.0.0.1:0", Path: "/mqtt", TLSFiles: files}
	})
	withCert := &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client}}
	plain := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "plain", Clean: true})
	plain.Sub(t, 1, "secure/#")

	for _, tc := range []struct {
		name string
		addr string
		ws   bool
	}{
		{"mqtts", b.Addr(broker.ListenerMQTTS), false},
		{"wss", b.Addr(broker.ListenerWSS), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.MustV5(t, tc.addr, brokertest.Options{ID: "tls-" + tc.name, Clean: true, WS: tc.ws, TLS: withCert})
			c.Sub(t, 1, "back/"+tc.name)
			c.MustPub(t, "secure/"+tc.name, []byte("over "+tc.name), 1, false)
			if m := plain.Next(t, wait); m.Topic != "secure/"+tc.name || string(m.Payload) != "over "+tc.name {
				t.Fatalf("plain client got %q %q", m.Topic, m.Payload)
			}
			plain.MustPub(t, "back/"+tc.name, []byte("reply"), 1, false)
			if m := c.Next(t, wait); string(m.Payload) != "reply" {
				t.Fatalf("TLS client got %q", m.Payload)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			noCert := &tls.Config{RootCAs: pki.Pool}
			c2, err := brokertest.ConnectV5(ctx, tc.addr, brokertest.Options{ID: "nocert-" + tc.name, Clean: true, WS: tc.ws, TLS: noCert})
			if err == nil {
				c2.Close()
				t.Fatal("a client without a certificate connected to a listener with a client CA")
			}
		})
	}
}

// A session that expires is deleted from the store with everything it held.
func TestExpiredSessionDeletedFromStore(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "short-lived", SessionExpiry: 1})
	sub.Sub(t, 1, "expiry/#")
	sub.Close()
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "expiry/a", []byte("queued for a session about to expire"), 1, false)

	prefixes := []string{"c\x00short-lived", "s\x00short-lived\x00", "q\x00short-lived\x00"}
	count := func() int {
		n := 0
		for _, p := range prefixes {
			if err := b.Store().Scan(p, func(string, string) bool { n++; return true }); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	// mochi acknowledges before it routes, and the queue record follows.
	for start := time.Now(); count() < 3; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d records for the offline session, want its session, subscription and queued message", count())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records of an expired session still in the store", count())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Clean sessions come and go without leaving anything in the store.
func TestCleanSessionChurnLeavesNothing(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	before := b.Store().Stats().Keys
	for i := range 100 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("churn-%d", i), Clean: true})
		c.Sub(t, 1, fmt.Sprintf("churn/%d/#", i))
		c.MustPub(t, fmt.Sprintf("churn/%d/x", i), []byte("x"), 1, false)
		c.Next(t, wait)
		c.Close()
	}
	if err := b.Store().Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := b.Store().Stats().Keys
		if after <= before+1 { // +1: the $SYS record may appear meanwhile
			break
		}
		if time.Now().After(deadline) {
			var keys []string
			_ = b.Store().Scan("", func(k, _ string) bool { keys = append(keys, fmt.Sprintf("%q", k)); return len(keys) < 10 })
			t.Fatalf("store grew from %d to %d keys after 100 clean sessions; first: %s", before, after, strings.Join(keys, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A retained message with a Message Expiry Interval is deleted from the
// store when it expires, and is not delivered afterwards.
func TestRetainedExpiryDeletesRecord(t *testing.T) {
	// The clear's tombstone goes at the $SYS tick after the next.
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.SysInterval = broker.Duration(time.Second) })
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	exp := uint32(1)
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "ret/short", QoS: 1, Retain: true, Payload: []byte("soon gone"),
		Properties: &paho.PublishProperties{MessageExpiry: &exp}}); err != nil {
		t.Fatal(err)
	}
	pub.MustPub(t, "ret/long", []byte("stays"), 1, true)
	pub.MustPub(t, "ret/cleared", []byte("cleared next"), 1, true)
	pub.MustPub(t, "ret/cleared", nil, 1, true)
	has := func(topic string) bool {
		_, ok, err := b.Store().Get("r\x00" + topic)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !has("ret/short") || !has("ret/long") {
		t.Fatal("retained messages not stored")
	}
	deadline := time.Now().Add(10 * time.Second)
	for has("ret/short") || has("ret/cleared") {
		if time.Now().After(deadline) {
			t.Fatalf("expired (%v) or cleared (%v) retained message still in the store", has("ret/short"), has("ret/cleared"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "sub", Clean: true})
	sub.Sub(t, 1, "ret/#")
	if m := sub.Next(t, wait); m.Topic != "ret/long" {
		t.Fatalf("got retained %q, want ret/long", m.Topic)
	}
	if m, ok := sub.Try(300 * time.Millisecond); ok {
		t.Fatalf("expired retained message %q delivered", m.Topic)
	}
}

// An offline persistent session keeps max_queued_messages; the rest are
// dropped, counted and reported as an event, and what was kept arrives in
// order on reconnect.
func TestQueueOverflowBounded(t *testing.T) {
	const limit = 40
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.MaxQueuedMessages = limit })
	addr := b.Addr(broker.ListenerMQTT)
	o := brokertest.Options{ID: "slowpoke", SessionExpiry: 600}
	sub := brokertest.MustV5(t, addr, o)
	sub.Sub(t, 1, "flood/#")
	sub.Close()
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const sent = 100
	for i := range sent {
		pub.MustPub(t, "flood/x", fmt.Appendf(nil, "%03d", i), 1, false)
	}
	// mochi acknowledges before it routes: let the last publish settle.
	var dropped uint64
	for settled := time.Now(); time.Since(settled) < 300*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if d := b.Persistence().Counters.QueueOverflow.Load(); d != dropped {
			dropped, settled = d, time.Now()
		}
	}
	if dropped < sent-limit-1 || dropped > sent-limit {
		t.Fatalf("dropped %d of %d with a limit of %d", dropped, sent, limit)
	}
	sub = brokertest.MustV5(t, addr, o)
	kept := sent - int(dropped)
	for i := range kept {
		if m := sub.Next(t, wait); string(m.Payload) != fmt.Sprintf("%03d", i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
	if m, ok := sub.Try(300 * time.Millisecond); ok {
		t.Fatalf("more than the queue kept: %q", m.Payload)
	}
}

// A publisher faster than a connected subscriber is held back instead of
// overflowing the subscriber's queue: with a queue limit of 100, 400
// acknowledged messages all arrive, in order, and nothing is dropped.
func TestBackpressureInsteadOfOverflow(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.MQTT.MaxQueuedMessages = 100 // holds publishers at 50
		c.MQTT.Backpressure = broker.Duration(20 * time.Second)
	})
	addr := b.Addr(broker.ListenerMQTT)
	slow := brokertest.MustV5(t, addr, brokertest.Options{ID: "slow", Clean: true, ReceiveMaximum: 10, NoAck: true})
	slow.Sub(t, 1, "bp/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "fast", Clean: true})
	const n = 400
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := pub.Pub(ctx, "bp/x", fmt.Appendf(nil, "%03d", i), 1, false)
			cancel()
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
		}
	}()
	// The subscriber reads slowly: the publisher must be held, not dropped.
	for i := range n {
		m := slow.Next(t, 30*time.Second)
		if want := fmt.Sprintf("%03d", i); string(m.Payload) != want {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if err := slow.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	c := &b.Persistence().Counters
	if c.QueueOverflow.Load() != 0 {
		t.Fatalf("%d messages dropped although the publisher could be held", c.QueueOverflow.Load())
	}
	if c.Held.Load() == 0 {
		t.Fatal("the publisher was never held")
	}
	t.Logf("publisher held %d times (%d released by the time limit)", c.Held.Load(), c.HeldTimeouts.Load())
}
