package retaingate

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/internal/hookset"
)

// Options configure a Gate.
type Options struct {
	// CanDeliver reports whether cl may receive a message on topic: the
	// check mochi makes (OnACLCheck, write=false) before every delivery,
	// made here for the $SYS retained messages the gate sends itself.
	// Required.
	CanDeliver func(cl *mqtt.Client, topic string) bool
	// Log receives the gate's debug messages; nil discards them.
	Log *slog.Logger
}

// ErrNoCanDeliver is returned by New without Options.CanDeliver: the gate
// would otherwise send $SYS retained messages past the ACL.
var ErrNoCanDeliver = errors.New("retaingate: Options.CanDeliver is required")

// Gate keeps mochi's unlocked reads of the retained index apart from its
// writes. Register Head before every other hook and Tail after every other
// hook (strictly: before, and after, every hook that handles the events
// they do); both are needed.
type Gate struct {
	server *mqtt.Server
	opts   Options
	log    *slog.Logger
	lock   classLock

	mu     sync.Mutex
	writes map[*byte]struct{}          // retained writes holding classRetain, by payload buffer
	subs   map[*mqtt.Client]*subscribe // SUBSCRIBEs being processed that the gate follows

	// Ungated counts retained publishes that mochi wrote without the gate
	// because an OnPublish hook before Tail failed them with an error that
	// mochi goes on after (see head.OnRetainMessage).
	Ungated atomic.Uint64
}

// subscribe is what the gate knows of a SUBSCRIBE being processed.
type subscribe struct {
	scan bool     // mochi will look a wildcard filter up in the index
	held bool     // classScan is held for it (from the SUBACK on)
	sys  []sysSub // $SYS wildcard filters whose retained messages the gate sends
}

// sysSub is a $SYS wildcard filter of a SUBSCRIBE whose retained handling
// the gate took over.
type sysSub struct {
	index   int                  // in the packet's filters
	sub     packets.Subscription // as the client asked for it
	existed bool                 // the client had this subscription already
	granted bool
}

