package bench

import "time"

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
	out := []CDFPoint{{MS: ms(time.Duration(h.Min())), F: 0}}
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
			out = append(out, CDFPoint{MS: ms(time.Duration(v)), F: float64(seen) / float64(total)})
			for next <= float64(seen) {
				next += step
			}
		}
	}
	return out
}
