package frame

// checkPublish validates a PUBLISH from a client (MQTT 5.0 §3.3).
func (c *Checker) checkPublish(flags byte, body []byte) error {
	const t = typePublish
	qos := flags >> 1 & 0x03
	switch {
	case qos == 3:
		return refuse(CodeMalformedPacket, t, "QoS 3") // [MQTT-3.3.1-4]
	case qos == 0 && flags&0x08 != 0:
		return refuse(CodeMalformedPacket, t, "DUP flag set on a QoS 0 message") // [MQTT-3.3.1-2]
	}

	r := reader{b: body}
	topic, ok := r.field()
	if !ok {
		return refuse(CodeMalformedPacket, t, "topic name is missing or truncated") // [MQTT-3.3.2-1]
	}
	if qos > 0 {
		id, ok := r.uint16()
		if !ok {
			return refuse(CodeMalformedPacket, t, "packet identifier is missing or truncated")
		}
		if id == 0 {
			return refuse(CodeMalformedPacket, t, "packet identifier is 0") // [MQTT-2.2.1-3]
		}
	}
	var p props
	if c.version == 5 {
		if f := c.readProps(&r, propsPublish, &p); f.code != 0 {
			return f.err(t, "properties")
		}
		if p.has(propSubscriptionIdentifier) {
			return refuse(CodeProtocolError, t, "subscription identifier sent by a client") // [MQTT-3.3.4-6]
		}
	}
	payload := r.rest() // may be empty (§3.3.3)

	// Topic Alias (§3.3.2.3.4, §3.3.4): 0 or above the maximum is 0x94.
	alias := p.has(propTopicAlias)
	if alias && (p.topicAlias == 0 || p.topicAlias > c.lim.TopicAliasMaximum) {
		return refuse(CodeTopicAliasInvalid, t, "topic alias %d is outside 1..%d", p.topicAlias, c.lim.TopicAliasMaximum) // [MQTT-3.3.2-8] [MQTT-3.3.2-12]
	}

	if len(topic) == 0 {
		switch {
		case c.version < 5:
			return refuse(CodeTopicNameInvalid, t, "empty topic name") // 3.1.1 [MQTT-4.7.3-1]
		case !alias:
			// CVE-2021-34432: Mosquitto crashed on this.
			return refuse(CodeProtocolError, t, "empty topic name without a topic alias") // §3.3.2.1
		case !c.aliasSet(p.topicAlias):
			return refuse(CodeProtocolError, t, "empty topic name with topic alias %d, which was never set", p.topicAlias) // §3.3.4 3a
		}
	} else {
		if f := checkString(topic); f != stringOK {
			return refuse(CodeTopicNameInvalid, t, "topic name %s", f) // [MQTT-3.3.2-1] [MQTT-1.5.4-1]
		}
		if !validTopicBytes(topic) {
			return refuse(CodeTopicNameInvalid, t, "topic name contains a wildcard") // [MQTT-3.3.2-2]
		}
		if why, ok := c.topicLimits(topic); !ok {
			return refuse(CodeTopicNameInvalid, t, "topic name is %s", why)
		}
	}

	if p.payloadFormat == 1 && !validPayloadUTF8(payload) {
		return refuse(CodePayloadFormatInvalid, t, "payload is not valid UTF-8 but its payload format indicator is 1") // §3.3.2.3.2
	}

	if alias && len(topic) > 0 {
		c.setAlias(p.topicAlias)
	}
	return nil
}

// The aliases the client has set are kept as a bitmap of TopicAliasMaximum
// bits, allocated on first use. A map (one entry per alias) would cost more
// per entry and allocate as it grows; the bitmap is at most 8 KiB, fixed, and
// the mapping itself (alias → topic) stays mochi's business.
func (c *Checker) aliasSet(a uint16) bool {
	i := int(a) / 64
	return i < len(c.aliases) && c.aliases[i]&(1<<(a%64)) != 0
}

func (c *Checker) setAlias(a uint16) {
	if c.aliases == nil {
		c.aliases = make([]uint64, int(c.lim.TopicAliasMaximum)/64+1)
	}
	c.aliases[a/64] |= 1 << (a % 64)
}
