package broker

import (
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/bridge"
	amqpbridge "github.com/motemq/mote/bridge/amqp"
	httpbridge "github.com/motemq/mote/bridge/http"
	mqttbridge "github.com/motemq/mote/bridge/mqtt"
	"github.com/motemq/mote/rules"
)

// inbound is a bridge's inbound side: it takes messages from a far side
// and publishes them through bridge.Hook.Inbound. Started once the broker
// serves; stopped first at shutdown.
type inbound struct {
	Start, Stop func()
	status      func() InboundStatus
}

// InboundStatus is the state of a bridge's inbound side: an AMQP queue it
// consumes, or the remote broker of an MQTT bridge.
type InboundStatus struct {
	Bridge      string    `json:"bridge"`
	Source      string    `json:"source"` // "queue NAME" or the remote URL
	Connected   bool      `json:"connected"`
	Received    uint64    `json:"received"`
	Published   uint64    `json:"published"`
	Refused     uint64    `json:"refused"` // refused by the broker (ACL, invalid topic): dead-lettered or dropped
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Inbound reports every bridge's inbound sides.
func (b *Broker) Inbound() []InboundStatus {
	out := make([]InboundStatus, len(b.inbound))
	for i, in := range b.inbound {
		out[i] = in.status()
	}
	return out
}

// addBridge builds one configured bridge: its outbound side (an outbox and
// a sender) when it has filters, and its inbound side for amqp in queues
// and mqtt in topics.
func (b *Broker) addBridge(bc BridgeConfig) error {
	log := b.log // the bridge packages add "bridge"
	var sender bridge.Sender
	skip := []string{bridge.OriginBridge, bridge.InboundOrigin(bc.Name)}
	switch bc.Type {
	case "http":
		wc := bc.webhookConfig()
		wc.Username = b.username
		var err error
		if bc.Mode == "request" {
			sender, err = httpbridge.NewRequester(wc, bc.ReplyTopic, int64(b.cfg.MQTT.MaxPacketSize), b.bridges.Publish)
		} else {
			sender, err = httpbridge.NewWebhook(wc)
		}
		if err != nil {
			return err
		}
		// What came in over the HTTP publish API does not go back out
		// over HTTP.
		skip = append(skip, bridge.OriginHTTP)
	case "amqp":
		if len(bc.Filters) > 0 {
			s, err := amqpbridge.NewSender(bc.Name, *bc.AMQP, log)
			if err != nil {
				return err
			}
			b.closers = append(b.closers, func() { _ = s.Close() })
			sender = s
		}
		for _, in := range bc.AMQP.In {
			user := in.Username
			if user == "" {
				user = bc.Username
			}
			c, err := amqpbridge.NewConsumer(bc.Name, *bc.AMQP, in, b.bridges.Inbound(bc.Name, b.canPublishAs(user, bc.Name)), log)
			if err != nil {
				return err
			}
			b.inbound = append(b.inbound, inbound{Start: c.Start, Stop: c.Stop, status: func() InboundStatus {
				st := c.Status()
				return InboundStatus{Bridge: bc.Name, Source: "queue " + in.Queue, Connected: st.Connected,
					Received: st.Consumed, Published: st.Published, Refused: st.Rejected, LastError: st.LastError, LastErrorAt: st.LastErrorAt}
			}})
		}
	case "mqtt":
		m, err := mqttbridge.New(bc.Name, *bc.MQTT, b.bridges.Inbound(bc.Name, b.canPublishAs(bc.Username, bc.Name)), log)
		if err != nil {
			return err
		}
		b.inbound = append(b.inbound, inbound{Start: m.Start, Stop: m.Stop, status: func() InboundStatus {
			st := m.Status()
			return InboundStatus{Bridge: bc.Name, Source: bc.MQTT.URL, Connected: st.Connected && st.Subscribed,
				Received: st.Received, Published: st.Published, Refused: st.Refused, LastError: st.LastError, LastErrorAt: st.LastErrorAt}
		}})
		if len(bc.outFilters()) > 0 {
			sender = m
		}
	}
	if sender == nil {
		return nil
	}
	deadLetter := b.bridges.DeadLetter(bc.Name)
	name := bc.Name
	br, err := bridge.New(bc.bridgeConfig(), b.store, sender, func(pk packets.Packet, reason string, attempts int) {
		deadLetter(pk, reason, attempts)
		b.rules.Emit(rules.EventBridgeError, map[string]any{
			"bridge": name, "error": reason, "topic": pk.TopicName, "attempts": attempts, "dead_lettered": true,
		})
	}, b.log) // adds "bridge"
	if err != nil {
		return err
	}
	// Nothing goes back where it came from: not the bridge's own inbound
	// messages, not the bridges' replies and dead letters.
	b.bridges.Add(br, skip...)
	return nil
}

// username is the user a connected client logged in as ("" if none).
func (b *Broker) username(clientID string) string {
	if cl, ok := b.server.Clients.Get(clientID); ok {
		return string(cl.Properties.Username)
	}
	return ""
}

// canPublishAs is the ACL check of a bridge's inbound side acting as user
// (nil, no check, when user is empty).
func (b *Broker) canPublishAs(user, bridgeName string) func(topic string) bool {
	if user == "" {
		return nil
	}
	return func(topic string) bool {
		return b.auth.CanPublish(b.auth.IdentityOf(user, bridge.InboundOrigin(bridgeName)), topic)
	}
}
