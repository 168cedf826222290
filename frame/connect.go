package frame

// clip shortens attacker-chosen bytes quoted in a refusal reason.
func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// checkConnect validates a CONNECT (MQTT 5.0 §3.1; 3.1.1 §3.1; 3.1 §3.1).
// The layout must be exact: Protocol Name, Protocol Level, Connect Flags,
// Keep Alive, [Properties], Client Identifier, [Will Properties, Will Topic,
// Will Payload], [User Name], [Password], and nothing after
// [MQTT-3.1.3-1] [MQTT-3.1.2-16] [MQTT-3.1.2-18].
func (c *Checker) checkConnect(flags byte, body []byte) error {
	const t = typeConnect
	r := reader{b: body}

	// Protocol name and level first, so that even a CONNECT refused for its
	// fixed header flags gets a CONNACK its client can read.
	name, ok := r.field()
	if !ok {
		return refuse(CodeMalformedPacket, t, "protocol name is missing or truncated")
	}
	level, ok := r.byte()
	if !ok {
		return refuse(CodeMalformedPacket, t, "protocol level is missing")
	}
	switch {
	case string(name) == "MQTT" && (level == 4 || level == 5), string(name) == "MQIsdp" && level == 3:
		c.claim = level
	case string(name) == "MQTT" || string(name) == "MQIsdp":
		c.claim = claimUnknownLevel
		return refuse(CodeUnsupportedProtocolVersion, t, "protocol level %d is not supported for protocol name %q", level, name) // [MQTT-3.1.2-2]
	default:
		return refuse(CodeUnsupportedProtocolVersion, t, "protocol name %q is not MQTT", clip(name)) // [MQTT-3.1.2-1]
	}
	if flags != 0 {
		return badFlags(t, flags) // [MQTT-2.1.3-1]
	}

	cf, ok := r.byte()
	if !ok {
		return refuse(CodeMalformedPacket, t, "connect flags are missing")
	}
	if _, ok := r.uint16(); !ok {
		return refuse(CodeMalformedPacket, t, "keep alive is missing or truncated")
	}
	var (
		clean      = cf&0x02 != 0
		will       = cf&0x04 != 0
		willQoS    = cf >> 3 & 0x03
		willRetain = cf&0x20 != 0
		password   = cf&0x40 != 0
		username   = cf&0x80 != 0
	)
	switch {
	case cf&0x01 != 0:
		return refuse(CodeMalformedPacket, t, "reserved connect flag is set") // [MQTT-3.1.2-3]
	case !will && willQoS != 0:
		return refuse(CodeMalformedPacket, t, "will QoS %d without the will flag", willQoS) // [MQTT-3.1.2-11]
	case !will && willRetain:
		return refuse(CodeMalformedPacket, t, "will retain without the will flag") // [MQTT-3.1.2-13]
	case willQoS == 3:
		return refuse(CodeMalformedPacket, t, "will QoS 3") // [MQTT-3.1.2-12]
	case level < 5 && password && !username:
		// 3.1.1 [MQTT-3.1.2-22]; MQTT 5 allows a password alone.
		return refuse(CodeMalformedPacket, t, "password flag without the user name flag")
	}

	var p props
	if level == 5 {
		if f := c.readProps(&r, propsConnect, &p); f.code != 0 {
			return f.err(t, "properties")
		}
		if p.has(propAuthData) && !p.has(propAuthMethod) {
			return refuse(CodeProtocolError, t, "authentication data without an authentication method") // §3.1.2.11.10
		}
	}

	id, ok := r.field()
	if !ok {
		return refuse(CodeMalformedPacket, t, "client identifier is missing or truncated") // [MQTT-3.1.3-3]
	}
	if f := checkString(id); f != stringOK {
		return refuse(CodeClientIdentifierNotValid, t, "client identifier %s", f) // [MQTT-3.1.3-4]
	}
	if len(id) == 0 {
		switch {
		case level == 3:
			// MQTT 3.1 §3.1: the Client Identifier is 1 to 23 characters;
			// Mosquitto also refuses an empty one with "identifier rejected".
			return refuse(CodeClientIdentifierNotValid, t, "MQTT 3.1 requires a non-empty client identifier")
		case level == 4 && !clean:
			return refuse(CodeClientIdentifierNotValid, t, "empty client identifier without clean session") // 3.1.1 [MQTT-3.1.3-8]
		}
	}

	if will { // [MQTT-3.1.2-9]: Will Properties, Will Topic and Will Payload follow
		wp := props{users: p.users} // user properties count per packet
		if level == 5 {
			if f := c.readProps(&r, propsWill, &wp); f.code != 0 {
				return f.err(t, "will properties")
			}
		}
		topic, ok := r.field()
		if !ok {
			return refuse(CodeMalformedPacket, t, "will topic is missing or truncated")
		}
		if f := checkString(topic); f != stringOK {
			return refuse(CodeTopicNameInvalid, t, "will topic %s", f) // [MQTT-3.1.3-11]
		}
		if !validTopicBytes(topic) {
			return refuse(CodeTopicNameInvalid, t, "will topic is empty or contains a wildcard") // [MQTT-4.7.3-1] [MQTT-3.3.2-2]
		}
		if why, ok := c.topicLimits(topic); !ok {
			return refuse(CodeTopicNameInvalid, t, "will topic is %s", why)
		}
		payload, ok := r.field()
		if !ok {
			return refuse(CodeMalformedPacket, t, "will payload is missing or truncated")
		}
		if wp.payloadFormat == 1 && !validPayloadUTF8(payload) {
			return refuse(CodePayloadFormatInvalid, t, "will payload is not valid UTF-8 but its payload format indicator is 1") // §3.1.3.2.3
		}
	}
	if username {
		u, ok := r.field()
		if !ok {
			return refuse(CodeMalformedPacket, t, "user name is missing or truncated") // [MQTT-3.1.2-17]
		}
		if f := checkString(u); f != stringOK {
			return refuse(CodeMalformedPacket, t, "user name %s", f) // [MQTT-3.1.3-12]
		}
	}
	if password {
		// Binary Data: any bytes (§3.1.3.6).
		if _, ok := r.field(); !ok {
			return refuse(CodeMalformedPacket, t, "password is missing or truncated") // [MQTT-3.1.2-19]
		}
	}
	if r.left() != 0 {
		return refuse(CodeMalformedPacket, t, "%d bytes after the last field", r.left()) // [MQTT-3.1.3-1]
	}

	c.version = level
	c.claim = 0
	c.sessionExpiry = p.sessionExpiry != 0
	if p.has(propAuthMethod) {
		c.hasAuth = true
		c.authMethod = string(p.authMethod)
	}
	return nil
}
