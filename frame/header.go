package frame

import "encoding/binary"

// MQTT control packet types (MQTT 5.0 §2.1.2, Table 2-1).
const (
	typeReserved    byte = 0
	typeConnect     byte = 1
	typeConnack     byte = 2
	typePublish     byte = 3
	typePuback      byte = 4
	typePubrec      byte = 5
	typePubrel      byte = 6
	typePubcomp     byte = 7
	typeSubscribe   byte = 8
	typeSuback      byte = 9
	typeUnsubscribe byte = 10
	typeUnsuback    byte = 11
	typePingreq     byte = 12
	typePingresp    byte = 13
	typeDisconnect  byte = 14
	typeAuth        byte = 15
)

const (
	// maxRemaining is the largest Remaining Length a four-byte Variable Byte
	// Integer can hold (MQTT 5.0 §1.5.5).
	maxRemaining = 268_435_455
	// maxPacket is the largest whole packet: a type byte, four length bytes
	// and maxRemaining bytes.
	maxPacket = 1 + 4 + maxRemaining
)

// Header reads the fixed header at the start of b. complete=false (with a
// nil error) means b is too short to know the length yet; otherwise total is
// the length of the whole packet, fixed header included, which may be more
// than len(b). max is the largest total accepted; 0 means the specification's
// maximum, 268,435,460.
//
// Errors (*Error) are reported as soon as the length bytes are seen, before
// any of the body has to arrive: a Remaining Length of five or more bytes or
// one not encoded in the minimum number of bytes is 0x81 [MQTT-1.5.5-1]; a
// total above max is 0x95. Header does not look at the packet type or flags;
// Check does.
func Header(b []byte, max uint32) (total int, complete bool, err error) {
	if len(b) < 2 {
		return 0, false, nil
	}
	rem, n, st := readVBI(b[1:])
	switch st {
	case vbiShort:
		return 0, false, nil
	case vbiTooLong:
		return 0, false, refuse(CodeMalformedPacket, b[0]>>4, "remaining length is longer than four bytes")
	case vbiNonMinimal:
		return 0, false, refuse(CodeMalformedPacket, b[0]>>4, "remaining length is not minimally encoded") // [MQTT-1.5.5-1]
	}
	total = 1 + n + int(rem)
	if max == 0 || max > maxPacket {
		max = maxPacket
	}
	if uint64(total) > uint64(max) {
		return 0, false, refuse(CodePacketTooLarge, b[0]>>4, "packet of %d bytes exceeds the maximum packet size %d", total, max)
	}
	return total, true, nil
}

type vbiStatus uint8

const (
	vbiOK vbiStatus = iota
	vbiShort
	vbiTooLong
	vbiNonMinimal
)

// readVBI decodes a Variable Byte Integer (MQTT 5.0 §1.5.5) at the start of
// b, returning its value and encoded length. At most four bytes are allowed,
// and the encoding must be minimal [MQTT-1.5.5-1]: a multi-byte integer whose
// last byte is zero could have been written shorter.
func readVBI(b []byte) (v uint32, n int, st vbiStatus) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, vbiShort
		}
		c := b[i]
		v |= uint32(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, vbiNonMinimal
			}
			return v, i + 1, vbiOK
		}
	}
	return 0, 0, vbiTooLong
}

// reader walks the body of one packet. Its methods report false when the
// field does not fit in the bytes left, and then leave the offset alone.
type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) byte() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	c := r.b[r.off]
	r.off++
	return c, true
}

func (r *reader) uint16() (uint16, bool) {
	if r.left() < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, true
}

func (r *reader) uint32() (uint32, bool) {
	if r.left() < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, true
}

// field reads a two-byte length followed by that many bytes: the encoding
// of both UTF-8 Encoded Strings and Binary Data (MQTT 5.0 §1.5.4, §1.5.6).
func (r *reader) field() ([]byte, bool) {
	if r.left() < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(r.b[r.off:]))
	if r.left()-2 < n {
		return nil, false
	}
	s := r.b[r.off+2 : r.off+2+n]
	r.off += 2 + n
	return s, true
}

func (r *reader) rest() []byte {
	s := r.b[r.off:]
	r.off = len(r.b)
	return s
}
