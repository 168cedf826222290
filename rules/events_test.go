package rules_test

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/rules"
)

func TestEvents(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: lost
    topics: [$events/client/disconnected]
    when: json.reason != "normal disconnect"
    actions: [republish: {topic: "ops/lost/{{ json.client_id }}"}]
  - name: no-debug
    topics: [logs/#]
    actions: [drop: true]
`})
	// Nobody listens yet: events cost a lookup and are not published.
	early := connect(t, b.addr, "early")
	eventually(t, "client/connected to be found unheard", func() bool { return b.engine.Counters.EventsUnheard.Load() == 1 })
	if n := b.engine.Counters.Events.Load(); n != 0 {
		t.Fatalf("%d events published", n)
	}
	early.close()

	ev := connect(t, b.addr, "watcher")
	ev.sub(t, 0, "$events/#", "ops/#")
	event := func(kind string) map[string]any {
		t.Helper()
		m := ev.nextOn(t, "$events/"+kind)
		if m.Props == nil || m.Props.ContentType != "application/json" || m.QoS != 0 || m.Retain {
			t.Fatalf("%s: properties %+v qos %d retain %v", kind, m.Props, m.QoS, m.Retain)
		}
		got := jsonOf(t, m.Payload)
		if got["event"] != kind || got["timestamp"] == nil {
			t.Fatalf("%s: %s", kind, m.Payload)
		}
		return got
	}

	c := connect(t, b.addr, "dev1")
	if got := event(rules.EventClientConnected); got["client_id"] != "dev1" || got["protocol"] != 5.0 || got["remote"] == "" {
		t.Fatalf("connected: %v", got)
	}
	c.sub(t, 1, "a/+", "b/#")
	if got := event(rules.EventSubscribed); got["client_id"] != "dev1" || !reflect.DeepEqual(got["filters"], []any{
		map[string]any{"filter": "a/+", "qos": 1.0, "granted": 1.0},
		map[string]any{"filter": "b/#", "qos": 1.0, "granted": 1.0},
	}) {
		t.Fatalf("subscribed: %v", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"a/+"}}); err != nil {
		t.Fatal(err)
	}
	if got := event(rules.EventUnsubscribed); !reflect.DeepEqual(got["filters"], []any{"a/+"}) || got["reason"] != "unsubscribe" {
		t.Fatalf("unsubscribed: %v", got)
	}
	c.pub(t, "logs/x", "debug", 1, nil)
	if got := event(rules.EventMessageDropped); got["client_id"] != "dev1" || got["topic"] != "logs/x" || got["reason"] != "rule no-debug: drop" {
		t.Fatalf("dropped: %v", got)
	}
	c.close()
	if got := event(rules.EventClientDisconnected); got["client_id"] != "dev1" || got["reason"] != "normal disconnect" || got["session_ended"] != true {
		t.Fatalf("disconnected: %v", got)
	}

	// A connection that just goes away; a rule acts on the event.
	d := connect(t, b.addr, "dev2")
	event(rules.EventClientConnected)
	_ = d.conn.Close()
	got := ev.collect(t, "$events/"+rules.EventClientDisconnected, "ops/lost/dev2")
	if e := jsonOf(t, got["$events/"+rules.EventClientDisconnected].Payload); e["client_id"] != "dev2" ||
		e["reason"] != "connection closed without DISCONNECT" {
		t.Fatalf("disconnected: %v", e)
	}

	// A QoS 1 delivery the session ends without: delivery failed.
	sub := connectNoAck(t, b.addr, "slow")
	sub.sub(t, 1, "work")
	event(rules.EventClientConnected)
	c2 := connect(t, b.addr, "pub")
	c2.pub(t, "work", "job", 1, nil)
	<-sub.in
	sub.close()
	if got := event(rules.EventDeliveryFailed); got["client_id"] != "slow" || got["topic"] != "work" {
		t.Fatalf("delivery failed: %v", got)
	}

	// Others report through Emit.
	b.engine.Emit(rules.EventBridgeError, map[string]any{"bridge": "hook", "error": "HTTP 500"})
	if got := event(rules.EventBridgeError); got["bridge"] != "hook" || got["error"] != "HTTP 500" {
		t.Fatalf("bridge error: %v", got)
	}
}

func TestEventsOff(t *testing.T) {
	b := startBroker(t, brokerOpts{noEvent: true})
	ev := connect(t, b.addr, "watcher")
	ev.sub(t, 0, "$events/#")
	connect(t, b.addr, "dev").close()
	b.engine.Emit(rules.EventBridgeError, map[string]any{"bridge": "x"})
	if got := ev.sync(t); len(got) != 0 {
		t.Fatalf("events with events off: %v", got)
	}
}

// connectNoAck connects a client that never acknowledges what it gets.
func connectNoAck(t testing.TB, addr, id string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{in: make(chan msg, 100), conn: conn}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:                       packets.NewThreadSafeConn(conn),
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.in <- msg{Topic: pr.Packet.Topic, Payload: pr.Packet.Payload}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// Stop finishes what is in flight: open aggregations are emitted
// (incomplete), scatter-gathers answer with what came, and every timer
// and goroutine ends (TestMain checks for leaks).
func TestStopFinishes(t *testing.T) {
	b := startBroker(t, brokerOpts{rules: `
rules:
  - name: hour
    topics: [agg]
    actions:
      - aggregate: {window: 1h}
      - republish: {topic: agg/out}
  - name: ask
    topics: [ask]
    actions:
      - scatter_gather: {targets: [nobody/home], timeout: 1h, reply_topic: ask/out}
`})
	sub := connect(t, b.addr, "sub")
	sub.sub(t, 0, "agg/out", "ask/out")
	pub := connect(t, b.addr, "pub")
	pub.pub(t, "agg", `1`, 1, nil)
	pub.pub(t, "ask", `?`, 1, nil)
	if err := b.engine.Stop(); err != nil {
		t.Fatal(err)
	}
	got := sub.collect(t, "agg/out", "ask/out")
	if a := jsonOf(t, got["agg/out"].Payload); a["complete"] != false || a["count"] != 1.0 {
		t.Fatalf("aggregate %v", a)
	}
	if a := jsonOf(t, got["ask/out"].Payload); a["complete"] != false || !reflect.DeepEqual(a["missing"], []any{"nobody/home"}) {
		t.Fatalf("scatter-gather %v", a)
	}
	// After Stop, nothing waits: a message is emitted on its own, and a
	// scatter-gather fails rather than start a timer.
	pub.pub(t, "agg", `2`, 1, nil)
	if a := jsonOf(t, sub.nextOn(t, "agg/out").Payload); a["complete"] != false || a["count"] != 1.0 {
		t.Fatalf("aggregate after stop %v", a)
	}
	pub.pub(t, "ask", `?`, 1, nil)
	if st := b.engine.Rules(); st[1].Errors != 1 || !strings.Contains(st[1].LastError, "engine stopped") {
		t.Fatalf("status %+v", st[1])
	}
}
