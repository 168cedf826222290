package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Message records are a compact binary encoding of a PUBLISH packet and the
// broker's bookkeeping about it. The first byte is the format version, so the
// layout can change without misreading old stores.
const codecVersion = 1

// ErrCorruptRecord is returned when a stored record cannot be decoded.
var ErrCorruptRecord = errors.New("persistence: corrupt record")

// record is one stored message with its bookkeeping.
type record struct {
	WAL      uint64 // id of the write-ahead record that carried the message in (0: none)
	Seq      uint64 // ordering key inside its owner (session queue, retained seq, ...)
	State    byte   // owner-specific state
	PacketID uint16
	Packet   packets.Packet
}

// property presence bits.
const (
	hasPayloadFormat = 1 << iota
	hasExpiryInterval
	hasContentType
	hasResponseTopic
	hasCorrelation
	hasSubIDs
	hasUser
)

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// encodeRecord appends r to b.
func encodeRecord(b []byte, r *record) []byte {
	pk := &r.Packet
	fh := pk.FixedHeader.Qos & 3
	if pk.FixedHeader.Retain {
		fh |= 1 << 2
	}
	if pk.FixedHeader.Dup {
		fh |= 1 << 3
	}
	b = append(b, codecVersion, fh, r.State)
	b = appendUvarint(b, uint64(r.PacketID))
	b = appendUvarint(b, r.WAL)
	b = appendUvarint(b, r.Seq)
	b = appendVarint(b, pk.Created)
	b = appendVarint(b, pk.Expiry)
	b = append(b, pk.ProtocolVersion)
	b = appendString(b, pk.Origin)
	b = appendString(b, pk.TopicName)
	p := &pk.Properties
	var mask byte
	if p.PayloadFormatFlag {
		mask |= hasPayloadFormat
	}
	if p.MessageExpiryInterval > 0 {
		mask |= hasExpiryInterval
	}
	if p.ContentType != "" {
		mask |= hasContentType
	}
	if p.ResponseTopic != "" {
		mask |= hasResponseTopic
	}
	if len(p.CorrelationData) > 0 {
		mask |= hasCorrelation
	}
	if len(p.SubscriptionIdentifier) > 0 {
		mask |= hasSubIDs
	}
	if len(p.User) > 0 {
		mask |= hasUser
	}
	b = append(b, mask)
	if mask&hasPayloadFormat != 0 {
		b = append(b, p.PayloadFormat)
	}
	if mask&hasExpiryInterval != 0 {
		b = appendUvarint(b, uint64(p.MessageExpiryInterval))
	}
	if mask&hasContentType != 0 {
		b = appendString(b, p.ContentType)
	}
	if mask&hasResponseTopic != 0 {
		b = appendString(b, p.ResponseTopic)
	}
	if mask&hasCorrelation != 0 {
		b = appendBytes(b, p.CorrelationData)
	}
	if mask&hasSubIDs != 0 {
		b = appendUvarint(b, uint64(len(p.SubscriptionIdentifier)))
		for _, id := range p.SubscriptionIdentifier {
			b = appendUvarint(b, uint64(id))
		}
	}
	if mask&hasUser != 0 {
		b = appendUvarint(b, uint64(len(p.User)))
		for _, u := range p.User {
			b = appendString(b, u.Key)
			b = appendString(b, u.Val)
		}
	}
	return appendBytes(b, pk.Payload)
}

// decoder reads a record, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrCorruptRecord
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	v := string(d.b[:n])
	d.b = d.b[n:]
	return v
}

// decodeRecord decodes a record written by encodeRecord.
func decodeRecord(s string) (*record, error) {
	d := decoder{b: []byte(s)}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: format version %d", ErrCorruptRecord, v)
	}
	r := &record{}
	pk := &r.Packet
	fh := d.byte()
	pk.FixedHeader = packets.FixedHeader{Type: packets.Publish, Qos: fh & 3, Retain: fh&(1<<2) != 0, Dup: fh&(1<<3) != 0}
	r.State = d.byte()
	r.PacketID = uint16(d.uvarint())
	pk.PacketID = r.PacketID
	r.WAL = d.uvarint()
	r.Seq = d.uvarint()
	pk.Created = d.varint()
	pk.Expiry = d.varint()
	pk.ProtocolVersion = d.byte()
	pk.Origin = d.string()
	pk.TopicName = d.string()
	mask := d.byte()
	p := &pk.Properties
	if mask&hasPayloadFormat != 0 {
		p.PayloadFormat = d.byte()
		p.PayloadFormatFlag = true
	}
	if mask&hasExpiryInterval != 0 {
		p.MessageExpiryInterval = uint32(d.uvarint())
	}
	if mask&hasContentType != 0 {
		p.ContentType = d.string()
	}
	if mask&hasResponseTopic != 0 {
		p.ResponseTopic = d.string()
	}
	if mask&hasCorrelation != 0 {
		p.CorrelationData = d.bytes()
	}
	if mask&hasSubIDs != 0 {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, int(d.uvarint()))
		}
	}
	if mask&hasUser != 0 {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			p.User = append(p.User, packets.UserProperty{Key: d.string(), Val: d.string()})
		}
	}
	pk.Payload = d.bytes()
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorruptRecord, len(d.b))
	}
	if pk.FixedHeader.Qos > 2 {
		return nil, fmt.Errorf("%w: qos %d", ErrCorruptRecord, pk.FixedHeader.Qos)
	}
	return r, nil
}

// EncodeMessage encodes a PUBLISH, with how many times it has been
// delivered (at most 255 is kept), as a Log record value.
func EncodeMessage(pk packets.Packet, deliveries int) []byte {
	r := record{State: byte(min(deliveries, 255)), Packet: pk}
	r.Packet.Connect = packets.ConnectParams{}
	return encodeRecord(nil, &r)
}

// EncodeMessageAt is EncodeMessage that also keeps when the message was
// stored, to the millisecond (mochi's Created has whole seconds).
func EncodeMessageAt(pk packets.Packet, deliveries int, stored time.Time) []byte {
	r := record{State: byte(min(deliveries, 255)), Seq: uint64(max(stored.UnixMilli(), 0)), Packet: pk}
	r.Packet.Connect = packets.ConnectParams{}
	return encodeRecord(nil, &r)
}

// DecodeMessageAt reverses EncodeMessageAt (stored is zero for a value
// written by EncodeMessage).
func DecodeMessageAt(b []byte) (packets.Packet, int, time.Time, error) {
	r, err := decodeRecord(string(b))
	if err != nil {
		return packets.Packet{}, 0, time.Time{}, err
	}
	var stored time.Time
	if r.Seq > 0 {
		stored = time.UnixMilli(int64(r.Seq))
	}
	return r.Packet, int(r.State), stored, nil
}

// DecodeMessage reverses EncodeMessage.
func DecodeMessage(b []byte) (packets.Packet, int, error) {
	r, err := decodeRecord(string(b))
	if err != nil {
		return packets.Packet{}, 0, err
	}
	return r.Packet, int(r.State), nil
}
