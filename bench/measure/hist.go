// Package measure is what meshbench measures with: the payload that
// carries its send time and sequence, a lock-free latency histogram, and
// CPU and memory read from /proc.
package measure

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a log-linear ("HDR-ish") histogram of non-negative int64
// values, typically latencies in nanoseconds. Values below 2^subBits are kept
// exactly; above that every power-of-two range is split into 2^(subBits-1)
// equal buckets, so a reported quantile is within 1/64 (about 1.6 %) of the true
// value. Values above MaxTrackable are clamped (and still counted).
//
// Record is safe for concurrent use and allocation-free (atomic adds); the
// reading methods see a consistent total only once the writers have stopped.
// The zero value is not usable: call NewHistogram.
type Histogram struct {
	counts []atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Int64
	max    atomic.Int64
}

const (
	subBits     = 7
	subCount    = 1 << subBits // exact values 0..127
	halfSub     = subCount / 2 // buckets per octave above subCount
	maxBitLen   = 41           // 2^41 ns ≈ 36 min
	numBuckets  = subCount + (maxBitLen-subBits)*halfSub
	maxTrackVal = int64(1)<<maxBitLen - 1
)

// MaxTrackable is the largest value a Histogram distinguishes; larger values are
// recorded as MaxTrackable.
const MaxTrackable = maxTrackVal

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{counts: make([]atomic.Uint64, numBuckets)}
	h.min.Store(math.MaxInt64)
	h.max.Store(math.MinInt64)
	return h
}

// bucketOf maps a value to its bucket index.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	n := bits.Len64(uint64(v)) // > subBits
	shift := n - subBits
	mant := int(uint64(v) >> uint(shift)) // in [halfSub, subCount)
	return subCount + (shift-1)*halfSub + (mant - halfSub)
}

// bucketRange returns the smallest and largest value that map to bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	j := i - subCount
	shift := j/halfSub + 1
	mant := int64(j%halfSub + halfSub)
	lo = mant << uint(shift)
	hi = lo + int64(1)<<uint(shift) - 1
	return lo, hi
}

// Record adds one value. Negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if v > maxTrackVal {
		v = maxTrackVal
	}
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	storeMax(&h.max, v)
	storeMin(&h.min, v)
}

func storeMax(a *atomic.Int64, v int64) {
	for m := a.Load(); v > m && !a.CompareAndSwap(m, v); m = a.Load() {
	}
}

func storeMin(a *atomic.Int64, v int64) {
	for m := a.Load(); v < m && !a.CompareAndSwap(m, v); m = a.Load() {
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max returns the largest recorded value (exact), or 0 if empty.
func (h *Histogram) Max() int64 {
	if h.Count() == 0 {
		return 0
	}
	return h.max.Load()
}

// Min returns the smallest recorded value (exact), or 0 if empty.
func (h *Histogram) Min() int64 {
	if h.Count() == 0 {
		return 0
	}
	return h.min.Load()
}

// Mean returns the arithmetic mean of the recorded values, or 0 if empty.
func (h *Histogram) Mean() float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value at quantile q in [0, 1]: the upper edge of the
// bucket holding the ceil(q*count)-th smallest value, capped by the exact
// maximum (so Quantile(1) == Max()). It returns 0 if the histogram is empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(hi, h.Max())
		}
	}
	return h.Max()
}

// Merge adds all values of o into h. It is meant for combining per-worker
// histograms after the workers stopped.
func (h *Histogram) Merge(o *Histogram) {
	if o.Count() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sum.Add(o.sum.Load())
	storeMax(&h.max, o.max.Load())
	storeMin(&h.min, o.min.Load())
}

// Durations is a convenience summary of a nanosecond histogram.
type Durations struct {
	P50, P90, P99, P999, Max, Mean time.Duration
	Count                          uint64
}

// Summary reads the usual quantiles of a nanosecond histogram.
func (h *Histogram) Summary() Durations {
	return Durations{
		P50:   time.Duration(h.Quantile(0.50)),
		P90:   time.Duration(h.Quantile(0.90)),
		P99:   time.Duration(h.Quantile(0.99)),
		P999:  time.Duration(h.Quantile(0.999)),
		Max:   time.Duration(h.Max()),
		Mean:  time.Duration(h.Mean()),
		Count: h.Count(),
	}
}

// Quantiles is a summary of a nanosecond histogram in milliseconds.
type Quantiles struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Count uint64  `json:"count"`
}

// Quantiles reads the summary of a nanosecond histogram in milliseconds.
func (h *Histogram) Quantiles() Quantiles {
	s := h.Summary()
	return Quantiles{P50: MS(s.P50), P90: MS(s.P90), P99: MS(s.P99), Max: MS(s.Max), Count: s.Count}
}

// MS is d in milliseconds, the unit of the figures meshbench reports.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// CDFPoint is one point of a latency distribution: the fraction of values
// at or below MS milliseconds.
type CDFPoint struct {
	MS float64 `json:"ms"`
	F  float64 `json:"f"`
}

// CDF returns about n points of h's cumulative distribution (n ≥ 2), at
// evenly spaced fractions, from its non-empty buckets' upper edges, plus
// the minimum and the maximum. Empty histograms have none.
func (h *Histogram) CDF(n int) []CDFPoint {
	total := h.Count()
	if total == 0 {
		return nil
	}
	n = max(n, 2)
	out := []CDFPoint{{MS: MS(time.Duration(h.Min())), F: 0}}
	step := float64(total) / float64(n)
	next := step
	var seen uint64
	for i := range h.counts {
		c := h.counts[i].Load()
		if c == 0 {
			continue
		}
		seen += c
		if float64(seen) >= next || seen == total {
			_, hi := bucketRange(i)
			v := min(hi, h.Max())
			out = append(out, CDFPoint{MS: MS(time.Duration(v)), F: float64(seen) / float64(total)})
			for next <= float64(seen) {
				next += step
			}
		}
	}
	return out
}
