// Package guard closes gaps in mochi-mqtt's protocol handling with a hook,
// without changing mochi: keepalive and session expiry limits, expired
// sessions' subscriptions, topic-alias and packet-size advertisement, no
// DISCONNECT to MQTT 3.1.1 clients, $-topic isolation for shared subscriptions, per-filter
// refusal of invalid filters, publishes to $SYS, and duplicate QoS 2
// PUBLISH handling.
package guard

import (
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/frame"
	"github.com/motemq/mote/internal/hookset"
)

// Options configures the hook.
type Options struct {
	// MaxKeepalive caps the keepalive a client may ask for, in seconds; a
	// client asking for 0 (none) or more gets MaxKeepalive (MQTT 5 clients
	// are told with Server Keep Alive). 0 disables the cap.
	MaxKeepalive uint16
	// MaxPacketSize is advertised to MQTT 5 clients in CONNACK.
	MaxPacketSize uint32
}

// Counters are the hook's running totals.
type Counters struct {
	KeepaliveCapped  atomic.Uint64
	InvalidFilters   atomic.Uint64
	SysPublishDenied atomic.Uint64
	DuplicateQos2    atomic.Uint64
	// SessionExpiryCapped counts DISCONNECTs whose Session Expiry Interval
	// was lowered to the server's maximum.
	SessionExpiryCapped atomic.Uint64
	// V3DisconnectSuppressed counts DISCONNECTs mochi would have sent to
	// MQTT 3.1/3.1.1 clients.
	V3DisconnectSuppressed atomic.Uint64
	// ExpiredUnsubscribed counts expired sessions whose subscriptions were
	// removed from the topic index.
	ExpiredUnsubscribed atomic.Uint64
}

// Hook is the guard hook.
type Hook struct {
	mqtt.HookBase
	opts     Options
	server   *mqtt.Server
	Counters Counters
}

var _ mqtt.Hook = (*Hook)(nil)

// New returns the hook for server.
func New(server *mqtt.Server, opts Options) *Hook { return &Hook{opts: opts, server: server} }

// ID is the hook's id.
func (h *Hook) ID() string { return "guard" }

var provides = hookset.Of(
	mqtt.OnConnect,
	mqtt.OnPacketEncode,
	mqtt.OnSelectSubscribers,
	mqtt.OnPacketRead,
	mqtt.OnSubscribe,
	mqtt.OnClientExpired,
)

// Provides reports the events the hook handles.
func (h *Hook) Provides(b byte) bool { return provides.Has(b) }

// OnClientExpired removes an expired session's subscriptions from mochi's
// topic index. mochi's clearExpiredClients only deletes the client: its
// subscriptions stayed in the index (about 2 KiB of particles and maps per
// filter), matched every later publish, and kept the session a member of
// its $share groups. Sessions created under new client ids and never
// resumed (the abuse of FlashMQ CVE-2025-62723) grew memory without bound
// even with max_session_expiry. UnsubscribeClient also runs the other
// hooks' OnUnsubscribed (the store drops the records, queues the
// memberships), as for a session that ends at disconnect.
func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	h.server.UnsubscribeClient(cl)
	h.Counters.ExpiredUnsubscribed.Add(1)
}

// OnConnect caps the keepalive and turns off outbound topic aliases.
//
// A keepalive of 0 would let an idle connection stay forever; mochi also
// arms no read deadline then. Outbound aliases are off because mochi keeps
// the alias-shortened packet (empty topic) in its in-flight map and would
// resend it on a new connection where the alias means nothing.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if max := h.opts.MaxKeepalive; max > 0 {
		if ka := pk.Connect.Keepalive; ka == 0 || ka > max {
			cl.State.Keepalive = max
			if cl.Properties.ProtocolVersion == 5 {
				cl.State.ServerKeepalive = true // [MQTT-3.1.2-21]
			}
			h.Counters.KeepaliveCapped.Add(1)
		}
	}
	cl.Properties.Props.TopicAliasMaximum = 0
	return nil
}

// OnPacketEncode tells MQTT 5 clients the server's maximum packet size and
// topic alias maximum, which mochi enforces but does not announce, and
// keeps DISCONNECT away from MQTT 3.1 and 3.1.1 clients.
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Disconnect && cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1 and 3.1.1 have no DISCONNECT from the server (3.1.1
		// §3.14: it is "sent from the Client to the Server"): a refusal
		// closes the connection. mochi's DisconnectClient writes one to
		// every client before closing (ACL refusal of a QoS 1/2 publish,
		// session take-over, shutdown, Mote's rate and quota limits). An
		// invalid packet type makes mochi's WritePacket send nothing (it
		// returns ErrNoValidPacketAvailable, which DisconnectClient
		// ignores); the close still happens.
		pk.FixedHeader.Type = packets.Reserved
		h.Counters.V3DisconnectSuppressed.Add(1)
		return pk
	}
	if pk.FixedHeader.Type == packets.Publish {
		// A client that sets Request Problem Information to 0 only gives up
		// reason strings and user properties on acknowledgements
		// [MQTT-3.1.2-29]; mochi also strips the user properties of the
		// messages it forwards, which are the publisher's application data.
		pk.Mods.DisallowProblemInfo = false
		return pk
	}
	if pk.FixedHeader.Type != packets.Connack || cl.Properties.ProtocolVersion != 5 || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk
	}
	if h.opts.MaxPacketSize > 0 {
		pk.Properties.MaximumPacketSize = h.opts.MaxPacketSize
	}
	pk.Properties.TopicAliasMaximum = h.server.Options.Capabilities.TopicAliasMaximum
	return pk
}

