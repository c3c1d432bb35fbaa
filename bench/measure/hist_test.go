package measure

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	prevHi := int64(-1)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d (buckets must tile the range)", i, lo, prevHi+1)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf(lo)=%d bucketOf(hi)=%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/halfSub+1e-12 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d of its value", i, lo, hi, halfSub)
		}
		prevHi = hi
	}
	if prevHi != MaxTrackable {
		t.Fatalf("last bucket ends at %d, want MaxTrackable %d", prevHi, MaxTrackable)
	}
}

func TestHistogramEmpty(t *testing.T) {
	h := NewHistogram()
	if h.Count() != 0 || h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 {
		t.Fatalf("empty histogram not all zero: %+v", h.Summary())
	}
}

func TestHistogramExactSmallValues(t *testing.T) {
	h := NewHistogram()
	for v := int64(1); v <= 100; v++ {
		h.Record(v)
	}
	for _, tc := range []struct {
		q    float64
		want int64
	}{{0, 1}, {0.01, 1}, {0.5, 50}, {0.99, 99}, {0.999, 100}, {1, 100}} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if h.Mean() != 50.5 || h.Min() != 1 || h.Max() != 100 {
		t.Errorf("mean/min/max = %v/%d/%d", h.Mean(), h.Min(), h.Max())
	}
}

// TestHistogramQuantileError compares against exact quantiles of a
// log-uniform sample spanning 1µs..10s.
func TestHistogramQuantileError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	vals := make([]int64, 100000)
	for i := range vals {
		v := int64(1000 * pow10(rng.Float64()*7))
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/halfSub {
			t.Errorf("Quantile(%v) = %d, exact %d: outside [exact, exact*(1+1/%d)]", q, got, exact, halfSub)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Quantile(1) != h.Max() {
		t.Errorf("max %d, quantile(1) %d, want %d", h.Max(), h.Quantile(1), vals[len(vals)-1])
	}
}

func pow10(x float64) float64 {
	r := 1.0
	for x >= 1 {
		r *= 10
		x--
	}
	// 10^x for x in [0,1) via e^(x ln 10), good enough for test data.
	const ln10 = 2.302585092994046
	y, term := 1.0, 1.0
	for k := 1; k < 30; k++ {
		term *= x * ln10 / float64(k)
		y += term
	}
	return r * y
}

func TestHistogramClampAndNegative(t *testing.T) {
	h := NewHistogram()
	h.Record(-5)
	h.Record(MaxTrackable * 4)
	if h.Count() != 2 || h.Min() != 0 || h.Max() != MaxTrackable {
		t.Fatalf("count %d min %d max %d", h.Count(), h.Min(), h.Max())
	}
}

func TestHistogramConcurrentAndMerge(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 10000 {
				a.Record(int64(i + w))
			}
		})
	}
	wg.Wait()
	b.Record(1 << 30)
	a.Merge(b)
	if a.Count() != 40001 || a.Max() != 1<<30 || a.Min() != 0 {
		t.Fatalf("count %d max %d min %d", a.Count(), a.Max(), a.Min())
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	for i := range b.N {
		h.Record(int64(i) * 997)
	}
}

func TestHistogramCDF(t *testing.T) {
	h := NewHistogram()
	if h.CDF(10) != nil {
		t.Fatal("CDF of nothing")
	}
	for i := range 1000 {
		h.Record(int64(i) * int64(time.Millisecond) / 10)
	}
	c := h.CDF(20)
	if len(c) < 10 || c[0].F != 0 || c[len(c)-1].F != 1 || c[len(c)-1].MS != MS(time.Duration(h.Max())) {
		t.Fatalf("cdf %v", c)
	}
	for i := 1; i < len(c); i++ {
		if c[i].F < c[i-1].F || c[i].MS < c[i-1].MS {
			t.Fatalf("not monotonic at %d: %v", i, c)
		}
	}
}

func TestParseProc(t *testing.T) {
	kib, err := parseStatusKiB([]byte("Name:\tx\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\n"), "VmRSS:")
	if err != nil || kib != 12345 {
		t.Fatalf("VmRSS %d %v", kib, err)
	}
	cpu, err := parseStatCPU([]byte("42 (a b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1"))
	if err != nil || cpu != 3 {
		t.Fatalf("cpu %v %v", cpu, err)
	}
	busy, err := parseHostBusy([]byte("cpu  100 0 50 1000 7 0 50 0 0 0\ncpu0 1 1 1 1\n"))
	if err != nil || busy != 2 {
		t.Fatalf("busy %v %v", busy, err)
	}
	if _, err := ReadRSSKiB(0); err != nil {
		t.Fatalf("own RSS: %v", err)
	}
}
