package broker_test

// Black-box tests of workload queues: every $share/{group}/{filter} group
// is a durable queue that hands each message to one member at a time.

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/motemq/mote/broker"
	"github.com/motemq/mote/broker/brokertest"
	"github.com/motemq/mote/queue"
	"github.com/motemq/mote/test/e2e"
)

// --- helpers -------------------------------------------------------------

// wqBroker starts a broker with the given queue configuration and $SYS
// published every second.
func wqBroker(t *testing.T, qs ...broker.QueueConfig) *broker.Broker {
	t.Helper()
	return brokertest.Start(t, func(c *broker.Config) {
		c.MQTT.SysInterval = broker.Duration(time.Second)
		c.Queues = qs
	})
}

// wqStats returns the statistics of group's queue, false when the broker
// has no such queue.
func wqStats(b *broker.Broker, group string) (queue.Stats, bool) {
	for _, s := range b.Queues().Stats() {
		if s.Group == group {
			return s, true
		}
	}
	return queue.Stats{}, false
}

// wqWaitStats waits until group's queue exists and cond holds for its
// statistics, and returns them; it fails the test after within.
func wqWaitStats(t *testing.T, b *broker.Broker, group string, within time.Duration, what string, cond func(queue.Stats) bool) queue.Stats {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, ok := wqStats(b, group)
		if ok && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			if !ok {
				t.Fatalf("queue %q: waited %v for %s: no such queue (queues: %+v)", group, within, what, b.Queues().Stats())
			}
			t.Fatalf("queue %q: waited %v for %s: stats %+v", group, within, what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wqSettled is the condition "nothing left in the queue or in flight, and
// acked messages have reached acked".
func wqSettled(acked uint64) func(queue.Stats) bool {
	return func(s queue.Stats) bool { return s.Depth == 0 && s.InFlight == 0 && s.Acked >= acked }
}

// wqProp returns the v5 user property key of m ("" when absent).
func wqProp(m brokertest.Message, key string) string {
	if m.Props == nil {
		return ""
	}
	return m.Props.User.Get(key)
}

// wqNoMore fails the test if one of the inboxes receives a message within d.
func wqNoMore(t *testing.T, d time.Duration, why string, inboxes ...*brokertest.Inbox) {
	t.Helper()
	for i, in := range inboxes {
		if m, ok := in.Try(d); ok {
			t.Fatalf("%s: consumer %d received %q %q (dup=%v)", why, i, m.Topic, m.Payload, m.Dup)
		}
		d = 10 * time.Millisecond // the first wait covered the others too
	}
}

// wqCollector reads consumers' inboxes in the background.
type wqCollector struct {
	mu    sync.Mutex
	got   [][]brokertest.Message
	total atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func wqCollect(t *testing.T, inboxes ...*brokertest.Inbox) *wqCollector {
	c := &wqCollector{got: make([][]brokertest.Message, len(inboxes)), stop: make(chan struct{})}
	for i, in := range inboxes {
		c.wg.Go(func() {
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				if m, ok := in.Try(20 * time.Millisecond); ok {
					c.mu.Lock()
					c.got[i] = append(c.got[i], m)
					c.mu.Unlock()
					c.total.Add(1)
				}
			}
		})
	}
	t.Cleanup(c.halt)
	return c
}

func (c *wqCollector) halt() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// wait waits until n messages arrived in all (failing the test after
// within), lets duplicates trail in for linger, then stops collecting.
func (c *wqCollector) wait(t *testing.T, n int, within, linger time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for c.total.Load() < int64(n) {
		if time.Now().After(deadline) {
			c.halt()
			t.Fatalf("received %d of %d messages within %v (per consumer %v)", c.total.Load(), n, within, c.counts())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(linger)
	c.halt()
}

func (c *wqCollector) counts() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, len(c.got))
	for i, ms := range c.got {
		out[i] = len(ms)
	}
	return out
}

func (c *wqCollector) messages(i int) []brokertest.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got[i])
}

// wqRaw is an MQTT 5 consumer on a bare connection, for what paho does not
// send: a PUBACK with a failure reason code (a NACK).
type wqRaw struct {
	conn net.Conn
	pubs chan *packets.Publish
}

// wqNacker connects id, subscribes filter at QoS 1 and answers every
// PUBLISH with a PUBACK carrying reason; received PUBLISHes go to pubs.
func wqNacker(t *testing.T, addr, id, filter string, reason byte) *wqRaw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cp := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: id, CleanStart: true, KeepAlive: 120, Properties: &packets.Properties{}}
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	p, err := packets.ReadPacket(conn)
	if err != nil || p.Type != packets.CONNACK || p.Content.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("raw %s: connect: %v %v", id, p, err)
	}
	sp := &packets.Subscribe{PacketID: 1, Properties: &packets.Properties{}, Subscriptions: []packets.SubOptions{{Topic: filter, QoS: 1}}}
	if _, err := sp.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	p, err = packets.ReadPacket(conn)
	if err != nil || p.Type != packets.SUBACK || p.Content.(*packets.Suback).Reasons[0] >= 0x80 {
		t.Fatalf("raw %s: subscribe %q: %v %v", id, filter, p, err)
	}
	_ = conn.SetDeadline(time.Time{})
	r := &wqRaw{conn: conn, pubs: make(chan *packets.Publish, 1000)}
	go func() {
		for {
			p, err := packets.ReadPacket(conn)
			if err != nil {
				return
			}
			if pb, ok := p.Content.(*packets.Publish); ok {
				r.pubs <- pb
				if pb.QoS == 1 {
					ack := &packets.Puback{PacketID: pb.PacketID, ReasonCode: reason, Properties: &packets.Properties{}}
					if _, err := ack.WriteTo(conn); err != nil {
						return
					}
				}
			}
		}
	}()
	return r
}

func wqRawProp(pb *packets.Publish, key string) string {
	if pb.Properties == nil {
		return ""
	}
	for _, u := range pb.Properties.User {
		if u.Key == key {
			return u.Value
		}
	}
	return ""
}

// wqV3 is an MQTT 3.1.1 client (paho.mqtt.golang) whose acknowledgements
// can be withheld and whose connection can be cut.
type wqV3 struct {
	pahov3.Client
	msgs chan pahov3.Message
	mu   sync.Mutex
	conn net.Conn
}

