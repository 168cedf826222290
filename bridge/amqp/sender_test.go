package amqp

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/motemq/mote/bridge"
	"github.com/motemq/mote/internal/testpki"
	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// senderFor returns a Sender on exchange (declared by the Sender when
// declare is set), closed at cleanup.
func senderFor(t testing.TB, name string, cfg Config) *Sender {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = amqpURL()
	}
	s, err := NewSender(name, cfg, discard)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func msg(topic string, qos byte, payload string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, Payload: []byte(payload), Origin: "dev-7", Created: time.Now().Unix(),
	}
}

func sendCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A bound queue receives every message, with its MQTT properties mapped
// to AMQP properties and headers; the routing key is the topic with '/'
// and '.' swapped.
func TestSendPropertiesAndHeaders(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.queue(q, nil)
	s := senderFor(t, "props", Config{Exchange: Exchange{Name: ex, Declare: true, Durable: ptr(false), AutoDelete: true}})
	r.cleanupExchange(ex)
	if s.Connected() {
		t.Fatal("connected before the first Send")
	}
	// The exchange exists only once the Sender declared it: bind after a
	// first send (unroutable at that point: dead-lettered).
	if err := s.Send(sendCtx(t), []packets.Packet{msg("warmup", 0, "w")}); !bridge.IsPermanent(err) {
		t.Fatalf("send with no queue bound: %v, want a permanent NO_ROUTE error", err)
	}
	r.bind(q, FilterToBindingKey("sensors/#"), ex)

	m1 := msg("sensors/1.5/temp", 1, "21.5")
	m1.FixedHeader.Retain = true
	m1.Properties = packets.Properties{
		ContentType: "text/plain", CorrelationData: []byte("req-1"), ResponseTopic: "replies/dev-7",
		MessageExpiryInterval: 60,
		User:                  []packets.UserProperty{{Key: "unit", Val: "C"}, {Key: "tag", Val: "a"}, {Key: "tag", Val: "b"}},
	}
	m2 := msg("sensors/2", 0, "\x00\x01")
	m2.Origin = ""
	m2.Properties.CorrelationData = []byte{0xff, 0x00}
	if err := s.Send(sendCtx(t), []packets.Packet{m1, m2}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !s.Connected() {
		t.Fatal("not connected after a Send")
	}
	got := r.take(q, 2, 10*time.Second)
	d1, d2 := got[0], got[1]
	if d1.RoutingKey != "sensors.1/5.temp" || string(d1.Body) != "21.5" || d1.DeliveryMode != amqp.Persistent ||
		d1.ContentType != "text/plain" || d1.CorrelationId != "req-1" || d1.ReplyTo != "replies.dev-7" ||
		!strings.HasPrefix(d1.MessageId, "mote-") || d1.Timestamp.Unix() != m1.Created {
		t.Errorf("message 1: %+v", d1)
	}
	if exp, err := strconv.Atoi(d1.Expiration); err != nil || exp > 60000 || exp < 55000 {
		t.Errorf("message 1 expiration %q", d1.Expiration)
	}
	h := d1.Headers
	if h[HeaderTopic] != "sensors/1.5/temp" || h[HeaderQoS] != int32(1) || h[HeaderClientID] != "dev-7" || h[HeaderRetain] != true ||
		h["unit"] != "C" || !slices.Equal(h["tag"].([]any), []any{"a", "b"}) {
		t.Errorf("message 1 headers %v", h)
	}
	if d2.RoutingKey != "sensors.2" || d2.DeliveryMode != amqp.Transient || d2.CorrelationId != "/wA=" ||
		d2.Headers[HeaderCorrelationEncoding] != "base64" || d2.Headers[HeaderQoS] != int32(0) ||
		d2.Headers[HeaderClientID] != nil || d2.Headers[HeaderRetain] != nil || d2.Expiration != "" || d2.ContentType != "" {
		t.Errorf("message 2: %+v", d2)
	}
}

// The routing key template sees the topic, its levels, the client id and
// the default key; a key that renders empty or too long is a permanent
// failure and nothing of the batch is published.
func TestSendRoutingKeyTemplate(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)
	s := senderFor(t, "tpl", Config{Exchange: Exchange{Name: ex}, RoutingKey: `dev.{{level 1}}.{{client_id}}.{{key}}{{if eq (level 3) "long"}}.{{printf "%300s" "x"}}{{end}}`})
	if err := s.Send(sendCtx(t), []packets.Packet{msg("sensors/42/temp", 1, "x")}); err != nil {
		t.Fatal(err)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; d.RoutingKey != "dev.42.dev-7.sensors.42.temp" {
		t.Fatalf("routing key %q", d.RoutingKey)
	}
	// One bad message of a batch fails alone; the other is delivered.
	err := s.Send(sendCtx(t), []packets.Packet{msg("ok/1", 1, "x"), msg("a/b/c/long", 1, "x")})
	var be *bridge.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 2 || be.Errs[0] != nil ||
		!bridge.IsPermanent(be.Errs[1]) || !strings.Contains(be.Errs[1].Error(), "longer than AMQP's 255") {
		t.Fatalf("too long a key: %v", err)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; d.RoutingKey != "dev.1.dev-7.ok.1" {
		t.Fatalf("the good message of the batch: routing key %q", d.RoutingKey)
	}
	empty := senderFor(t, "tpl-empty", Config{Exchange: Exchange{Name: ex}, RoutingKey: `{{level 9}}`})
	err = empty.Send(sendCtx(t), []packets.Packet{msg("a/b", 1, "x")})
	if !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "routing key is empty") {
		t.Fatalf("empty key: %v", err)
	}
	if n := r.count(q); n != 0 {
		t.Fatalf("%d messages published by failed batches", n)
	}
}

// With mandatory (the default), a message no queue is bound for comes
// back: a permanent failure naming the exchange and key in dead_letter
// mode, a retryable one in retry mode; without mandatory it is dropped.
func TestSendUnroutable(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "direct")
	r.queue(q, nil)
	r.bind(q, "routed", ex)
	batch := []packets.Packet{msg("routed", 1, "1"), msg("nowhere", 1, "2")}

	dl := senderFor(t, "unroutable-dl", Config{Exchange: Exchange{Name: ex}})
	err := dl.Send(sendCtx(t), batch)
	if !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "NO_ROUTE") || !strings.Contains(err.Error(), ex) ||
		!strings.Contains(err.Error(), `"nowhere"`) || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("dead_letter mode: %v", err)
	}
	// Only the returned message failed: the routed one is not retried.
	var be *bridge.BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || !bridge.IsPermanent(be.Errs[1]) {
		t.Fatalf("per-message outcome: %#v", err)
	}
	retry := senderFor(t, "unroutable-retry", Config{Exchange: Exchange{Name: ex}, Unroutable: UnroutableRetry})
	err = retry.Send(sendCtx(t), batch)
	if err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "NO_ROUTE") {
		t.Fatalf("retry mode: %v", err)
	}
	// The channel stays usable after returns.
	if err := retry.Send(sendCtx(t), batch[:1]); err != nil {
		t.Fatalf("send after a return: %v", err)
	}
	loose := senderFor(t, "unroutable-loose", Config{Exchange: Exchange{Name: ex}, Mandatory: ptr(false)})
	if err := loose.Send(sendCtx(t), batch); err != nil {
		t.Fatalf("without mandatory: %v", err)
	}
	// The routed message of each batch arrived.
	if got := r.take(q, 4, 10*time.Second); len(got) != 4 {
		t.Fatalf("got %d", len(got))
	}
}

