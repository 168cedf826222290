package frame

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// checkCase is one packet checked on a connection in a given state.
type checkCase struct {
	name string
	ver  byte     // level of the CONNECT accepted first (minimalConnect); 0 sends none
	conn []byte   // replaces minimalConnect(ver)
	lim  Limits   // the Checker's limits
	pre  [][]byte // packets that must be accepted before pkt
	pkt  []byte
	want byte // 0: accepted, else the refusal's reason code
}

// Strings that break the UTF-8 Encoded String rules (MQTT 5.0 §1.5.4).
const (
	badUTF8      = "a\xffb"         // invalid byte
	overlong     = "\xc0\xaf"       // overlong '/'
	surrogate    = "a\xed\xa0\x80"  // U+D800
	nul          = "a\x00b"         // U+0000
	ctrl         = "a\x01b"         // U+0001
	del          = "a\x7fb"         // U+007F
	c1           = "a\u0085b"       // NEL, C1 control
	nonchar      = "a\uffffb"       // U+FFFF
	nonchar2     = "a\ufdd0b"       // U+FDD0
	nonchar3     = "\U0001FFFE"     // U+1FFFE
	bom          = "\ufeffa"        // allowed, must not be stripped
	astral       = "a/\U0001F600/b" // 4-byte sequence, fine
	truncatedSeq = "a\xe2\x82"      // truncated 3-byte sequence
)

