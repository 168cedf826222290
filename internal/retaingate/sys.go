package retaingate

import (
	"slices"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/internal/topic"
)

// Matching returns the retained messages whose topic matches filter, in
// topic order. Unlike mochi's TopicsIndex.Messages it reads the locked map
// of retained messages, not the index's unlocked paths, so it is safe at
// any time (it costs a copy of the map), and it matches as the spec does:
// "a/#" also matches "a" [MQTT-4.7.1-2], and a wildcard at the first level
// matches no topic starting with '$' [MQTT-4.7.2-1] (mochi skips only
// $SYS).
func Matching(idx *mqtt.TopicsIndex, filter string) []packets.Packet {
	all := idx.Retained.GetAll()
	topics := make([]string, 0, len(all))
	for t := range all {
		if topic.Match(filter, t) {
			topics = append(topics, t)
		}
	}
	slices.Sort(topics)
	out := make([]packets.Packet, len(topics))
	for i, t := range topics {
		out[i] = all[t]
	}
	return out
}

// sendSys sends cl the retained messages matching sub, a $SYS wildcard
// filter the client has just subscribed to, as mochi's
// publishRetainedToClient would: not to the publisher itself under No
// Local [MQTT-3.8.3-3], only where the ACL lets cl receive the topic, with
// the retain flag set [MQTT-3.3.1-9] and the subscription identifier
// [MQTT-3.3.4-3]. They are sent at QoS 0, which is what mochi's own $SYS
// values are; a retained message under $SYS with a higher QoS (only a will
// or the broker itself can set one) is downgraded. They are written
// directly, not queued: this runs on the client's own goroutine, holding
// nothing.
func (g *Gate) sendSys(cl *mqtt.Client, sub packets.Subscription) {
	for _, pk := range Matching(g.server.Topics, sub.Filter) {
		if sub.NoLocal && pk.Origin == cl.ID {
			continue
		}
		if !g.opts.CanDeliver(cl, pk.TopicName) {
			continue
		}
		out := pk.Copy(false)
		out.FixedHeader.Qos = 0
		out.FixedHeader.Retain = true
		out.Mods.MaxSize = 0 // the receiver's maximum packet size applies (WritePacket)
		out.Properties.SubscriptionIdentifier = nil
		if sub.Identifier > 0 {
			out.Properties.SubscriptionIdentifier = []int{sub.Identifier}
		}
		if err := cl.WritePacket(out); err != nil {
			g.log.Debug("retained $SYS message not sent", "client", cl.ID, "topic", pk.TopicName, "error", err)
			if cl.Closed() {
				return
			}
		}
	}
}

// restoreHandling puts the retain handling the client asked for back into
// its subscription, which mochi stored with the 2 that OnSubscribe set (it
// only matters when the subscription is made, but it is shown and copied
// on a session takeover).
func (g *Gate) restoreHandling(cl *mqtt.Client, sub packets.Subscription) {
	if cur, ok := cl.State.Subscriptions.Get(sub.Filter); ok && cur.RetainHandling != sub.RetainHandling {
		cur.RetainHandling = sub.RetainHandling
		cl.State.Subscriptions.Add(sub.Filter, cur)
	}
}