// The default exchange, named amq.default, routes to the queue named by the
// routing key.
func TestSendDefaultExchange(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	q := uniq(t, "q")
	r.queue(q, nil)
	s := senderFor(t, "default-ex", Config{Exchange: Exchange{Name: "amq.default"}})
	if err := s.Send(sendCtx(t), []packets.Packet{msg(KeyToTopic(q), 1, "hi")}); err != nil {
		t.Fatal(err)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; string(d.Body) != "hi" {
		t.Fatalf("body %q", d.Body)
	}
}

// A batch of 500 is published and confirmed as a whole, in order.
func TestSendBatch500(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)
	s := senderFor(t, "batch", Config{Exchange: Exchange{Name: ex}})
	batch := make([]packets.Packet, 500)
	for i := range batch {
		batch[i] = msg("bulk/"+strconv.Itoa(i%7), 1, strconv.Itoa(i))
	}
	if err := s.Send(sendCtx(t), batch); err != nil {
		t.Fatal(err)
	}
	got := r.take(q, 500, 20*time.Second)
	for i, d := range got {
		if string(d.Body) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, d.Body)
		}
	}
}

// Concurrent Sends (the bridge's concurrency) each get their own channel:
// all messages arrive, and no Send sees another's confirms or returns.
func TestSendConcurrent(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "direct")
	r.queue(q, nil)
	r.bind(q, "ok", ex)
	s := senderFor(t, "concurrent", Config{Exchange: Exchange{Name: ex}})
	const workers, rounds, size = 6, 15, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				batch := make([]packets.Packet, size)
				for j := range batch {
					batch[j] = msg("ok", 1, fmt.Sprintf("%d-%d-%d", w, i, j))
				}
				if w == 0 && i%5 == 0 { // now and then an unroutable batch
					batch[size-1].TopicName = "nowhere"
					if err := s.Send(sendCtx(t), batch); !bridge.IsPermanent(err) {
						errs <- fmt.Errorf("unroutable batch: %v", err)
					}
					continue
				}
				if err := s.Send(sendCtx(t), batch); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	unroutableBatches := (rounds + 4) / 5
	want := workers*rounds*size - unroutableBatches
	got := r.take(q, want, 20*time.Second)
	seen := map[string]bool{}
	for _, d := range got {
		if seen[string(d.Body)] {
			t.Fatalf("duplicate %s", d.Body)
		}
		seen[string(d.Body)] = true
	}
	s.mu.Lock()
	idle := len(s.link.idle)
	s.mu.Unlock()
	if idle < 1 || idle > workers {
		t.Errorf("%d idle channels after %d concurrent senders", idle, workers)
	}
}