func wqDialV3(t *testing.T, addr, id string, autoAck bool) *wqV3 {
	t.Helper()
	c := &wqV3{msgs: make(chan pahov3.Message, 10000)}
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(60 * time.Second).
		SetAutoAckDisabled(!autoAck).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { c.msgs <- m }).
		SetCustomOpenConnectionFn(func(u *url.URL, _ pahov3.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			if err == nil {
				c.mu.Lock()
				c.conn = conn
				c.mu.Unlock()
			}
			return conn, err
		})
	c.Client = pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect %q: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func (c *wqV3) sub(t *testing.T, qos byte, filter string) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 subscribe %q: %v", filter, tok.Error())
	}
	if st, ok := tok.(*pahov3.SubscribeToken); ok {
		for _, code := range st.Result() {
			if code >= 0x80 {
				t.Fatalf("v3 subscribe %q refused: 0x%02x", filter, code)
			}
		}
	}
}

func (c *wqV3) next(t *testing.T, within time.Duration) pahov3.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(within):
		t.Fatalf("v3: no message within %v", within)
		return nil
	}
}

// drop closes the network connection without DISCONNECT.
func (c *wqV3) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// wqSeq returns the sequence number a payload from e2e.Payload carries.
func wqSeq(t *testing.T, p []byte) uint64 {
	t.Helper()
	_, seq, err := e2e.Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// --- tests ---------------------------------------------------------------

// 1. Round robin over three QoS 1 consumers: 10,000 messages from two
// publishers are each delivered exactly once, evenly spread.
func TestWorkQueueRoundRobinExactlyOnce(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	var inboxes []*brokertest.Inbox
	for i := range 3 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("rr-%d", i), Clean: true})
		c.Sub(t, 1, "$share/rr/rr/#")
		inboxes = append(inboxes, c.Inbox)
	}
	wqWaitStats(t, b, "rr", 2*time.Second, "3 consumers", func(s queue.Stats) bool { return s.Consumers == 3 })

	const n = 10000
	col := wqCollect(t, inboxes...)
	check := e2e.NewChecker()
	start := time.Now()
	e2e.Flood(t, addr, "rr/work", 2, n, check)
	col.wait(t, n, 20*time.Second, 300*time.Millisecond)
	t.Logf("%d messages through the queue in %v, per consumer %v", n, time.Since(start), col.counts())

	for i := range inboxes {
		for _, m := range col.messages(i) {
			check.Delivered(m.Payload)
			if m.QoS != 1 || m.Dup {
				t.Errorf("consumer %d: message with QoS %d dup %v", i, m.QoS, m.Dup)
			}
		}
	}
	if r := check.Report(); r.OK != n || r.Lost != 0 || r.Duplicated != 0 || r.Unexpected != 0 {
		t.Fatalf("not exactly once: %v", r)
	}
	for i, got := range col.counts() {
		if got < n/3-67 || got > n/3+67 {
			t.Errorf("round robin: consumer %d got %d of %d messages, want %d±67 (all: %v)", i, got, n, n/3, col.counts())
		}
	}
	s := wqWaitStats(t, b, "rr", 5*time.Second, "all acknowledged", wqSettled(n))
	if s.Delivered != n || s.Acked != n || s.Redelivered != 0 || s.DeadLettered != 0 || s.Consumers != 3 {
		t.Errorf("stats after %d messages: %+v", n, s)
	}
}

// 2. least_inflight sends to the consumer with the fewest unacknowledged
// messages: a fast consumer gets far more than one that acks slowly.
func TestWorkQueueLeastInflight(t *testing.T) {
	b := wqBroker(t, broker.QueueConfig{Name: "li", Strategy: "least_inflight"})
	addr := b.Addr(broker.ListenerMQTT)
	fast := brokertest.MustV5(t, addr, brokertest.Options{ID: "fast", Clean: true})
	fast.Sub(t, 1, "$share/li/li/#")
	slow := brokertest.MustV5(t, addr, brokertest.Options{ID: "slow", Clean: true, NoAck: true})
	slow.Sub(t, 1, "$share/li/li/#")

	// The slow consumer acknowledges one message every 30ms, in order.
	var slowGot atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, ok := slow.Try(20 * time.Millisecond)
			if !ok {
				continue
			}
			slowGot.Add(1)
			time.Sleep(30 * time.Millisecond)
			_ = slow.Ack(m)
		}
	})
	defer wg.Wait()
	defer close(stop)

	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 300
	for i := range n {
		pub.MustPub(t, "li/x", []byte(strconv.Itoa(i)), 1, false)
	}
	fastGot := 0
	deadline := time.Now().Add(15 * time.Second)
	for fastGot+int(slowGot.Load()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fast %d + slow %d of %d messages within 15s", fastGot, slowGot.Load(), n)
		}
		if _, ok := fast.Try(20 * time.Millisecond); ok {
			fastGot++
		}
	}
	wqNoMore(t, 300*time.Millisecond, "after all messages", fast.Inbox)
	t.Logf("least_inflight: fast %d, slow %d", fastGot, slowGot.Load())
	if int64(fastGot) <= 2*slowGot.Load() {
		t.Fatalf("least_inflight: fast consumer got %d, slow one %d; want fast > 2×slow", fastGot, slowGot.Load())
	}
	if total := fastGot + int(slowGot.Load()); total != n {
		t.Fatalf("delivered %d, want %d", total, n)
	}
	wqWaitStats(t, b, "li", 10*time.Second, "all acknowledged", wqSettled(n))
}

