package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
)

const wait = 5 * time.Second

func TestPubSubAllQoS(t *testing.T) {
	b := brokertest.Start(t)
	for _, ws := range []bool{false, true} {
		addr := b.Addr(broker.ListenerMQTT)
		if ws {
			addr = b.Addr(broker.ListenerWS)
		}
		for _, qos := range []byte{0, 1, 2} {
			t.Run(fmt.Sprintf("ws=%v/qos%d", ws, qos), func(t *testing.T) {
				sub := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("sub-%v-%d", ws, qos), Clean: true, WS: ws})
				sub.Sub(t, qos, "pubsub/+/x")
				pub := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("pub-%v-%d", ws, qos), Clean: true, WS: ws})
				for i := range 20 {
					pub.MustPub(t, "pubsub/a/x", fmt.Appendf(nil, "m%d", i), qos, false)
				}
				for i := range 20 {
					m := sub.Next(t, wait)
					if want := fmt.Sprintf("m%d", i); string(m.Payload) != want || m.QoS != qos {
						t.Fatalf("message %d: got %q qos %d, want %q qos %d", i, m.Payload, m.QoS, want, qos)
					}
				}
			})
		}
	}
}

func TestWildcardsAndSys(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.MQTT.SysInterval = broker.Duration(time.Second) })
	addr := b.Addr(broker.ListenerMQTT)
	all := brokertest.MustV5(t, addr, brokertest.Options{ID: "all", Clean: true})
	all.Sub(t, 1, "#")
	shared := brokertest.MustV5(t, addr, brokertest.Options{ID: "shared", Clean: true})
	shared.Sub(t, 1, "$share/g/#")
	plus := brokertest.MustV5(t, addr, brokertest.Options{ID: "plus", Clean: true})
	plus.Sub(t, 1, "a/+/c")
	sys := brokertest.MustV5(t, addr, brokertest.Options{ID: "sys", Clean: true})
	sys.Sub(t, 0, "$SYS/broker/uptime")

	// $SYS topics are published every second; # and $share/g/# must not see them.
	m := sys.Next(t, 3*time.Second)
	if m.Topic != "$SYS/broker/uptime" {
		t.Fatalf("sys got %q", m.Topic)
	}
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "a/b/c", []byte("1"), 1, false)
	pub.MustPub(t, "a/b/c/d", []byte("2"), 1, false)
	for _, c := range []*brokertest.V5{all, shared} {
		for _, want := range []string{"a/b/c", "a/b/c/d"} {
			if m := c.Next(t, wait); m.Topic != want {
				t.Fatalf("got %q, want %q (a $SYS message leaked into a # subscription?)", m.Topic, want)
			}
		}
	}
	if m := plus.Next(t, wait); m.Topic != "a/b/c" {
		t.Fatalf("a/+/c got %q", m.Topic)
	}
	if m, ok := plus.Try(200 * time.Millisecond); ok {
		t.Fatalf("a/+/c also got %q", m.Topic)
	}
	// Let another $SYS round pass: nothing may arrive on # or $share/g/#.
	sys.Next(t, 3*time.Second)
	for _, c := range []*brokertest.V5{all, shared} {
		if m, ok := c.Try(300 * time.Millisecond); ok {
			t.Fatalf("wildcard subscription got %q", m.Topic)
		}
	}
}

func TestRetainedSetReplaceClear(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "r/1", []byte("first"), 1, true)
	pub.MustPub(t, "r/1", []byte("second"), 1, true)
	pub.MustPub(t, "r/2", []byte("two"), 0, true)
	pub.MustPub(t, "r/3", []byte("three"), 2, true)
	pub.MustPub(t, "r/3", nil, 1, true) // clear

	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "sub", Clean: true})
	sub.Sub(t, 1, "r/#")
	got := map[string]string{}
	for range 2 {
		m := sub.Next(t, wait)
		if !m.Retain {
			t.Fatalf("%s: retain flag not set on a retained message", m.Topic)
		}
		got[m.Topic] = string(m.Payload)
	}
	if got["r/1"] != "second" || got["r/2"] != "two" || len(got) != 2 {
		t.Fatalf("retained = %v", got)
	}
	if m, ok := sub.Try(200 * time.Millisecond); ok {
		t.Fatalf("cleared topic delivered: %q=%q", m.Topic, m.Payload)
	}
}

func TestWillMessage(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	watcher := brokertest.MustV5(t, addr, brokertest.Options{ID: "watcher", Clean: true})
	watcher.Sub(t, 1, "wills/#")
	dying := brokertest.MustV5(t, addr, brokertest.Options{ID: "dying", Clean: true,
		Will: &paho.WillMessage{Topic: "wills/dying", Payload: []byte("gone"), QoS: 1}})
	dying.Drop()
	if m := watcher.Next(t, wait); m.Topic != "wills/dying" || string(m.Payload) != "gone" {
		t.Fatalf("will: %q %q", m.Topic, m.Payload)
	}
	polite := brokertest.MustV5(t, addr, brokertest.Options{ID: "polite", Clean: true,
		Will: &paho.WillMessage{Topic: "wills/polite", Payload: []byte("x"), QoS: 1}})
	polite.Close() // DISCONNECT: no will [MQTT-3.1.2-10]
	if m, ok := watcher.Try(500 * time.Millisecond); ok {
		t.Fatalf("will sent after a clean disconnect: %q", m.Topic)
	}
}