// New returns a gate for server.
func New(server *mqtt.Server, opts Options) (*Gate, error) {
	if opts.CanDeliver == nil {
		return nil, ErrNoCanDeliver
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gate{
		server: server,
		opts:   opts,
		log:    log,
		writes: map[*byte]struct{}{},
		subs:   map[*mqtt.Client]*subscribe{},
	}
	g.lock.init()
	return g, nil
}

// Head is the hook to register before every other hook: it releases the
// gate as soon as mochi is done (OnRetainMessage, OnPacketProcessed) and
// takes it for a SUBSCRIBE once the SUBACK is written (OnPacketSent).
func (g *Gate) Head() mqtt.Hook { return &head{g: g} }

// Tail is the hook to register after every other hook: it sees the final
// packets (OnPublish, OnWill, OnSubscribe) and takes the gate for a
// retained write only after every other hook has had its say.
func (g *Gate) Tail() mqtt.Hook { return &tail{g: g} }

// retainAvailable mirrors the check at the top of mochi's retainMessage.
func (g *Gate) retainAvailable() bool {
	return g.server.Options.Capabilities.RetainAvailable != 0
}

// holdForWrite takes classRetain for a retained write that mochi is about
// to make with payload, and returns the payload mochi must carry to
// OnRetainMessage instead: a copy in a buffer of its own, whose address
// identifies the write when it is released. A copy made by mochi
// (Packet.Copy) or anyone else lives elsewhere, so no other packet can
// release this write.
func (g *Gate) holdForWrite(payload []byte) []byte {
	buf := make([]byte, len(payload), len(payload)+1) // cap ≥ 1: an empty payload (a clear) has an address too
	copy(buf, payload)
	g.lock.acquire(classRetain)
	g.mu.Lock()
	g.writes[&buf[:1][0]] = struct{}{}
	g.mu.Unlock()
	return buf
}

// wrote releases the write that carried payload and reports true if it was
// one of ours.
func (g *Gate) wrote(payload []byte) bool {
	if cap(payload) == 0 {
		return false
	}
	key := &payload[:1][0]
	g.mu.Lock()
	_, ok := g.writes[key]
	delete(g.writes, key)
	g.mu.Unlock()
	if ok {
		g.lock.release(classRetain)
	}
	return ok
}

// isSysWildcard reports whether mochi's index lookup for filter would read
// the paths under $SYS, which mochi's $SYS ticker rewrites without calling
// any hook: a first level of exactly "$SYS" (the index is case-sensitive,
// and a wildcard first level skips $SYS) and a wildcard further on (a plain
// topic is looked up in the locked map only).
func isSysWildcard(filter string) bool {
	rest, ok := strings.CutPrefix(filter, mqtt.SysPrefix+"/")
	return ok && strings.ContainsAny(rest, "+#")
}

// scans reports whether mochi will look sub up in the index (rather than
// in the locked map of retained messages) after granting it: a wildcard
// filter, not shared, whose retain handling asks for retained messages
// (handling 1 is counted even for an existing subscription, which mochi
// skips: holding the gate then only costs a wait).
func scans(sub packets.Subscription) bool {
	return sub.RetainHandling != 2 && !mqtt.IsSharedFilter(sub.Filter) && strings.ContainsAny(sub.Filter, "+#")
}

// state returns the record of cl's SUBSCRIBE, creating it.
func (g *Gate) state(cl *mqtt.Client) *subscribe {
	st := g.subs[cl]
	if st == nil {
		st = &subscribe{}
		g.subs[cl] = st
	}
	return st
}

// head is the hook registered first.
type head struct {
	mqtt.HookBase
	g *Gate
}

// ID is the hook's id.
func (h *head) ID() string { return "retain-gate-head" }

var headProvides = hookset.Of(
	mqtt.OnRetainMessage,
	mqtt.OnPacketSent,
	mqtt.OnPacketProcessed,
)

// Provides reports the events the hook handles.
func (h *head) Provides(b byte) bool { return headProvides.Has(b) }

// OnRetainMessage releases a retained write: mochi calls it right after
// TopicsIndex.RetainMessage. A write that Tail did not gate is either a
// will with a delay (known, see the package documentation) or a publish
// that an earlier OnPublish hook failed with an error mochi goes on after
// (for QoS 0 or MQTT 3.1.1 anything but ErrRejectPacket or
// CodeSuccessIgnore): that hook should refuse with one of those instead.
func (h *head) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	if h.g.wrote(pk.Payload) || pk.Connect.WillProperties.WillDelayInterval > 0 {
		return
	}
	if n := h.g.Ungated.Add(1); n == 1 || n%1000 == 0 {
		h.g.log.Warn("retained message written past the gate: a hook failed the publish with an error mochi goes on after",
			"client", cl.ID, "topic", pk.TopicName, "count", n)
	}
}

// OnPacketSent takes classScan once the SUBACK of a SUBSCRIBE that mochi
// will look up in the index is written: mochi writes the SUBACK, then reads
// the index (publishRetainedToClient). Taking it only now keeps a client
// that is slow to read its SUBACK from holding up retained publishes.
func (h *head) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback || cl.Net.Inline {
		return
	}
	g := h.g
	g.mu.Lock()
	st := g.subs[cl]
	take := st != nil && st.scan && !st.held
	if take {
		st.held = true
	}
	g.mu.Unlock()
	if take {
		g.lock.acquire(classScan)
	}
}