// 3. A consumer that disconnects holding unacknowledged messages: each of
// them goes to another member with DUP and delivery-count 2; none is lost.
func TestWorkQueueRedeliverOnDisconnect(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	lazy := brokertest.MustV5(t, addr, brokertest.Options{ID: "lazy", Clean: true, NoAck: true})
	lazy.Sub(t, 1, "$share/redo/redo/#")

	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	check := e2e.NewChecker()
	const n = 20
	for i := range uint64(n) {
		pub.MustPub(t, "redo/x", e2e.Payload("pub", i), 1, false)
		check.Sent("pub", i, true)
	}
	for i := range uint64(n) {
		m := lazy.Next(t, wait)
		if got := wqSeq(t, m.Payload); got != i || m.Dup {
			t.Fatalf("lazy consumer: message %d is #%d dup=%v", i, got, m.Dup)
		}
	}
	s := wqWaitStats(t, b, "redo", 2*time.Second, "20 in flight", func(s queue.Stats) bool { return s.InFlight == n })
	if s.Delivered != n {
		t.Errorf("stats with %d unacknowledged: %+v", n, s)
	}

	// A second member gets nothing while the messages are in flight to
	// the first...
	taker := brokertest.MustV5(t, addr, brokertest.Options{ID: "taker", Clean: true})
	taker.Sub(t, 1, "$share/redo/redo/#")
	wqNoMore(t, 300*time.Millisecond, "messages in flight to another member", taker.Inbox)

	// ...and all of them once the first drops its connection.
	lazy.Drop()
	var order []uint64
	for range n {
		m := taker.Next(t, wait)
		check.Delivered(m.Payload)
		seq := wqSeq(t, m.Payload)
		order = append(order, seq)
		if !m.Dup || wqProp(m, "delivery-count") != "2" {
			t.Errorf("redelivered #%d: dup=%v delivery-count=%q, want dup and 2", seq, m.Dup, wqProp(m, "delivery-count"))
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("redelivered in the order %v: not back at the queue head in order (FIFO)", order)
	}
	wqNoMore(t, 300*time.Millisecond, "after the redeliveries", taker.Inbox)
	if r := check.Report(); r.Lost != 0 || r.Duplicated != 0 || r.Unexpected != 0 || r.OK != n {
		t.Fatalf("after redelivery: %v", r)
	}
	s = wqWaitStats(t, b, "redo", 5*time.Second, "all acknowledged", wqSettled(n))
	if s.Redelivered != n || s.Consumers != 1 {
		t.Errorf("stats after redelivery: %+v (want Redelivered %d, Consumers 1)", s, n)
	}
}

// 4. A poison message that every consumer rejects (PUBACK 0x80) goes to the
// dead-letter topic after max_deliveries, with its payload and user
// properties saying where it came from and why.
func TestWorkQueuePoisonMessageDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		group, dlt, watch string
	}{
		{"poison", "", "$queue/poison/dead"},
		{"poison2", "dlq/poison2", "dlq/poison2"},
	} {
		t.Run(tc.group, func(t *testing.T) {
			b := wqBroker(t, broker.QueueConfig{Name: tc.group, MaxDeliveries: 3, DeadLetterTopic: tc.dlt})
			addr := b.Addr(broker.ListenerMQTT)
			dead := brokertest.MustV5(t, addr, brokertest.Options{ID: "dead-watch", Clean: true})
			dead.Sub(t, 1, tc.watch)
			filter := "$share/" + tc.group + "/poison/#"
			n1 := wqNacker(t, addr, "nack-1", filter, 0x80)
			n2 := wqNacker(t, addr, "nack-2", filter, 0x80)
			wqWaitStats(t, b, tc.group, 2*time.Second, "2 consumers", func(s queue.Stats) bool { return s.Consumers == 2 })

			pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
			pub.MustPub(t, "poison/pill", []byte("poison-pill"), 1, false)

			dl := dead.Next(t, wait)
			if dl.Topic != tc.watch || string(dl.Payload) != "poison-pill" {
				t.Fatalf("dead letter: %q %q", dl.Topic, dl.Payload)
			}
			if got := wqProp(dl, "original-topic"); got != "poison/pill" {
				t.Errorf("dead letter original-topic %q, want poison/pill", got)
			}
			if got := wqProp(dl, "reason"); got == "" {
				t.Errorf("dead letter has no reason")
			} else {
				t.Logf("dead letter reason %q", got)
			}
			if got := wqProp(dl, "delivery-count"); got != "3" {
				t.Errorf("dead letter delivery-count %q, want 3", got)
			}

			// Exactly three deliveries in all, counted 1, 2, 3.
			var got []*packets.Publish
			timeout := time.After(500 * time.Millisecond)
		collect:
			for {
				select {
				case pb := <-n1.pubs:
					got = append(got, pb)
				case pb := <-n2.pubs:
					got = append(got, pb)
				case <-timeout:
					break collect
				}
			}
			if len(got) != 3 {
				t.Fatalf("poison message delivered %d times, want max_deliveries 3", len(got))
			}
			// The two consumers' streams interleave; sort by delivery-count.
			slices.SortFunc(got, func(a, b *packets.Publish) int {
				return strings.Compare(wqRawProp(a, "delivery-count"), wqRawProp(b, "delivery-count"))
			})
			for i, pb := range got {
				if string(pb.Payload) != "poison-pill" || pb.Topic != "poison/pill" {
					t.Errorf("delivery %d: %q %q", i+1, pb.Topic, pb.Payload)
				}
				if i > 0 && (!pb.Duplicate || wqRawProp(pb, "delivery-count") != strconv.Itoa(i+1)) {
					t.Errorf("delivery %d: dup=%v delivery-count=%q", i+1, pb.Duplicate, wqRawProp(pb, "delivery-count"))
				}
			}
			if got[0].Duplicate {
				t.Errorf("first delivery has DUP set")
			}
			s := wqWaitStats(t, b, tc.group, 2*time.Second, "dead-lettered", func(s queue.Stats) bool { return s.DeadLettered == 1 })
			if s.Depth != 0 || s.InFlight != 0 || s.Acked != 0 || s.Redelivered != 2 {
				t.Errorf("stats after dead-lettering: %+v (want Depth 0, InFlight 0, Acked 0, Redelivered 2)", s)
			}
			wqNoMore(t, 200*time.Millisecond, "after the dead letter", dead.Inbox)
		})
	}
}

