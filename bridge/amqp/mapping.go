package amqp

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Headers Mote sets on the messages it publishes to RabbitMQ, and reads
// back from the messages it consumes. A user property with one of these
// names is replaced by Mote's value on the way out.
const (
	HeaderTopic    = "mqtt-topic"     // the MQTT topic
	HeaderQoS      = "mqtt-qos"       // the MQTT QoS (an integer)
	HeaderClientID = "mqtt-client-id" // the publisher's client id
	HeaderRetain   = "mqtt-retain"    // true when the MQTT message was retained
	// HeaderCorrelationEncoding is "base64" when correlation_id holds MQTT
	// correlation data that was not UTF-8, base64-encoded.
	HeaderCorrelationEncoding = "mqtt-correlation-encoding"
	// HeaderCorrelationData holds correlation data too long for
	// correlation_id (255 bytes), as bytes.
	HeaderCorrelationData = "mqtt-correlation-data"
	// HeaderResponseTopic holds the MQTT response topic when, mapped, it is
	// too long for reply_to (255 bytes).
	HeaderResponseTopic = "mqtt-response-topic"
	// HeaderContentType holds a content type too long for content_type
	// (255 bytes).
	HeaderContentType = "mqtt-content-type"
	// HeaderPayloadFormat is the MQTT 5 payload format indicator (1: UTF-8
	// text) when the publisher set it.
	HeaderPayloadFormat = "mqtt-payload-format"
	// HeaderReplyTo carries, on an MQTT message, an AMQP reply_to that is
	// not a valid MQTT topic once mapped (so no response topic was set).
	HeaderReplyTo = "amqp-reply-to"
)

// ownHeaders are the headers Mote sets; they do not become MQTT user
// properties on the way back.
var ownHeaders = map[string]bool{
	HeaderTopic: true, HeaderQoS: true, HeaderClientID: true, HeaderRetain: true,
	HeaderCorrelationEncoding: true, HeaderCorrelationData: true, HeaderResponseTopic: true,
	HeaderContentType: true, HeaderPayloadFormat: true,
}

// TopicToKey maps an MQTT topic to an AMQP routing key by swapping '/' and
// '.', as RabbitMQ's MQTT plugin does: "sensors/1/temp" ⇄
// "sensors.1.temp", and "v1.2/x" ⇄ "v1/2.x". The swap is its own inverse,
// so TopicToKey and KeyToTopic form a bijection on all strings (bytes
// other than '/' and '.' are kept, even invalid UTF-8).
func TopicToKey(topic string) string { return swapSeparators(topic) }

// KeyToTopic maps an AMQP routing key to an MQTT topic: the inverse of
// TopicToKey.
func KeyToTopic(key string) string { return swapSeparators(key) }

func swapSeparators(s string) string {
	i := strings.IndexAny(s, "/.")
	if i < 0 {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		switch b[i] {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}

// FilterToBindingKey maps an MQTT topic filter to a binding key for a
// topic exchange, consistently with TopicToKey: levels become words, a
// '+' level becomes '*' (exactly one word) and '#' stays '#' (zero or more
// words), so the key matches TopicToKey(t) for the topics t the filter
// matches. Two differences remain: a wildcard at the first level matches
// topics starting with '$' in AMQP but not in MQTT [MQTT-4.7.2-1], and a
// level that is literally '*' becomes a wildcard.
func FilterToBindingKey(filter string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch l {
		case "+":
			levels[i] = "*"
		case "#":
		default:
			levels[i] = strings.ReplaceAll(l, ".", "/")
		}
	}
	return strings.Join(levels, ".")
}

// toPublishing maps an MQTT message to an AMQP publishing. id is the
// message's stable id ("" for none). expired reports a message whose MQTT
// message expiry interval has passed: MQTT says to drop it
// [MQTT-3.3.2-5]. An error means the message can never be published.
func toPublishing(pk *packets.Packet, id string, now time.Time) (msg amqp.Publishing, expired bool, err error) {
	p := &pk.Properties
	msg = amqp.Publishing{
		DeliveryMode: amqp.Transient,
		MessageId:    id,
		Body:         pk.Payload,
		Headers:      amqp.Table{},
	}
	if pk.FixedHeader.Qos > 0 {
		msg.DeliveryMode = amqp.Persistent
	}
	if len(id) > maxShortstr {
		return msg, false, fmt.Errorf("message id of %d bytes is longer than AMQP's %d", len(id), maxShortstr)
	}
	if pk.Created > 0 {
		msg.Timestamp = time.Unix(pk.Created, 0)
	}
	if p.MessageExpiryInterval > 0 {
		left := time.Duration(p.MessageExpiryInterval) * time.Second
		if pk.Created > 0 {
			left = time.Unix(pk.Created, 0).Add(left).Sub(now)
		}
		if left <= 0 {
			return msg, true, nil
		}
		msg.Expiration = strconv.FormatInt(max(left.Milliseconds(), 1), 10)
	}
	for _, u := range p.User {
		if len(u.Key) > maxShortstr {
			return msg, false, fmt.Errorf("user property name of %d bytes: AMQP header names are at most %d bytes", len(u.Key), maxShortstr)
		}
		switch old := msg.Headers[u.Key].(type) {
		case nil:
			msg.Headers[u.Key] = u.Val
		case string:
			msg.Headers[u.Key] = []any{old, u.Val}
		case []any:
			msg.Headers[u.Key] = append(old, u.Val)
		}
	}
	if ct := p.ContentType; len(ct) <= maxShortstr {
		msg.ContentType = ct
	} else {
		msg.Headers[HeaderContentType] = ct
	}
	if rt := p.ResponseTopic; rt != "" {
		if k := TopicToKey(rt); len(k) <= maxShortstr {
			msg.ReplyTo = k
		} else {
			msg.Headers[HeaderResponseTopic] = rt
		}
	}
	if cd := p.CorrelationData; len(cd) > 0 {
		switch {
		case utf8.Valid(cd) && len(cd) <= maxShortstr:
			msg.CorrelationId = string(cd)
		case base64.StdEncoding.EncodedLen(len(cd)) <= maxShortstr:
			msg.CorrelationId = base64.StdEncoding.EncodeToString(cd)
			msg.Headers[HeaderCorrelationEncoding] = "base64"
		default:
			msg.Headers[HeaderCorrelationData] = cd
		}
	}
	if p.PayloadFormatFlag {
		msg.Headers[HeaderPayloadFormat] = int32(p.PayloadFormat)
	}
	msg.Headers[HeaderTopic] = pk.TopicName
	msg.Headers[HeaderQoS] = int32(pk.FixedHeader.Qos)
	if pk.Origin != "" {
		msg.Headers[HeaderClientID] = pk.Origin
	}
	if pk.FixedHeader.Retain {
		msg.Headers[HeaderRetain] = true
	}
	return msg, false, nil
}

// checkKey checks a rendered routing key.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("routing key is empty")
	case len(key) > maxShortstr:
		return fmt.Errorf("routing key of %d bytes is longer than AMQP's %d", len(key), maxShortstr)
	case !utf8.ValidString(key):
		return fmt.Errorf("routing key %q is not UTF-8", key)
	}
	return nil
}