// Killing the Sender's connection server-side: a Send fails or re-dials,
// and the next Send after a failure re-dials, re-declares the exchange and
// succeeds; with the caller retrying (as the bridge does) nothing is lost.
func TestSendReconnectsAfterConnectionKilled(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.queue(q, nil)
	name := uniq(t, "bridge")
	s := senderFor(t, name, Config{Exchange: Exchange{Name: ex, Declare: true, Durable: ptr(false)}, Unroutable: UnroutableRetry})
	r.cleanupExchange(ex)

	failures := 0
	sendAll := func(prefix string, onErr func(error)) {
		t.Helper()
		batch := make([]packets.Packet, 20)
		for i := range batch {
			batch[i] = msg("k/"+prefix, 1, fmt.Sprintf("%s-%d", prefix, i))
		}
		for attempt := 1; ; attempt++ {
			err := s.Send(sendCtx(t), batch)
			if err == nil {
				return
			}
			if bridge.IsPermanent(err) || attempt == 10 {
				t.Fatalf("send %s, attempt %d: %v", prefix, attempt, err)
			}
			t.Logf("send %s, attempt %d: %v", prefix, attempt, err)
			failures++
			if onErr != nil {
				onErr(err)
			}
		}
	}
	// First send: the exchange is declared; bind once it exists.
	sendAll("a", func(err error) {
		if strings.Contains(err.Error(), "NO_ROUTE") {
			r.bind(q, "k.#", ex)
		}
	})

	// Keep sending while the connection is killed, as a busy bridge would:
	// the Send in flight at that moment fails, the next one reconnects.
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		killConnection(t, ConnectionName(name))
	}()
	pace := time.NewTicker(20 * time.Millisecond) // a steady stream, not a flood
	defer pace.Stop()
	batches := 0
	for done := false; !done || batches < 3; batches++ {
		if batches == 100 && !done { // a slow rabbitmqctl: stop piling up
			<-killed
		}
		select {
		case <-killed:
			done = true
		case <-pace.C:
		}
		sendAll("b"+strconv.Itoa(batches), nil)
	}
	t.Logf("%d batches sent around the kill, %d failed attempts", batches, failures)

	// Kill again, with the exchange (and so its binding) gone: the Sender
	// must declare it again on its new connection; the NO_ROUTE error then
	// proves it exists (a missing exchange is a 404 error instead).
	killConnection(t, ConnectionName(name))
	r.must("delete exchange", func(ch *amqp.Channel) error { return ch.ExchangeDelete(ex, false, false) })
	redeclared := false
	sendAll("c", func(err error) {
		if strings.Contains(err.Error(), "NO_ROUTE") {
			redeclared = true
			r.bind(q, "k.#", ex)
		}
	})
	if !redeclared {
		t.Fatal("the exchange was not declared again after the reconnection")
	}
	prefixes := []string{"a", "c"}
	for i := range batches {
		prefixes = append(prefixes, "b"+strconv.Itoa(i))
	}
	var want []string
	for _, p := range prefixes {
		for i := range 20 {
			want = append(want, fmt.Sprintf("%s-%d", p, i))
		}
	}
	// Messages of a failed attempt may have arrived too: duplicates are
	// allowed (at least once), losses are not.
	r.takeAll(q, want, 20*time.Second)
}