// 5. A queue declared in the configuration keeps messages published before
// any consumer subscribed and hands them over in order.
func TestWorkQueueDeclaredKeepsMessagesBeforeConsumers(t *testing.T) {
	b := wqBroker(t, broker.QueueConfig{Name: "jobs", Filter: "jobs/#"})
	addr := b.Addr(broker.ListenerMQTT)
	wqWaitStats(t, b, "jobs", time.Second, "the declared queue", func(s queue.Stats) bool { return s.Depth == 0 && s.Consumers == 0 })
	plain := brokertest.MustV5(t, addr, brokertest.Options{ID: "plain", Clean: true})
	plain.Sub(t, 1, "jobs/#")

	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 100
	for i := range n {
		pub.MustPub(t, fmt.Sprintf("jobs/%d/run", i%7), []byte(fmt.Sprintf("%03d", i)), 1, false)
	}
	pub.MustPub(t, "other/x", []byte("not a job"), 1, false)
	wqWaitStats(t, b, "jobs", 2*time.Second, "100 queued", func(s queue.Stats) bool { return s.Depth == n })

	// An ordinary subscriber still gets its own copy of each.
	for i := range n {
		if m := plain.Next(t, wait); string(m.Payload) != fmt.Sprintf("%03d", i) {
			t.Fatalf("plain subscriber: message %d is %q", i, m.Payload)
		}
	}

	worker := brokertest.MustV5(t, addr, brokertest.Options{ID: "worker", Clean: true})
	worker.Sub(t, 1, "$share/jobs/jobs/#")
	for i := range n {
		m := worker.Next(t, wait)
		if string(m.Payload) != fmt.Sprintf("%03d", i) || m.Topic != fmt.Sprintf("jobs/%d/run", i%7) {
			t.Fatalf("worker: message %d is %q %q", i, m.Topic, m.Payload)
		}
	}
	wqNoMore(t, 300*time.Millisecond, "after the backlog", worker.Inbox)
	s := wqWaitStats(t, b, "jobs", 5*time.Second, "all acknowledged", wqSettled(n))
	if s.Consumers != 1 || s.Delivered != n {
		t.Errorf("stats: %+v", s)
	}
}

// 6. max_length: reject_new refuses the publish beyond it (v5 PUBACK 0x97),
// drop_oldest keeps the newest.
func TestWorkQueueOverflow(t *testing.T) {
	t.Run("reject_new", func(t *testing.T) {
		b := wqBroker(t, broker.QueueConfig{Name: "ovr", Filter: "ovr/#", MaxLength: 10})
		addr := b.Addr(broker.ListenerMQTT)
		pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
		for i := range 12 {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			r, err := pub.Pub(ctx, "ovr/x", []byte(strconv.Itoa(i)), 1, false)
			cancel()
			if r == nil { // a refusal comes with an error and the PUBACK
				t.Fatalf("publish %d: %v", i, err)
			}
			want := byte(0)
			if i >= 10 {
				want = 0x97 // quota exceeded
			}
			if r.ReasonCode != want && !(want == 0 && r.ReasonCode < 0x80) {
				t.Fatalf("publish %d to a queue of max_length 10: PUBACK 0x%02x, want 0x%02x", i, r.ReasonCode, want)
			}
		}
		s := wqWaitStats(t, b, "ovr", time.Second, "full", func(s queue.Stats) bool { return s.Depth == 10 })
		if s.Rejected != 2 {
			t.Errorf("Rejected %d, want 2: %+v", s.Rejected, s)
		}
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
		c.Sub(t, 1, "$share/ovr/ovr/#")
		for i := range 10 {
			if m := c.Next(t, wait); string(m.Payload) != strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, m.Payload)
			}
		}
		wqNoMore(t, 500*time.Millisecond, "beyond max_length", c.Inbox)
	})
	t.Run("drop_oldest", func(t *testing.T) {
		b := wqBroker(t, broker.QueueConfig{Name: "ovd", Filter: "ovd/#", MaxLength: 10, Overflow: "drop_oldest"})
		addr := b.Addr(broker.ListenerMQTT)
		pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
		for i := range 15 {
			pub.MustPub(t, "ovd/x", []byte(strconv.Itoa(i)), 1, false)
		}
		s := wqWaitStats(t, b, "ovd", time.Second, "full", func(s queue.Stats) bool { return s.Depth == 10 })
		if s.Dropped != 5 || s.Rejected != 0 {
			t.Errorf("Dropped %d Rejected %d, want 5 and 0: %+v", s.Dropped, s.Rejected, s)
		}
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
		c.Sub(t, 1, "$share/ovd/ovd/#")
		for i := 5; i < 15; i++ {
			if m := c.Next(t, wait); string(m.Payload) != strconv.Itoa(i) {
				t.Fatalf("want message %d (the 10 newest), got %q", i, m.Payload)
			}
		}
		wqNoMore(t, 500*time.Millisecond, "beyond the 10 newest", c.Inbox)
	})
}

