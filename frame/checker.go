package frame

import (
	"bytes"
	"errors"
)

// Limits configures a Checker. Zero values mean the specification's maximum
// (or no limit where the specification has none); negative values are
// treated as zero.
type Limits struct {
	// MaxPacketSize is the largest whole packet (fixed header included)
	// accepted; 0 means 268,435,460. A larger packet is 0x95.
	MaxPacketSize uint32
	// TopicAliasMaximum is the Topic Alias Maximum the server announces in
	// CONNACK; a topic alias above it is 0x94. 0 means 65,535, the most a
	// Two Byte Integer can hold; pass mochi's Capabilities.TopicAliasMaximum.
	TopicAliasMaximum uint16
	// MaxUserProperties caps the User Properties in one packet (CONNECT and
	// its Will Properties count together), against CVE-2021-41039. More is
	// 0x97. 0 means unlimited.
	MaxUserProperties int
	// MaxTopicLength caps the bytes in a topic name or topic filter; 0 means
	// 65,535. A longer PUBLISH topic or Will Topic is 0x90, a longer filter
	// in SUBSCRIBE or UNSUBSCRIBE is 0x8F.
	MaxTopicLength int
	// MaxTopicLevels caps the levels ('/'-separated parts) in a topic name
	// or topic filter, with the same codes as MaxTopicLength; 0 means
	// unlimited. "$share/{group}/" counts as two levels of a filter.
	MaxTopicLevels int
}

// claimUnknownLevel marks a refused CONNECT that named MQTT or MQIsdp with a
// protocol level this package does not know; Reply answers it the 3.1.1 way.
const claimUnknownLevel = 0xFF

// Checker validates one connection's client-to-server packets, in order.
// It remembers what the specification makes later packets depend on: the
// protocol version, the topic aliases set, and the CONNECT's Authentication
// Method and Session Expiry Interval. The zero Checker is not usable; call
// NewChecker. A Checker is not safe for concurrent use.
//
// Once Check has refused a packet the connection must be closed; a later
// Check behaves as if the refused packet had not arrived.
type Checker struct {
	lim Limits

	version       byte   // 3, 4 or 5 once a CONNECT was accepted
	authMethod    string // CONNECT's Authentication Method (v5), copied
	hasAuth       bool
	sessionExpiry bool     // CONNECT's Session Expiry Interval was non-zero
	aliases       []uint64 // bitmap of topic aliases set by the client, lazily allocated

	// claim is the protocol level of the last packet refused before a CONNECT
	// was accepted: 3, 4 or 5 when that packet was a CONNECT naming a known
	// protocol, claimUnknownLevel for a known name with an unknown level, 0
	// otherwise. Reply uses it to pick the CONNACK format.
	claim byte
}

// NewChecker returns a Checker for a new connection.
func NewChecker(l Limits) *Checker {
	if l.MaxPacketSize == 0 || l.MaxPacketSize > maxPacket {
		l.MaxPacketSize = maxPacket
	}
	if l.TopicAliasMaximum == 0 {
		l.TopicAliasMaximum = 65535
	}
	if l.MaxUserProperties < 0 {
		l.MaxUserProperties = 0
	}
	if l.MaxTopicLength <= 0 || l.MaxTopicLength > 65535 {
		l.MaxTopicLength = 65535
	}
	if l.MaxTopicLevels < 0 {
		l.MaxTopicLevels = 0
	}
	return &Checker{lim: l}
}

// Version returns the protocol level of the accepted CONNECT: 3 (MQTT 3.1),
// 4 (3.1.1) or 5, or 0 while no CONNECT has been accepted. mochi's
// Client.ReadPacket needs it as the packet's ProtocolVersion.
func (c *Checker) Version() byte { return c.version }