// OnSelectSubscribers keeps messages on topics starting with $ away from
// shared subscriptions whose filter starts with a wildcard; mochi applies
// [MQTT-4.7.2-1] to plain subscriptions only, so $share/g/# received $SYS.
func (h *Hook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if !strings.HasPrefix(pk.TopicName, "$") {
		return subs
	}
	for filter := range subs.Shared {
		if f := shareFilter(filter); f != "" && (f[0] == '+' || f[0] == '#') {
			delete(subs.Shared, filter)
		}
	}
	return subs
}

// shareFilter returns the filter part of $share/{group}/{filter}.
func shareFilter(f string) string {
	rest := f[min(len(f), len("$share/")):]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i+1:]
	}
	return ""
}

// OnPacketRead handles two PUBLISH cases mochi gets wrong:
//
//   - A PUBLISH to $SYS/... : mochi drops it silently, so a QoS 1/2
//     publisher never gets an acknowledgement and resends forever. An MQTT 5
//     publisher now gets "not authorized" (0x87); an MQTT 3 one is
//     disconnected, as it is for any refused publish.
//   - A QoS 2 PUBLISH whose packet id is still awaiting PUBREL (the
//     publisher resends it, e.g. after reconnecting): mochi answers PUBREC
//     0x91 "packet identifier in use", which makes the client give up a
//     message the broker has. The spec wants PUBREC and no second delivery
//     [MQTT-4.3.3-10]; the packet is marked Ignore, so mochi acknowledges
//     it without routing it again.
//
// It also caps the Session Expiry Interval of a DISCONNECT (below).
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect {
		return h.capDisconnectExpiry(pk), nil
	}
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return pk, nil
	}
	if isSys(pk.TopicName) {
		h.Counters.SysPublishDenied.Add(1)
		if pk.FixedHeader.Qos == 0 {
			return pk, nil // mochi drops it
		}
		if cl.Properties.ProtocolVersion < 5 {
			return pk, packets.ErrRejectPacket // closes the connection
		}
		typ := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			typ = packets.Pubrec
		}
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: typ},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrNotAuthorized.Code,
			Properties:  packets.Properties{ReasonString: "clients may not publish to $SYS"},
		})
		return pk, nil // mochi drops it
	}
	if pk.FixedHeader.Qos == 2 {
		if prev, ok := cl.State.Inflight.Get(pk.PacketID); ok && prev.FixedHeader.Type == packets.Pubrec {
			if cl.State.Inflight.Delete(pk.PacketID) {
				atomic.AddInt64(&h.server.Info.Inflight, -1)
			}
			cl.State.Inflight.IncreaseReceiveQuota()
			pk.Ignore = true
			h.Counters.DuplicateQos2.Add(1)
		}
	}
	return pk, nil
}

// capDisconnectExpiry lowers a DISCONNECT's Session Expiry Interval to the
// server's maximum (mqtt.max_session_expiry). mochi caps the interval a
// CONNECT asks for and says so in CONNACK, but takes the one in DISCONNECT
// as sent, and its sweep of expired sessions uses it: a client that
// disconnects with 0xFFFFFFFF kept its session in memory until a restart
// whatever the cap, and one that does so under a new client id each time
// hoards memory without bound (the abuse of FlashMQ CVE-2025-62723).
func (h *Hook) capDisconnectExpiry(pk packets.Packet) packets.Packet {
	max := h.server.Options.Capabilities.MaximumSessionExpiryInterval
	if pk.Properties.SessionExpiryIntervalFlag && pk.Properties.SessionExpiryInterval > max {
		pk.Properties.SessionExpiryInterval = max
		h.Counters.SessionExpiryCapped.Add(1)
	}
	return pk
}

// isSys mirrors mochi's test (IsValidFilter for publish): any topic whose
// first four characters are $SYS in any case.
func isSys(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], mqtt.SysPrefix)
}

// OnSubscribe makes mochi refuse (SUBACK 0x8F) filters that break the
// spec's wildcard rules but pass its own check, such as "a/b#", "a+/b" or
// "$share/g" with no filter: an empty filter is the one value mochi refuses.
func (h *Hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	var filters packets.Subscriptions
	for i, f := range pk.Filters {
		if frame.ValidFilter(f.Filter) {
			continue
		}
		if filters == nil {
			filters = append(packets.Subscriptions(nil), pk.Filters...)
		}
		filters[i].Filter = ""
		h.Counters.InvalidFilters.Add(1)
	}
	if filters != nil {
		pk.Filters = filters
	}
	return pk
}
