package bench

import (
	"encoding/binary"
	"errors"
)

// HeaderSize is the number of payload bytes the benchmark uses for its own
// header; --size must be at least this large.
const HeaderSize = 24

// header is what every benchmark payload carries in its first HeaderSize
// bytes, little-endian:
//
//	0  run      uint32  random per Run, so messages of other runs are ignored
//	4  producer uint32  publisher index
//	8  seq      uint64  per-publisher sequence number, from 0
//	16 sent     int64   send time, nanoseconds since the run's monotonic base
type header struct {
	run      uint32
	producer uint32
	seq      uint64
	sent     int64
}

var errShortPayload = errors.New("payload shorter than the benchmark header")

// put writes h into the first HeaderSize bytes of b, which must be long enough.
func (h header) put(b []byte) {
	_ = b[HeaderSize-1] // bounds check once
	binary.LittleEndian.PutUint32(b[0:], h.run)
	binary.LittleEndian.PutUint32(b[4:], h.producer)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.sent))
}

// parseHeader decodes the header at the start of a payload.
func parseHeader(b []byte) (header, error) {
	if len(b) < HeaderSize {
		return header{}, errShortPayload
	}
	return header{
		run:      binary.LittleEndian.Uint32(b[0:]),
		producer: binary.LittleEndian.Uint32(b[4:]),
		seq:      binary.LittleEndian.Uint64(b[8:]),
		sent:     int64(binary.LittleEndian.Uint64(b[16:])),
	}, nil
}