// Check validates pkt, which must be exactly one whole packet (as measured by
// Header), and returns nil to accept it or an *Error to refuse it. Accepting
// a CONNECT or a PUBLISH that sets a topic alias updates the Checker.
func (c *Checker) Check(pkt []byte) error {
	c.claim = 0
	total, complete, err := Header(pkt, c.lim.MaxPacketSize)
	if err != nil {
		return err
	}
	if !complete {
		return refuse(CodeMalformedPacket, firstType(pkt), "packet ends inside the fixed header")
	}
	if total != len(pkt) {
		return refuse(CodeMalformedPacket, firstType(pkt), "packet is %d bytes but its fixed header announces %d", len(pkt), total)
	}
	typ, flags := pkt[0]>>4, pkt[0]&0x0F
	_, n, _ := readVBI(pkt[1:])
	body := pkt[1+n:]

	if c.version == 0 && typ != typeConnect {
		return refuse(CodeProtocolError, typ, "first packet must be CONNECT") // [MQTT-3.1.0-1]
	}
	// Fixed header flags follow Table 2-2 for every protocol level. MQTT 3.1
	// let clients set DUP on a retransmitted PUBREL, SUBSCRIBE or UNSUBSCRIBE
	// (0x6A, 0x8A, 0xAA), but mochi's FixedHeader.Decode refuses those for
	// every version, so they are refused here too rather than handed on.
	switch typ {
	case typeConnect:
		if c.version != 0 {
			return refuse(CodeProtocolError, typ, "second CONNECT on the connection") // [MQTT-3.1.0-2]
		}
		return c.checkConnect(flags, body)
	case typePublish:
		return c.checkPublish(flags, body)
	case typePuback, typePubrec, typePubcomp:
		if flags != 0 {
			return badFlags(typ, flags)
		}
		return c.checkAck(typ, body)
	case typePubrel:
		if flags != 0x2 {
			return badFlags(typ, flags) // [MQTT-3.6.1-1]
		}
		return c.checkAck(typ, body)
	case typeSubscribe:
		if flags != 0x2 {
			return badFlags(typ, flags) // [MQTT-3.8.1-1]
		}
		return c.checkSubscribe(body)
	case typeUnsubscribe:
		if flags != 0x2 {
			return badFlags(typ, flags) // [MQTT-3.10.1-1]
		}
		return c.checkUnsubscribe(body)
	case typePingreq:
		if flags != 0 {
			return badFlags(typ, flags)
		}
		if len(body) != 0 {
			return refuse(CodeMalformedPacket, typ, "remaining length is %d, want 0", len(body)) // §3.12
		}
		return nil
	case typeDisconnect:
		if flags != 0 {
			return badFlags(typ, flags) // [MQTT-3.14.1-1]
		}
		return c.checkDisconnect(body)
	case typeAuth:
		if c.version != 5 {
			return refuse(CodeMalformedPacket, 0, "packet type 15 is reserved before MQTT 5")
		}
		if flags != 0 {
			return badFlags(typ, flags) // [MQTT-3.15.1-1]
		}
		return c.checkAuth(body)
	case typeConnack, typeSuback, typeUnsuback, typePingresp:
		return refuse(CodeProtocolError, typ, "packet type is sent only by a server")
	}
	return refuse(CodeMalformedPacket, 0, "packet type 0 is reserved") // Table 2-1 "Forbidden"
}

func firstType(pkt []byte) byte {
	if len(pkt) == 0 {
		return 0
	}
	return pkt[0] >> 4
}

// badFlags refuses reserved fixed-header flag bits that do not have the value
// Table 2-2 lists: Malformed [MQTT-2.1.3-1].
func badFlags(typ, flags byte) error {
	return refuse(CodeMalformedPacket, typ, "reserved fixed header flags are 0x%x", flags)
}

// err turns a propFault into the *Error returned by Check.
func (f propFault) err(typ byte, what string) error {
	if f.hasID {
		return refuse(f.code, typ, "%s: property 0x%02x: %s", what, f.id, f.reason)
	}
	return refuse(f.code, typ, "%s: %s", what, f.reason)
}

// Reply returns the bytes to send before closing the connection for a packet
// Check refused with err, or nil to close without a word. err must be an
// *Error (any other error, nil included, gives nil). The reply depends on the
// connection's state:
//
//   - No CONNECT accepted yet, and err refused a CONNECT of protocol level 5:
//     a v5 CONNACK with err's reason code and no properties [MQTT-3.2.2-7]
//     (20 03 00 rc 00).
//   - ... a CONNECT of level 3 or 4: a 3.1.1 CONNACK with return code 0x01
//     (unacceptable protocol version) for 0x84 or 0x02 (identifier rejected)
//     for 0x85 (20 02 00 rc); nothing for other reasons, which 3.1.1 answers by
//     closing the connection.
//   - ... a CONNECT naming MQTT or MQIsdp with an unknown protocol level: the
//     3.1.1 CONNACK 0x01 [MQTT-3.1.2-2], which every client version can read.
//   - ... anything else (an unknown protocol name, a first packet that is not
//     CONNECT, a header error before the CONNECT body): nothing.
//   - After a v5 CONNECT was accepted: DISCONNECT with err's reason code and no
//     properties (e0 02 rc 00), per §4.13.
//   - After a 3.1 or 3.1.1 CONNECT: nothing.
func (c *Checker) Reply(err error) []byte {
	var e *Error
	if !errors.As(err, &e) || e == nil {
		return nil
	}
	switch c.version {
	case 5:
		return []byte{typeDisconnect << 4, 2, e.Code, 0}
	case 3, 4:
		return nil
	}
	switch c.claim {
	case 5:
		return []byte{typeConnack << 4, 3, 0, e.Code, 0}
	case 3, 4:
		switch e.Code {
		case CodeUnsupportedProtocolVersion:
			return []byte{typeConnack << 4, 2, 0, 0x01}
		case CodeClientIdentifierNotValid:
			return []byte{typeConnack << 4, 2, 0, 0x02}
		}
	case claimUnknownLevel:
		if e.Code == CodeUnsupportedProtocolVersion {
			return []byte{typeConnack << 4, 2, 0, 0x01}
		}
	}
	return nil
}

var slash = []byte{'/'}

// topicLimits reports whether b, a topic name or filter, is within
// MaxTopicLength and MaxTopicLevels.
func (c *Checker) topicLimits(b []byte) (string, bool) {
	if len(b) > c.lim.MaxTopicLength {
		return "longer than the topic length limit", false
	}
	if c.lim.MaxTopicLevels > 0 && bytes.Count(b, slash)+1 > c.lim.MaxTopicLevels {
		return "deeper than the topic level limit", false
	}
	return "", true
}
