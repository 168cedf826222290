package rules

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	topics "github.com/motemq/mote/internal/topic"
	"github.com/motemq/mote/persistence"
)

// --- republish -----------------------------------------------------------------

type userTemplate struct {
	key string
	val *template
}

type republishAction struct {
	base
	topic   *template
	qos     int // -1: the message's
	retain  bool
	payload *program
	tpl     *template
	user    []userTemplate
}

func (a *republishAction) do(x *exec, m *msg) (*msg, error) {
	topic, err := renderTopic(a.topic, m)
	if err != nil {
		return nil, err
	}
	payload := m.payload
	switch {
	case a.payload != nil:
		v, err := a.payload.run(m.env(a.payload.needs))
		if err != nil {
			return nil, err
		}
		if payload, err = toPayload(v); err != nil {
			return nil, err
		}
	case a.tpl != nil:
		s, err := a.tpl.render(m.env(a.tpl.needs))
		if err != nil {
			return nil, err
		}
		payload = []byte(s)
	}
	pk := m.packet(topic, payload, qosOr(a.qos, m.qos), a.retain)
	for _, u := range a.user {
		v, err := u.val.render(m.env(u.val.needs))
		if err != nil {
			return nil, fmt.Errorf("user property %s: %w", u.key, err)
		}
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u.key, Val: v})
	}
	if err := x.e.publish(x.depth+1, pk); err != nil {
		return nil, fmt.Errorf("publish to %q: %w", topic, err)
	}
	return m, nil
}

func qosOr(q int, def byte) byte {
	if q < 0 {
		return def
	}
	return byte(q)
}

// renderTopic renders a topic template and checks the result is a topic
// a rule may publish to: not one of the broker's $ topics, except a
// scatter-gather reply topic (a rule may answer a request:
// topic: "{{ properties.response_topic }}").
func renderTopic(t *template, m *msg) (string, error) {
	s, err := t.render(m.env(t.needs))
	if err != nil {
		return "", err
	}
	if !t.constant() && !strings.HasPrefix(s, replyPrefix) {
		if err := topics.CheckName(s); err != nil {
			return "", err
		}
	}
	return s, nil
}

// --- transform -------------------------------------------------------------------

type field struct {
	name string
	p    *program
}

type transformAction struct {
	base
	from, to string
	fields   []field
	merge    bool
	remove   []string
	expr     *program
	tpl      *template
}

var errNotJSON = errors.New("the payload is not JSON")