// toProperties maps a delivery's properties and headers to MQTT 5
// properties (the topic is the caller's).
func toProperties(d *amqp.Delivery) packets.Properties {
	var p packets.Properties
	h := d.Headers
	if ct, ok := h[HeaderContentType].(string); ok {
		p.ContentType = validUTF8(ct)
	} else {
		p.ContentType = validUTF8(d.ContentType)
	}
	if rt, ok := h[HeaderResponseTopic].(string); ok && validTopic(rt) {
		p.ResponseTopic = rt
	} else if d.ReplyTo != "" {
		if t := KeyToTopic(d.ReplyTo); validTopic(t) {
			p.ResponseTopic = t
		} else {
			p.User = append(p.User, packets.UserProperty{Key: HeaderReplyTo, Val: validUTF8(d.ReplyTo)})
		}
	}
	switch cd := h[HeaderCorrelationData].(type) {
	case []byte:
		p.CorrelationData = cd
	case string:
		p.CorrelationData = []byte(cd)
	default:
		if d.CorrelationId == "" {
			break
		}
		p.CorrelationData = []byte(d.CorrelationId)
		if h[HeaderCorrelationEncoding] == "base64" {
			if b, err := base64.StdEncoding.DecodeString(d.CorrelationId); err == nil {
				p.CorrelationData = b
			}
		}
	}
	if ms, err := strconv.ParseUint(d.Expiration, 10, 64); err == nil {
		// RabbitMQ passes the TTL set by the publisher, not what is left of
		// it; "0" (expire unless delivered at once) becomes the shortest
		// MQTT expiry, as 0 would mean none.
		secs := ms / 1000
		if ms%1000 != 0 || secs == 0 {
			secs++
		}
		p.MessageExpiryInterval = uint32(min(secs, math.MaxUint32))
	}
	if f, ok := headerInt(h[HeaderPayloadFormat]); ok && (f == 0 || f == 1) {
		p.PayloadFormat, p.PayloadFormatFlag = byte(f), true
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		if !ownHeaders[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // a table has no order; MQTT properties do
	for _, k := range keys {
		key := validUTF8(k)
		if arr, ok := h[k].([]any); ok {
			for _, v := range arr {
				p.User = append(p.User, packets.UserProperty{Key: key, Val: headerString(v)})
			}
			continue
		}
		p.User = append(p.User, packets.UserProperty{Key: key, Val: headerString(h[k])})
	}
	return p
}

// headerTopic is the mqtt-topic header of a delivery, if it is usable.
func headerTopic(d *amqp.Delivery) (string, bool) {
	t, ok := d.Headers[HeaderTopic].(string)
	return t, ok && t != ""
}

// validTopic reports whether t can be an MQTT topic name (a response
// topic): UTF-8 without NUL or wildcards.
func validTopic(t string) bool {
	return t != "" && utf8.ValidString(t) && !strings.ContainsAny(t, "+#\x00")
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// headerInt reads an integer header of any AMQP integer type.
func headerInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	}
	return 0, false
}

// headerString renders an AMQP field value as text: bytes as UTF-8 (or
// base64 if they are not), numbers and booleans as Go formats them, times
// as RFC 3339, decimals exactly, and tables and arrays as JSON.
func headerString(v any) string {
	if i, ok := headerInt(v); ok {
		return strconv.FormatInt(i, 10)
	}
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return validUTF8(x)
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case bool:
		return strconv.FormatBool(x)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case amqp.Decimal:
		return new(big.Rat).SetFrac(big.NewInt(int64(x.Value)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(x.Scale)), nil)).FloatString(int(x.Scale))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return validUTF8(fmt.Sprint(v))
	}
	return string(b)
}
