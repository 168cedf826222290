package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/motemq/mote/internal/hookset"
	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// Origins of messages that bridges' inbound sides publish; an outbound
// bridge does not send a message back to the kind of place it came from.
const (
	OriginHTTP   = "mote-http"   // the HTTP publish API's client (mochi sets Origin to it)
	OriginBridge = "mote-bridge" // replies and dead letters the bridges publish
)

// InboundOrigin is the Origin (client id) of the messages that bridge
// name's inbound side publishes; its outbound side skips them, so nothing
// goes back where it came from.
func InboundOrigin(name string) string { return OriginBridge + "/" + name }

// Publish is how a bridge's inbound side hands a message to the broker. It
// returns once a QoS 1/2 message is durable (acknowledge the far side
// then). An error wrapped with Permanent means the broker refuses this
// message (ACL, invalid topic, too large): do not retry it; any other error
// is transient.
type Publish func(ctx context.Context, pk packets.Packet) error

// Hook is the mochi hook that hands every matching publish to the
// outbound bridges: QoS 1/2 messages enter each bridge's durable outbox
// before the publisher's acknowledgement. It publishes dead letters to
// $bridge/{name}/dead and status under $SYS/bridges/{name}/.
type Hook struct {
	mqtt.HookBase
	server  *mqtt.Server
	persist *persistence.Hook
	bridges []*Bridge
	skip    map[*Bridge][]string // origins a bridge does not send (its own inbound side)
	inline  *mqtt.Client

	// MaxPayload bounds what inbound sides may publish (0: no bound);
	// set before serving.
	MaxPayload int

	mu   sync.Mutex
	dead []packets.Packet
	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// NewHook returns the hook; Add the bridges before serving.
func NewHook(server *mqtt.Server, persist *persistence.Hook, log *slog.Logger) *Hook {
	h := &Hook{server: server, persist: persist, skip: map[*Bridge][]string{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	h.Log = log
	h.inline = server.NewClient(nil, mqtt.LocalListener, OriginBridge, true)
	return h
}

// Add registers a bridge; skipOrigins name messages it must not send (the
// Origin of its own inbound side).
func (h *Hook) Add(b *Bridge, skipOrigins ...string) {
	h.bridges = append(h.bridges, b)
	h.skip[b] = skipOrigins
}

// Publish injects a message as the bridges' own client (replies of
// request/response bridges); Origin is OriginBridge.
func (h *Hook) Publish(pk packets.Packet) error { return h.server.InjectPacket(h.inline, pk) }

// Inbound returns the Publish function of bridge name's inbound side. It
// checks the topic (concrete, not a $ topic, UTF-8), the payload size and
// canPublish (the ACL of the user the bridge acts as; nil allows all), then
// publishes as the client InboundOrigin(name).
func (h *Hook) Inbound(name string, canPublish func(topic string) bool) Publish {
	cl := h.server.NewClient(nil, mqtt.LocalListener, InboundOrigin(name), true)
	return func(ctx context.Context, pk packets.Packet) error {
		if err := topics.CheckName(pk.TopicName); err != nil {
			return Permanent(err)
		}
		if h.MaxPayload > 0 && len(pk.Payload) > h.MaxPayload {
			return Permanent(fmt.Errorf("payload of %d bytes is larger than mqtt.max_packet_size (%d)", len(pk.Payload), h.MaxPayload))
		}
		if canPublish != nil && !canPublish(pk.TopicName) {
			return Permanent(fmt.Errorf("%w: bridge %s may not publish to %q (see auth.acl for the bridge's username)", ErrNotAuthorized, name, pk.TopicName))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		pk.FixedHeader.Type = packets.Publish
		if pk.FixedHeader.Qos > 0 && pk.PacketID == 0 {
			pk.PacketID = 1 // mochi wants one for QoS > 0; the inline client never uses it
		}
		select {
		case <-h.stop:
			return ErrStopped
		default:
		}
		return h.server.InjectPacket(cl, pk)
	}
}

// Errors of Publish.
var (
	ErrNotAuthorized = errors.New("not authorized")
	ErrStopped       = errors.New("bridge: the broker is shutting down")
)

// Bridges returns the registered bridges.
func (h *Hook) Bridges() []*Bridge { return h.bridges }

// DeadLetter is the function to give New: it queues the message for
// $bridge/{name}/dead with the reason and attempts as user properties.
func (h *Hook) DeadLetter(name string) func(pk packets.Packet, reason string, attempts int) {
	return func(pk packets.Packet, reason string, attempts int) {
		out := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: pk.FixedHeader.Qos},
			PacketID:    uint16(min(pk.FixedHeader.Qos, 1)),
			TopicName:   "$bridge/" + name + "/dead",
			Payload:     pk.Payload,
			Properties: packets.Properties{
				ContentType: pk.Properties.ContentType,
				User: append(append([]packets.UserProperty(nil), pk.Properties.User...),
					packets.UserProperty{Key: "original-topic", Val: pk.TopicName},
					packets.UserProperty{Key: "reason", Val: reason},
					packets.UserProperty{Key: "attempts", Val: strconv.Itoa(attempts)},
					packets.UserProperty{Key: "bridge", Val: name}),
			},
		}
		h.Log.Warn("bridge: message dead-lettered", "bridge", name, "topic", pk.TopicName, "reason", reason, "attempts", attempts)
		h.mu.Lock()
		h.dead = append(h.dead, out)
		h.mu.Unlock()
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// ID is the hook's id.
func (h *Hook) ID() string { return "bridge" }

var provides = hookset.Of(
	mqtt.OnPublish,
	mqtt.OnSysInfoTick,
)

// Provides reports the events the hook handles.
func (h *Hook) Provides(b byte) bool { return provides.Has(b) }

// Start starts the bridges and the dead-letter publisher.
func (h *Hook) Start() {
	for _, b := range h.bridges {
		b.Start()
	}
	h.wg.Add(1)
	go h.publishDead()
}

// Stop stops the bridges (their outboxes keep what was not confirmed).
func (h *Hook) Stop() error {
	h.once.Do(func() {
		close(h.stop)
		for _, b := range h.bridges {
			b.Stop()
		}
	})
	h.wg.Wait()
	return nil
}

func (h *Hook) publishDead() {
	defer h.wg.Done()
	for {
		select {
		case <-h.stop:
			return
		case <-h.kick:
		}
		h.mu.Lock()
		dead := h.dead
		h.dead = nil
		h.mu.Unlock()
		for _, pk := range dead {
			if err := h.server.InjectPacket(h.inline, pk); err != nil {
				h.Log.Error("bridge: dead letter not published", "topic", pk.TopicName, "error", err)
			}
		}
	}
}

// OnPublish offers the message to every matching bridge.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if len(h.bridges) == 0 || h.persist.Replaying() || pk.Ignore {
		return pk, nil
	}
	for _, b := range h.bridges {
		if !b.Matches(pk.TopicName) || slices.Contains(h.skip[b], pk.Origin) {
			continue
		}
		if batch := b.Offer(pk); batch != nil && pk.FixedHeader.Qos > 0 {
			h.persist.WaitFor(&pk, batch)
		}
	}
	return pk, nil
}

// OnSysInfoTick publishes each bridge's status under $SYS/bridges/{name}/.
func (h *Hook) OnSysInfoTick(*system.Info) {
	for _, b := range h.bridges {
		s := b.Status()
		base := "$SYS/bridges/" + s.Name + "/"
		for _, v := range []struct {
			name, val string
		}{
			{"connected", strconv.FormatBool(s.Connected)},
			{"backlog", strconv.Itoa(s.Backlog)},
			{"inflight", strconv.Itoa(s.InFlight)},
			{"sent", strconv.FormatUint(s.Sent, 10)},
			{"failed", strconv.FormatUint(s.Failed, 10)},
			{"dead_lettered", strconv.FormatUint(s.DeadLettered, 10)},
			{"dropped", strconv.FormatUint(s.Dropped, 10)},
			{"last_error", s.LastError},
			{"last_error_at", lastErrorAt(s)},
		} {
			_ = h.server.Publish(base+v.name, []byte(v.val), false, 0)
		}
	}
}

func lastErrorAt(s Status) string {
	if s.LastErrorAt.IsZero() {
		return ""
	}
	return s.LastErrorAt.UTC().Format(time.RFC3339)
}