// 7. message_ttl: messages that waited longer than it are not delivered,
// and counted as expired.
func TestWorkQueueMessageTTL(t *testing.T) {
	b := wqBroker(t, broker.QueueConfig{Name: "ttl", Filter: "ttl/#", MessageTTL: broker.Duration(time.Second)})
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 5 {
		pub.MustPub(t, "ttl/x", []byte(fmt.Sprintf("old-%d", i)), 1, false)
	}
	time.Sleep(1500 * time.Millisecond)
	for i := range 3 {
		pub.MustPub(t, "ttl/x", []byte(fmt.Sprintf("fresh-%d", i)), 1, false)
	}
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
	c.Sub(t, 1, "$share/ttl/ttl/#")
	for i := range 3 {
		if m := c.Next(t, wait); string(m.Payload) != fmt.Sprintf("fresh-%d", i) {
			t.Fatalf("message %d is %q, want fresh-%d (expired messages delivered?)", i, m.Payload, i)
		}
	}
	wqNoMore(t, 300*time.Millisecond, "after the fresh messages", c.Inbox)
	s := wqWaitStats(t, b, "ttl", 3*time.Second, "5 expired", func(s queue.Stats) bool { return s.Expired == 5 })
	if s.Delivered != 3 || s.Depth != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// 8. queue_expiry: once the last member unsubscribes, the queue and its
// messages go after the expiry; a group whose members are merely offline
// (persistent sessions) keeps its queue and keeps accumulating.
func TestWorkQueueExpiry(t *testing.T) {
	b := wqBroker(t, broker.QueueConfig{Name: "tmp*", QueueExpiry: broker.Duration(time.Second), InflightPerConsumer: 1})
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})

	// tmp2: the member goes offline with its session kept.
	o2 := brokertest.Options{ID: "member-2", SessionExpiry: 3600, Session: state.NewInMemory()}
	m2 := brokertest.MustV5(t, addr, o2)
	m2.Sub(t, 1, "$share/tmp2/tmp2/#")
	m2.Close()
	offline := time.Now()
	pub.MustPub(t, "tmp2/x", []byte("kept-1"), 1, false)
	pub.MustPub(t, "tmp2/x", []byte("kept-2"), 1, false)

	// tmp1: the member takes one message (its credit is 1) and
	// unsubscribes, leaving four in the queue.
	m1 := brokertest.MustV5(t, addr, brokertest.Options{ID: "member-1", Clean: true, NoAck: true})
	m1.Sub(t, 1, "$share/tmp1/tmp1/#")
	for i := range 5 {
		pub.MustPub(t, "tmp1/x", []byte(fmt.Sprintf("old-%d", i)), 1, false)
	}
	if m := m1.Next(t, wait); string(m.Payload) != "old-0" {
		t.Fatalf("member-1 got %q first", m.Payload)
	}
	wqNoMore(t, 300*time.Millisecond, "inflight_per_consumer 1", m1.Inbox)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := m1.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/tmp1/tmp1/#"}}); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	left := time.Now()
	if s, ok := wqStats(b, "tmp1"); !ok || s.Consumers != 0 {
		t.Fatalf("right after the last member left: %+v listed=%v (want the queue, with no consumers)", s, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := wqStats(b, "tmp1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue tmp1 still listed 5s after its last member unsubscribed (queue_expiry 1s)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if gone := time.Since(left); gone < 900*time.Millisecond {
		t.Errorf("queue deleted %v after the last member left, before queue_expiry 1s", gone)
	}
	m1.Close()

	// A new member starts from an empty queue.
	fresh := brokertest.MustV5(t, addr, brokertest.Options{ID: "fresh", Clean: true})
	fresh.Sub(t, 1, "$share/tmp1/tmp1/#")
	wqNoMore(t, 500*time.Millisecond, "old messages of an expired queue", fresh.Inbox)
	pub.MustPub(t, "tmp1/x", []byte("new"), 1, false)
	if m := fresh.Next(t, wait); string(m.Payload) != "new" {
		t.Fatalf("fresh member got %q", m.Payload)
	}

	// tmp2 outlived the expiry with its member offline.
	if d := 2500*time.Millisecond - time.Since(offline); d > 0 {
		time.Sleep(d)
	}
	s, ok := wqStats(b, "tmp2")
	if !ok || s.Depth != 2 {
		t.Fatalf("queue of an offline persistent member after 2.5s: %+v listed=%v (want Depth 2)", s, ok)
	}
	t.Logf("offline member's queue: %+v", s)
	m2 = brokertest.MustV5(t, addr, o2)
	for _, want := range []string{"kept-1", "kept-2"} {
		if m := m2.Next(t, wait); string(m.Payload) != want {
			t.Fatalf("member-2 back: got %q, want %q", m.Payload, want)
		}
	}
}

// 9. MQTT 3.1.1 and 5 members share one group; unacknowledged messages
// move from a v3 member to a v5 one and back when the holder drops.
func TestWorkQueueMixedProtocols(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})

	t.Run("shared", func(t *testing.T) {
		v5 := brokertest.MustV5(t, addr, brokertest.Options{ID: "mix-v5", Clean: true})
		v5.Sub(t, 1, "$share/mix/mix/#")
		v3 := wqDialV3(t, addr, "mix-v3", true)
		v3.sub(t, 1, "$share/mix/mix/#")
		wqWaitStats(t, b, "mix", 2*time.Second, "2 consumers", func(s queue.Stats) bool { return s.Consumers == 2 })
		const n = 20
		for i := range n {
			pub.MustPub(t, "mix/x", []byte(strconv.Itoa(i)), 1, false)
		}
		seen := map[string]int{}
		var from5, from3 int
		deadline := time.Now().Add(10 * time.Second)
		for from5+from3 < n {
			if time.Now().After(deadline) {
				t.Fatalf("v5 %d + v3 %d of %d messages within 10s", from5, from3, n)
			}
			if m, ok := v5.Try(10 * time.Millisecond); ok {
				seen[string(m.Payload)]++
				from5++
			}
			select {
			case m := <-v3.msgs:
				seen[string(m.Payload())]++
				from3++
			default:
			}
		}
		wqNoMore(t, 300*time.Millisecond, "after all messages", v5.Inbox)
		select {
		case m := <-v3.msgs:
			t.Fatalf("after all messages: v3 member received %q", m.Payload())
		default:
		}
		if len(seen) != n {
			t.Fatalf("distinct messages %d of %d: %v", len(seen), n, seen)
		}
		if from5 == 0 || from3 == 0 {
			t.Fatalf("v5 member got %d, v3 member %d: both should receive", from5, from3)
		}
		t.Logf("v5 %d, v3 %d", from5, from3)
	})

	t.Run("v3 drops, v5 gets them", func(t *testing.T) {
		lazy := wqDialV3(t, addr, "lazy-v3", false)
		lazy.sub(t, 1, "$share/mix2/mix2/#")
		const n = 10
		for i := range n {
			pub.MustPub(t, "mix2/x", []byte(strconv.Itoa(i)), 1, false)
		}
		for i := range n {
			if m := lazy.next(t, wait); string(m.Payload()) != strconv.Itoa(i) {
				t.Fatalf("v3 member: message %d is %q", i, m.Payload())
			}
		}
		taker := brokertest.MustV5(t, addr, brokertest.Options{ID: "taker-v5", Clean: true})
		taker.Sub(t, 1, "$share/mix2/mix2/#")
		wqNoMore(t, 300*time.Millisecond, "messages in flight to the v3 member", taker.Inbox)
		lazy.drop()
		for i := range n {
			m := taker.Next(t, wait)
			if string(m.Payload) != strconv.Itoa(i) || !m.Dup || wqProp(m, "delivery-count") != "2" {
				t.Fatalf("redelivery %d: %q dup=%v delivery-count=%q", i, m.Payload, m.Dup, wqProp(m, "delivery-count"))
			}
		}
		wqWaitStats(t, b, "mix2", 5*time.Second, "all acknowledged", wqSettled(n))
	})

	t.Run("v5 drops, v3 gets them", func(t *testing.T) {
		lazy := brokertest.MustV5(t, addr, brokertest.Options{ID: "lazy-v5", Clean: true, NoAck: true})
		lazy.Sub(t, 1, "$share/mix3/mix3/#")
		const n = 10
		for i := range n {
			pub.MustPub(t, "mix3/x", []byte(strconv.Itoa(i)), 1, false)
		}
		for i := range n {
			if m := lazy.Next(t, wait); string(m.Payload) != strconv.Itoa(i) {
				t.Fatalf("v5 member: message %d is %q", i, m.Payload)
			}
		}
		taker := wqDialV3(t, addr, "taker-v3", true)
		taker.sub(t, 1, "$share/mix3/mix3/#")
		lazy.Drop()
		for i := range n {
			m := taker.next(t, wait)
			if string(m.Payload()) != strconv.Itoa(i) || !m.Duplicate() {
				t.Fatalf("v3 redelivery %d: %q dup=%v", i, m.Payload(), m.Duplicate())
			}
		}
		wqWaitStats(t, b, "mix3", 5*time.Second, "all acknowledged", wqSettled(n))
	})
}

