package frame

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// namedPacket is a packet built with mochi's own encoders, sent after conn
// (nil: no CONNECT first).
type namedPacket struct {
	name string
	conn []byte
	pre  [][]byte
	pkt  []byte
}

var allowResponse = packets.Mods{AllowResponseInfo: true}

// Well-formed CONNECTs from the spec's feature list, encoded by mochi.
var (
	mochiConnect31 = encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 3,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQIsdp"), Clean: true, Keepalive: 60,
			ClientIdentifier: "mote-31",
			WillFlag:         true, WillQos: 1, WillRetain: true, WillTopic: "will/31", WillPayload: []byte("gone"),
			UsernameFlag: true, Username: []byte("user"), PasswordFlag: true, Password: []byte{0x00, 0xFF, 'p'},
		},
	})
	mochiConnect311 = encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 30,
			ClientIdentifier: "mote-311",
			WillFlag:         true, WillQos: 2, WillTopic: "will/311", WillPayload: []byte("gone"),
			UsernameFlag: true, Username: []byte("user"), PasswordFlag: true, Password: []byte("secret"),
		},
	})
	mochiConnect5 = encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Mods:            allowResponse,
		Properties: packets.Properties{
			SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true,
			ReceiveMaximum: 100, MaximumPacketSize: 1 << 20, TopicAliasMaximum: 10,
			RequestResponseInfo: 1, RequestProblemInfo: 0, RequestProblemInfoFlag: true,
			User:                 []packets.UserProperty{{Key: "k", Val: "v"}, {Key: "k", Val: "v2"}},
			AuthenticationMethod: "SCRAM-SHA-1", AuthenticationData: []byte("client-first"),
		},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 10,
			ClientIdentifier: "mote-5",
			WillFlag:         true, WillQos: 1, WillRetain: true, WillTopic: "will/5", WillPayload: []byte("bye ✓"),
			WillProperties: packets.Properties{
				WillDelayInterval: 5, PayloadFormat: 1, PayloadFormatFlag: true, MessageExpiryInterval: 60,
				ContentType: "text/plain", ResponseTopic: "resp/5", CorrelationData: []byte{1, 2},
				User: []packets.UserProperty{{Key: "w", Val: "1"}},
			},
			UsernameFlag: true, Username: []byte("user"), PasswordFlag: true, Password: []byte("secret"),
		},
	})
	mochiConnect5Min = encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: ""},
	})
	mochiConnect5Password = encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: "pw",
			PasswordFlag: true, Password: []byte("token")},
	})
)

func mochiPublish(ver, qos byte, id uint16, topic string, payload string, p packets.Properties) []byte {
	return encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: qos == 2, Dup: qos == 1},
		ProtocolVersion: ver, Mods: allowResponse,
		TopicName: topic, PacketID: id, Payload: []byte(payload), Properties: p,
	})
}

func mochiAck(ver, typ byte, id uint16, rc byte, p packets.Properties) []byte {
	fh := packets.FixedHeader{Type: typ}
	if typ == packets.Pubrel {
		fh.Qos = 1
	}
	return encode(packets.Packet{FixedHeader: fh, ProtocolVersion: ver, PacketID: id, ReasonCode: rc, Properties: p})
}

