package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/motemq/mote/internal/hookset"
)

// Hook counts what no other part of the broker counts: PUBLISH packets and
// their bytes by QoS, both ways, and refused connections by reason (every
// CONNACK with a failure code). It only adds to atomics.
type Hook struct {
	mqtt.HookBase
	in, out           [3]atomic.Uint64
	inBytes, outBytes [3]atomic.Uint64
	refused           [256]atomic.Uint64 // by MQTT 5 reason code (3.1.1 return codes mapped)
}

var _ mqtt.Hook = (*Hook)(nil)

// ID is the hook's id.
func (h *Hook) ID() string { return "admin-metrics" }

var provides = hookset.Of(
	mqtt.OnPacketRead,
	mqtt.OnPacketSent,
)

// Provides reports the events the hook handles.
func (h *Hook) Provides(b byte) bool { return provides.Has(b) }

// OnPacketRead counts an inbound PUBLISH (its size is the fixed header plus
// the remaining length).
func (h *Hook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Publish {
		q := min(pk.FixedHeader.Qos, 2)
		h.in[q].Add(1)
		h.inBytes[q].Add(uint64(1 + varintLen(pk.FixedHeader.Remaining) + pk.FixedHeader.Remaining))
	}
	return pk, nil
}

// OnPacketSent counts an outbound PUBLISH and a refusing CONNACK.
func (h *Hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		q := min(pk.FixedHeader.Qos, 2)
		h.out[q].Add(1)
		h.outBytes[q].Add(uint64(len(b)))
	case packets.Connack:
		code := pk.ReasonCode
		if cl.Properties.ProtocolVersion < 5 && code > 0 && code < 6 {
			code = v3Codes[code]
		}
		if code >= 0x80 {
			h.refused[code].Add(1)
		}
	}
}

// v3Codes maps MQTT 3.1.1 CONNACK return codes to MQTT 5 reason codes.
var v3Codes = [6]byte{0, 0x84, 0x85, 0x88, 0x86, 0x87}

func varintLen(n int) int {
	l := 1
	for n >= 128 {
		n >>= 7
		l++
	}
	return l
}

// reasonNames name MQTT 5 reason codes as metric labels.
var reasonNames = map[byte]string{
	0x80: "unspecified_error", 0x81: "malformed_packet", 0x82: "protocol_error",
	0x83: "implementation_specific_error", 0x84: "unsupported_protocol_version",
	0x85: "client_identifier_not_valid", 0x86: "bad_username_or_password",
	0x87: "not_authorized", 0x88: "server_unavailable", 0x89: "server_busy",
	0x8A: "banned", 0x8B: "server_shutting_down", 0x8C: "bad_authentication_method",
	0x8D: "keep_alive_timeout", 0x8E: "session_taken_over", 0x8F: "topic_filter_invalid",
	0x90: "topic_name_invalid", 0x91: "packet_identifier_in_use",
	0x92: "packet_identifier_not_found", 0x93: "receive_maximum_exceeded",
	0x94: "topic_alias_invalid", 0x95: "packet_too_large", 0x96: "message_rate_too_high",
	0x97: "quota_exceeded", 0x98: "administrative_action", 0x99: "payload_format_invalid",
	0x9A: "retain_not_supported", 0x9B: "qos_not_supported", 0x9C: "use_another_server",
	0x9D: "server_moved", 0x9E: "shared_subscriptions_not_supported",
	0x9F: "connection_rate_exceeded", 0xA0: "maximum_connect_time",
	0xA1: "subscription_identifiers_not_supported", 0xA2: "wildcard_subscriptions_not_supported",
}

func reasonName(code int) string {
	if n, ok := reasonNames[byte(code)]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", code)
}

// desc is a metric read at scrape time.
type desc struct {
	*prometheus.Desc
	typ prometheus.ValueType
}

