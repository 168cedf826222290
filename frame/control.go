package frame

// reasonSet is a set of reason code values.
type reasonSet [4]uint64

func newReasonSet(codes ...byte) reasonSet {
	var s reasonSet
	for _, c := range codes {
		s[c/64] |= 1 << (c % 64)
	}
	return s
}

func (s *reasonSet) has(c byte) bool { return s[c/64]&(1<<(c%64)) != 0 }

// The reason codes each packet may carry (MQTT 5.0 Tables 3-4 … 3-11).
var (
	reasonsPubackPubrec  = newReasonSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
	reasonsPubrelPubcomp = newReasonSet(0x00, 0x92)
	reasonsDisconnect    = newReasonSet(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B,
		0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
		0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	reasonsAuth = newReasonSet(0x00, 0x18, 0x19)
)

// checkAck validates PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 §3.4–3.7).
// 3.1 and 3.1.1 fix the Remaining Length at 2. In MQTT 5 a Remaining Length
// of 2 means reason code 0x00 and no properties, 3 means a reason code and no
// properties, and 4 or more a reason code and a property list that must end
// exactly at the end of the packet.
func (c *Checker) checkAck(typ byte, body []byte) error {
	r := reader{b: body}
	id, ok := r.uint16()
	if !ok {
		return refuse(CodeMalformedPacket, typ, "packet identifier is missing or truncated")
	}
	if id == 0 {
		// No PUBLISH carries packet identifier 0 [MQTT-2.2.1-3], so nothing
		// can acknowledge it.
		return refuse(CodeMalformedPacket, typ, "packet identifier is 0")
	}
	if c.version < 5 {
		if r.left() != 0 {
			return refuse(CodeMalformedPacket, typ, "remaining length is %d, want 2", len(body))
		}
		return nil
	}
	if r.left() == 0 {
		return nil
	}
	rc, _ := r.byte()
	set := &reasonsPubackPubrec
	if typ == typePubrel || typ == typePubcomp {
		set = &reasonsPubrelPubcomp
	}
	if !set.has(rc) {
		// [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1]
		return refuse(CodeProtocolError, typ, "reason code 0x%02x is not defined for this packet", rc)
	}
	if r.left() == 0 {
		return nil
	}
	var p props
	if f := c.readProps(&r, propsAck, &p); f.code != 0 {
		return f.err(typ, "properties")
	}
	if r.left() != 0 {
		return refuse(CodeMalformedPacket, typ, "%d bytes after the properties", r.left())
	}
	return nil
}

// checkSubscribe validates a SUBSCRIBE (MQTT 5.0 §3.8; 3.1.1 §3.8). It
// refuses what makes the packet malformed or a protocol error, never a filter
// that is merely invalid as a filter: the broker answers those per filter with
// SUBACK 0x8F.
func (c *Checker) checkSubscribe(body []byte) error {
	const t = typeSubscribe
	r := reader{b: body}
	id, ok := r.uint16()
	if !ok {
		return refuse(CodeMalformedPacket, t, "packet identifier is missing or truncated")
	}
	if id == 0 {
		return refuse(CodeMalformedPacket, t, "packet identifier is 0") // [MQTT-2.2.1-3]
	}
	if c.version == 5 {
		var p props
		if f := c.readProps(&r, propsSubscribe, &p); f.code != 0 {
			return f.err(t, "properties")
		}
	}
	n := 0
	for r.left() > 0 {
		n++
		filter, ok := r.field()
		if !ok {
			return refuse(CodeMalformedPacket, t, "filter %d: truncated", n)
		}
		opts, ok := r.byte()
		if !ok {
			// mochi v2.7.9 panics here for v5 (issue #501).
			return refuse(CodeMalformedPacket, t, "filter %d: missing subscription options", n)
		}
		if f := checkString(filter); f != stringOK {
			return refuse(CodeMalformedPacket, t, "filter %d: %s", n, f) // [MQTT-3.8.3-1]
		}
		if c.version == 5 {
			switch {
			case opts&0xC0 != 0:
				return refuse(CodeMalformedPacket, t, "filter %d: reserved subscription option bits set", n) // [MQTT-3.8.3-5]
			case opts&0x03 == 3:
				return refuse(CodeProtocolError, t, "filter %d: maximum QoS 3", n) // §3.8.3.1
			case opts>>4&0x03 == 3:
				return refuse(CodeProtocolError, t, "filter %d: retain handling 3", n) // §3.8.3.1
			case opts&0x04 != 0 && len(filter) >= len(sharePrefix) && string(filter[:len(sharePrefix)]) == sharePrefix:
				return refuse(CodeProtocolError, t, "filter %d: no local on a shared subscription", n) // [MQTT-3.8.3-4]
			}
		} else if opts&0xFC != 0 || opts == 3 {
			// 3.1.1 [MQTT-3-8.3-4]: reserved bits non-zero or QoS 3 is malformed.
			return refuse(CodeMalformedPacket, t, "filter %d: requested QoS byte is 0x%02x", n, opts)
		}
		if why, ok := c.topicLimits(filter); !ok {
			return refuse(CodeTopicFilterInvalid, t, "filter %d: %s", n, why)
		}
	}
	if n == 0 {
		return refuse(CodeProtocolError, t, "no topic filters") // [MQTT-3.8.3-2] (3.1.1 [MQTT-3.8.3-3])
	}
	return nil
}

// checkUnsubscribe validates an UNSUBSCRIBE (MQTT 5.0 §3.10).
func (c *Checker) checkUnsubscribe(body []byte) error {
	const t = typeUnsubscribe
	r := reader{b: body}
	id, ok := r.uint16()
	if !ok {
		return refuse(CodeMalformedPacket, t, "packet identifier is missing or truncated")
	}
	if id == 0 {
		return refuse(CodeMalformedPacket, t, "packet identifier is 0") // [MQTT-2.2.1-3]
	}
	if c.version == 5 {
		var p props
		if f := c.readProps(&r, propsUnsubscribe, &p); f.code != 0 {
			return f.err(t, "properties")
		}
	}
	n := 0
	for r.left() > 0 {
		n++
		filter, ok := r.field()
		if !ok {
			return refuse(CodeMalformedPacket, t, "filter %d: truncated", n)
		}
		if f := checkString(filter); f != stringOK {
			return refuse(CodeMalformedPacket, t, "filter %d: %s", n, f) // [MQTT-3.10.3-1]
		}
		if why, ok := c.topicLimits(filter); !ok {
			return refuse(CodeTopicFilterInvalid, t, "filter %d: %s", n, why)
		}
	}
	if n == 0 {
		return refuse(CodeProtocolError, t, "no topic filters") // [MQTT-3.10.3-2]
	}
	return nil
}

// checkDisconnect validates a DISCONNECT (MQTT 5.0 §3.14). 3.1 and 3.1.1
// have no variable header. In MQTT 5 a Remaining Length of 0 means reason
// 0x00, 1 a reason code alone, 2 or more a reason code and properties.
func (c *Checker) checkDisconnect(body []byte) error {
	const t = typeDisconnect
	if c.version < 5 {
		if len(body) != 0 {
			return refuse(CodeMalformedPacket, t, "remaining length is %d, want 0", len(body))
		}
		return nil
	}
	r := reader{b: body}
	if r.left() == 0 {
		return nil
	}
	rc, _ := r.byte()
	if !reasonsDisconnect.has(rc) {
		return refuse(CodeProtocolError, t, "reason code 0x%02x is not defined for DISCONNECT", rc) // [MQTT-3.14.2-1]
	}
	if r.left() == 0 {
		return nil
	}
	var p props
	if f := c.readProps(&r, propsDisconnect, &p); f.code != 0 {
		return f.err(t, "properties")
	}
	if r.left() != 0 {
		return refuse(CodeMalformedPacket, t, "%d bytes after the properties", r.left())
	}
	if p.sessionExpiry != 0 && !c.sessionExpiry {
		// §3.14.2.2.2: CONNECT's Session Expiry Interval was 0.
		return refuse(CodeProtocolError, t, "non-zero session expiry interval after CONNECT set 0")
	}
	return nil
}

// checkAuth validates an AUTH (MQTT 5.0 §3.15); Check has already refused it
// before MQTT 5.
func (c *Checker) checkAuth(body []byte) error {
	const t = typeAuth
	if !c.hasAuth {
		// §3.15: a Protocol Error unless CONNECT had the same Authentication Method.
		return refuse(CodeProtocolError, t, "AUTH without an authentication method in CONNECT")
	}
	r := reader{b: body}
	rc, ok := r.byte()
	if !ok || r.left() == 0 {
		// Remaining Length 0 or 1 leaves out the Authentication Method
		// (§3.15.2.2.2). (mochi's AuthDecode also fails on both.)
		return refuse(CodeProtocolError, t, "authentication method is missing")
	}
	if !reasonsAuth.has(rc) {
		return refuse(CodeProtocolError, t, "reason code 0x%02x is not defined for AUTH", rc) // [MQTT-3.15.2-1]
	}
	var p props
	if f := c.readProps(&r, propsAuth, &p); f.code != 0 {
		return f.err(t, "properties")
	}
	if r.left() != 0 {
		return refuse(CodeMalformedPacket, t, "%d bytes after the properties", r.left())
	}
	if !p.has(propAuthMethod) {
		return refuse(CodeProtocolError, t, "authentication method is missing") // §3.15.2.2.2
	}
	if string(p.authMethod) != c.authMethod {
		return refuse(CodeProtocolError, t, "authentication method %q differs from CONNECT's", clip(p.authMethod)) // §3.15
	}
	return nil
}
