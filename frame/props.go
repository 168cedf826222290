package frame

import "unicode/utf8"

// MQTT 5 property identifiers (MQTT 5.0 §2.2.2.2, Table 2-4).
const (
	propPayloadFormat          = 0x01
	propMessageExpiry          = 0x02
	propContentType            = 0x03
	propResponseTopic          = 0x08
	propCorrelationData        = 0x09
	propSubscriptionIdentifier = 0x0B
	propSessionExpiry          = 0x11
	propAssignedClientID       = 0x12
	propServerKeepAlive        = 0x13
	propAuthMethod             = 0x15
	propAuthData               = 0x16
	propRequestProblemInfo     = 0x17
	propWillDelay              = 0x18
	propRequestResponseInfo    = 0x19
	propResponseInfo           = 0x1A
	propServerReference        = 0x1C
	propReasonString           = 0x1F
	propReceiveMaximum         = 0x21
	propTopicAliasMaximum      = 0x22
	propTopicAlias             = 0x23
	propMaximumQoS             = 0x24
	propRetainAvailable        = 0x25
	propUser                   = 0x26
	propMaximumPacketSize      = 0x27
	propWildcardSubAvailable   = 0x28
	propSubIDAvailable         = 0x29
	propSharedSubAvailable     = 0x2A
)

func bit(id byte) uint64 { return 1 << id }

// Which properties a client may put in each packet (Table 2-4, client-sent
// packets only). Server-only properties (Assigned Client Identifier, Server
// Keep Alive, Response Information, Maximum QoS, ... ) are absent from every
// set, so a client sending one is refused as Malformed (§2.2.2.2).
const (
	propsConnect = 1<<propSessionExpiry | 1<<propReceiveMaximum | 1<<propMaximumPacketSize |
		1<<propTopicAliasMaximum | 1<<propRequestResponseInfo | 1<<propRequestProblemInfo |
		1<<propUser | 1<<propAuthMethod | 1<<propAuthData
	propsWill = 1<<propWillDelay | 1<<propPayloadFormat | 1<<propMessageExpiry |
		1<<propContentType | 1<<propResponseTopic | 1<<propCorrelationData | 1<<propUser
	// Subscription Identifier is allowed in PUBLISH by the table, but a client
	// must not send one [MQTT-3.3.4-6]; checkPublish refuses it as a Protocol
	// Error rather than as an unknown property.
	propsPublish = 1<<propPayloadFormat | 1<<propMessageExpiry | 1<<propTopicAlias |
		1<<propResponseTopic | 1<<propCorrelationData | 1<<propUser |
		1<<propSubscriptionIdentifier | 1<<propContentType
	propsAck         = 1<<propReasonString | 1<<propUser
	propsSubscribe   = 1<<propSubscriptionIdentifier | 1<<propUser
	propsUnsubscribe = 1 << propUser
	propsDisconnect  = 1<<propSessionExpiry | 1<<propReasonString | 1<<propUser | 1<<propServerReference
	propsAuth        = 1<<propAuthMethod | 1<<propAuthData | 1<<propReasonString | 1<<propUser
)

// props collects what the packet checks need from a property list. Strings
// are sub-slices of the packet, never copies.
type props struct {
	seen          uint64 // bit(id) for every property present
	users         int    // User Property count
	payloadFormat byte
	topicAlias    uint16
	sessionExpiry uint32
	authMethod    []byte
}

func (p *props) has(id byte) bool { return p.seen&bit(id) != 0 }

// propFault is a refusal found while reading properties; code 0 means none.
// It is a value, not an *Error, so the accepted path does not allocate.
type propFault struct {
	code   byte
	reason string
	id     byte
	hasID  bool // the fault is about property id, not the Property Length
}

