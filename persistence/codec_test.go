package persistence

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func testRecords() map[string]*record {
	pub := func(qos byte, retain, dup bool) packets.Packet {
		return packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain, Dup: dup},
			TopicName:   "a/b/c",
			Payload:     []byte("hello"),
		}
	}
	full := pub(2, true, true)
	full.PacketID = 65535
	full.ProtocolVersion = 5
	full.Origin = "client-ü"
	full.Created = 1_700_000_000
	full.Expiry = 1_700_003_600
	full.Payload = []byte{0, 1, 2, 0xff, '\r', '\n'}
	full.Properties = packets.Properties{
		PayloadFormat:          1,
		PayloadFormatFlag:      true,
		MessageExpiryInterval:  3600,
		ContentType:            "application/json",
		ResponseTopic:          "reply/to/me",
		CorrelationData:        []byte{0xde, 0xad, 0xbe, 0xef},
		SubscriptionIdentifier: []int{1, 268435455},
		User: []packets.UserProperty{
			{Key: "k1", Val: "v1"},
			{Key: "k1", Val: "duplicate keys are allowed"},
			{Key: "", Val: ""},
		},
	}
	payloadFormatZero := pub(1, false, false)
	payloadFormatZero.Properties.PayloadFormatFlag = true // explicit 0 (bytes) is kept
	maxExpiry := pub(1, false, false)
	maxExpiry.Properties.MessageExpiryInterval = math.MaxUint32
	maxExpiry.Created = -1
	maxExpiry.Expiry = math.MinInt64
	v3 := pub(1, false, false)
	v3.ProtocolVersion = 4
	v3.PacketID = 7
	noPayload := pub(0, true, false)
	noPayload.Payload = nil // a retained-message delete
	return map[string]*record{
		"qos0":                {Packet: pub(0, false, false)},
		"qos1 retain":         {PacketID: 1, Seq: 2, WAL: 3, State: 1, Packet: withID(pub(1, true, false), 1)},
		"qos2 dup":            {PacketID: 2, Packet: withID(pub(2, false, true), 2)},
		"full v5":             {WAL: math.MaxUint64, Seq: 1 << 40, State: 255, PacketID: 65535, Packet: full},
		"payload format zero": {Packet: payloadFormatZero},
		"max expiry":          {Packet: maxExpiry},
		"v3.1.1":              {PacketID: 7, Packet: v3},
		"empty payload":       {Packet: noPayload},
	}
}

func withID(pk packets.Packet, id uint16) packets.Packet {
	pk.PacketID = id
	return pk
}

func TestCodecRoundTrip(t *testing.T) {
	for name, r := range testRecords() {
		t.Run(name, func(t *testing.T) {
			enc := encodeRecord(nil, r)
			if enc[0] != codecVersion {
				t.Fatalf("first byte %d, want the format version %d", enc[0], codecVersion)
			}
			got, err := decodeRecord(string(enc))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("round trip mismatch:\n got  %+v\n want %+v", got, r)
			}
			// encodeRecord appends.
			prefixed := encodeRecord([]byte("prefix"), r)
			if !bytes.Equal(prefixed[6:], enc) || string(prefixed[:6]) != "prefix" {
				t.Error("encodeRecord does not append to its buffer")
			}
		})
	}
}

func TestCodecOmitsZeroProperties(t *testing.T) {
	r := &record{Packet: packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "t",
		Properties: packets.Properties{
			// Empty-but-present values are the same as absent ones.
			CorrelationData:        []byte{},
			SubscriptionIdentifier: []int{},
			User:                   []packets.UserProperty{},
		},
	}}
	enc := encodeRecord(nil, r)
	plain := encodeRecord(nil, &record{Packet: packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "t",
	}})
	if !bytes.Equal(enc, plain) {
		t.Errorf("empty properties change the encoding: %x vs %x", enc, plain)
	}
	got, err := decodeRecord(string(enc))
	if err != nil {
		t.Fatal(err)
	}
	p := got.Packet.Properties
	if p.CorrelationData != nil || p.SubscriptionIdentifier != nil || p.User != nil || p.PayloadFormatFlag {
		t.Errorf("decoded properties not empty: %+v", p)
	}
	if got.Packet.Payload != nil {
		t.Errorf("empty payload decoded as %#v, want nil", got.Packet.Payload)
	}
}

