package pipeline

import "math"

// lazyBins is a fixed-size array of n float32 bins that starts equal to a
// template (the histograms' prior, the profiles' "unseen") and, while few
// bins have been written, stores only those: a metric in its first
// readings holds a few dozen bytes where its three histograms and two
// profiles took 1.7 KB (BenchmarkDeviceStateBytes/warming). Past a
// quarter of the bins it turns into the plain array. Reads and writes
// give exactly what the array would: the same float32 operations on the
// same values.
//
// V is empty while no bin was written, holds (bin, value) pairs while
// sparse (fewer than n/2 elements; a bin number is exact as a float32,
// and fits a byte for the recurrence memory's 192 bins), and all n bins
// once dense.
type lazyBins[T float32 | uint8] struct {
	V []T
}

// untouched reports whether no bin was written.
func (l *lazyBins[T]) untouched() bool { return len(l.V) == 0 }

// at is bin b's value.
func (l *lazyBins[T]) at(b int, tmpl []T) T {
	if len(l.V) == len(tmpl) {
		return l.V[b]
	}
	for i := 0; i < len(l.V); i += 2 {
		if int(l.V[i]) == b {
			return l.V[i+1]
		}
	}
	return tmpl[b]
}

// ref points at bin b for a write. The pointer is good until the next ref.
func (l *lazyBins[T]) ref(b int, tmpl []T) *T {
	if len(l.V) == len(tmpl) {
		return &l.V[b]
	}
	for i := 0; i < len(l.V); i += 2 {
		if int(l.V[i]) == b {
			return &l.V[i+1]
		}
	}
	if len(l.V)/2 >= len(tmpl)/4 {
		l.densify(tmpl)
		return &l.V[b]
	}
	l.V = append(l.V, T(b), tmpl[b])
	return &l.V[len(l.V)-1]
}

// densify turns the bins into the plain array.
func (l *lazyBins[T]) densify(tmpl []T) {
	if len(l.V) == len(tmpl) {
		return
	}
	d := make([]T, len(tmpl))
	copy(d, tmpl)
	for i := 0; i < len(l.V); i += 2 {
		d[int(l.V[i])] = l.V[i+1]
	}
	l.V = d
}

// all is every bin: the array itself once dense, else dst filled.
func (l *lazyBins[T]) all(dst, tmpl []T) []T {
	if len(l.V) == len(tmpl) {
		return l.V
	}
	copy(dst, tmpl)
	for i := 0; i < len(l.V); i += 2 {
		dst[int(l.V[i])] = l.V[i+1]
	}
	return dst
}

// The profiles' template: every bin unseen; the recurrence memory's:
// nothing seen yet.
var (
	uvUnseenDay  = nanBins(uvDayBins)
	uvUnseenWeek = nanBins(uvWeekBins)
	uvRecZero    = make([]uint8, 4*uvDayBins)
)

func nanBins(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(math.NaN())
	}
	return s
}

// foldBins makes histogram bins written with more bins than tmpl has (an
// older Vigil's: 72, from s = 2^-4 to 2^20) fit it: what lay beyond the
// last bin adds into it. The bins below are the same in both, prior
// included, and the quantiles never reach the folded ones.
func foldBins(l *lazyBins[float32], tmpl []float32) {
	n := len(tmpl)
	switch {
	case len(l.V) == n:
		return
	case len(l.V) > n:
		// dense, from more bins (a sparse list of the old size held
		// fewer than 18 pairs, well below n values)
		d := make([]float32, n)
		copy(d, l.V[:n])
		for _, v := range l.V[n:] {
			d[n-1] += v
		}
		l.V = d
		return
	}
	var extra float32
	kept := l.V[:0]
	for i := 0; i < len(l.V); i += 2 {
		if b := int(l.V[i]); b >= n {
			extra += l.V[i+1]
			continue
		}
		kept = append(kept, l.V[i], l.V[i+1])
	}
	l.V = kept
	if extra != 0 {
		*l.ref(n-1, tmpl) += extra
	}
	if len(l.V) != n && len(l.V)/2 > n/4 { // more pairs than a sparse list holds
		l.densify(tmpl)
	}
}