// sticky_topic keeps every message of one topic on one member, in order,
// and still spreads the topics over the members.
func TestWorkQueueStickyTopic(t *testing.T) {
	b := wqBroker(t, broker.QueueConfig{Name: "st", Strategy: "sticky_topic"})
	addr := b.Addr(broker.ListenerMQTT)
	var inboxes []*brokertest.Inbox
	for i := range 3 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("worker-%d", i+1), Clean: true})
		c.Sub(t, 1, "$share/st/st/#")
		inboxes = append(inboxes, c.Inbox)
	}
	col := wqCollect(t, inboxes...)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	var topics []string
	for i := range 12 {
		topics = append(topics, fmt.Sprintf("st/sensor/%d", i)) // device ids last, as usual
	}
	const per = 10
	for i := range per {
		for _, tp := range topics {
			pub.MustPub(t, tp, []byte(strconv.Itoa(i)), 1, false)
		}
	}
	col.wait(t, per*len(topics), 10*time.Second, 300*time.Millisecond)
	owner := map[string]int{}
	next := map[string]int{}
	used := map[int]bool{}
	for i := range inboxes {
		for _, m := range col.messages(i) {
			if o, ok := owner[m.Topic]; ok && o != i {
				t.Errorf("topic %s on consumers %d and %d", m.Topic, o, i)
			}
			owner[m.Topic] = i
			used[i] = true
			if string(m.Payload) != strconv.Itoa(next[m.Topic]) {
				t.Errorf("topic %s: got %q, want %d", m.Topic, m.Payload, next[m.Topic])
			}
			next[m.Topic]++
		}
	}
	for _, tp := range topics {
		if next[tp] != per {
			t.Errorf("topic %s: %d messages, want %d", tp, next[tp], per)
		}
	}
	t.Logf("owners %v, per consumer %v", owner, col.counts())
	if len(used) < 2 {
		t.Errorf("sticky_topic put all %d topics on one of 3 consumers (per consumer %v): no spreading", len(topics), col.counts())
	}
}

// Members subscribed at QoS 0 get each message at most once; nothing stays
// in flight for them.
func TestWorkQueueQoS0Member(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "q0", Clean: true})
	c.Sub(t, 0, "$share/q0/q0/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 5 {
		pub.MustPub(t, "q0/x", []byte(strconv.Itoa(i)), 1, false)
	}
	for i := range 5 {
		if m := c.Next(t, wait); string(m.Payload) != strconv.Itoa(i) || m.QoS != 0 {
			t.Fatalf("message %d: %q QoS %d", i, m.Payload, m.QoS)
		}
	}
	wqWaitStats(t, b, "q0", 2*time.Second, "nothing in flight", func(s queue.Stats) bool { return s.Depth == 0 && s.InFlight == 0 })
}

// Each group is its own queue: two groups and a plain subscriber on the
// same filter each get every message once.
func TestWorkQueueGroupsIndependent(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	var g1 []*brokertest.Inbox
	for i := range 2 {
		c := brokertest.MustV5(t, addr, brokertest.Options{ID: fmt.Sprintf("g1-%d", i), Clean: true})
		c.Sub(t, 1, "$share/g1/ind/#")
		g1 = append(g1, c.Inbox)
	}
	g2 := brokertest.MustV5(t, addr, brokertest.Options{ID: "g2", Clean: true})
	g2.Sub(t, 1, "$share/g2/ind/#")
	plain := brokertest.MustV5(t, addr, brokertest.Options{ID: "plain", Clean: true})
	plain.Sub(t, 1, "ind/#")
	c1, c2, cp := wqCollect(t, g1...), wqCollect(t, g2.Inbox), wqCollect(t, plain.Inbox)

	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 50
	for i := range n {
		pub.MustPub(t, "ind/x", []byte(strconv.Itoa(i)), 1, false)
	}
	for name, col := range map[string]*wqCollector{"g1": c1, "g2": c2, "plain": cp} {
		col.wait(t, n, 10*time.Second, 200*time.Millisecond)
		total := 0
		for _, k := range col.counts() {
			total += k
		}
		if total != n {
			t.Errorf("%s received %d, want %d", name, total, n)
		}
	}
}

// One queue per group name: a member subscribed with two overlapping
// filters, and members with different filters, get each message once.
func TestWorkQueueOverlappingFiltersDeliverOnce(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	a := brokertest.MustV5(t, addr, brokertest.Options{ID: "a", Clean: true})
	a.Sub(t, 1, "$share/ov/ov/#", "$share/ov/ov/+")
	bb := brokertest.MustV5(t, addr, brokertest.Options{ID: "b", Clean: true})
	bb.Sub(t, 1, "$share/ov/ov/x/+")
	col := wqCollect(t, a.Inbox, bb.Inbox)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 30
	for i := range n {
		topic := "ov/x" // matches both of a's filters
		if i%2 == 1 {
			topic = "ov/x/y" // matches a's # and b's filter
		}
		pub.MustPub(t, topic, []byte(strconv.Itoa(i)), 1, false)
	}
	col.wait(t, n, 10*time.Second, 300*time.Millisecond)
	seen := map[string]int{}
	for i := range 2 {
		for _, m := range col.messages(i) {
			seen[string(m.Payload)]++
		}
	}
	for i := range n {
		if k := seen[strconv.Itoa(i)]; k != 1 {
			t.Errorf("message %d delivered %d times", i, k)
		}
	}
	if s, _ := wqStats(b, "ov"); s.Delivered != n {
		t.Errorf("Delivered %d, want %d: %+v", s.Delivered, n, s)
	}
}