// A connection that dies under a Send in flight (RabbitMQ's confirms held
// back, then the network cut) fails that Send at once with a retryable
// error; the next Send re-dials and succeeds, and with the caller retrying
// nothing is lost.
func TestSendConnectionLostMidSend(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	p := newProxy(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)
	s := senderFor(t, "midsend", Config{URL: p.url(), Exchange: Exchange{Name: ex}})
	batch := func(prefix string) (out []packets.Packet, bodies []string) {
		for i := range 20 {
			out = append(out, msg("t/"+prefix, 1, fmt.Sprintf("%s-%d", prefix, i)))
			bodies = append(bodies, fmt.Sprintf("%s-%d", prefix, i))
		}
		return out, bodies
	}
	one, want := batch("one")
	if err := s.Send(sendCtx(t), one); err != nil {
		t.Fatal(err)
	}
	p.hold()
	two, more := batch("two")
	want = append(want, more...)
	errc := make(chan error, 1)
	go func() { errc <- s.Send(sendCtx(t), two) }()
	eventually(t, 10*time.Second, "the second batch in the queue", func() bool { return r.count(q) == 40 })
	p.cut()
	select {
	case err := <-errc:
		if err == nil || bridge.IsPermanent(err) {
			t.Fatalf("send in flight when the connection died: %v", err)
		}
		t.Logf("send in flight: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the send in flight did not fail")
	}
	if err := s.Send(sendCtx(t), two); err != nil {
		t.Fatalf("the next send: %v", err)
	}
	r.takeAll(q, want, 10*time.Second)
}