var cases = []checkCase{
	// ---- Class 1: framing ------------------------------------------------
	{name: "remaining length of five bytes", ver: 5, pkt: b(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), want: 0x81},
	{name: "remaining length not minimal", ver: 5, pkt: b(0xC0, 0x80, 0x00), want: 0x81},
	{name: "remaining length not minimal 4 bytes", ver: 4, pkt: cat(b(0x30, 0x83, 0x80, 0x80, 0x00), make([]byte, 3)), want: 0x81},
	{name: "remaining length larger than the bytes given", ver: 4, pkt: b(0xC0, 0x02, 0x00), want: 0x81},
	{name: "bytes beyond the remaining length", ver: 4, pkt: b(0xC0, 0x00, 0xC0, 0x00), want: 0x81},
	{name: "only a type byte", ver: 4, pkt: b(0xC0), want: 0x81},
	{name: "packet over the maximum packet size", ver: 5, lim: Limits{MaxPacketSize: 17},
		pkt: pk(0x30, s("a/b"), plist(), []byte("0123456789")), want: 0x95},
	{name: "packet at the maximum packet size", ver: 5, lim: Limits{MaxPacketSize: 18},
		pkt: pk(0x30, s("a/b"), plist(), []byte("0123456789"))},
	{name: "connect over the maximum packet size", lim: Limits{MaxPacketSize: 10}, pkt: minimalConnect(5), want: 0x95},
	{name: "packet type 0", ver: 4, pkt: b(0x00, 0x00), want: 0x81},
	{name: "packet type 15 in v3.1.1", ver: 4, pkt: b(0xF0, 0x00), want: 0x81},
	{name: "packet type 15 in v3.1", ver: 3, pkt: b(0xF0, 0x00), want: 0x81},
	{name: "connack from a client", ver: 4, pkt: b(0x20, 0x02, 0x00, 0x00), want: 0x82},
	{name: "suback from a client", ver: 5, pkt: b(0x90, 0x04, 0x00, 0x01, 0x00, 0x00), want: 0x82},
	{name: "unsuback from a client", ver: 4, pkt: b(0xB0, 0x02, 0x00, 0x01), want: 0x82},
	{name: "pingresp from a client", ver: 4, pkt: b(0xD0, 0x00), want: 0x82},
	{name: "subscribe flags 0x0", ver: 4, pkt: pk(0x80, u16(1), s("a"), b(0)), want: 0x81},
	{name: "subscribe flags 0x3", ver: 4, pkt: pk(0x83, u16(1), s("a"), b(0)), want: 0x81},
	{name: "subscribe flags 0xA", ver: 5, pkt: pk(0x8A, u16(1), plist(), s("a"), b(0)), want: 0x81},
	{name: "unsubscribe flags 0x0", ver: 4, pkt: pk(0xA0, u16(1), s("a")), want: 0x81},
	{name: "pubrel flags 0x0", ver: 4, pkt: pk(0x60, u16(1)), want: 0x81},
	{name: "puback flags 0x2", ver: 4, pkt: pk(0x42, u16(1)), want: 0x81},
	{name: "pubrec flags 0x1", ver: 4, pkt: pk(0x51, u16(1)), want: 0x81},
	{name: "pubcomp flags 0x8", ver: 5, pkt: pk(0x78, u16(1)), want: 0x81},
	{name: "pingreq flags 0x1", ver: 4, pkt: b(0xC1, 0x00), want: 0x81},
	{name: "disconnect flags 0x2", ver: 5, pkt: b(0xE2, 0x00), want: 0x81},
	{name: "connect flags 0x1", pkt: cat(b(0x11), minimalConnect(4)[1:]), want: 0x81},
	{name: "publish qos 3", ver: 4, pkt: pk(0x36, s("a"), u16(1)), want: 0x81},
	{name: "publish qos 3 v5", ver: 5, pkt: pk(0x36, s("a"), u16(1), plist()), want: 0x81},
	{name: "publish dup on qos 0", ver: 4, pkt: pk(0x38, s("a")), want: 0x81},
	{name: "first packet publish", pkt: pk(0x30, s("a"), b('x')), want: 0x82},
	{name: "first packet pingreq", pkt: b(0xC0, 0x00), want: 0x82},
	{name: "first packet subscribe", pkt: pk(0x82, u16(1), s("a"), b(0)), want: 0x82},
	{name: "first packet auth", pkt: pk(0xF0, b(0x18), plist()), want: 0x82},
	{name: "first packet type 0", pkt: b(0x00, 0x00), want: 0x82},
	{name: "second connect v3.1.1", ver: 4, pkt: minimalConnect(4), want: 0x82},
	{name: "second connect v5", ver: 5, pkt: minimalConnect(5), want: 0x82},
	{name: "second connect different version", ver: 4, pkt: minimalConnect(5), want: 0x82},

	// ---- CONNECT ---------------------------------------------------------
	{name: "connect v3.1 minimal", pkt: minimalConnect(3)},
	{name: "connect v3.1.1 minimal", pkt: minimalConnect(4)},
	{name: "connect v5 minimal", pkt: minimalConnect(5)},
	{name: "connect v3.1.1 spec example", pkt: connect4(0xCE, s("c"), s("will/t"), s("msg"), s("user"), s("pass"))},
	{name: "connect v3.1.1 empty client id clean", pkt: connect4(0x02, s(""))},
	{name: "connect v3.1.1 empty client id not clean", pkt: connect4(0x00, s("")), want: 0x85},
	{name: "connect v3.1 empty client id", pkt: connect3(0x02, s("")), want: 0x85},
	{name: "connect v5 empty client id not clean", pkt: connect5(0x00, plist(), s(""))},
	{name: "connect v3.1 long client id", pkt: connect3(0x02, s(strings.Repeat("x", 100)))},
	{name: "connect v5 bom client id", pkt: connect5(0x02, plist(), s(bom))},
	{name: "connect v5 password without user name", pkt: connect5(0x42, plist(), s("c"), s("pw"))},
	{name: "connect v5 empty password", pkt: connect5(0x42, plist(), s("c"), s(""))},
	{name: "connect v5 binary password", pkt: connect5(0x42, plist(), s("c"), s("\x00\xff\xfe"))},
	{name: "connect v3.1.1 password without user name", pkt: connect4(0x42, s("c"), s("pw")), want: 0x81},
	{name: "connect v3.1 password without user name", pkt: connect3(0x42, s("c"), s("pw")), want: 0x81},
	{name: "connect v5 will qos 2 retain", pkt: connect5(0x36, plist(), s("c"), plist(), s("w/t"), s("payload"))},
	{name: "connect v5 will empty payload", pkt: connect5(0x06, plist(), s("c"), plist(), s("w/t"), s(""))},
	{name: "connect protocol name MQTT level 3", pkt: pk(0x10, s("MQTT"), b(3, 2), u16(0), s("c")), want: 0x84},
	{name: "connect protocol name MQIsdp level 4", pkt: pk(0x10, s("MQIsdp"), b(4, 2), u16(0), s("c")), want: 0x84},
	{name: "connect protocol level 6", pkt: pk(0x10, s("MQTT"), b(6, 2), u16(0), plist(), s("c")), want: 0x84},
	{name: "connect protocol level 0", pkt: pk(0x10, s("MQTT"), b(0, 2), u16(0), s("c")), want: 0x84},
	{name: "connect protocol name mqtt lower case", pkt: pk(0x10, s("mqtt"), b(4, 2), u16(0), s("c")), want: 0x84},
	{name: "connect protocol name HTTP", pkt: []byte("GET / HTTP/1.1\r\n"), want: 0x81},
	{name: "connect empty body", pkt: b(0x10, 0x00), want: 0x81},
	{name: "connect truncated protocol name", pkt: pk(0x10, u16(4), []byte("MQ")), want: 0x81},
	{name: "connect missing protocol level", pkt: pk(0x10, s("MQTT")), want: 0x81},
	{name: "connect missing connect flags", pkt: pk(0x10, s("MQTT"), b(4)), want: 0x81},
	{name: "connect missing keep alive", pkt: pk(0x10, s("MQTT"), b(4, 2), b(0)), want: 0x81},
	{name: "connect v5 missing properties", pkt: pk(0x10, s("MQTT"), b(5, 2), u16(0)), want: 0x81},
	{name: "connect missing client id", pkt: pk(0x10, s("MQTT"), b(4, 2), u16(0)), want: 0x81},
	{name: "connect truncated client id", pkt: pk(0x10, s("MQTT"), b(4, 2), u16(0), u16(5), []byte("ab")), want: 0x81},
	{name: "connect reserved flag", pkt: connect4(0x03, s("c")), want: 0x81},
	{name: "connect reserved flag v5", pkt: connect5(0x03, plist(), s("c")), want: 0x81},
	{name: "connect will qos without will flag", pkt: connect4(0x0A, s("c")), want: 0x81},
	{name: "connect will retain without will flag", pkt: connect4(0x22, s("c")), want: 0x81},
	{name: "connect will qos 3", pkt: connect4(0x1E, s("c"), s("w"), s("m")), want: 0x81},
	{name: "connect will flag without will fields", pkt: connect4(0x06, s("c")), want: 0x81},
	{name: "connect will without payload", pkt: connect4(0x06, s("c"), s("w")), want: 0x81},
	{name: "connect v5 will without will properties", pkt: connect5(0x06, plist(), s("c")), want: 0x81},
	{name: "connect user name flag without user name", pkt: connect4(0x82, s("c")), want: 0x81},
	{name: "connect password flag without password", pkt: connect4(0xC2, s("c"), s("u")), want: 0x81},
	{name: "connect user name without flag", pkt: connect4(0x02, s("c"), s("u")), want: 0x81},
	{name: "connect trailing byte", pkt: connect4(0x02, s("c"), b(0)), want: 0x81},
	{name: "connect v5 trailing bytes", pkt: connect5(0x42, plist(), s("c"), s("pw"), b(1, 2)), want: 0x81},

	// ---- Class 2: strings in the CONNECT --------------------------------
	{name: "client id invalid utf-8", pkt: connect4(0x02, s(badUTF8)), want: 0x85},
	{name: "client id overlong", pkt: connect5(0x02, plist(), s(overlong)), want: 0x85},
	{name: "client id surrogate", pkt: connect4(0x02, s(surrogate)), want: 0x85},
	{name: "client id U+0000", pkt: connect5(0x02, plist(), s(nul)), want: 0x85},
	{name: "client id control character", pkt: connect4(0x02, s(ctrl)), want: 0x85},
	{name: "client id DEL", pkt: connect4(0x02, s(del)), want: 0x85},
	{name: "client id C1 control", pkt: connect4(0x02, s(c1)), want: 0x85},
	{name: "client id U+FFFF", pkt: connect3(0x02, s(nonchar)), want: 0x85},
	{name: "client id truncated sequence", pkt: connect4(0x02, s(truncatedSeq)), want: 0x85},
	{name: "user name invalid utf-8", pkt: connect4(0x82, s("c"), s(badUTF8)), want: 0x81},
	{name: "user name U+0000", pkt: connect5(0x82, plist(), s("c"), s(nul)), want: 0x81},
	{name: "user name surrogate", pkt: connect4(0x82, s("c"), s(surrogate)), want: 0x81},
	{name: "user name noncharacter", pkt: connect4(0x82, s("c"), s(nonchar2)), want: 0x81},
	{name: "user name astral", pkt: connect4(0x82, s("c"), s(astral))},
	{name: "will topic invalid utf-8", pkt: connect4(0x06, s("c"), s(badUTF8), s("m")), want: 0x90},
	{name: "will topic U+0000", pkt: connect4(0x06, s("c"), s(nul), s("m")), want: 0x90},
	{name: "will topic control character", pkt: connect5(0x06, plist(), s("c"), plist(), s(ctrl), s("m")), want: 0x90},
	{name: "will topic plus", pkt: connect4(0x06, s("c"), s("a/+"), s("m")), want: 0x90},
	{name: "will topic hash", pkt: connect4(0x06, s("c"), s("#"), s("m")), want: 0x90},
	{name: "will topic empty", pkt: connect4(0x06, s("c"), s(""), s("m")), want: 0x90},
	{name: "will topic too long", lim: Limits{MaxTopicLength: 4}, pkt: connect4(0x06, s("c"), s("a/b/c"), s("m")), want: 0x90},
	{name: "will topic too deep", lim: Limits{MaxTopicLevels: 2}, pkt: connect4(0x06, s("c"), s("a/b/c"), s("m")), want: 0x90},
	{name: "will topic at limits", lim: Limits{MaxTopicLength: 5, MaxTopicLevels: 3}, pkt: connect4(0x06, s("c"), s("a/b/c"), s("m"))},

	// ---- Class 4: CONNECT and will properties ---------------------------
	{name: "connect properties all allowed", pkt: connect5(0x02, plist(
		cat(b(propSessionExpiry), u32(60)), cat(b(propReceiveMaximum), u16(10)), cat(b(propMaximumPacketSize), u32(1024)),
		cat(b(propTopicAliasMaximum), u16(0)), b(propRequestResponseInfo, 1), b(propRequestProblemInfo, 0),
		user("a", "b"), user("a", "c"), cat(b(propAuthMethod), s("PLAIN")), cat(b(propAuthData), s("\x00\x01"))), s("c"))},
	{name: "connect receive maximum 0", pkt: connect5(0x02, plist(cat(b(propReceiveMaximum), u16(0))), s("c")), want: 0x82},
	{name: "connect maximum packet size 0", pkt: connect5(0x02, plist(cat(b(propMaximumPacketSize), u32(0))), s("c")), want: 0x82},
	{name: "connect request problem information 2", pkt: connect5(0x02, plist(b(propRequestProblemInfo, 2)), s("c")), want: 0x82},
	{name: "connect request response information 2", pkt: connect5(0x02, plist(b(propRequestResponseInfo, 2)), s("c")), want: 0x82},
	{name: "connect session expiry twice", pkt: connect5(0x02, plist(cat(b(propSessionExpiry), u32(1)), cat(b(propSessionExpiry), u32(2))), s("c")), want: 0x82},
	{name: "connect receive maximum twice", pkt: connect5(0x02, plist(cat(b(propReceiveMaximum), u16(1)), cat(b(propReceiveMaximum), u16(1))), s("c")), want: 0x82},
	{name: "connect authentication method twice", pkt: connect5(0x02, plist(cat(b(propAuthMethod), s("A")), cat(b(propAuthMethod), s("A"))), s("c")), want: 0x82},
	{name: "connect authentication data without method", pkt: connect5(0x02, plist(cat(b(propAuthData), s("x"))), s("c")), want: 0x82},
	{name: "connect topic alias property", pkt: connect5(0x02, plist(cat(b(propTopicAlias), u16(1))), s("c")), want: 0x81},
	{name: "connect payload format property", pkt: connect5(0x02, plist(b(propPayloadFormat, 0)), s("c")), want: 0x81},
	{name: "connect will delay property", pkt: connect5(0x02, plist(cat(b(propWillDelay), u32(1))), s("c")), want: 0x81},
	{name: "connect server keep alive property", pkt: connect5(0x02, plist(cat(b(propServerKeepAlive), u16(1))), s("c")), want: 0x81},
	{name: "connect unknown property 0x00", pkt: connect5(0x02, plist(b(0x00, 0x00)), s("c")), want: 0x81},
	{name: "connect unknown property 0x7f", pkt: connect5(0x02, plist(b(0x7F, 0x00)), s("c")), want: 0x81},
	{name: "connect property id with continuation bit", pkt: connect5(0x02, plist(b(0x91, 0x00, 0, 0, 0, 0)), s("c")), want: 0x81},
	{name: "connect property length not minimal", pkt: connect5(0x02, b(0x80, 0x00), s("c")), want: 0x81},
	{name: "connect property length five bytes", pkt: connect5(0x02, b(0x80, 0x80, 0x80, 0x80, 0x00), s("c")), want: 0x81},
	{name: "connect property length past the end", pkt: connect5(0x02, b(0x10), s("c")), want: 0x81},
	{name: "connect property value past the property length", pkt: connect5(0x02, b(0x02, propReceiveMaximum, 0x00), u16(0x0001), s("c")), want: 0x81},
	{name: "connect property string past the property length", pkt: connect5(0x02, b(0x03, propAuthMethod, 0x00, 0x05), s("c")), want: 0x81},
	{name: "connect user property without value", pkt: connect5(0x02, plist(cat(b(propUser), s("k"))), s("c")), want: 0x81},
	{name: "connect user property name U+0000", pkt: connect5(0x02, plist(user(nul, "v")), s("c")), want: 0x81},
	{name: "connect user property value surrogate", pkt: connect5(0x02, plist(user("k", surrogate)), s("c")), want: 0x81},
	{name: "connect authentication method invalid utf-8", pkt: connect5(0x02, plist(cat(b(propAuthMethod), s(badUTF8))), s("c")), want: 0x81},
	{name: "connect user properties at the limit", lim: Limits{MaxUserProperties: 2},
		pkt: connect5(0x06, plist(user("a", "1")), s("c"), plist(user("b", "2")), s("w"), s("m"))},
	{name: "connect user properties over the limit across will", lim: Limits{MaxUserProperties: 2},
		pkt: connect5(0x06, plist(user("a", "1"), user("a", "2")), s("c"), plist(user("b", "2")), s("w"), s("m")), want: 0x97},
	{name: "connect many user properties unlimited", pkt: connect5(0x02, plist(bytes.Repeat(user("k", "v"), 1000)), s("c"))},
	{name: "will properties all allowed", pkt: connect5(0x06, plist(), s("c"), plist(
		cat(b(propWillDelay), u32(10)), b(propPayloadFormat, 1), cat(b(propMessageExpiry), u32(10)),
		cat(b(propContentType), s("text/plain")), cat(b(propResponseTopic), s("r/t")), cat(b(propCorrelationData), s("\x00")),
		user("k", "v")), s("w"), s("héllo"))},
	{name: "will payload format 1 invalid payload", pkt: connect5(0x06, plist(), s("c"), plist(b(propPayloadFormat, 1)), s("w"), s(badUTF8)), want: 0x99},
	{name: "will payload format 0 binary payload", pkt: connect5(0x06, plist(), s("c"), plist(b(propPayloadFormat, 0)), s("w"), s(badUTF8))},
	{name: "will payload format 2", pkt: connect5(0x06, plist(), s("c"), plist(b(propPayloadFormat, 2)), s("w"), s("m")), want: 0x82},
	{name: "will response topic wildcard", pkt: connect5(0x06, plist(), s("c"), plist(cat(b(propResponseTopic), s("r/#"))), s("w"), s("m")), want: 0x82},
	{name: "will content type twice", pkt: connect5(0x06, plist(), s("c"), plist(cat(b(propContentType), s("a")), cat(b(propContentType), s("a"))), s("w"), s("m")), want: 0x82},
	{name: "will topic alias property", pkt: connect5(0x06, plist(), s("c"), plist(cat(b(propTopicAlias), u16(1))), s("w"), s("m")), want: 0x81},
	{name: "will session expiry property", pkt: connect5(0x06, plist(), s("c"), plist(cat(b(propSessionExpiry), u32(1))), s("w"), s("m")), want: 0x81},
	{name: "will properties truncated", pkt: connect5(0x06, plist(), s("c"), b(0x05, propWillDelay)), want: 0x81},
	{name: "will content type control character", pkt: connect5(0x06, plist(), s("c"), plist(cat(b(propContentType), s(ctrl))), s("w"), s("m")), want: 0x81},

	// ---- PUBLISH -----------------------------------------------------------
	{name: "publish v3.1.1 qos 1", ver: 4, pkt: pk(0x32, s("a/b"), u16(1), []byte("x"))},
	{name: "publish v3.1.1 empty payload", ver: 4, pkt: pk(0x31, s("a/b"))},
	{name: "publish v5 empty payload", ver: 5, pkt: pk(0x30, s("a/b"), plist())},
	{name: "publish qos 1 packet id 0", ver: 4, pkt: pk(0x32, s("a/b"), u16(0), []byte("x")), want: 0x81},
	{name: "publish qos 2 packet id 0 v5", ver: 5, pkt: pk(0x34, s("a/b"), u16(0), plist()), want: 0x81},
	{name: "publish qos 1 missing packet id", ver: 4, pkt: pk(0x32, s("a/b"), b(1)), want: 0x81},
	{name: "publish missing topic", ver: 4, pkt: pk(0x30, b(0)), want: 0x81},
	{name: "publish empty body", ver: 4, pkt: b(0x30, 0x00), want: 0x81},
	{name: "publish truncated topic", ver: 4, pkt: pk(0x30, u16(10), []byte("abc")), want: 0x81},
	{name: "publish v5 missing properties", ver: 5, pkt: pk(0x30, s("a/b")), want: 0x81},
	{name: "publish v5 qos 1 missing properties", ver: 5, pkt: pk(0x32, s("a/b"), u16(7)), want: 0x81},
	{name: "publish v5 property length past the end", ver: 5, pkt: pk(0x30, s("a/b"), b(0x05, propPayloadFormat, 1)), want: 0x81},
	{name: "publish v5 property length not minimal", ver: 5, pkt: pk(0x30, s("a/b"), b(0x80, 0x00)), want: 0x81},
	{name: "publish v5 property value past the property length", ver: 5, pkt: pk(0x30, s("a/b"), b(0x02, propTopicAlias, 0), b(1)), want: 0x81},
	{name: "publish v5 session expiry property", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propSessionExpiry), u32(1)))), want: 0x81},
	{name: "publish v5 reason string property", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propReasonString), s("x")))), want: 0x81},
	{name: "publish v5 topic alias twice", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(1)), cat(b(propTopicAlias), u16(1)))), want: 0x82},
	{name: "publish v5 payload format twice", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propPayloadFormat, 0), b(propPayloadFormat, 0))), want: 0x82},
	{name: "publish v5 correlation data twice", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propCorrelationData), s("1")), cat(b(propCorrelationData), s("1")))), want: 0x82},
	{name: "publish v5 subscription identifier", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propSubscriptionIdentifier, 1))), want: 0x82},
	{name: "publish v5 subscription identifier 0", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propSubscriptionIdentifier, 0))), want: 0x82},
	{name: "publish v5 payload format 2", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propPayloadFormat, 2))), want: 0x82},
	{name: "publish v5 payload format 1 invalid payload", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propPayloadFormat, 1)), []byte(badUTF8)), want: 0x99},
	{name: "publish v5 payload format 1 surrogate payload", ver: 5, pkt: pk(0x32, s("a/b"), u16(9), plist(b(propPayloadFormat, 1)), []byte(surrogate)), want: 0x99},
	{name: "publish v5 payload format 1 text with newlines and U+0000", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propPayloadFormat, 1)), []byte("{\n\t\"a\": \"\x00\"\n}"))},
	{name: "publish v5 payload format 0 binary payload", ver: 5, pkt: pk(0x30, s("a/b"), plist(b(propPayloadFormat, 0)), []byte(badUTF8))},
	{name: "publish v5 response topic wildcard", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propResponseTopic), s("r/+")))), want: 0x82},
	{name: "publish v5 response topic empty", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propResponseTopic), s("")))), want: 0x82},
	{name: "publish v5 response topic invalid utf-8", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propResponseTopic), s(badUTF8)))), want: 0x81},
	{name: "publish v5 content type U+0000", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propContentType), s(nul)))), want: 0x81},
	{name: "publish v5 user property noncharacter", ver: 5, pkt: pk(0x30, s("a/b"), plist(user("k", nonchar3))), want: 0x81},
	{name: "publish v5 user property truncated", ver: 5, pkt: pk(0x30, s("a/b"), plist(cat(b(propUser), s("k"), u16(3), []byte("v")))), want: 0x81},
	{name: "publish v5 user properties over the limit", ver: 5, lim: Limits{MaxUserProperties: 3},
		pkt: pk(0x30, s("a/b"), plist(bytes.Repeat(user("k", "v"), 4))), want: 0x97},
	{name: "publish v5 user properties at the limit", ver: 5, lim: Limits{MaxUserProperties: 3},
		pkt: pk(0x30, s("a/b"), plist(bytes.Repeat(user("k", "v"), 3)))},

	// ---- Class 3: topics ---------------------------------------------------
	{name: "publish empty topic v3.1.1 (CVE-2021-34432)", ver: 4, pkt: pk(0x30, s(""), []byte("x")), want: 0x90},
	{name: "publish empty topic v3.1", ver: 3, pkt: pk(0x32, s(""), u16(1)), want: 0x90},
	{name: "publish empty topic v5 without alias (CVE-2021-34432)", ver: 5, pkt: pk(0x30, s(""), plist(), []byte("x")), want: 0x82},
	{name: "publish topic plus", ver: 4, pkt: pk(0x30, s("a/+/c")), want: 0x90},
	{name: "publish topic hash", ver: 5, pkt: pk(0x30, s("a/#"), plist()), want: 0x90},
	{name: "publish topic plus inside a level", ver: 4, pkt: pk(0x30, s("a+")), want: 0x90},
	{name: "publish topic hash only", ver: 4, pkt: pk(0x30, s("#")), want: 0x90},
	{name: "publish topic invalid utf-8", ver: 4, pkt: pk(0x30, s(badUTF8)), want: 0x90},
	{name: "publish topic overlong", ver: 4, pkt: pk(0x30, s(overlong)), want: 0x90},
	{name: "publish topic surrogate", ver: 5, pkt: pk(0x30, s(surrogate), plist()), want: 0x90},
	{name: "publish topic U+0000", ver: 4, pkt: pk(0x30, s(nul)), want: 0x90},
	{name: "publish topic control character", ver: 4, pkt: pk(0x30, s(ctrl)), want: 0x90},
	{name: "publish topic tab", ver: 4, pkt: pk(0x30, s("a\tb")), want: 0x90},
	{name: "publish topic C1 control", ver: 5, pkt: pk(0x30, s(c1), plist()), want: 0x90},
	{name: "publish topic U+FFFF", ver: 4, pkt: pk(0x30, s(nonchar)), want: 0x90},
	{name: "publish topic U+FDD0", ver: 4, pkt: pk(0x30, s(nonchar2)), want: 0x90},
	{name: "publish topic U+1FFFE", ver: 4, pkt: pk(0x30, s(nonchar3)), want: 0x90},
	{name: "publish topic with star and greater-than", ver: 4, pkt: pk(0x30, s("a/*/>"))},
	{name: "publish topic with spaces", ver: 4, pkt: pk(0x30, s(" a / b "))},
	{name: "publish topic with BOM", ver: 4, pkt: pk(0x30, s(bom))},
	{name: "publish topic astral", ver: 5, pkt: pk(0x30, s(astral), plist())},
	{name: "publish topic $SYS", ver: 4, pkt: pk(0x30, s("$SYS/broker/uptime"))},
	{name: "publish topic only slashes", ver: 4, pkt: pk(0x30, s("///"))},
	{name: "publish topic 65535 bytes", ver: 4, pkt: pk(0x30, s(strings.Repeat("t", 65535)))},
	{name: "publish topic 65535 bytes over the length limit", ver: 4, lim: Limits{MaxTopicLength: 1024},
		pkt: pk(0x30, s(strings.Repeat("t", 65535))), want: 0x90},
	{name: "publish topic 10000 levels", ver: 5, pkt: pk(0x30, s(strings.Repeat("a/", 9999)+"a"), plist())},
	{name: "publish topic 10000 levels over the level limit", ver: 5, lim: Limits{MaxTopicLevels: 64},
		pkt: pk(0x30, s(strings.Repeat("a/", 9999)+"a"), plist()), want: 0x90},
	{name: "publish topic at the level limit", ver: 4, lim: Limits{MaxTopicLevels: 3}, pkt: pk(0x30, s("a/b/c"))},
	{name: "publish topic over the level limit", ver: 4, lim: Limits{MaxTopicLevels: 3}, pkt: pk(0x30, s("a/b/c/")), want: 0x90},
	{name: "publish topic at the length limit", ver: 4, lim: Limits{MaxTopicLength: 3}, pkt: pk(0x30, s("a/b"))},
	{name: "publish topic over the length limit", ver: 4, lim: Limits{MaxTopicLength: 3}, pkt: pk(0x30, s("a/bc")), want: 0x90},

	// ---- Topic aliases -----------------------------------------------------
	{name: "topic alias 0", ver: 5, pkt: pk(0x30, s("a"), plist(cat(b(propTopicAlias), u16(0)))), want: 0x94},
	{name: "topic alias 0 empty topic", ver: 5, pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(0)))), want: 0x94},
	{name: "topic alias above the maximum", ver: 5, lim: Limits{TopicAliasMaximum: 10}, pkt: pk(0x30, s("a"), plist(cat(b(propTopicAlias), u16(11)))), want: 0x94},
	{name: "topic alias at the maximum", ver: 5, lim: Limits{TopicAliasMaximum: 10}, pkt: pk(0x30, s("a"), plist(cat(b(propTopicAlias), u16(10))))},
	{name: "topic alias 65535 by default", ver: 5, pkt: pk(0x30, s("a"), plist(cat(b(propTopicAlias), u16(65535))))},
	{name: "topic alias never set", ver: 5, pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(1)))), want: 0x82},
	{name: "topic alias set then used", ver: 5, pre: [][]byte{pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(7))))},
		pkt: pk(0x32, s(""), u16(1), plist(cat(b(propTopicAlias), u16(7))), []byte("x"))},
	{name: "topic alias 65535 set then used", ver: 5, pre: [][]byte{pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(65535))))},
		pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(65535))))},
	{name: "topic alias set, another used", ver: 5, pre: [][]byte{pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(7))))},
		pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(8)))), want: 0x82},
	{name: "topic alias not set by a refused packet", ver: 5, pre: [][]byte{pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(2))))},
		pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(2))))},
	{name: "topic alias remapped", ver: 5, pre: [][]byte{
		pk(0x30, s("a/b"), plist(cat(b(propTopicAlias), u16(1)))),
		pk(0x30, s("c/d"), plist(cat(b(propTopicAlias), u16(1)))),
	}, pkt: pk(0x30, s(""), plist(cat(b(propTopicAlias), u16(1))))},

	// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ---------------------------------
	{name: "puback v3.1.1", ver: 4, pkt: pk(0x40, u16(1))},
	{name: "puback packet id 0", ver: 4, pkt: pk(0x40, u16(0)), want: 0x81},
	{name: "puback truncated", ver: 4, pkt: pk(0x40, b(1)), want: 0x81},
	{name: "puback empty", ver: 5, pkt: b(0x40, 0x00), want: 0x81},
	{name: "puback v3.1.1 remaining length 3", ver: 4, pkt: pk(0x40, u16(1), b(0)), want: 0x81},
	{name: "pubrel v3.1 remaining length 4", ver: 3, pkt: pk(0x62, u16(1), b(0, 0)), want: 0x81},
	{name: "puback v5 reason code only", ver: 5, pkt: pk(0x40, u16(1), b(0x10))},
	{name: "puback v5 reason code and empty properties", ver: 5, pkt: pk(0x40, u16(1), b(0x80), plist())},
	{name: "puback v5 undefined reason code", ver: 5, pkt: pk(0x40, u16(1), b(0x05)), want: 0x82},
	{name: "puback v5 reason string and user property", ver: 5, pkt: pk(0x40, u16(1), b(0x00), plist(cat(b(propReasonString), s("ok")), user("a", "b")))},
	{name: "puback v5 reason string twice", ver: 5, pkt: pk(0x40, u16(1), b(0x00), plist(cat(b(propReasonString), s("a")), cat(b(propReasonString), s("b")))), want: 0x82},
	{name: "puback v5 payload format property", ver: 5, pkt: pk(0x40, u16(1), b(0x00), plist(b(propPayloadFormat, 0))), want: 0x81},
	{name: "puback v5 reason string invalid", ver: 5, pkt: pk(0x40, u16(1), b(0x00), plist(cat(b(propReasonString), s(surrogate)))), want: 0x81},
	{name: "puback v5 trailing byte", ver: 5, pkt: pk(0x40, u16(1), b(0x00), plist(), b(0)), want: 0x81},
	{name: "puback v5 property length past the end", ver: 5, pkt: pk(0x40, u16(1), b(0x00, 0x04)), want: 0x81},
	{name: "pubrec v5 reason 0x10", ver: 5, pkt: pk(0x50, u16(1), b(0x10))},
	{name: "pubrec v5 reason 0x92", ver: 5, pkt: pk(0x50, u16(1), b(0x92)), want: 0x82},
	{name: "pubrel v5 reason 0x92", ver: 5, pkt: pk(0x62, u16(1), b(0x92))},
	{name: "pubrel v5 reason 0x10", ver: 5, pkt: pk(0x62, u16(1), b(0x10)), want: 0x82},
	{name: "pubcomp v5 reason 0x92 with properties", ver: 5, pkt: pk(0x70, u16(1), b(0x92), plist(user("k", "v")))},
	{name: "pubcomp v5 user properties over the limit", ver: 5, lim: Limits{MaxUserProperties: 1}, pkt: pk(0x70, u16(1), b(0), plist(user("k", "v"), user("k", "v"))), want: 0x97},

	// ---- SUBSCRIBE -----------------------------------------------------------
	{name: "subscribe v5 filter without options (#501)", ver: 5, pkt: b(0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x02, 0x61, 0x62), want: 0x81},
	{name: "subscribe v5 second filter without options (#501)", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(1), s("b")), want: 0x81},
	{name: "subscribe v3.1.1 filter without options", ver: 4, pkt: pk(0x82, u16(1), s("ab")), want: 0x81},
	{name: "subscribe truncated filter", ver: 4, pkt: pk(0x82, u16(1), u16(5), []byte("ab")), want: 0x81},
	{name: "subscribe truncated filter length", ver: 5, pkt: pk(0x82, u16(1), plist(), b(0)), want: 0x81},
	{name: "subscribe packet id 0", ver: 4, pkt: pk(0x82, u16(0), s("a"), b(0)), want: 0x81},
	{name: "subscribe missing packet id", ver: 4, pkt: pk(0x82, b(1)), want: 0x81},
	{name: "subscribe v5 missing properties", ver: 5, pkt: pk(0x82, u16(1)), want: 0x81},
	{name: "subscribe v3.1.1 no filters", ver: 4, pkt: pk(0x82, u16(1)), want: 0x82},
	{name: "subscribe v5 no filters", ver: 5, pkt: pk(0x82, u16(1), plist()), want: 0x82},
	{name: "subscribe v5 all options", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0x2E))},
	{name: "subscribe v5 reserved option bit 6", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0x40)), want: 0x81},
	{name: "subscribe v5 reserved option bit 7", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0x81)), want: 0x81},
	{name: "subscribe v5 qos 3", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0x03)), want: 0x82},
	{name: "subscribe v5 retain handling 3", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0x30)), want: 0x82},
	{name: "subscribe v5 no local on a shared subscription", ver: 5, pkt: pk(0x82, u16(1), plist(), s("$share/g/a"), b(0x04)), want: 0x82},
	{name: "subscribe v5 no local on $SHARE (not shared)", ver: 5, pkt: pk(0x82, u16(1), plist(), s("$SHARE/g/a"), b(0x04))},
	{name: "subscribe v3.1.1 qos 3", ver: 4, pkt: pk(0x82, u16(1), s("a"), b(0x03)), want: 0x81},
	{name: "subscribe v3.1.1 reserved bit 2", ver: 4, pkt: pk(0x82, u16(1), s("a"), b(0x04)), want: 0x81},
	{name: "subscribe v3.1 reserved bit 7", ver: 3, pkt: pk(0x82, u16(1), s("a"), b(0x80)), want: 0x81},
	{name: "subscribe v5 subscription identifier", ver: 5, pkt: pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 0x80, 0x01)), s("a"), b(0))},
	{name: "subscribe v5 subscription identifier 0", ver: 5, pkt: pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 0)), s("a"), b(0)), want: 0x82},
	{name: "subscribe v5 subscription identifier twice", ver: 5, pkt: pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 1), b(propSubscriptionIdentifier, 2)), s("a"), b(0)), want: 0x82},
	{name: "subscribe v5 subscription identifier not minimal", ver: 5, pkt: pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 0x81, 0x00)), s("a"), b(0)), want: 0x81},
	{name: "subscribe v5 subscription identifier five bytes", ver: 5, pkt: pk(0x82, u16(1), plist(b(propSubscriptionIdentifier, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)), s("a"), b(0)), want: 0x81},
	{name: "subscribe v5 subscription identifier past the property length", ver: 5, pkt: pk(0x82, u16(1), b(0x02, propSubscriptionIdentifier, 0x80), b(0x01), s("a"), b(0)), want: 0x81},
	{name: "subscribe v5 topic alias property", ver: 5, pkt: pk(0x82, u16(1), plist(cat(b(propTopicAlias), u16(1))), s("a"), b(0)), want: 0x81},
	{name: "subscribe v5 user properties over the limit", ver: 5, lim: Limits{MaxUserProperties: 1}, pkt: pk(0x82, u16(1), plist(user("a", "b"), user("a", "b")), s("a"), b(0)), want: 0x97},
	{name: "subscribe invalid filters left to the broker", ver: 5, pkt: pk(0x82, u16(1), plist(),
		s("a/#/b"), b(0), s("a+"), b(0), s("a#"), b(0), s("#/a"), b(0), s(""), b(0),
		s("$share/g"), b(0), s("$share//a"), b(0), s("$share/+/a"), b(0), s("$share/g/"), b(0))},
	{name: "subscribe v3.1.1 invalid filters left to the broker", ver: 4, pkt: pk(0x82, u16(1), s("a/#/b"), b(1), s(""), b(2))},
	{name: "subscribe filter invalid utf-8", ver: 4, pkt: pk(0x82, u16(1), s(badUTF8), b(0)), want: 0x81},
	{name: "subscribe filter U+0000", ver: 5, pkt: pk(0x82, u16(1), plist(), s(nul), b(0)), want: 0x81},
	{name: "subscribe filter surrogate", ver: 5, pkt: pk(0x82, u16(1), plist(), s("a"), b(0), s(surrogate), b(0)), want: 0x81},
	{name: "subscribe filter control character", ver: 4, pkt: pk(0x82, u16(1), s(del), b(0)), want: 0x81},
	{name: "subscribe filter U+FFFF", ver: 4, pkt: pk(0x82, u16(1), s(nonchar), b(0)), want: 0x81},
	{name: "subscribe filter star and greater-than", ver: 4, pkt: pk(0x82, u16(1), s("*/>"), b(0))},
	{name: "subscribe filter over the length limit", ver: 5, lim: Limits{MaxTopicLength: 4}, pkt: pk(0x82, u16(1), plist(), s("a/b/c"), b(0)), want: 0x8F},
	{name: "subscribe filter over the level limit", ver: 4, lim: Limits{MaxTopicLevels: 2}, pkt: pk(0x82, u16(1), s("$share/g/a"), b(0)), want: 0x8F},
	{name: "subscribe 1000 filters", ver: 4, pkt: pk(0x82, u16(1), bytes.Repeat(cat(s("a/+/#"), b(1)), 1000))},

	// ---- UNSUBSCRIBE -------------------------------------------------------
	{name: "unsubscribe v3.1.1", ver: 4, pkt: pk(0xA2, u16(1), s("a/b"))},
	{name: "unsubscribe invalid filters left to the broker", ver: 5, pkt: pk(0xA2, u16(1), plist(), s("a/#/b"), s(""), s("$share/g"))},
	{name: "unsubscribe no filters", ver: 4, pkt: pk(0xA2, u16(1)), want: 0x82},
	{name: "unsubscribe v5 no filters", ver: 5, pkt: pk(0xA2, u16(1), plist()), want: 0x82},
	{name: "unsubscribe packet id 0", ver: 4, pkt: pk(0xA2, u16(0), s("a")), want: 0x81},
	{name: "unsubscribe missing packet id", ver: 4, pkt: b(0xA2, 0x00), want: 0x81},
	{name: "unsubscribe truncated filter", ver: 5, pkt: pk(0xA2, u16(1), plist(), u16(3), []byte("a")), want: 0x81},
	{name: "unsubscribe trailing byte", ver: 4, pkt: pk(0xA2, u16(1), s("a"), b(0)), want: 0x81},
	{name: "unsubscribe filter invalid utf-8", ver: 4, pkt: pk(0xA2, u16(1), s(badUTF8)), want: 0x81},
	{name: "unsubscribe filter U+0000", ver: 5, pkt: pk(0xA2, u16(1), plist(), s(nul)), want: 0x81},
	{name: "unsubscribe v5 subscription identifier property", ver: 5, pkt: pk(0xA2, u16(1), plist(b(propSubscriptionIdentifier, 1)), s("a")), want: 0x81},
	{name: "unsubscribe v5 missing properties", ver: 5, pkt: pk(0xA2, u16(1)), want: 0x81},
	{name: "unsubscribe filter over the length limit", ver: 4, lim: Limits{MaxTopicLength: 2}, pkt: pk(0xA2, u16(1), s("abc")), want: 0x8F},

	// ---- PINGREQ, DISCONNECT, AUTH -----------------------------------------
	{name: "pingreq", ver: 5, pkt: b(0xC0, 0x00)},
	{name: "pingreq with a body", ver: 4, pkt: b(0xC0, 0x01, 0x00), want: 0x81},
	{name: "disconnect v3.1.1", ver: 4, pkt: b(0xE0, 0x00)},
	{name: "disconnect v3.1.1 with a body", ver: 4, pkt: b(0xE0, 0x01, 0x00), want: 0x81},
	{name: "disconnect v5 no body", ver: 5, pkt: b(0xE0, 0x00)},
	{name: "disconnect v5 reason code only", ver: 5, pkt: b(0xE0, 0x01, 0x04)},
	{name: "disconnect v5 undefined reason code", ver: 5, pkt: b(0xE0, 0x01, 0x05), want: 0x82},
	{name: "disconnect v5 empty properties", ver: 5, pkt: b(0xE0, 0x02, 0x00, 0x00)},
	{name: "disconnect v5 properties", ver: 5, pkt: pk(0xE0, b(0x80), plist(cat(b(propReasonString), s("bye")), user("a", "b"), cat(b(propServerReference), s("other:1883"))))},
	{name: "disconnect v5 session expiry 0 after 0", ver: 5, pkt: pk(0xE0, b(0), plist(cat(b(propSessionExpiry), u32(0))))},
	{name: "disconnect v5 session expiry after 0", ver: 5, pkt: pk(0xE0, b(0), plist(cat(b(propSessionExpiry), u32(60)))), want: 0x82},
	{name: "disconnect v5 session expiry after non-zero", ver: 5, conn: connect5(0x02, plist(cat(b(propSessionExpiry), u32(10))), s("c")),
		pkt: pk(0xE0, b(0), plist(cat(b(propSessionExpiry), u32(60))))},
	{name: "disconnect v5 session expiry twice", ver: 5, conn: connect5(0x02, plist(cat(b(propSessionExpiry), u32(10))), s("c")),
		pkt: pk(0xE0, b(0), plist(cat(b(propSessionExpiry), u32(60)), cat(b(propSessionExpiry), u32(60)))), want: 0x82},
	{name: "disconnect v5 will delay property", ver: 5, pkt: pk(0xE0, b(0), plist(cat(b(propWillDelay), u32(1)))), want: 0x81},
	{name: "disconnect v5 server reference U+0000", ver: 5, pkt: pk(0xE0, b(0), plist(cat(b(propServerReference), s(nul)))), want: 0x81},
	{name: "disconnect v5 trailing byte", ver: 5, pkt: pk(0xE0, b(0), plist(), b(0)), want: 0x81},
	{name: "disconnect v5 property length past the end", ver: 5, pkt: b(0xE0, 0x02, 0x00, 0x03), want: 0x81},
	{name: "auth continue", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM")), cat(b(propAuthData), s("x"))))},
	{name: "auth re-authenticate", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x19), plist(cat(b(propAuthMethod), s("SCRAM")), cat(b(propReasonString), s("again")), user("k", "v")))},
	{name: "auth without method in connect", ver: 5, pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM")))), want: 0x82},
	{name: "auth different method", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("PLAIN")))), want: 0x82},
	{name: "auth missing method", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthData), s("x")))), want: 0x82},
	{name: "auth remaining length 0", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: b(0xF0, 0x00), want: 0x82},
	{name: "auth remaining length 1", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: b(0xF0, 0x01, 0x18), want: 0x82},
	{name: "auth undefined reason code", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x01), plist(cat(b(propAuthMethod), s("SCRAM")))), want: 0x82},
	{name: "auth method twice", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM")), cat(b(propAuthMethod), s("SCRAM")))), want: 0x82},
	{name: "auth flags", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF2, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM")))), want: 0x81},
	{name: "auth trailing byte", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM"))), b(0)), want: 0x81},
	{name: "auth session expiry property", ver: 5, conn: connect5(0x02, plist(cat(b(propAuthMethod), s("SCRAM"))), s("c")),
		pkt: pk(0xF0, b(0x18), plist(cat(b(propAuthMethod), s("SCRAM")), cat(b(propSessionExpiry), u32(1)))), want: 0x81},
}

func TestCheck(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) { runCase(t, tc) })
	}
}

