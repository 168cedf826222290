package amqp

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	amqp "github.com/rabbitmq/amqp091-go"

	topics "github.com/motemq/mote/internal/topic"
)

func TestTopicKeyMapping(t *testing.T) {
	for _, tc := range []struct{ topic, key string }{
		{"sensors/1/temp", "sensors.1.temp"},
		{"v1.2/x", "v1/2.x"},
		{"/leading", ".leading"},
		{"a//b", "a..b"},
		{"plain", "plain"},
		{"ünï/cødé", "ünï.cødé"},
	} {
		if got := TopicToKey(tc.topic); got != tc.key {
			t.Errorf("TopicToKey(%q) = %q, want %q", tc.topic, got, tc.key)
		}
		if got := KeyToTopic(tc.key); got != tc.topic {
			t.Errorf("KeyToTopic(%q) = %q, want %q", tc.key, got, tc.topic)
		}
	}
}

// FuzzKeyMapping: the mapping is a bijection on all strings, invalid UTF-8
// included, and changes nothing but the separators.
func FuzzKeyMapping(f *testing.F) {
	for _, s := range []string{"", "a/b", "a.b", "/./", "sensors/1.5/temp", "\xff/\xfe.", "日本/語.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := TopicToKey(s)
		if got := KeyToTopic(k); got != s {
			t.Fatalf("KeyToTopic(TopicToKey(%q)) = %q", s, got)
		}
		if got := TopicToKey(KeyToTopic(s)); got != s {
			t.Fatalf("TopicToKey(KeyToTopic(%q)) = %q", s, got)
		}
		if len(k) != len(s) || strings.Count(k, ".") != strings.Count(s, "/") || strings.Count(k, "/") != strings.Count(s, ".") {
			t.Fatalf("TopicToKey(%q) = %q changed more than the separators", s, k)
		}
	})
}

func TestFilterToBindingKey(t *testing.T) {
	for _, tc := range []struct{ filter, key string }{
		{"#", "#"},
		{"+", "*"},
		{"sensors/+/temp", "sensors.*.temp"},
		{"sensors/#", "sensors.#"},
		{"+/+/#", "*.*.#"},
		{"v1.2/+", "v1/2.*"},
		{"a+b/c", "a+b.c"}, // not a wildcard level: kept as is
		{"/#", ".#"},
	} {
		if got := FilterToBindingKey(tc.filter); got != tc.key {
			t.Errorf("FilterToBindingKey(%q) = %q, want %q", tc.filter, got, tc.key)
		}
	}
}

// amqpTopicMatch is RabbitMQ's topic exchange matching: words split on '.',
// '*' matches exactly one word, '#' zero or more.
func amqpTopicMatch(binding, key string) bool {
	var match func(b, k []string) bool
	match = func(b, k []string) bool {
		if len(b) == 0 {
			return len(k) == 0
		}
		switch b[0] {
		case "#":
			for i := 0; i <= len(k); i++ {
				if match(b[1:], k[i:]) {
					return true
				}
			}
			return false
		case "*":
			return len(k) > 0 && match(b[1:], k[1:])
		}
		return len(k) > 0 && b[0] == k[0] && match(b[1:], k[1:])
	}
	return match(strings.Split(binding, "."), strings.Split(key, "."))
}

// FuzzFilterToBindingKey: for a valid filter and topic (outside the two
// documented differences: '$' topics and literal '*' levels), the binding
// key matches the routing key exactly when the filter matches the topic.
func FuzzFilterToBindingKey(f *testing.F) {
	for _, s := range [][2]string{
		{"sensors/+/temp", "sensors/1/temp"}, {"sensors/#", "sensors"}, {"#", "a/b/c"},
		{"+", "a/b"}, {"a/+/+", "a//"}, {"v1.2/#", "v1.2/x/y"}, {"+/x", "/x"}, {"a/b", "a.b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if !topics.ValidFilter(filter) || topics.CheckName(topic) != nil || strings.Contains(topic, "*") ||
			strings.Contains(filter, "*") {
			return
		}
		want := topics.Match(filter, topic)
		if got := amqpTopicMatch(FilterToBindingKey(filter), TopicToKey(topic)); got != want {
			t.Fatalf("filter %q topic %q: AMQP match %v, MQTT match %v (binding key %q, routing key %q)",
				filter, topic, got, want, FilterToBindingKey(filter), TopicToKey(topic))
		}
	})
}

// deliveryOf is what a consumer would receive for msg published with key.
func deliveryOf(msg amqp.Publishing, exchange, key string) amqp.Delivery {
	return amqp.Delivery{
		Headers: msg.Headers, ContentType: msg.ContentType, CorrelationId: msg.CorrelationId,
		ReplyTo: msg.ReplyTo, Expiration: msg.Expiration, MessageId: msg.MessageId, Timestamp: msg.Timestamp,
		Exchange: exchange, RoutingKey: key, Body: msg.Body,
	}
}