// amqps:// with the configured CA and client certificate (mutual TLS)
// works; a server the CA does not vouch for, or a missing client
// certificate, fails the Send with a retryable error that says why.
func TestSendTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	srv, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	p := newTLSProxy(t, &tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: pki.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	key, err := x509.MarshalECPrivateKey(pki.Client.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: pki.Client.Certificate[0]}, keyFile: {Type: "EC PRIVATE KEY", Bytes: key}} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)

	s := senderFor(t, "tls", Config{URL: p.url(), Exchange: Exchange{Name: ex}, TLS: bridge.TLSConfig{CAFile: pki.CAFile, CertFile: certFile, KeyFile: keyFile}})
	if err := s.Send(sendCtx(t), []packets.Packet{msg("a", 1, "over tls")}); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; string(d.Body) != "over tls" {
		t.Fatalf("body %q", d.Body)
	}
	for _, tc := range []struct {
		name string
		tls  bridge.TLSConfig
		want string
	}{
		{"system roots", bridge.TLSConfig{CertFile: certFile, KeyFile: keyFile}, "certificate"},
		{"no client certificate", bridge.TLSConfig{CAFile: pki.CAFile}, ""},
	} {
		s := senderFor(t, "tls-"+tc.name, Config{URL: p.url(), Exchange: Exchange{Name: ex}, TLS: tc.tls, ConfirmTimeout: 5 * time.Second})
		err := s.Send(sendCtx(t), []packets.Packet{msg("a", 1, "x")})
		if err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

// Publishing to an exchange that does not exist is a retryable error that
// says so and how to fix it; the next Send works once the exchange exists.
func TestSendMissingExchange(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	s := senderFor(t, "missing", Config{Exchange: Exchange{Name: ex}})
	err := s.Send(sendCtx(t), []packets.Packet{msg("a", 1, "x")})
	if err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "declare: true") {
		t.Fatalf("missing exchange: %v", err)
	}
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)
	if err := s.Send(sendCtx(t), []packets.Packet{msg("a", 1, "x")}); err != nil {
		t.Fatalf("after creating the exchange: %v", err)
	}
	r.take(q, 1, 10*time.Second)
}

// Expired messages are dropped, not sent [MQTT-3.3.2-5].
func TestSendSkipsExpired(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	r.bind(q, "#", ex)
	s := senderFor(t, "expired", Config{Exchange: Exchange{Name: ex}})
	old := msg("a", 1, "old")
	old.Created -= 100
	old.Properties.MessageExpiryInterval = 10
	if err := s.Send(sendCtx(t), []packets.Packet{old, msg("a", 1, "new")}); err != nil {
		t.Fatal(err)
	}
	if d := r.take(q, 1, 10*time.Second)[0]; string(d.Body) != "new" {
		t.Fatalf("got %q", d.Body)
	}
	if n := r.count(q); n != 0 {
		t.Fatalf("%d more messages", n)
	}
}

// An unreachable RabbitMQ and a done context fail a Send promptly with a
// retryable error; after Close, Send returns ErrClosed.
func TestSendFailuresAndClose(t *testing.T) {
	t.Parallel()
	s, err := NewSender("down", Config{URL: "amqp://guest:guest@127.0.0.1:1/", Exchange: Exchange{Name: "x"}, ConfirmTimeout: 5 * time.Second}, discard)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Send(context.Background(), []packets.Packet{msg("a", 1, "x")})
	if err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "127.0.0.1:1") || time.Since(start) > 5*time.Second {
		t.Fatalf("unreachable: %v after %s", err, time.Since(start))
	}
	if strings.Contains(err.Error(), "guest:guest") {
		t.Fatalf("error shows the password: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, []packets.Packet{msg("a", 1, "x")}); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Send(context.Background(), []packets.Packet{msg("a", 1, "x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := s.Send(context.Background(), nil); err != nil {
		t.Fatalf("empty send: %v", err)
	}
}

// Through a real bridge (outbox, workers, retries), every QoS 1 message
// carries its outbox message id, the same on every attempt.
func TestSendThroughBridgeCarriesMessageIDs(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex, q := uniq(t, "ex"), uniq(t, "q")
	r.exchange(ex, "topic")
	r.queue(q, nil)
	s := senderFor(t, "ids", Config{Exchange: Exchange{Name: ex}, Unroutable: UnroutableRetry})
	store, err := persistence.Open(persistence.Config{Dir: t.TempDir()}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	var mu sync.Mutex
	var attempts [][]string
	spy := bridge.SenderFunc(func(ctx context.Context, msgs []packets.Packet) error {
		mu.Lock()
		attempts = append(attempts, slices.Clone(bridge.MessageIDs(ctx)))
		mu.Unlock()
		return s.Send(ctx, msgs)
	})
	b, err := bridge.New(bridge.Config{Name: "ids", Filters: []string{"#"}, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, StopTimeout: time.Second},
		store, spy, nil, discard)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Stop)
	batch := b.Offer(msg("ids/1", 1, "x"))
	select {
	case <-batch.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("outbox batch not committed")
	}
	// Unroutable until bound: the bridge retries.
	eventually(t, 10*time.Second, "a failed attempt", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) >= 1 })
	r.bind(q, "#", ex)
	d := r.take(q, 1, 10*time.Second)[0]
	mu.Lock()
	defer mu.Unlock()
	if d.MessageId == "" || !strings.HasPrefix(d.MessageId, "ids-") || attempts[0][0] != d.MessageId {
		t.Fatalf("message id %q, attempts %v", d.MessageId, attempts)
	}
}