// runCase checks tc.pkt after the setup packets and, if it is accepted,
// decodes it with mochi the way mochi's read loop would.
func runCase(t *testing.T, tc checkCase) {
	t.Helper()
	c := NewChecker(tc.lim)
	setup := tc.pre
	if tc.ver != 0 {
		conn := tc.conn
		if conn == nil {
			conn = minimalConnect(tc.ver)
		}
		setup = append([][]byte{conn}, setup...)
	}
	for i, p := range setup {
		if err := c.Check(p); err != nil {
			t.Fatalf("setup packet %d refused: %v", i, err)
		}
		if _, err := mochiDecode(c.Version(), p); err != nil && i > 0 {
			t.Fatalf("setup packet %d: mochi: %v", i, err)
		}
	}
	ver := c.Version()
	in := append([]byte{}, tc.pkt...)
	err := c.Check(tc.pkt)
	if !bytes.Equal(in, tc.pkt) {
		t.Fatal("Check modified its input")
	}
	if tc.want == 0 {
		if err != nil {
			t.Fatalf("refused, want accepted: %v", err)
		}
		p, err := mochiDecode(ver, tc.pkt)
		if err != nil {
			t.Fatalf("accepted, but mochi cannot decode it: %v", err)
		}
		alias := tc.lim.TopicAliasMaximum
		if alias == 0 {
			alias = 65535
		}
		if err := mochiValidate(p, alias); err != nil {
			t.Fatal(err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an *Error with code 0x%02x", err, tc.want)
	}
	if e.Code != tc.want {
		t.Fatalf("got code 0x%02x (%v), want 0x%02x", e.Code, err, tc.want)
	}
	if e.Reason == "" || !strings.HasPrefix(e.Error(), "frame: ") {
		t.Fatalf("poor error text %q", e.Error())
	}
	t.Log(err)
}

func TestCheckerStateAfterRefusal(t *testing.T) {
	c := NewChecker(Limits{})
	if err := c.Check(connect5(0x03, plist(), s("c"))); err == nil {
		t.Fatal("reserved flag accepted")
	}
	if c.Version() != 0 {
		t.Fatalf("version %d after a refused CONNECT", c.Version())
	}
	if err := c.Check(minimalConnect(4)); err != nil {
		t.Fatalf("CONNECT after a refused CONNECT: %v", err)
	}
	if c.Version() != 4 {
		t.Fatalf("version %d, want 4", c.Version())
	}
}

func TestErrorText(t *testing.T) {
	c := NewChecker(Limits{})
	if err := c.Check(minimalConnect(5)); err != nil {
		t.Fatal(err)
	}
	err := c.Check(b(0x82, 0x0A, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 'b'))
	const want = "frame: subscribe: filter 2: missing subscription options (0x81 malformed packet)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if got := (&Error{Code: 0x82, Reason: "x"}).Error(); got != "frame: x (0x82 protocol error)" {
		t.Fatalf("got %q", got)
	}
}
