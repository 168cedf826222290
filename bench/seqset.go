package bench

import "math/bits"

// maxSeq bounds the sequence numbers a seqSet accepts, so a corrupt header
// cannot make it allocate without limit: 2^32 messages from one publisher is
// 4.3 days at 10k msg/s, and would take 512 MiB of bits.
const maxSeq = 1 << 32

// seqSet is a growable bitmap of sequence numbers: one bit per message a
// publisher sent, which is what exact loss and duplicate counts need. It is
// not safe for concurrent use.
type seqSet struct {
	words []uint64
	n     uint64 // members
}

// add inserts seq and reports whether it was already present.
func (s *seqSet) add(seq uint64) (dup bool) {
	w := seq / 64
	if w >= uint64(len(s.words)) {
		// Grow geometrically; append's growth would do, but make the intent explicit.
		s.words = append(s.words, make([]uint64, int(w)-len(s.words)+1+len(s.words)/2)...)
	}
	bit := uint64(1) << (seq % 64)
	if s.words[w]&bit != 0 {
		return true
	}
	s.words[w] |= bit
	s.n++
	return false
}

func (s *seqSet) has(seq uint64) bool {
	w := seq / 64
	return w < uint64(len(s.words)) && s.words[w]&(1<<(seq%64)) != 0
}

// len returns the number of members.
func (s *seqSet) len() uint64 { return s.n }

// missingFrom counts the members of want that are not in s.
func (s *seqSet) missingFrom(want *seqSet) uint64 {
	var missing uint64
	for i, w := range want.words {
		var have uint64
		if i < len(s.words) {
			have = s.words[i]
		}
		missing += uint64(bits.OnesCount64(w &^ have))
	}
	return missing
}