// readProps reads a Property Length and the properties it covers from r,
// allowing only the identifiers in allowed. what names the property list in
// refusal reasons ("properties", "will properties").
//
//   - The Property Length is a minimal Variable Byte Integer of at most four
//     bytes [MQTT-1.5.5-1] and must fit in the packet; every property must fit
//     inside the Property Length exactly: Malformed.
//   - An identifier not valid for the packet type is Malformed (§2.2.2.2).
//   - Every property except User Property may appear at most once; a
//     repetition is a Protocol Error (each property's "It is a Protocol Error
//     to include ... more than once"). Subscription Identifier may repeat only
//     in server-sent PUBLISH packets, which a client never sends.
//   - UTF-8 strings follow checkString: Malformed.
//   - Values: Receive Maximum 0, Maximum Packet Size 0 (§3.1.2.11.3,
//     §3.1.2.11.4), Request Problem / Response Information not 0 or 1
//     (§3.1.2.11.6, §3.1.2.11.7), Payload Format Indicator not 0 or 1
//     (§3.3.2.3.2), Subscription Identifier 0 (§3.8.2.1.2), a Response Topic
//     that is not a valid topic name [MQTT-3.3.2-14]: Protocol Error.
//     Topic Alias 0 is left to checkPublish (0x94).
func (c *Checker) readProps(r *reader, allowed uint64, p *props) propFault {
	n, size, st := readVBI(r.b[r.off:])
	switch st {
	case vbiShort:
		return propFault{code: CodeMalformedPacket, reason: "property length is missing or truncated"}
	case vbiTooLong, vbiNonMinimal:
		return propFault{code: CodeMalformedPacket, reason: "property length is not a minimal variable byte integer"}
	}
	r.off += size
	if int(n) > r.left() {
		return propFault{code: CodeMalformedPacket, reason: "property length runs past the end of the packet"}
	}
	pr := reader{b: r.b[:r.off+int(n)], off: r.off}
	r.off += int(n)
	for pr.left() > 0 {
		id, _ := pr.byte()
		// Identifiers are Variable Byte Integers, but every one defined in MQTT 5
		// is below 0x80, so a byte with the continuation bit is an unknown
		// identifier too.
		if id >= 64 || allowed&bit(id) == 0 {
			return propFault{code: CodeMalformedPacket, reason: "property not allowed in this packet", id: id, hasID: true}
		}
		if id != propUser && p.seen&bit(id) != 0 {
			return propFault{code: CodeProtocolError, reason: "property included more than once", id: id, hasID: true}
		}
		p.seen |= bit(id)
		var ok bool
		switch id {
		case propPayloadFormat, propRequestProblemInfo, propRequestResponseInfo:
			var v byte
			if v, ok = pr.byte(); ok && v > 1 {
				return propFault{code: CodeProtocolError, reason: "property value must be 0 or 1", id: id, hasID: true}
			}
			if id == propPayloadFormat {
				p.payloadFormat = v
			}
		case propReceiveMaximum, propTopicAlias, propTopicAliasMaximum:
			var v uint16
			if v, ok = pr.uint16(); ok && v == 0 && id == propReceiveMaximum {
				return propFault{code: CodeProtocolError, reason: "receive maximum is 0", id: id, hasID: true}
			}
			if id == propTopicAlias {
				p.topicAlias = v
			}
		case propMessageExpiry, propSessionExpiry, propWillDelay, propMaximumPacketSize:
			var v uint32
			if v, ok = pr.uint32(); ok && v == 0 && id == propMaximumPacketSize {
				return propFault{code: CodeProtocolError, reason: "maximum packet size is 0", id: id, hasID: true}
			}
			if id == propSessionExpiry {
				p.sessionExpiry = v
			}
		case propSubscriptionIdentifier:
			v, size, st := readVBI(pr.b[pr.off:])
			switch st {
			case vbiShort:
				ok = false
			case vbiTooLong, vbiNonMinimal:
				return propFault{code: CodeMalformedPacket, reason: "subscription identifier is not a minimal variable byte integer", id: id, hasID: true}
			default:
				ok = true
				pr.off += size
				if v == 0 {
					return propFault{code: CodeProtocolError, reason: "subscription identifier is 0", id: id, hasID: true}
				}
			}
		case propCorrelationData, propAuthData:
			_, ok = pr.field()
		case propContentType, propResponseTopic, propAuthMethod, propServerReference, propReasonString:
			var s []byte
			if s, ok = pr.field(); ok {
				if f := checkString(s); f != stringOK {
					return propFault{code: CodeMalformedPacket, reason: "string property " + f.String(), id: id, hasID: true}
				}
				if id == propResponseTopic && !validTopicBytes(s) {
					return propFault{code: CodeProtocolError, reason: "response topic is not a valid topic name", id: id, hasID: true} // [MQTT-3.3.2-14]
				}
				if id == propAuthMethod {
					p.authMethod = s
				}
			}
		case propUser:
			var k, v []byte
			if k, ok = pr.field(); ok {
				v, ok = pr.field()
			}
			if ok {
				if f := checkString(k); f != stringOK {
					return propFault{code: CodeMalformedPacket, reason: "user property name " + f.String(), id: id, hasID: true}
				}
				if f := checkString(v); f != stringOK {
					return propFault{code: CodeMalformedPacket, reason: "user property value " + f.String(), id: id, hasID: true}
				}
				p.users++
				// CVE-2021-41039: unbounded user properties cost the broker
				// CPU and memory; the cap is administrative, hence 0x97.
				if c.lim.MaxUserProperties > 0 && p.users > c.lim.MaxUserProperties {
					return propFault{code: CodeQuotaExceeded, reason: "too many user properties", id: id, hasID: true}
				}
			}
		}
		if !ok {
			return propFault{code: CodeMalformedPacket, reason: "property value runs past the property length", id: id, hasID: true}
		}
	}
	return propFault{}
}

// validTopicBytes is ValidTopic for bytes already known to pass checkString.
func validTopicBytes(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c == '+' || c == '#' {
			return false
		}
	}
	return true
}

// validPayloadUTF8 is the Payload Format Indicator 1 rule (§3.3.2.3.2): the
// payload must be well-formed UTF-8 per RFC 3629. Unlike checkString it
// allows U+0000 and control characters: a JSON payload with newlines is
// character data.
func validPayloadUTF8(b []byte) bool { return utf8.Valid(b) }