func TestV3AndV5SideBySide(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	v3 := brokertest.MustV3(t, addr, brokertest.Options{ID: "v3", Clean: true})
	v3.Sub(t, 2, "mix/#")
	v5 := brokertest.MustV5(t, addr, brokertest.Options{ID: "v5", Clean: true})
	v5.Sub(t, 2, "mix/#")
	v3ws := brokertest.MustV3(t, b.Addr(broker.ListenerWS), brokertest.Options{ID: "v3ws", Clean: true, WS: true})
	v3ws.Sub(t, 1, "mix/#")
	for qos := byte(0); qos <= 2; qos++ {
		v5.MustPub(t, "mix/from5", []byte{qos}, qos, false)
		v3.MustPub(t, "mix/from3", []byte{qos}, qos, false)
	}
	count := func(in *brokertest.Inbox) map[string]int {
		got := map[string]int{}
		for range 6 {
			m := in.Next(t, wait)
			got[m.Topic]++
		}
		return got
	}
	for name, in := range map[string]*brokertest.Inbox{"v3": v3.Inbox, "v5": v5.Inbox, "v3ws": v3ws.Inbox} {
		if got := count(in); got["mix/from5"] != 3 || got["mix/from3"] != 3 {
			t.Fatalf("%s received %v", name, got)
		}
	}
}

func TestInvalidFiltersRefusedPerFilter(t *testing.T) {
	b := brokertest.Start(t)
	c := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "c", Clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	filters := []string{"ok/+/x", "a/b#", "a+/b", "a/#/b", "$share/g", "$share/g+/x", "fine/#"}
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, s)
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	want := []byte{1, 0x8F, 0x8F, 0x8F, 0x8F, 0x8F, 1}
	if !bytes.Equal(sa.Reasons, want) {
		t.Fatalf("SUBACK reasons % x, want % x", sa.Reasons, want)
	}
}

func TestPublishToSysRefused(t *testing.T) {
	b := brokertest.Start(t)
	c := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "c", Clean: true})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := c.Pub(ctx, "$SYS/broker/fake", []byte("x"), 1, false)
	if err == nil && (r == nil || r.ReasonCode != 0x87) {
		t.Fatalf("publish to $SYS: %+v, want reason 0x87", r)
	}
	if r == nil || r.ReasonCode != 0x87 {
		t.Fatalf("publish to $SYS: %v %+v, want reason 0x87", err, r)
	}
}

func TestReceiveMaximumAndOrder(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	// A consumer with Receive Maximum 5 that acknowledges nothing gets 5.
	slow := brokertest.MustV5(t, addr, brokertest.Options{ID: "slow", Clean: true, ReceiveMaximum: 5, NoAck: true})
	slow.Sub(t, 1, "rm/#")
	fast := brokertest.MustV5(t, addr, brokertest.Options{ID: "fast", Clean: true, ReceiveMaximum: 3})
	fast.Sub(t, 1, "rm/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 200 {
		pub.MustPub(t, "rm/x", fmt.Appendf(nil, "%03d", i), 1, false)
	}
	for i := range 200 {
		m := fast.Next(t, wait)
		if want := fmt.Sprintf("%03d", i); string(m.Payload) != want {
			t.Fatalf("fast consumer: message %d is %q: order lost", i, m.Payload)
		}
	}
	for range 5 {
		slow.Next(t, wait)
	}
	if m, ok := slow.Try(300 * time.Millisecond); ok {
		t.Fatalf("consumer with Receive Maximum 5 and no acks got a 6th message %q", m.Payload)
	}
}

// User properties are the publisher's data: they reach a subscriber that
// set Request Problem Information to 0 (paho.golang's default) too
// [MQTT-3.1.2-29], with QoS 0 and 1.
func TestUserPropertiesForwarded(t *testing.T) {
	b := brokertest.Start(t)
	addr := b.Addr(broker.ListenerMQTT)
	sub := brokertest.MustV5(t, addr, brokertest.Options{ID: "up-sub", Clean: true})
	sub.Sub(t, 1, "up/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "up-pub", Clean: true})
	for _, qos := range []byte{0, 1} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "up/x", QoS: qos, Payload: []byte("p"),
			Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "trace", Value: "abc"}}}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		m := sub.Next(t, wait)
		if m.Props == nil || len(m.Props.User) != 1 || m.Props.User[0].Key != "trace" || m.Props.User[0].Value != "abc" {
			t.Fatalf("QoS %d: user properties %+v, want trace=abc", qos, m.Props)
		}
	}
}