// An MQTT message that goes to AMQP and back keeps its properties, even
// those too long for AMQP's short fields.
func TestPropertiesRoundTrip(t *testing.T) {
	now := time.Now()
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name string
		p    packets.Properties
	}{
		{"plain", packets.Properties{
			ContentType: "application/json", ResponseTopic: "replies/dev-7", CorrelationData: []byte("req-1"),
			User:          []packets.UserProperty{{Key: "a", Val: "1"}, {Key: "b", Val: "2"}, {Key: "a", Val: "3"}},
			PayloadFormat: 1, PayloadFormatFlag: true,
		}},
		{"binary correlation", packets.Properties{CorrelationData: []byte{0xff, 0, 0xfe}}},
		{"long fields", packets.Properties{ContentType: long, ResponseTopic: "r/" + long, CorrelationData: bytes.Repeat([]byte{0xff}, 300)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("x"),
				Origin: "dev-7", Created: now.Unix(), Properties: tc.p}
			msg, expired, err := toPublishing(&pk, "id-1", now)
			if err != nil || expired {
				t.Fatalf("toPublishing: %v, expired %v", err, expired)
			}
			for _, s := range []string{msg.ContentType, msg.ReplyTo, msg.CorrelationId, msg.MessageId} {
				if len(s) > maxShortstr {
					t.Fatalf("a short string of %d bytes", len(s))
				}
			}
			if err := msg.Headers.Validate(); err != nil {
				t.Fatal(err)
			}
			d := deliveryOf(msg, "x", "a.b")
			got := toProperties(&d)
			want := tc.p
			// A table has no order: user properties come back sorted by name,
			// those of one name in their order.
			want.User = slices.Clone(want.User)
			slices.SortStableFunc(want.User, func(a, b packets.UserProperty) int { return strings.Compare(a.Key, b.Key) })
			if got.ContentType != want.ContentType || got.ResponseTopic != want.ResponseTopic ||
				!bytes.Equal(got.CorrelationData, want.CorrelationData) || !slices.Equal(got.User, want.User) ||
				got.PayloadFormat != want.PayloadFormat || got.PayloadFormatFlag != want.PayloadFormatFlag {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	now := time.Unix(1_700_000_100, 0)
	pk := packets.Packet{TopicName: "a", Created: 1_700_000_000}
	pk.Properties.MessageExpiryInterval = 60 // expired 40s ago
	if _, expired, err := toPublishing(&pk, "", now); err != nil || !expired {
		t.Fatalf("expired message: expired %v, %v", expired, err)
	}
	pk.Properties.MessageExpiryInterval = 160
	msg, expired, err := toPublishing(&pk, "", now)
	if err != nil || expired || msg.Expiration != "60000" {
		t.Fatalf("expiration %q, expired %v, %v", msg.Expiration, expired, err)
	}
	for exp, want := range map[string]uint32{"60000": 60, "1500": 2, "1": 1, "0": 1, "": 0, "junk": 0} {
		d := amqp.Delivery{Expiration: exp}
		if got := toProperties(&d).MessageExpiryInterval; got != want {
			t.Errorf("expiration %q: expiry interval %d, want %d", exp, got, want)
		}
	}
}

func TestHeaderString(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{"s", "s"}, {[]byte("b"), "b"}, {[]byte{0xff}, "/w=="}, {int32(-5), "-5"}, {int64(1 << 40), "1099511627776"},
		{uint8(7), "7"}, {true, "true"}, {1.5, "1.5"}, {float32(0.25), "0.25"}, {nil, ""},
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "2024-01-02T03:04:05Z"},
		{amqp.Decimal{Scale: 2, Value: 1234}, "12.34"}, {amqp.Decimal{Scale: 0, Value: -3}, "-3"},
		{amqp.Table{"k": "v"}, `{"k":"v"}`}, {"bad\xffutf8", "bad\uFFFDutf8"},
	} {
		if got := headerString(tc.v); got != tc.want {
			t.Errorf("headerString(%#v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// Deliveries become user properties: arrays as repeated properties, Mote's
// own headers left out, reply_to that is no MQTT topic kept aside.
func TestDeliveryProperties(t *testing.T) {
	d := amqp.Delivery{
		Headers: amqp.Table{"z": "last", "arr": []any{"x", int32(2)}, HeaderTopic: "t", HeaderQoS: int32(1), HeaderRetain: true},
		ReplyTo: "amq.rabbitmq.reply-to.#",
	}
	p := toProperties(&d)
	want := []packets.UserProperty{{Key: HeaderReplyTo, Val: "amq.rabbitmq.reply-to.#"}, {Key: "arr", Val: "x"}, {Key: "arr", Val: "2"}, {Key: "z", Val: "last"}}
	if !slices.Equal(p.User, want) || p.ResponseTopic != "" {
		t.Fatalf("user properties %v, response topic %q", p.User, p.ResponseTopic)
	}
}

func TestCheckKey(t *testing.T) {
	for key, ok := range map[string]bool{"a.b": true, "": false, strings.Repeat("k", 255): true, strings.Repeat("k", 256): false, "\xff": false} {
		if err := checkKey(key); (err == nil) != ok {
			t.Errorf("checkKey(%.20q): %v", key, err)
		}
	}
}
