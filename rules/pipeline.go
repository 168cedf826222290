package rules

import (
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/motemq/mote/persistence"
)

// msg is a message going through a rule's actions. Actions never change a
// msg: one that changes the message derives a new one, so the rules that
// match a publish share the first msg and its parsed payload.
type msg struct {
	topic    string
	payload  []byte
	qos      byte
	retain   bool
	props    msgProps
	ctype    string // content type set by a transform ("" = props')
	clientID string
	username []byte    // the publisher's; shared, never changed
	at       time.Time // when the rules first needed the time (see when)

	format  string // structured format val was decoded from ("" = JSON, parsed on demand)
	val     any
	valDone bool

	e      env
	filled needs
}

// msgProps are the MQTT 5 properties a message carries through the rules
// (copied from the publish: a pointer would keep the whole packet on the
// heap for every message).
type msgProps struct {
	contentType   string
	responseTopic string
	correlation   []byte
	user          []packets.UserProperty
	expiry        uint32
	format        byte
	formatSet     bool
}

func propsOf(p *packets.Properties) msgProps {
	return msgProps{
		contentType: p.ContentType, responseTopic: p.ResponseTopic, correlation: p.CorrelationData,
		user: p.User, expiry: p.MessageExpiryInterval, format: p.PayloadFormat, formatSet: p.PayloadFormatFlag,
	}
}

// reset makes m the message pk as cl published it.
func (m *msg) reset(cl *mqtt.Client, pk *packets.Packet) {
	*m = msg{
		topic: pk.TopicName, payload: pk.Payload, qos: pk.FixedHeader.Qos, retain: pk.FixedHeader.Retain,
		props: propsOf(&pk.Properties), clientID: pk.Origin,
	}
	if cl != nil && !cl.Net.Inline {
		m.username = cl.Properties.Username
	}
	m.e = env{Topic: m.topic, QoS: int(m.qos), Retain: m.retain, ClientID: m.clientID}
}

// when is the message's timestamp: the time the rules first needed it
// (reading the clock for every message costs more than the rest of a
// simple rule).
func (m *msg) when() time.Time {
	if m.at.IsZero() {
		m.at = time.Now()
	}
	return m.at
}

// value is the payload's structured value: decoded by a transform, or the
// payload parsed as JSON; nil when it does not parse.
func (m *msg) value() any {
	if !m.valDone {
		m.valDone = true
		if v, err := decodeJSON(m.payload); err == nil {
			m.val = v
		}
	}
	return m.val
}

// env fills what n needs and returns the expression environment.
func (m *msg) env(n needs) *env {
	if miss := n &^ m.filled; miss != 0 {
		if miss&needLevels != 0 {
			m.e.Levels = strings.Split(m.topic, "/")
		}
		if miss&needPayload != 0 {
			m.e.Payload = string(m.payload)
		}
		if miss&needJSON != 0 {
			m.e.JSON = m.value()
		}
		if miss&needProps != 0 {
			m.e.Properties = propsMap(&m.props, m.ctype)
		}
		if miss&needUser != 0 {
			m.e.Username = string(m.username)
		}
		if miss&needTime != 0 {
			m.e.Timestamp = m.when()
		}
		m.filled |= miss
	}
	return &m.e
}

// derive returns a copy of m with a new payload; val is its decoded value
// when format is structured.
func (m *msg) derive(payload []byte, format string, val any) *msg {
	n := *m
	n.payload = payload
	n.format, n.val, n.valDone = "", nil, false
	if structured(format) {
		n.format, n.val, n.valDone = format, val, true
	}
	n.filled &^= needPayload | needJSON
	n.e.Payload, n.e.JSON = "", nil
	return &n
}

func propsMap(p *msgProps, ctype string) map[string]any {
	out := map[string]any{}
	if ctype == "" {
		ctype = p.contentType
	}
	if ctype != "" {
		out["content_type"] = ctype
	}
	if p.responseTopic != "" {
		out["response_topic"] = p.responseTopic
	}
	if len(p.correlation) > 0 {
		out["correlation_data"] = string(p.correlation)
	}
	if p.formatSet {
		out["payload_format"] = int(p.format)
	}
	if p.expiry > 0 {
		out["message_expiry"] = int(p.expiry)
	}
	if len(p.user) > 0 {
		u := make(map[string]any, len(p.user))
		for _, kv := range p.user {
			u[kv.Key] = kv.Val
		}
		out["user"] = u
	}
	return out
}

