package loadtest

import (
	"math"
	"time"
)

// histogram counts durations in logarithmic buckets (about 2 % wide), from 10 µs to about 100 s. Not safe for
// concurrent use: each reader keeps its own and they are merged.
type histogram struct {
	counts [nBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	nBuckets   = 820
	bucketBase = 10 * time.Microsecond
	growth     = 1.02
)

var logGrowth = math.Log(growth)

func bucketOf(d time.Duration) int {
	if d <= bucketBase {
		return 0
	}
	return min(nBuckets-1, int(math.Log(float64(d)/float64(bucketBase))/logGrowth)+1)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the upper edge of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= want {
			return min(h.max, time.Duration(float64(bucketBase)*math.Pow(growth, float64(i))))
		}
	}
	return h.max
}