func counter(name, help string, labels ...string) desc {
	return desc{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

func gauge(name, help string, labels ...string) desc {
	return desc{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

// Metric descriptors; names follow Prometheus' conventions (base units,
// _total for counters).
var (
	mBuild           = gauge("mote_build_info", "Always 1; the version label is the broker's.", "version")
	mClients         = gauge("mote_clients_connected", "MQTT clients connected now.")
	mConnsOpen       = gauge("mote_connections_open", "Network connections open now on the MQTT listeners.")
	mConnsTotal      = counter("mote_connections_total", "Network connections accepted on the MQTT listeners.")
	mConnsRefused    = counter("mote_connections_refused_total", "Connections refused with a CONNACK failure, by reason.", "reason")
	mSlowClosed      = counter("mote_connections_slow_closed_total", "Connections closed because a write timed out (a client that stopped reading).")
	mPacketsRefused  = counter("mote_packets_refused_total", "Packets refused by the framing check before mochi decoded them, by reason.", "reason")
	mMsgsIn          = counter("mote_messages_received_total", "PUBLISH packets received from clients, by QoS.", "qos")
	mMsgsOut         = counter("mote_messages_sent_total", "PUBLISH packets sent to clients, by QoS.", "qos")
	mBytesIn         = counter("mote_message_bytes_received_total", "Bytes of PUBLISH packets received from clients, by QoS.", "qos")
	mBytesOut        = counter("mote_message_bytes_sent_total", "Bytes of PUBLISH packets sent to clients, by QoS.", "qos")
	mNetIn           = counter("mote_network_bytes_received_total", "Bytes read from MQTT connections.")
	mNetOut          = counter("mote_network_bytes_sent_total", "Bytes written to MQTT connections.")
	mDropped         = counter("mote_messages_dropped_total", "Messages not delivered or refused, by reason.", "reason")
	mACLDenied       = counter("mote_acl_denied_total", "Operations the ACL refused, by action.", "action")
	mPaced           = counter("mote_qos0_paced_total", "QoS 0 drops for a full subscriber write queue, by what the publisher's hold ended with (mqtt.qos0_backpressure): room (the subscriber drained), timeout, or skipped (the subscriber is stalled or gone: nobody is held).", "outcome")
	mRetained        = gauge("mote_retained_messages", "Retained messages held.")
	mInflight        = gauge("mote_inflight_messages", "QoS 1/2 messages awaiting their acknowledgement, both ways.")
	mSessions        = gauge("mote_sessions", "Sessions held (connected clients and disconnected persistent sessions).")
	mSubscriptions   = gauge("mote_subscriptions", "Subscriptions held.")
	mQueueDepth      = gauge("mote_queue_depth", "Messages in a queue (waiting or in flight).", "queue")
	mQueueInflight   = gauge("mote_queue_inflight", "Queue messages handed to a consumer and not yet acknowledged.", "queue")
	mQueueConsumers  = gauge("mote_queue_consumers", "Members of a queue's group (connected or not).", "queue")
	mQueueOnline     = gauge("mote_queue_consumers_online", "Connected members of a queue's group.", "queue")
	mQueueDelivered  = counter("mote_queue_delivered_total", "Queue messages handed to consumers.", "queue")
	mQueueAcked      = counter("mote_queue_acked_total", "Queue messages acknowledged.", "queue")
	mQueueRedeliv    = counter("mote_queue_redelivered_total", "Queue messages handed out again.", "queue")
	mQueueRefused    = counter("mote_queue_refused_total", "Queue messages a consumer refused (reason code >= 0x80).", "queue")
	mQueueDead       = counter("mote_queue_dead_lettered_total", "Queue messages dead-lettered.", "queue")
	mQueueExpired    = counter("mote_queue_expired_total", "Queue messages expired (message_ttl or message expiry).", "queue")
	mQueueDropped    = counter("mote_queue_dropped_total", "Queue messages dropped by overflow: drop_oldest.", "queue")
	mQueueRejected   = counter("mote_queue_rejected_total", "Publishes refused by overflow: reject_new.", "queue")
	mQueueDeadKept   = gauge("mote_queue_dead_letters", "Dead letters a queue keeps for redrive.", "queue")
	mQueueOldest     = gauge("mote_queue_oldest_message_age_seconds", "Age of a queue's oldest message.", "queue")
	mBridgeBacklog   = gauge("mote_bridge_backlog", "Messages waiting in a bridge's outbox (not in flight).", "bridge")
	mBridgeInflight  = gauge("mote_bridge_inflight", "Messages in a bridge's running sends.", "bridge")
	mBridgeConnected = gauge("mote_bridge_connected", "1 when the bridge's last send succeeded and its breaker is closed.", "bridge")
	mBridgePaused    = gauge("mote_bridge_paused", "1 when the bridge is paused.", "bridge")
	mBridgeSent      = counter("mote_bridge_sent_total", "Messages a bridge delivered.", "bridge")
	mBridgeFailed    = counter("mote_bridge_failed_total", "Messages in failed send attempts.", "bridge")
	mBridgeDead      = counter("mote_bridge_dead_lettered_total", "Messages a bridge gave up on.", "bridge")
	mBridgeDropped   = counter("mote_bridge_dropped_total", "QoS 0 messages dropped because the bridge's buffer was full.", "bridge")
	mBridgeDeadKept  = gauge("mote_bridge_dead_letters", "Dead letters a bridge keeps for retry.", "bridge")
	mRuleMatched     = counter("mote_rule_matched_total", "Messages a rule matched.", "rule")
	mRuleErrors      = counter("mote_rule_errors_total", "Errors of a rule's condition or actions.", "rule")
	mRuleEnabled     = gauge("mote_rule_enabled", "1 when the rule is enabled.", "rule")
	mStoreSize       = gauge("mote_store_size_bytes", "Size of the store file.")
	mStoreKeys       = gauge("mote_store_keys", "Live keys in the store.")
	mStoreCommits    = counter("mote_store_commits_total", "Store transactions committed.")
	mStoreRecords    = counter("mote_store_records_total", "Store records written (sets and deletes).")
	mStoreFsyncs     = counter("mote_store_fsyncs_total", "fsync calls on the store file.")
	mStoreFsyncErr   = counter("mote_store_fsync_errors_total", "Failed fsync calls (the broker stops acknowledging).")
	mStoreShrinks    = counter("mote_store_compactions_total", "Store file compactions.")
)

var allDescs = []desc{
	mBuild, mClients, mConnsOpen, mConnsTotal, mConnsRefused, mSlowClosed, mPacketsRefused,
	mMsgsIn, mMsgsOut, mBytesIn, mBytesOut, mNetIn, mNetOut, mDropped, mACLDenied, mPaced,
	mRetained, mInflight, mSessions, mSubscriptions,
	mQueueDepth, mQueueInflight, mQueueConsumers, mQueueOnline, mQueueDelivered, mQueueAcked,
	mQueueRedeliv, mQueueRefused, mQueueDead, mQueueExpired, mQueueDropped, mQueueRejected,
	mQueueDeadKept, mQueueOldest,
	mBridgeBacklog, mBridgeInflight, mBridgeConnected, mBridgePaused, mBridgeSent, mBridgeFailed,
	mBridgeDead, mBridgeDropped, mBridgeDeadKept,
	mRuleMatched, mRuleErrors, mRuleEnabled,
	mStoreSize, mStoreKeys, mStoreCommits, mStoreRecords, mStoreFsyncs, mStoreFsyncErr, mStoreShrinks,
}

// collector reads every figure at scrape time.
type collector struct{ a *API }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d.Desc
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	emit := func(d desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d.Desc, d.typ, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	info := a.o.Server.Info.Clone()
	emit(mBuild, 1, a.o.Version)
	emit(mClients, float64(info.ClientsConnected))
	conns := a.o.Conns
	emit(mConnsOpen, float64(conns.Open.Load()))
	emit(mConnsTotal, float64(conns.Accepted.Load()))
	emit(mSlowClosed, float64(conns.SlowClosed.Load()))
	emit(mNetIn, float64(conns.BytesRead.Load()))
	emit(mNetOut, float64(conns.BytesWritten.Load()))
	for code := range 256 {
		if n := a.hook.refused[code].Load(); n > 0 {
			emit(mConnsRefused, float64(n), reasonName(code))
		}
		if n := conns.Refused[code].Load(); n > 0 {
			emit(mPacketsRefused, float64(n), reasonName(code))
		}
	}
	for q := range 3 {
		qos := strconv.Itoa(q)
		emit(mMsgsIn, float64(a.hook.in[q].Load()), qos)
		emit(mMsgsOut, float64(a.hook.out[q].Load()), qos)
		emit(mBytesIn, float64(a.hook.inBytes[q].Load()), qos)
		emit(mBytesOut, float64(a.hook.outBytes[q].Load()), qos)
	}
	pc, ac := &a.o.Persist.Counters, &a.o.Auth.Counters
	for _, d := range []struct {
		reason string
		n      uint64
	}{
		{"slow_subscriber", uint64(info.MessagesDropped)},
		{"inflight_expired", uint64(info.InflightDropped)},
		{"session_queue_full", pc.QueueOverflow.Load()},
		{"expired", pc.Expired.Load()},
		{"access_revoked", pc.Denied.Load()},
		{"publish_denied", ac.PublishDenied.Load()},
		{"publish_rate", ac.PublishRate.Load()},
	} {
		emit(mDropped, float64(d.n), d.reason)
	}
	emit(mACLDenied, float64(ac.PublishDenied.Load()), "publish")
	emit(mACLDenied, float64(ac.SubscribeDenied.Load()), "subscribe")
	emit(mACLDenied, float64(ac.DeliveryDenied.Load()), "deliver")
	if pc := a.o.Pacer; pc != nil {
		emit(mPaced, float64(pc.Paced.Load()), "room")
		emit(mPaced, float64(pc.TimedOut.Load()), "timeout")
		emit(mPaced, float64(pc.Skipped.Load()), "skipped")
	}
	emit(mRetained, float64(a.o.Server.Topics.Retained.Len())) // Info.Retained is only refreshed on $SYS ticks
	emit(mInflight, float64(info.Inflight))
	emit(mSessions, float64(a.sessions()))
	emit(mSubscriptions, float64(info.Subscriptions))

	for _, s := range a.o.Queues.Stats() {
		g := s.Group
		emit(mQueueDepth, float64(s.Depth), g)
		emit(mQueueInflight, float64(s.InFlight), g)
		emit(mQueueConsumers, float64(s.Consumers), g)
		emit(mQueueOnline, float64(s.Online), g)
		emit(mQueueDelivered, float64(s.Delivered), g)
		emit(mQueueAcked, float64(s.Acked), g)
		emit(mQueueRedeliv, float64(s.Redelivered), g)
		emit(mQueueRefused, float64(s.Refused), g)
		emit(mQueueDead, float64(s.DeadLettered), g)
		emit(mQueueExpired, float64(s.Expired), g)
		emit(mQueueDropped, float64(s.Dropped), g)
		emit(mQueueRejected, float64(s.Rejected), g)
		emit(mQueueDeadKept, float64(s.DeadLetters), g)
		emit(mQueueOldest, s.OldestAge.Seconds(), g)
	}
	for _, b := range a.o.Bridges.Bridges() {
		s := b.Status()
		n := s.Name
		emit(mBridgeBacklog, float64(s.Backlog), n)
		emit(mBridgeInflight, float64(s.InFlight), n)
		emit(mBridgeConnected, b2f(s.Connected), n)
		emit(mBridgePaused, b2f(s.Paused), n)
		emit(mBridgeSent, float64(s.Sent), n)
		emit(mBridgeFailed, float64(s.Failed), n)
		emit(mBridgeDead, float64(s.DeadLettered), n)
		emit(mBridgeDropped, float64(s.Dropped), n)
		emit(mBridgeDeadKept, float64(s.DeadLetters), n)
	}
	if a.o.Rules != nil {
		for _, r := range a.o.Rules.Rules() {
			emit(mRuleMatched, float64(r.Matched), r.Name)
			emit(mRuleErrors, float64(r.Errors), r.Name)
			emit(mRuleEnabled, b2f(r.Enabled), r.Name)
		}
	}
	st := a.o.Store.Stats()
	emit(mStoreSize, float64(st.FileSize))
	emit(mStoreKeys, float64(st.Keys))
	emit(mStoreCommits, float64(st.Commits))
	emit(mStoreRecords, float64(st.Records))
	emit(mStoreFsyncs, float64(st.Syncs))
	emit(mStoreFsyncErr, float64(st.SyncErrors))
	emit(mStoreShrinks, float64(st.Shrinks))
}

// registerMetrics builds the private registry: the scrape-time collector,
// the two latency histograms (fed by the store's and the bridges'
// callbacks) and the Go and process collectors.
func (a *API) registerMetrics() error {
	a.reg = prometheus.NewRegistry()
	fsync := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mote_store_fsync_duration_seconds",
		Help:    "Duration of fsync calls on the store file.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs to 3.3s
	})
	send := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mote_bridge_send_duration_seconds",
		Help:    "Duration of a bridge's send calls (one message or one batch), by result.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1ms to 33s
	}, []string{"bridge", "result"})
	for _, c := range []prometheus.Collector{
		collector{a}, fsync, send,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := a.reg.Register(c); err != nil {
			return fmt.Errorf("admin: metrics: %w", err)
		}
	}
	a.o.Store.OnSync(func(d time.Duration) { fsync.Observe(d.Seconds()) })
	for _, b := range a.o.Bridges.Bridges() {
		ok, failed := send.WithLabelValues(b.Name(), "ok"), send.WithLabelValues(b.Name(), "error")
		b.OnSend(func(d time.Duration, _ int, err error) {
			if err != nil {
				failed.Observe(d.Seconds())
				return
			}
			ok.Observe(d.Seconds())
		})
	}
	return nil
}

func (a *API) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(a.o.Log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	})
}