// Queue statistics are published under $SYS/queues/{group}/.
func TestWorkQueueSysTopics(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
	c.Sub(t, 1, "$share/sysq/sysq/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 7 {
		pub.MustPub(t, "sysq/x", []byte(strconv.Itoa(i)), 1, false)
	}
	for range 7 {
		c.Next(t, wait)
	}
	wqWaitStats(t, b, "sysq", 2*time.Second, "all acknowledged", wqSettled(7))

	sys := brokertest.MustV5(t, addr, brokertest.Options{ID: "sys", Clean: true})
	sys.Sub(t, 0, "$SYS/queues/sysq/#")
	want := map[string]string{
		"depth": "0", "inflight": "0", "consumers": "1", "delivered": "7",
		"acked": "7", "redelivered": "0", "dead_lettered": "0",
	}
	got := map[string]string{}
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		m, ok := sys.Try(time.Until(deadline))
		if !ok {
			break
		}
		got[strings.TrimPrefix(m.Topic, "$SYS/queues/sysq/")] = string(m.Payload)
		done := true
		for k, v := range want {
			if got[k] != v {
				done = false
			}
		}
		if done {
			return
		}
	}
	t.Fatalf("$SYS/queues/sysq/*: got %v, want %v", got, want)
}

// A durable queue's messages survive a graceful restart, in order; a
// durable: false one starts empty.
func TestWorkQueueDurableAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	qs := []broker.QueueConfig{{Name: "dur", Filter: "dur/#"}, {Name: "eph", Filter: "eph/#", Durable: boolp(false)}}
	mutate := func(c *broker.Config) { c.Queues = qs }
	b := brokertest.StartIn(t, dir, mutate)
	pub := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "pub", Clean: true})
	for i := range 20 {
		pub.MustPub(t, "dur/x", []byte(strconv.Itoa(i)), 1, false)
		pub.MustPub(t, "eph/x", []byte(strconv.Itoa(i)), 1, false)
	}
	wqWaitStats(t, b, "eph", time.Second, "20 queued", func(s queue.Stats) bool { return s.Depth == 20 })
	pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b = brokertest.StartIn(t, dir, mutate)
	if s, ok := wqStats(b, "dur"); !ok || s.Depth != 20 {
		t.Fatalf("after restart: %+v listed=%v (want Depth 20)", s, ok)
	}
	if s, ok := wqStats(b, "eph"); ok && s.Depth != 0 {
		t.Errorf("durable: false queue after restart: %+v (want it emptied)", s)
	}
	c := brokertest.MustV5(t, b.Addr(broker.ListenerMQTT), brokertest.Options{ID: "c", Clean: true})
	c.Sub(t, 1, "$share/dur/dur/#")
	for i := range 20 {
		if m := c.Next(t, wait); string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("after restart: message %d is %q", i, m.Payload)
		}
	}
	wqNoMore(t, 300*time.Millisecond, "after the backlog", c.Inbox)
}