func (a *transformAction) do(x *exec, m *msg) (*msg, error) {
	raw := m.payload // the bytes, after a byte decoding
	var val any      // the structured value
	haveVal := false
	in := m // what expressions see as json
	switch {
	case a.from == "":
		if v := m.value(); v != nil || m.format != "" {
			val, haveVal = v, true
		}
	case structured(a.from):
		v, err := decodeAs(a.from, m.payload)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a.from, err)
		}
		val, haveVal = v, true
		in = m.derive(m.payload, a.from, v)
	case a.from == fmtText:
		val, haveVal = string(m.payload), true
		in = m.derive(m.payload, fmtJSON, val)
	default: // base64, hex
		b, err := decodeBytes(a.from, m.payload)
		if err != nil {
			return nil, err
		}
		raw = b
		in = m.derive(b, "", nil)
	}
	needVal := func() error {
		if haveVal {
			return nil
		}
		v := in.value()
		if v == nil {
			return errNotJSON
		}
		val, haveVal = v, true
		return nil
	}
	computed := false
	switch {
	case a.expr != nil:
		if err := needVal(); err != nil {
			return nil, err
		}
		v, err := a.expr.run(in.env(a.expr.needs))
		if err != nil {
			return nil, err
		}
		val, computed = v, true
	case len(a.fields) > 0:
		obj := map[string]any{}
		if a.merge {
			if err := needVal(); err != nil {
				return nil, err
			}
			src, ok := val.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("merge: the payload is %s, not an object", kind(val))
			}
			obj = maps.Clone(src)
		}
		for _, f := range a.fields {
			v, err := f.p.run(in.env(f.p.needs))
			if err != nil {
				return nil, fmt.Errorf("fields.%s: %w", f.name, err)
			}
			obj[f.name] = v
		}
		val, computed, haveVal = obj, true, true
	}
	if len(a.remove) > 0 {
		if err := needVal(); err != nil {
			return nil, err
		}
		src, ok := val.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("remove: the payload is %s, not an object", kind(val))
		}
		obj := maps.Clone(src)
		for _, k := range a.remove {
			delete(obj, k)
		}
		val, computed = obj, true
	}

	// By default the value is written the way it was read: in the format
	// it came in, JSON when it was parsed from bytes or text.
	to, read := a.to, a.from
	if read == "" {
		read = m.format
	}
	if to == "" {
		switch {
		case structured(read):
			to = read
		case computed:
			to = fmtJSON
		}
	}
	var out *msg
	switch {
	case structured(to):
		if err := needVal(); err != nil {
			return nil, err
		}
		b, err := encodeAs(to, val)
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", to, err)
		}
		out = m.derive(b, to, val)
	case to == fmtBase64 || to == fmtHex:
		b := raw
		if computed {
			j, err := toPayload(val)
			if err != nil {
				return nil, err
			}
			b = j
		}
		out = m.derive(encodeBytes(to, b), "", nil)
	case to == fmtText:
		var b []byte
		switch {
		case a.tpl != nil:
			if computed {
				in = in.derive(in.payload, fmtJSON, val)
			}
			s, err := a.tpl.render(in.env(a.tpl.needs))
			if err != nil {
				return nil, err
			}
			b = []byte(s)
		case computed:
			j, err := toPayload(val)
			if err != nil {
				return nil, err
			}
			b = j
		default:
			b = raw
		}
		out = m.derive(b, "", nil)
	default: // from base64, hex or text with nothing else: the bytes
		out = m.derive(raw, "", nil)
		out.ctype = "application/octet-stream"
		if a.from == fmtText {
			out.ctype = contentType(fmtText)
		}
		return out, nil
	}
	out.ctype = contentType(to)
	return out, nil
}

// kind names a value's JSON type for errors.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case []byte:
		return "bytes"
	}
	return "a number"
}

// --- split -------------------------------------------------------------------------

type splitAction struct {
	base
	expr *program
	max  int
}

func (a *splitAction) do(x *exec, m *msg) (*msg, error) {
	var v any
	if a.expr != nil {
		var err error
		if v, err = a.expr.run(m.env(a.expr.needs)); err != nil {
			return nil, err
		}
	} else {
		v = m.value()
		if v == nil {
			return nil, errNotJSON
		}
	}
	list, err := asList(v)
	if err != nil {
		return nil, err
	}
	if len(list) > a.max {
		return nil, fmt.Errorf("%d elements: more than max (%d)", len(list), a.max)
	}
	format := m.format
	if format == "" {
		format = fmtJSON
	}
	outs := make([]*msg, len(list))
	for i, el := range list {
		b, err := encodeAs(format, el)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		o := m.derive(b, format, el)
		o.e.Index = i
		o.ctype = contentType(format)
		outs[i] = o
	}
	for _, o := range outs {
		a.next(x, o)
		if x.halted {
			break
		}
	}
	return nil, nil
}

// asList accepts any slice an expression may yield.
func asList(v any) ([]any, error) {
	if l, ok := v.([]any); ok {
		return l, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice || rv.Type().Elem().Kind() == reflect.Uint8 {
		return nil, fmt.Errorf("split needs a list, got %s", kind(v))
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, nil
}

// --- bridge, drop ------------------------------------------------------------------

type bridgeAction struct {
	base
	name  string
	offer func(packets.Packet) *persistence.Batch
}

func (a *bridgeAction) do(x *exec, m *msg) (*msg, error) {
	pk := m.packet(m.topic, m.payload, m.qos, m.retain)
	pk.Origin = m.clientID
	x.join(a.offer(pk))
	return m, nil
}

type dropAction struct{ base }

func (a *dropAction) do(x *exec, m *msg) (*msg, error) {
	x.dropOrig("rule " + a.r.name + ": drop")
	return m, nil
}
