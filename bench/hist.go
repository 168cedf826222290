package bench

import (
	"math"
	"math/bits"
	"time"
)

// The latency histogram is log-linear, like HdrHistogram: values below
// 2^histSubBits are counted exactly; above that every power-of-two range is
// split into histHalf equal buckets, so a bucket is at most 1/64 (1.6 %) of its
// value wide. 3,776 counters cover 0 ns to 2^63 ns in 30 KiB per histogram,
// however many samples are recorded.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact values below this
	histHalf    = histSub / 2
	histBuckets = (64-histSubBits)*histHalf + histSub
)

// histogram records non-negative durations in nanoseconds. It is not safe for
// concurrent use: each receiver owns one and they are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

func histIndex(v int64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - histSubBits // ≥ 1
	return e*histHalf + int(v>>uint(e))      // v>>e is in [histHalf, histSub)
}

// histUpper is the highest value that falls into bucket i.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := i/histHalf - 1
	m := int64(i%histHalf + histHalf)
	return (m+1)<<uint(e) - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0 // the clock is monotonic; this only guards against a corrupt header
	}
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at or below which a fraction q of the samples
// lie, as the upper edge of its bucket clamped to the observed [min, max] — so
// quantiles never decrease with q and never exceed max.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(histUpper(i), h.min), h.max)
		}
	}
	return h.max
}

// latency summarises the histogram.
func (h *histogram) latency() Latency {
	if h.n == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.n,
		Min:   time.Duration(h.min),
		Mean:  time.Duration(h.sum / float64(h.n)),
		P50:   time.Duration(h.quantile(0.50)),
		P95:   time.Duration(h.quantile(0.95)),
		P99:   time.Duration(h.quantile(0.99)),
		Max:   time.Duration(h.max),
	}
}