// mochiValid lists well-formed client packets for MQTT 3.1, 3.1.1 and 5,
// encoded by mochi. Every one must be accepted.
func mochiValid() []namedPacket {
	c3, c4, c5 := minimalConnect(3), minimalConnect(4), minimalConnect(5)
	pubProps := packets.Properties{
		PayloadFormat: 1, PayloadFormatFlag: true, MessageExpiryInterval: 120,
		ContentType: "application/json", ResponseTopic: "reply/to", CorrelationData: []byte("corr"),
		User: []packets.UserProperty{{Key: "trace", Val: "abc"}, {Key: "trace", Val: "def"}},
	}
	aliased := pubProps
	aliased.TopicAlias, aliased.TopicAliasFlag = 3, true
	setAlias := mochiPublish(5, 0, 0, "sensors/1/temp", "{}", packets.Properties{TopicAlias: 3, TopicAliasFlag: true})
	sub := func(ver byte, id uint16, p packets.Properties, fs ...packets.Subscription) []byte {
		return encode(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: ver,
			PacketID: id, Filters: fs, Properties: p,
		})
	}
	unsub := func(ver byte, id uint16, p packets.Properties, fs ...string) []byte {
		var subs packets.Subscriptions
		for _, f := range fs {
			subs = append(subs, packets.Subscription{Filter: f})
		}
		return encode(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, ProtocolVersion: ver,
			PacketID: id, Filters: subs, Properties: p,
		})
	}
	ackProps := packets.Properties{ReasonString: "because", User: []packets.UserProperty{{Key: "a", Val: "b"}}}
	disc := func(ver, rc byte, p packets.Properties) []byte {
		return encode(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: ver, ReasonCode: rc, Properties: p})
	}
	auth := encode(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Auth}, ProtocolVersion: 5, ReasonCode: 0x18,
		Properties: packets.Properties{AuthenticationMethod: "SCRAM-SHA-1", AuthenticationData: []byte("client-final"), ReasonString: "step 2"},
	})
	ping := encode(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})

	return []namedPacket{
		{name: "v3.1 connect with will user password", pkt: mochiConnect31},
		{name: "v3.1.1 connect with will user password", pkt: mochiConnect311},
		{name: "v5 connect with properties and will properties", pkt: mochiConnect5},
		{name: "v5 connect minimal empty client id", pkt: mochiConnect5Min},
		{name: "v5 connect password without user name", pkt: mochiConnect5Password},

		{name: "v3.1 publish qos 0", conn: c3, pkt: mochiPublish(3, 0, 0, "a/b", "hello", packets.Properties{})},
		{name: "v3.1.1 publish qos 0", conn: c4, pkt: mochiPublish(4, 0, 0, "a/b", "hello", packets.Properties{})},
		{name: "v3.1.1 publish qos 1 dup", conn: c4, pkt: mochiPublish(4, 1, 10, "a/b", "hello", packets.Properties{})},
		{name: "v3.1.1 publish qos 2 retain", conn: c4, pkt: mochiPublish(4, 2, 11, "a/b", "", packets.Properties{})},
		{name: "v5 publish qos 0 no properties", conn: c5, pkt: mochiPublish(5, 0, 0, "a/b", "x", packets.Properties{})},
		{name: "v5 publish qos 0 with properties", conn: c5, pkt: mochiPublish(5, 0, 0, "a/b", `{"t":21.5}`, pubProps)},
		{name: "v5 publish qos 1 with properties", conn: c5, pkt: mochiPublish(5, 1, 1, "a/b", `{"t":21.5}`, pubProps)},
		{name: "v5 publish qos 2 with properties", conn: c5, pkt: mochiPublish(5, 2, 65535, "a/b", `{"t":21.5}`, pubProps)},
		{name: "v5 publish sets topic alias", conn: c5, pkt: mochiPublish(5, 1, 2, "sensors/1/temp", "1", aliased)},
		{name: "v5 publish uses topic alias", conn: c5, pre: [][]byte{setAlias}, pkt: mochiPublish(5, 1, 3, "", "2", aliased)},

		{name: "v3.1.1 subscribe two filters (spec figure 3-21)", conn: c4, pkt: sub(4, 10, packets.Properties{},
			packets.Subscription{Filter: "a/b", Qos: 1}, packets.Subscription{Filter: "c/d", Qos: 2})},
		{name: "v3.1 subscribe", conn: c3, pkt: sub(3, 1, packets.Properties{}, packets.Subscription{Filter: "#"})},
		{name: "v5 subscribe options and identifier", conn: c5, pkt: sub(5, 10,
			packets.Properties{SubscriptionIdentifier: []int{42}, User: []packets.UserProperty{{Key: "u", Val: "1"}}},
			packets.Subscription{Filter: "a/b", Qos: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
			packets.Subscription{Filter: "c/+/#", Qos: 2},
			packets.Subscription{Filter: "$share/g/c/d", Qos: 0, RetainHandling: 1})},
		{name: "v5 subscribe identifier at maximum", conn: c5, pkt: sub(5, 1,
			packets.Properties{SubscriptionIdentifier: []int{268435455}}, packets.Subscription{Filter: "x"})},
		{name: "v3.1.1 unsubscribe", conn: c4, pkt: unsub(4, 5, packets.Properties{}, "a/b", "c/d")},
		{name: "v5 unsubscribe with user property", conn: c5, pkt: unsub(5, 5,
			packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}}, "a/b", "$share/g/c")},

		{name: "v3.1.1 puback", conn: c4, pkt: mochiAck(4, packets.Puback, 1, 0, packets.Properties{})},
		{name: "v3.1.1 pubrec", conn: c4, pkt: mochiAck(4, packets.Pubrec, 1, 0, packets.Properties{})},
		{name: "v3.1.1 pubrel", conn: c4, pkt: mochiAck(4, packets.Pubrel, 1, 0, packets.Properties{})},
		{name: "v3.1.1 pubcomp", conn: c4, pkt: mochiAck(4, packets.Pubcomp, 1, 0, packets.Properties{})},
		{name: "v5 puback short", conn: c5, pkt: mochiAck(5, packets.Puback, 1, 0, packets.Properties{})},
		{name: "v5 puback reason code", conn: c5, pkt: mochiAck(5, packets.Puback, 1, 0x97, packets.Properties{})},
		{name: "v5 pubrec with properties", conn: c5, pkt: mochiAck(5, packets.Pubrec, 1, 0x10, ackProps)},
		{name: "v5 pubrel with properties", conn: c5, pkt: mochiAck(5, packets.Pubrel, 1, 0x92, ackProps)},
		{name: "v5 pubcomp with properties", conn: c5, pkt: mochiAck(5, packets.Pubcomp, 1, 0, ackProps)},

		{name: "pingreq", conn: c4, pkt: ping},
		{name: "v3.1.1 disconnect", conn: c4, pkt: disc(4, 0, packets.Properties{})},
		{name: "v5 disconnect with will", conn: c5, pkt: disc(5, 0x04, packets.Properties{ReasonString: "bye", User: []packets.UserProperty{{Key: "a", Val: "b"}}})},
		{name: "v5 disconnect with session expiry", conn: mochiConnect5, pkt: disc(5, 0, packets.Properties{SessionExpiryInterval: 7200, SessionExpiryIntervalFlag: true})},
		{name: "v5 auth continue", conn: mochiConnect5, pkt: auth},
	}
}

func TestMochiEncodedPacketsAccepted(t *testing.T) {
	for _, tc := range mochiValid() {
		t.Run(tc.name, func(t *testing.T) {
			c := NewChecker(Limits{})
			for i, p := range append(append([][]byte{}, tc.conn), tc.pre...) {
				if p == nil {
					continue
				}
				if err := c.Check(p); err != nil {
					t.Fatalf("setup packet %d refused: %v", i, err)
				}
			}
			ver := c.Version()
			if err := c.Check(tc.pkt); err != nil {
				t.Fatalf("refused % x: %v", tc.pkt, err)
			}
			p, err := mochiDecode(ver, tc.pkt)
			if err != nil {
				t.Fatalf("mochi cannot decode an accepted packet: %v", err)
			}
			if err := mochiValidate(p, 65535); err != nil {
				t.Fatal(err)
			}
		})
	}
}
