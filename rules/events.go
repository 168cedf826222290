package rules

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Event kinds. An event of kind K is published to $events/K as a JSON
// object with "event" (K), "timestamp" (RFC 3339, UTC) and the kind's
// fields; QoS 0, not retained.
const (
	// EventClientConnected: client_id, username, listener, remote,
	// protocol (3, 4 or 5), clean_start, keepalive.
	EventClientConnected = "client/connected"
	// EventClientDisconnected: client_id, username, reason, session_ended.
	EventClientDisconnected = "client/disconnected"
	// EventSubscribed: client_id, username, filters [{filter, qos, granted}]
	// (granted is the SUBACK reason code; ≥ 128 is a refusal).
	EventSubscribed = "session/subscribed"
	// EventUnsubscribed: client_id, username, filters [filter], reason
	// ("unsubscribe" or "session ended").
	EventUnsubscribed = "session/unsubscribed"
	// EventMessageDropped: topic, qos, reason, and client_id (and username)
	// of the publisher (a rule dropped it) or of the receiver (its queue
	// was full).
	EventMessageDropped = "message/dropped"
	// EventDeliveryFailed: client_id, topic, packet_id, reason.
	EventDeliveryFailed = "message/delivery_failed"
	// EventBridgeError: bridge, error, and what the bridge adds (emitted by
	// the broker with Emit).
	EventBridgeError = "bridge/error"
	// EventRuleError: rule, action, topic, client_id, error, on_error.
	EventRuleError = "rule/error"
)

type event struct {
	topic   string
	payload []byte
}

// Emit publishes an event of kind (see the Event constants) with fields,
// unless events are off or nothing would receive it (no subscriber, no
// rule listening): then it costs a topic lookup. It never blocks: when the
// queue is full the event is dropped and counted.
func (e *Engine) Emit(kind string, fields map[string]any) {
	if !e.opts.Events {
		return
	}
	topic := EventsPrefix + kind
	if !e.wanted(topic) {
		e.Counters.EventsUnheard.Add(1)
		return
	}
	body := make(map[string]any, len(fields)+2)
	for k, v := range fields {
		body[k] = v
	}
	body["event"] = kind
	body["timestamp"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, err := encodeJSON(body)
	if err != nil {
		e.log.Error("encode event", "event", kind, "error", err)
		return
	}
	select {
	case e.evq <- event{topic: topic, payload: b}:
	default:
		if n := e.Counters.EventsDropped.Add(1); n == 1 || n%1000 == 0 {
			e.log.Warn("event queue full: dropping events", "dropped", n)
		}
	}
}

// wanted reports whether anything would receive a message on topic.
func (e *Engine) wanted(topic string) bool {
	if s := e.set.Load(); s != nil && s.dollar && s.listens(topic) {
		return true
	}
	subs := e.server.Topics.Subscribers(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
}

// publishEvents publishes queued events until Stop.
func (e *Engine) publishEvents() {
	for {
		select {
		case <-e.quit:
			return
		case ev := <-e.evq:
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish},
				TopicName:   ev.topic,
				Payload:     ev.payload,
				Created:     time.Now().Unix(),
				Properties:  packets.Properties{ContentType: "application/json"},
			}
			if err := e.server.InjectPacket(e.events, pk); err != nil {
				e.log.Warn("event not published", "topic", ev.topic, "error", err)
				continue
			}
			e.Counters.Events.Add(1)
		}
	}
}

// OnSessionEstablished emits client/connected.
func (e *Engine) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || !e.opts.Events {
		return
	}
	e.Emit(EventClientConnected, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "listener": cl.Net.Listener,
		"remote": cl.Net.Remote, "protocol": cl.Properties.ProtocolVersion, "clean_start": cl.Properties.Clean,
		"keepalive": cl.State.Keepalive,
	})
}

// OnDisconnect emits client/disconnected with the reason.
func (e *Engine) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if cl.Net.Inline || !e.opts.Events {
		return
	}
	e.Emit(EventClientDisconnected, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "reason": disconnectReason(cl, err),
		"session_ended": expire,
	})
}

// disconnectReason says in words why a connection ended.
func disconnectReason(cl *mqtt.Client, err error) string {
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	var code packets.Code
	switch {
	case cause == nil, errors.Is(cause, packets.CodeDisconnect):
		return "normal disconnect"
	case errors.Is(cause, packets.ErrSessionTakenOver):
		return "session taken over by a new connection"
	case errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF), errors.Is(cause, net.ErrClosed),
		errors.Is(cause, syscall.ECONNRESET), errors.Is(cause, syscall.EPIPE):
		return "connection closed without DISCONNECT"
	case errors.As(cause, &code):
		return code.Reason
	}
	return cause.Error()
}

// OnSubscribed emits session/subscribed.
func (e *Engine) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if cl.Net.Inline || !e.opts.Events {
		return
	}
	fs := make([]map[string]any, 0, len(pk.Filters))
	for i, f := range pk.Filters {
		var granted byte = packets.ErrUnspecifiedError.Code
		if i < len(codes) {
			granted = codes[i]
		}
		fs = append(fs, map[string]any{"filter": f.Filter, "qos": f.Qos, "granted": granted})
	}
	e.Emit(EventSubscribed, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "filters": fs,
	})
}

// OnUnsubscribed emits session/unsubscribed (also when a session ends and
// mochi removes its subscriptions: reason "session ended").
func (e *Engine) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || !e.opts.Events || len(pk.Filters) == 0 {
		return
	}
	fs := make([]string, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		fs = append(fs, f.Filter)
	}
	reason := "unsubscribe"
	if pk.PacketID == 0 {
		reason = "session ended"
	}
	e.Emit(EventUnsubscribed, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "filters": fs, "reason": reason,
	})
}

// OnPublishDropped emits message/dropped for a message mochi could not queue
// for a client (its write queue was full). Events themselves are not
// reported, so a slow event subscriber cannot feed itself.
func (e *Engine) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if !e.opts.Events || isEvent(pk.TopicName) {
		return
	}
	e.Emit(EventMessageDropped, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "topic": pk.TopicName,
		"qos": pk.FixedHeader.Qos, "reason": "the client's write queue is full",
	})
}

// OnQosDropped emits message/delivery_failed for a QoS 1/2 delivery mochi
// gave up on: it expired in flight, its session ended before the client
// acknowledged it, or the client refused it (a PUBREC with a reason code
// of 0x80 or more; mochi no longer knows the topic then).
func (e *Engine) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !e.opts.Events || cl.Net.Inline || isEvent(pk.TopicName) {
		return
	}
	reason := "not acknowledged before it expired or its session ended"
	switch pk.FixedHeader.Type {
	case packets.Publish:
	case packets.Pubrec:
		reason = fmt.Sprintf("refused by the client (reason code 0x%02x)", pk.ReasonCode)
	default:
		return
	}
	e.Emit(EventDeliveryFailed, map[string]any{
		"client_id": cl.ID, "username": string(cl.Properties.Username), "topic": pk.TopicName,
		"packet_id": pk.PacketID, "reason": reason,
	})
}

func isEvent(topic string) bool {
	return len(topic) >= len(EventsPrefix) && topic[:len(EventsPrefix)] == EventsPrefix
}