// packet builds a publish of m's payload (or payload) to topic, carrying m's
// properties (content type, response topic, correlation data, user
// properties, expiry), without anything of the original's routing state.
func (m *msg) packet(topic string, payload []byte, qos byte, retain bool) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	}
	if qos > 0 {
		pk.PacketID = 1
	}
	p := &m.props
	pk.Properties = packets.Properties{
		PayloadFormat:         p.format,
		PayloadFormatFlag:     p.formatSet,
		MessageExpiryInterval: p.expiry,
		ContentType:           p.contentType,
		ResponseTopic:         p.responseTopic,
		CorrelationData:       p.correlation,
		User:                  slices.Clone(p.user),
	}
	if m.ctype != "" {
		pk.Properties.ContentType = m.ctype
		// A binary representation is not UTF-8 text any more.
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 0, false
	}
	return pk
}

// exec is one run of the rules on a message.
type exec struct {
	e       *Engine
	orig    *msg // the message as published; nil when a timer runs the rest of a rule
	depth   int  // rules' outputs the input passed
	event   bool // the input is an event: errors are logged, not emitted
	drop    bool
	dropWhy string
	halted  bool // the current rule stopped (on_error drop or dead_letter)
	batch   *persistence.Batch
}

// later is an exec for the rest of a rule that runs after its publish was
// handled (aggregate, scatter-gather).
func later(e *Engine, depth int) *exec { return &exec{e: e, depth: depth} }

// join makes the publish's acknowledgement wait for b as well. Batches
// commit in the order they were opened, so the latest one is enough.
func (x *exec) join(b *persistence.Batch) {
	if b != nil && x.orig != nil {
		x.batch = b
	}
}

func (x *exec) dropOrig(why string) {
	if x.orig != nil {
		x.drop = true
		if x.dropWhy == "" {
			x.dropWhy = why
		}
	}
}

// run runs the rule on m if its condition holds.
func (r *rule) run(x *exec, m *msg) {
	x.halted = false
	if r.when != nil {
		v, err := r.when.run(m.env(r.when.needs))
		if err != nil {
			r.fail(x, m, "when", err) // the condition is unknown: the actions do not run
			return
		}
		if ok, _ := v.(bool); !ok {
			return
		}
	}
	r.st.matched.Add(1)
	x.e.Counters.Matched.Add(1)
	r.runFrom(x, 0, m)
}

// runFrom runs the actions from i on.
func (r *rule) runFrom(x *exec, i int, m *msg) {
	for ; i < len(r.actions) && !x.halted; i++ {
		a := r.actions[i]
		next, err := a.do(x, m)
		if err != nil {
			r.fail(x, m, a.where(), err)
			continue // on_error continue: the next action gets the message as it was
		}
		if next == nil {
			return
		}
		m = next
	}
}

// fail applies the rule's on_error to a failed action.
func (r *rule) fail(x *exec, m *msg, where string, err error) {
	e := x.e
	n := r.st.errors.Add(1)
	e.Counters.Errors.Add(1)
	text := where + ": " + err.Error()
	r.st.setLast(text)
	if n == 1 || n%1000 == 0 {
		e.log.Warn("rule failed", "rule", r.name, "action", where, "topic", m.topic,
			"on_error", r.onError, "errors", n, "error", err)
	}
	if !x.event {
		e.Emit(EventRuleError, map[string]any{
			"rule": r.name, "action": where, "topic": m.topic, "client_id": m.clientID,
			"error": err.Error(), "on_error": r.onError,
		})
	}
	switch r.onError {
	case OnErrorDrop:
		x.halted = true
		x.dropOrig("rule " + r.name + " failed (on_error drop): " + text)
	case OnErrorDeadLetter:
		x.halted = true
		r.deadLetter(x, m, text)
		x.dropOrig("rule " + r.name + " failed (on_error dead_letter): " + text)
	}
}

// deadLetter publishes the original message (or, after a timer, the
// message at hand) to $rules/{name}/dead with the error.
func (r *rule) deadLetter(x *exec, m *msg, why string) {
	src := m
	if x.orig != nil {
		src = x.orig
	}
	pk := src.packet(RulesPrefix+r.name+"/dead", src.payload, src.qos, false)
	pk.Properties.MessageExpiryInterval = 0 // a dead letter waits for its reader
	pk.Properties.User = append(pk.Properties.User,
		packets.UserProperty{Key: "error", Val: why},
		packets.UserProperty{Key: "original-topic", Val: m.topic},
		packets.UserProperty{Key: "rule", Val: r.name})
	// A dead letter is never lost to the hop limit.
	if err := x.e.publish(min(x.depth+1, MaxHops), pk); err != nil {
		x.e.log.Error("dead letter not published", "rule", r.name, "topic", pk.TopicName, "error", err)
		return
	}
	x.e.Counters.DeadLettered.Add(1)
}

// flush emits the set's open aggregations (incomplete).
func (s *Set) flush(e *Engine) {
	for _, a := range s.aggs {
		a.flush(e)
	}
}
