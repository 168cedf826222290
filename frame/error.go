package frame

import "fmt"

// MQTT 5 reason codes used by this package (MQTT 5.0 §2.4, Table 2-6). The
// same values appear in mochi's packets/codes.go; they are repeated here so
// that production code in this package needs only the standard library.
const (
	// CodeMalformedPacket (0x81): the packet cannot be parsed according to the
	// specification.
	CodeMalformedPacket byte = 0x81
	// CodeProtocolError (0x82): the packet parses but holds data the protocol
	// does not allow, or is out of order.
	CodeProtocolError byte = 0x82
	// CodeUnsupportedProtocolVersion (0x84): unknown protocol name or level.
	CodeUnsupportedProtocolVersion byte = 0x84
	// CodeClientIdentifierNotValid (0x85): the CONNECT's client identifier
	// is not acceptable.
	CodeClientIdentifierNotValid byte = 0x85
	// CodeTopicFilterInvalid (0x8F): a topic filter is well formed but longer
	// or deeper than Limits allow.
	CodeTopicFilterInvalid byte = 0x8F
	// CodeTopicNameInvalid (0x90): a PUBLISH topic or Will Topic is not a
	// valid topic name, or exceeds Limits.
	CodeTopicNameInvalid byte = 0x90
	// CodeReceiveMaximumExceeded (0x93) is not produced by this package (it
	// needs acknowledgement tracking); it is listed for completeness.
	CodeReceiveMaximumExceeded byte = 0x93
	// CodeTopicAliasInvalid (0x94): topic alias 0 or above the maximum.
	CodeTopicAliasInvalid byte = 0x94
	// CodePacketTooLarge (0x95): the packet exceeds Limits.MaxPacketSize.
	CodePacketTooLarge byte = 0x95
	// CodeQuotaExceeded (0x97): more user properties than
	// Limits.MaxUserProperties.
	CodeQuotaExceeded byte = 0x97
	// CodePayloadFormatInvalid (0x99): Payload Format Indicator 1 with a
	// payload that is not well-formed UTF-8.
	CodePayloadFormatInvalid byte = 0x99
)

// Error says why a packet was refused. Code is the MQTT 5 reason code the
// specification names for the problem (see the Code constants); Type is the
// MQTT control packet type (1 CONNECT … 15 AUTH) or 0 when the packet type is
// itself the problem or unknown; Reason is a human-readable detail for logs.
// Callers branch on Code via errors.As, never on the text.
type Error struct {
	Code   byte
	Type   byte
	Reason string
}

// Error formats the refusal, for example
// "frame: subscribe: filter 2: missing subscription options (0x81 malformed packet)".
func (e *Error) Error() string {
	if name := typeName(e.Type); name != "" {
		return fmt.Sprintf("frame: %s: %s (0x%02x %s)", name, e.Reason, e.Code, codeName(e.Code))
	}
	return fmt.Sprintf("frame: %s (0x%02x %s)", e.Reason, e.Code, codeName(e.Code))
}

func typeName(t byte) string {
	switch t {
	case typeConnect:
		return "connect"
	case typeConnack:
		return "connack"
	case typePublish:
		return "publish"
	case typePuback:
		return "puback"
	case typePubrec:
		return "pubrec"
	case typePubrel:
		return "pubrel"
	case typePubcomp:
		return "pubcomp"
	case typeSubscribe:
		return "subscribe"
	case typeSuback:
		return "suback"
	case typeUnsubscribe:
		return "unsubscribe"
	case typeUnsuback:
		return "unsuback"
	case typePingreq:
		return "pingreq"
	case typePingresp:
		return "pingresp"
	case typeDisconnect:
		return "disconnect"
	case typeAuth:
		return "auth"
	}
	return ""
}

func codeName(c byte) string {
	switch c {
	case 0x80:
		return "unspecified error"
	case CodeMalformedPacket:
		return "malformed packet"
	case CodeProtocolError:
		return "protocol error"
	case 0x83:
		return "implementation specific error"
	case CodeUnsupportedProtocolVersion:
		return "unsupported protocol version"
	case CodeClientIdentifierNotValid:
		return "client identifier not valid"
	case CodeTopicFilterInvalid:
		return "topic filter invalid"
	case CodeTopicNameInvalid:
		return "topic name invalid"
	case CodeReceiveMaximumExceeded:
		return "receive maximum exceeded"
	case CodeTopicAliasInvalid:
		return "topic alias invalid"
	case CodePacketTooLarge:
		return "packet too large"
	case CodeQuotaExceeded:
		return "quota exceeded"
	case CodePayloadFormatInvalid:
		return "payload format invalid"
	}
	return "reason code"
}

// refuse builds the *Error for a refused packet. It is only called on the
// refusal path, so the formatting cost does not touch accepted packets.
func refuse(code, typ byte, format string, args ...any) *Error {
	if len(args) == 0 {
		return &Error{Code: code, Type: typ, Reason: format}
	}
	return &Error{Code: code, Type: typ, Reason: fmt.Sprintf(format, args...)}
}
