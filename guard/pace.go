package guard

import (
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// PaceOptions configures the Pacer.
type PaceOptions struct {
	// Wait bounds how long a publisher is held for one dropped delivery;
	// 0 turns pacing off.
	Wait time.Duration
	// Room is how many deliveries (of the dropped message's size) the
	// subscriber must write before the publisher goes on; 0 means a quarter
	// of mochi's write queue (MaximumClientWritesPending).
	Room int
}

// PaceCounters are the Pacer's running totals.
type PaceCounters struct {
	// Paced counts holds that ended because the subscriber made room.
	Paced atomic.Uint64
	// TimedOut counts holds that ended at PaceOptions.Wait (the subscriber
	// is marked stalled if it wrote nothing at all meanwhile).
	TimedOut atomic.Uint64
	// Skipped counts drops to a stalled or closed subscriber: nobody
	// waited.
	Skipped atomic.Uint64
}

// Pacer paces QoS 0 publishers to their subscribers instead of letting
// mochi drop most of their messages.
//
// mochi queues each delivery on the subscriber's bounded outbound channel
// (write_queue) and drops it when the channel is full, calling
// OnPublishDropped (publishToClient, its only caller) in the goroutine that
// routes the message: for a client's publish, the publisher's read
// goroutine. Many publishers feeding one subscriber win the CPU over its
// single write goroutine, so most of the broker's work went into routing
// messages that were then dropped (fan-in at QoS 0 lost about 85 %).
//
// On such a drop the Pacer holds the publisher's goroutine, so mochi stops
// reading its socket (TCP backpressure), until the subscriber's connection
// has written Room more messages' worth of bytes or Wait has passed. The
// dropped message stays dropped: mochi cannot queue it again in order.
//
// A subscriber that wrote nothing during a whole wait is stalled (it does
// not read): later drops to it hold nobody until it writes again, so a dead
// subscriber costs each publisher at most one Wait, not one per message.
//
// Not held: deliveries of QoS 1/2 publishes (mqtt.backpressure paces those
// publishers), retained messages (those sent on SUBSCRIBE are routed from
// the subscriber's goroutine under the retain gate), publishes of inline
// (broker-internal) clients, wills (their client is closed), and
// subscribers whose connection cannot report its writes (not a
// listen.Conn).
type Pacer struct {
	mqtt.HookBase
	server   *mqtt.Server
	opts     PaceOptions
	Counters PaceCounters
}

var _ mqtt.Hook = (*Pacer)(nil)

// writeWaiter is what the Pacer needs of a subscriber's connection
// (listen.Conn).
type writeWaiter interface {
	AwaitWritten(room uint64, d time.Duration) (waited, made bool)
}

// NewPacer returns the pacing hook for server.
func NewPacer(server *mqtt.Server, opts PaceOptions) *Pacer {
	return &Pacer{server: server, opts: opts}
}

// ID is the hook's id.
func (h *Pacer) ID() string { return "qos0-pacer" }

// Provides reports the events the hook handles.
func (h *Pacer) Provides(b byte) bool { return b == mqtt.OnPublishDropped && h.opts.Wait > 0 }

// OnPublishDropped holds the publisher of a dropped QoS 0 delivery until
// the subscriber cl has made room (see Pacer).
func (h *Pacer) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if h.opts.Wait <= 0 || pk.FixedHeader.Qos != 0 || pk.FixedHeader.Retain || pk.Origin == mqtt.InlineClientId {
		return
	}
	sub, ok := cl.Net.Conn.(writeWaiter)
	if !ok {
		return
	}
	// The publisher must be a connected network client: inline clients
	// (Mote's rules, bridges and queues publish from their own goroutines)
	// are not in the client map under their id, and a will's client is
	// closed.
	pub, ok := h.server.Clients.Get(pk.Origin)
	if !ok || pub.Net.Inline || pub.Net.Conn == nil || pub.Closed() {
		return
	}
	room := h.opts.Room
	if room <= 0 {
		room = max(1, int(h.server.Options.Capabilities.MaximumClientWritesPending)/4)
	}
	// The bytes of one delivery, roughly: fixed header, topic, payload.
	size := uint64(len(pk.TopicName) + len(pk.Payload) + 5)
	waited, made := sub.AwaitWritten(uint64(room)*size, h.opts.Wait)
	switch {
	case !waited:
		h.Counters.Skipped.Add(1)
	case made:
		h.Counters.Paced.Add(1)
	default:
		h.Counters.TimedOut.Add(1)
	}
}