// OnPacketProcessed releases classScan after a SUBSCRIBE (mochi has sent
// its retained messages), then sends the $SYS retained messages the gate
// took over.
func (h *head) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Subscribe || cl.Net.Inline {
		return
	}
	g := h.g
	g.mu.Lock()
	st := g.subs[cl]
	delete(g.subs, cl)
	g.mu.Unlock()
	if st == nil {
		return
	}
	if st.held {
		g.lock.release(classScan)
	}
	for _, s := range st.sys {
		if !s.granted {
			continue
		}
		g.restoreHandling(cl, s.sub)
		if err == nil && (s.sub.RetainHandling == 0 || s.sub.RetainHandling == 1 && !s.existed) { // [MQTT-3.3.1-9] [MQTT-3.3.1-10]
			g.sendSys(cl, s.sub)
		}
	}
}

// tail is the hook registered last.
type tail struct {
	mqtt.HookBase
	g *Gate
}

// ID is the hook's id.
func (t *tail) ID() string { return "retain-gate-tail" }

var tailProvides = hookset.Of(
	mqtt.OnPublish,
	mqtt.OnWill,
	mqtt.OnSubscribe,
	mqtt.OnSubscribed,
)

// Provides reports the events the hook handles.
func (t *tail) Provides(b byte) bool { return tailProvides.Has(b) }

// OnPublish takes classRetain for a publish that mochi will retain: being
// the last OnPublish hook, it sees the packet mochi goes on with, and
// mochi's next steps are retainMessage's own checks and
// TopicsIndex.RetainMessage, then OnRetainMessage (head). Nothing else runs
// in between, so nothing can wait on the gate while this holds it. A
// publish that is not retained passes after one flag test.
func (t *tail) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || pk.Ignore || !t.g.retainAvailable() {
		return pk, nil
	}
	pk.Payload = t.g.holdForWrite(pk.Payload)
	return pk, nil
}

// OnWill takes classRetain for a retained will that mochi sends at once:
// sendLWT goes from OnWill straight to retainMessage. A will with a delay
// is retained later by mochi's event loop with no hook before the write;
// the gate cannot cover it (see the package documentation).
func (t *tail) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if !will.Retain || cl.Properties.Will.WillDelayInterval > 0 || !t.g.retainAvailable() {
		return will, nil
	}
	will.Payload = t.g.holdForWrite(will.Payload)
	return will, nil
}

// OnSubscribe takes over the retained messages of $SYS wildcard filters:
// it remembers what the client asked for and sets retain handling 2, so
// mochi does not look them up in its index, where the $SYS ticker writes
// without any hook; OnPacketProcessed (head) sends them instead. Being the
// last OnSubscribe hook, it sees the filters mochi will subscribe.
func (t *tail) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	var filters packets.Subscriptions
	var sys []sysSub
	for i, f := range pk.Filters {
		if !isSysWildcard(f.Filter) || f.RetainHandling == 2 {
			continue
		}
		if filters == nil {
			filters = append(packets.Subscriptions(nil), pk.Filters...)
		}
		_, existed := cl.State.Subscriptions.Get(f.Filter)
		for _, earlier := range pk.Filters[:i] { // mochi subscribes them in order
			existed = existed || earlier.Filter == f.Filter
		}
		sys = append(sys, sysSub{index: i, sub: f, existed: existed})
		filters[i].RetainHandling = 2
	}
	if sys == nil {
		return pk
	}
	pk.Filters = filters
	t.g.mu.Lock()
	t.g.state(cl).sys = sys
	t.g.mu.Unlock()
	return pk
}

// OnSubscribed notes whether mochi will look any granted filter up in the
// index, and which $SYS filters were granted.
func (t *tail) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if cl.Net.Inline {
		return
	}
	scan := false
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] < packets.ErrUnspecifiedError.Code && scans(f) {
			scan = true
			break
		}
	}
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.subs[cl]
	if st == nil && !scan {
		return
	}
	st = g.state(cl)
	st.scan = scan
	for i := range st.sys {
		j := st.sys[i].index
		st.sys[i].granted = j < len(reasonCodes) && reasonCodes[j] < packets.ErrUnspecifiedError.Code
	}
}

// Interface guards.
var (
	_ mqtt.Hook = (*head)(nil)
	_ mqtt.Hook = (*tail)(nil)
)
