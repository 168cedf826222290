package frame

import (
	"strings"
	"unicode/utf8"
)

// stringFault describes why bytes are not an acceptable UTF-8 Encoded String.
type stringFault uint8

const (
	stringOK stringFault = iota
	stringInvalid
	stringNull
	stringSurrogate
	stringControl
	stringNoncharacter
)

func (f stringFault) String() string {
	switch f {
	case stringInvalid:
		return "is not valid UTF-8"
	case stringNull:
		return "contains U+0000"
	case stringSurrogate:
		return "contains a UTF-16 surrogate"
	case stringControl:
		return "contains a control character"
	case stringNoncharacter:
		return "contains a Unicode noncharacter"
	}
	return "is valid"
}

// checkString applies the rules for a UTF-8 Encoded String (MQTT 5.0 §1.5.4)
// to b, which must be the bytes after the two-byte length:
//
//   - well-formed UTF-8, no surrogates U+D800..U+DFFF: Malformed [MQTT-1.5.4-1]
//     (3.1.1: [MQTT-1.5.3-1]); Go's UTF-8 decoder already treats encoded
//     surrogates and overlong forms as invalid;
//   - no U+0000: Malformed [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]);
//   - no control characters U+0001..U+001F, U+007F..U+009F and no
//     noncharacters U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF. The specification
//     says these SHOULD NOT be sent and that a receiver MAY treat them as
//     Malformed; Mote does, like Mosquitto's mosquitto_validate_utf8.
//
// U+FEFF (BOM) is allowed and must not be stripped [MQTT-1.5.4-3].
// Passwords, Binary Data and PUBLISH payloads are not UTF-8 Encoded Strings
// and are never passed here.
func checkString(b []byte) stringFault {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7F {
				if c == 0 {
					return stringNull
				}
				return stringControl
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			// ED A0..BF is the lead of an encoded surrogate half.
			if c == 0xED && i+1 < len(b) && b[i+1] >= 0xA0 && b[i+1] <= 0xBF {
				return stringSurrogate
			}
			return stringInvalid
		}
		switch {
		case r <= 0x9F: // C1 controls U+0080..U+009F
			return stringControl
		case r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE:
			return stringNoncharacter
		}
		i += size
	}
	return stringOK
}

// ValidTopic reports whether t is a valid MQTT Topic Name as a client may
// publish to: at least one byte [MQTT-4.7.3-1], at most 65,535 bytes
// [MQTT-4.7.3-3], well-formed UTF-8 without U+0000 [MQTT-1.5.4-1]
// [MQTT-1.5.4-2] [MQTT-4.7.3-2], and no wildcard characters '+' or '#'
// [MQTT-3.3.2-2] [MQTT-4.7.1-1]. Topics starting with '$' are valid names;
// whether a client may publish to $SYS is the broker's policy. Control
// characters are allowed here (the specification only discourages them);
// Check refuses them earlier on the wire.
func ValidTopic(t string) bool {
	if len(t) == 0 || len(t) > 65535 || !utf8.ValidString(t) {
		return false
	}
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case 0, '+', '#':
			return false
		}
	}
	return true
}

// sharePrefix starts a Shared Subscription's topic filter (MQTT 5.0 §4.8.2).
// The comparison is case-sensitive: "$SHARE/g/x" is an ordinary filter.
const sharePrefix = "$share/"

// ValidFilter reports whether f is a valid MQTT Topic Filter:
//
//   - at least one byte [MQTT-4.7.3-1], at most 65,535 bytes [MQTT-4.7.3-3],
//     well-formed UTF-8 without U+0000 [MQTT-4.7.3-2];
//   - '#' only as the whole last level [MQTT-4.7.1-1];
//   - '+' only as a whole level [MQTT-4.7.1-2];
//   - a filter starting with "$share/" is a Shared Subscription
//     "$share/{ShareName}/{filter}": the ShareName is at least one character
//     and contains no '/', '+' or '#' [MQTT-4.8.2-1] [MQTT-4.8.2-2], and the
//     filter after it is itself a non-empty valid filter.
//
// So "$share/g" (no filter), "$share//a" (empty ShareName) and "$share/+/a"
// are invalid, while "$share" and "$shared/a" are ordinary valid filters.
func ValidFilter(f string) bool {
	if len(f) == 0 || len(f) > 65535 || !utf8.ValidString(f) || strings.IndexByte(f, 0) >= 0 {
		return false // (U+0000 anywhere, the ShareName included: found by FuzzValidFilter)
	}
	if len(f) >= len(sharePrefix) && f[:len(sharePrefix)] == sharePrefix {
		rest := f[len(sharePrefix):]
		i := 0
		for i < len(rest) && rest[i] != '/' {
			if rest[i] == '+' || rest[i] == '#' {
				return false // [MQTT-4.8.2-2]
			}
			i++
		}
		if i == 0 || i == len(rest) {
			return false // empty ShareName [MQTT-4.8.2-1], or no '/' and filter [MQTT-4.8.2-2]
		}
		f = rest[i+1:]
		if len(f) == 0 {
			return false
		}
	}
	return validLevels(f)
}

// validLevels checks the wildcard placement rules of a filter.
func validLevels(f string) bool {
	start := 0 // first byte of the current level
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '+':
			// A whole level: preceded by the start or '/', followed by the end or '/'.
			if i != start || (i+1 < len(f) && f[i+1] != '/') {
				return false
			}
		case '#':
			// The whole last level.
			if i != start || i != len(f)-1 {
				return false
			}
		case '/':
			start = i + 1
		}
	}
	return true
}