func TestCodecDecodedPacketIsAValidPublish(t *testing.T) {
	r := testRecords()["full v5"]
	got, err := decodeRecord(string(encodeRecord(nil, r)))
	if err != nil {
		t.Fatal(err)
	}
	pk := got.Packet
	if pk.FixedHeader.Type != packets.Publish || pk.PacketID != r.PacketID {
		t.Fatalf("type %d id %d, want PUBLISH with the record's packet id", pk.FixedHeader.Type, pk.PacketID)
	}
	// The broker can put it back on the wire, and it reads back the same.
	// (mochi sends response topic and correlation data only with
	// AllowResponseInfo, set per client when the packet goes out.)
	pk.Mods.AllowResponseInfo = true
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatalf("PublishEncode: %v", err)
	}
	var fh packets.FixedHeader
	wire := buf.Bytes()
	if err := fh.Decode(wire[0]); err != nil {
		t.Fatal(err)
	}
	back := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	// Skip the remaining-length varint.
	i := 1
	for wire[i]&0x80 != 0 {
		i++
	}
	if err := back.PublishDecode(wire[i+1:]); err != nil {
		t.Fatalf("PublishDecode: %v", err)
	}
	if back.TopicName != pk.TopicName || !bytes.Equal(back.Payload, pk.Payload) ||
		back.Properties.ContentType != pk.Properties.ContentType ||
		back.Properties.ResponseTopic != pk.Properties.ResponseTopic ||
		!bytes.Equal(back.Properties.CorrelationData, pk.Properties.CorrelationData) ||
		!reflect.DeepEqual(back.Properties.User, pk.Properties.User) ||
		back.Properties.MessageExpiryInterval != pk.Properties.MessageExpiryInterval ||
		back.FixedHeader.Qos != 2 || !back.FixedHeader.Retain {
		t.Errorf("wire round trip differs:\n got  %+v\n want %+v", back, pk)
	}
}

func TestCodecRejectsDamage(t *testing.T) {
	good := encodeRecord(nil, testRecords()["full v5"])
	cases := map[string][]byte{
		"empty":          nil,
		"version 0":      append([]byte{0}, good[1:]...),
		"version 2":      append([]byte{2}, good[1:]...),
		"trailing bytes": append(append([]byte{}, good...), 0),
		"qos 3":          append([]byte{codecVersion, 3}, good[2:]...),
	}
	for name, data := range cases {
		r, err := decodeRecord(string(data))
		if err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, r)
			continue
		}
		if !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("%s: error %v is not ErrCorruptRecord", name, err)
		}
	}
	// Every proper prefix (a torn or cut value) fails.
	for n := range len(good) {
		if _, err := decodeRecord(string(good[:n])); !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("prefix of %d/%d bytes: err %v, want ErrCorruptRecord", n, len(good), err)
		}
	}
}

func TestCodecHugeCountsDoNotAllocate(t *testing.T) {
	// A count of user properties or subscription ids larger than the rest
	// of the record is corrupt, not an allocation.
	for _, mask := range []byte{hasSubIDs, hasUser} {
		b := []byte{codecVersion, 1, 0}
		b = appendUvarint(b, 0)     // packet id
		b = appendUvarint(b, 0)     // wal
		b = appendUvarint(b, 0)     // seq
		b = appendVarint(b, 0)      // created
		b = appendVarint(b, 0)      // expiry
		b = append(b, 5)            // protocol version
		b = appendString(b, "")     // origin
		b = appendString(b, "t")    // topic
		b = append(b, mask)         // properties
		b = appendUvarint(b, 1<<60) // count
		b = appendBytes(b, nil)     // payload
		allocs := testing.AllocsPerRun(10, func() {
			if _, err := decodeRecord(string(b)); !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("mask %d: err %v", mask, err)
			}
		})
		if allocs > 20 {
			t.Errorf("mask %d: %v allocations for a corrupt count", mask, allocs)
		}
	}
}

// FuzzDecodeRecord: no input makes the decoder panic, and whatever decodes
// re-encodes to bytes that decode to the same record (and encode to
// themselves: the encoding is canonical after one round).
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range testRecords() {
		f.Add(encodeRecord(nil, r))
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add([]byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(string(data))
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error %v is not ErrCorruptRecord", err)
			}
			return
		}
		if r.Packet.FixedHeader.Qos > 2 || r.Packet.FixedHeader.Type != packets.Publish || r.Packet.PacketID != r.PacketID {
			t.Fatalf("decoded an invalid record: %+v", r)
		}
		enc := encodeRecord(nil, r)
		r2, err := decodeRecord(string(enc))
		if err != nil {
			t.Fatalf("re-encoding of %x does not decode: %v", data, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encoding changed the record:\n first  %+v\n second %+v", r, r2)
		}
		if enc2 := encodeRecord(nil, r2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
	})
}

func TestEncodeMessageAtKeepsMilliseconds(t *testing.T) {
	at := time.UnixMilli(1795600000123)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("x"), Created: 1795600000}
	got, n, stored, err := DecodeMessageAt(EncodeMessageAt(pk, 3, at))
	if err != nil || n != 3 || !stored.Equal(at) || got.TopicName != "a/b" {
		t.Fatalf("decoded %v %d %v %v", got.TopicName, n, stored, err)
	}
	if _, _, stored, _ := DecodeMessageAt(EncodeMessage(pk, 0)); !stored.IsZero() {
		t.Fatalf("EncodeMessage stored %v, want none", stored)
	}
}