// A member's credit is its Receive Maximum: it never holds more
// unacknowledged messages; the others take the rest.
func TestWorkQueueCreditIsReceiveMaximum(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	holder := brokertest.MustV5(t, addr, brokertest.Options{ID: "holder", Clean: true, NoAck: true, ReceiveMaximum: 5})
	holder.Sub(t, 1, "$share/cr/cr/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 20
	for i := range n {
		pub.MustPub(t, "cr/x", []byte(strconv.Itoa(i)), 1, false)
	}
	var held []brokertest.Message
	for range 5 {
		held = append(held, holder.Next(t, wait))
	}
	wqNoMore(t, 300*time.Millisecond, "beyond Receive Maximum 5", holder.Inbox)
	s := wqWaitStats(t, b, "cr", time.Second, "5 in flight", func(s queue.Stats) bool { return s.InFlight == 5 })
	if s.Delivered != 5 {
		t.Errorf("stats with a full member: %+v", s)
	}

	other := brokertest.MustV5(t, addr, brokertest.Options{ID: "other", Clean: true})
	other.Sub(t, 1, "$share/cr/cr/#")
	for i := 5; i < n; i++ {
		if m := other.Next(t, wait); string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("other member: got %q, want %d", m.Payload, i)
		}
	}
	for _, m := range held {
		if err := holder.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	wqWaitStats(t, b, "cr", 5*time.Second, "all acknowledged", wqSettled(n))
	wqNoMore(t, 200*time.Millisecond, "after all were acknowledged", holder.Inbox, other.Inbox)
}

// A NACK (PUBACK >= 0x80) sends the message to another member at once,
// with delivery-count 2.
func TestWorkQueueNackGoesToAnotherMember(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	nacker := wqNacker(t, addr, "nacker", "$share/nk/nk/#", 0x83)
	good := brokertest.MustV5(t, addr, brokertest.Options{ID: "good", Clean: true})
	good.Sub(t, 1, "$share/nk/nk/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	const n = 10
	for i := range n {
		pub.MustPub(t, "nk/x", []byte(strconv.Itoa(i)), 1, false)
	}
	seen := map[string]bool{}
	nacked := 0
	for len(seen) < n {
		m := good.Next(t, wait)
		if seen[string(m.Payload)] {
			t.Fatalf("good member got %q twice", m.Payload)
		}
		seen[string(m.Payload)] = true
		if m.Dup {
			nacked++
			if wqProp(m, "delivery-count") != "2" {
				t.Errorf("after a NACK: %q delivery-count %q, want 2", m.Payload, wqProp(m, "delivery-count"))
			}
		}
	}
	if len(nacker.pubs) != nacked || nacked == 0 {
		t.Errorf("nacker refused %d messages, the good member got %d redeliveries", len(nacker.pubs), nacked)
	}
	s := wqWaitStats(t, b, "nk", 5*time.Second, "all acknowledged", wqSettled(n))
	if s.Refused != uint64(nacked) || s.DeadLettered != 0 {
		t.Errorf("stats: %+v, want Refused %d", s, nacked)
	}
}

// QoS 2 members: a message leaves the queue on PUBCOMP.
func TestWorkQueueQoS2Member(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "q2", Clean: true})
	c.Sub(t, 2, "$share/q2/q2/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	for i := range 10 {
		pub.MustPub(t, "q2/x", []byte(strconv.Itoa(i)), 2, false)
	}
	for i := range 10 {
		if m := c.Next(t, wait); string(m.Payload) != strconv.Itoa(i) || m.QoS != 2 {
			t.Fatalf("message %d: %q QoS %d", i, m.Payload, m.QoS)
		}
	}
	s := wqWaitStats(t, b, "q2", 5*time.Second, "all completed", wqSettled(10))
	if s.Delivered != 10 || s.Redelivered != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// A retained publish is queued like any other (delivered once, without the
// retain flag); a member joining later does not get it again.
func TestWorkQueueRetainedPublish(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	c := brokertest.MustV5(t, addr, brokertest.Options{ID: "c", Clean: true})
	c.Sub(t, 1, "$share/rt/rt/#")
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	pub.MustPub(t, "rt/x", []byte("kept"), 1, true)
	if m := c.Next(t, wait); string(m.Payload) != "kept" || m.Retain {
		t.Fatalf("got %q retain=%v", m.Payload, m.Retain)
	}
	late := brokertest.MustV5(t, addr, brokertest.Options{ID: "late", Clean: true})
	late.Sub(t, 1, "$share/rt/rt/#")
	wqNoMore(t, 500*time.Millisecond, "a retained message for a queue member", c.Inbox, late.Inbox)
	s := wqWaitStats(t, b, "rt", 2*time.Second, "acknowledged", wqSettled(1))
	if s.Delivered != 1 {
		t.Errorf("stats: %+v", s)
	}
}

// A member with a persistent session that drops its connection gives its
// unacknowledged messages back; another member acknowledges them; when the
// first comes back it does not get them again. Alone, it gets its own
// messages back on reconnecting.
func TestWorkQueuePersistentMemberReturnsOnDisconnect(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	o := brokertest.Options{ID: "p-member", SessionExpiry: 3600, NoAck: true, Session: state.NewInMemory()}

	t.Run("another member takes them", func(t *testing.T) {
		a := brokertest.MustV5(t, addr, o)
		a.Sub(t, 1, "$share/pm/pm/#")
		for i := range 5 {
			pub.MustPub(t, "pm/x", []byte(strconv.Itoa(i)), 1, false)
		}
		for range 5 {
			a.Next(t, wait)
		}
		other := brokertest.MustV5(t, addr, brokertest.Options{ID: "pm-other", Clean: true})
		other.Sub(t, 1, "$share/pm/pm/#")
		a.Drop()
		var order []string
		for range 5 {
			m := other.Next(t, wait)
			if !m.Dup {
				t.Fatalf("other member: %q without DUP", m.Payload)
			}
			order = append(order, string(m.Payload))
		}
		if !slices.Equal(order, []string{"0", "1", "2", "3", "4"}) {
			t.Errorf("returned messages redelivered in the order %v, want 0..4 (back to the queue head, FIFO)", order)
		}
		wqWaitStats(t, b, "pm", 5*time.Second, "acknowledged by the other member", wqSettled(5))
		other.Close()
		a = brokertest.MustV5(t, addr, o)
		if !a.Connack.SessionPresent {
			t.Fatal("persistent session not resumed")
		}
		wqNoMore(t, 500*time.Millisecond, "messages another member acknowledged", a.Inbox)
		a.Close()
	})

	t.Run("alone it gets them back", func(t *testing.T) {
		a := brokertest.MustV5(t, addr, o)
		a.Sub(t, 1, "$share/pm2/pm2/#")
		for i := range 5 {
			pub.MustPub(t, "pm2/x", []byte(strconv.Itoa(i)), 1, false)
		}
		for range 5 {
			a.Next(t, wait)
		}
		a.Drop()
		wqWaitStats(t, b, "pm2", 2*time.Second, "member offline", func(s queue.Stats) bool { return s.Online == 0 && s.InFlight == 0 })
		oa := o
		oa.NoAck = false
		a = brokertest.MustV5(t, addr, oa)
		got := map[string]int{}
		for range 5 {
			m := a.Next(t, wait)
			got[string(m.Payload)]++
			if !m.Dup {
				t.Errorf("%q again without DUP", m.Payload)
			}
		}
		wqNoMore(t, 300*time.Millisecond, "duplicates", a.Inbox)
		if len(got) != 5 {
			t.Fatalf("got back %v, want 0..4 once each", got)
		}
		wqWaitStats(t, b, "pm2", 5*time.Second, "all acknowledged", wqSettled(5))
	})
}

// A persistent member that reconnects at once after disconnecting (its old
// connection may still be closing on the broker) stays a live member.
func TestWorkQueueMemberReconnectsAtOnce(t *testing.T) {
	b := wqBroker(t)
	addr := b.Addr(broker.ListenerMQTT)
	pub := brokertest.MustV5(t, addr, brokertest.Options{ID: "pub", Clean: true})
	o := brokertest.Options{ID: "bouncer", SessionExpiry: 3600, Session: state.NewInMemory()}
	c := brokertest.MustV5(t, addr, o)
	c.Sub(t, 1, "$share/bounce/bounce/#")
	again := 0
	for i := range 30 {
		pub.MustPub(t, "bounce/x", []byte(strconv.Itoa(i)), 1, false)
		for {
			m, ok := c.Try(3 * time.Second)
			if !ok {
				s, _ := wqStats(b, "bounce")
				t.Fatalf("connection %d: message %d not delivered within 3s; stats %+v", i, i, s)
			}
			n, _ := strconv.Atoi(string(m.Payload))
			if n == i {
				break
			}
			if n > i || !m.Dup {
				t.Fatalf("connection %d: got %q dup=%v, want %d", i, m.Payload, m.Dup, i)
			}
			again++ // its PUBACK was still on the way when the connection closed
		}
		c.Close()
		c = brokertest.MustV5(t, addr, o)
	}
	t.Logf("%d earlier messages delivered again after a reconnection", again)
}