// BenchmarkSend publishes batches of 100 QoS 1 messages with confirms to a
// real queue; serial is one bridge worker, parallel four (concurrency: 4).
func BenchmarkSend(b *testing.B) {
	r := newRabbit(b)
	ex, q := uniq(b, "ex"), uniq(b, "q")
	r.exchange(ex, "topic")
	r.queue(q, amqp.Table{"x-max-length": int32(100000)})
	r.bind(q, "#", ex)
	s := senderFor(b, uniq(b, "bench"), Config{Exchange: Exchange{Name: ex}})
	batch := make([]packets.Packet, 100)
	for i := range batch {
		batch[i] = msg("bench/"+strconv.Itoa(i%10), 1, strings.Repeat("x", 100))
	}
	run := func(b *testing.B, send func()) {
		b.ReportAllocs()
		b.SetBytes(100 * 100)
		start := time.Now()
		send()
		b.ReportMetric(float64(b.N*len(batch))/time.Since(start).Seconds(), "msgs/s")
	}
	b.Run("serial", func(b *testing.B) {
		run(b, func() {
			for b.Loop() {
				if err := s.Send(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("parallel-4", func(b *testing.B) {
		run(b, func() {
			var wg sync.WaitGroup
			n := b.N
			per := (n + 3) / 4
			for w := range 4 {
				wg.Go(func() {
					for i := w * per; i < min(n, (w+1)*per); i++ {
						if err := s.Send(context.Background(), batch); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	})
}

// On a real topic exchange, a queue bound with FilterToBindingKey(f)
// receives a message sent with TopicToKey(t) exactly when MQTT's f
// matches t.
func TestFilterBindingOnRabbitMQ(t *testing.T) {
	t.Parallel()
	r := newRabbit(t)
	ex := uniq(t, "ex")
	r.exchange(ex, "topic")
	filters := []string{"#", "a/#", "a/+", "+/+", "+/b/#", "v1.2/+", "sensors/+/temp", "/+", "+"}
	topicNames := []string{"a", "a/b", "a/b/c", "x/b", "x/b/y", "v1.2/x", "v1/2/x", "sensors/1/temp", "sensors//temp", "/x", "/", "a.b"}
	queues := make([]string, len(filters))
	for i, f := range filters {
		queues[i] = uniq(t, "q"+strconv.Itoa(i))
		r.queue(queues[i], nil)
		r.bind(queues[i], FilterToBindingKey(f), ex)
	}
	s := senderFor(t, "bindings", Config{Exchange: Exchange{Name: ex}, Mandatory: ptr(false)})
	var batch []packets.Packet
	for _, tn := range topicNames {
		batch = append(batch, msg(tn, 1, tn))
	}
	if err := s.Send(sendCtx(t), batch); err != nil {
		t.Fatal(err)
	}
	for i, f := range filters {
		var want []string
		for _, tn := range topicNames {
			if topics.Match(f, tn) {
				want = append(want, tn)
			}
		}
		var got []string
		if len(want) > 0 {
			for _, d := range r.take(queues[i], len(want), 10*time.Second) {
				got = append(got, string(d.Body))
			}
		}
		if n := r.count(queues[i]); !slices.Equal(got, want) || n != 0 {
			t.Errorf("filter %q (binding key %q): got %q and %d more, want %q", f, FilterToBindingKey(f), got, n, want)
		}
	}
}
