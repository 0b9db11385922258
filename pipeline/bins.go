package pipeline

import (
	"math"
	"slices"
)

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

// The arrays of a metric's binSet, in their order in it.
const (
	uvArrHist  = iota // the histogram of s (template uvPriorHist)
	uvArrRHist        // of the regime figure (uvPriorHist)
	uvArrDay          // the daily profile (uvUnseenDay)
	uvArrWeek         // the weekly profile (uvUnseenWeek)
	uvArrs
)

// binTmpl is array k's template: its bins before any is written.
func binTmpl(k int) []float32 {
	switch k {
	case uvArrHist, uvArrRHist:
		return uvPriorHist[:]
	case uvArrDay:
		return uvUnseenDay
	}
	return uvUnseenWeek
}

// binSet holds a metric detector's four binned float32 arrays in one
// slice, one after the other, each as a lazyBins holds it (nothing while
// untouched, (bin, value) pairs while few bins are written, then every
// bin); L is the length of each in V. Four lazyBins were four slice
// headers in the detector's struct and up to four small objects for the
// collector to follow: a device still warming up, its per-metric
// detectors live, held 41 heap objects, 17 of them these arrays. Values
// are the same as lazyBins', and so is the snapshot encoding (see
// uvStateWire).
type binSet struct {
	V []float32
	L [uvArrs]uint16
}

// span is where array k lies in V.
func (s *binSet) span(k int) (int, int) {
	o := 0
	for i := 0; i < k; i++ {
		o += int(s.L[i])
	}
	return o, o + int(s.L[k])
}

// view is array k as a lazyBins (its slice capped: not to be grown).
func (s *binSet) view(k int) lazyBins[float32] {
	a, e := s.span(k)
	return lazyBins[float32]{V: s.V[a:e:e]}
}

func (s *binSet) untouched(k int) bool { return s.L[k] == 0 }

func (s *binSet) at(k, b int) float32 {
	v := s.view(k)
	return v.at(b, binTmpl(k))
}

// all is every bin of array k: the array itself once dense, else dst
// filled.
func (s *binSet) all(k int, dst []float32) []float32 {
	v := s.view(k)
	return v.all(dst, binTmpl(k))
}

// ref points at bin b of array k for a write, as lazyBins.ref does (and
// with the same sparse limit). The pointer is good until the next ref.
func (s *binSet) ref(k, b int) *float32 {
	tmpl := binTmpl(k)
	a, e := s.span(k)
	if e-a == len(tmpl) {
		return &s.V[a+b]
	}
	for i := a; i < e; i += 2 {
		if int(s.V[i]) == b {
			return &s.V[i+1]
		}
	}
	if (e-a)/2 >= len(tmpl)/4 {
		return &s.dense(k)[b]
	}
	s.V = s.room(2)
	s.V = slices.Insert(s.V, e, float32(b), tmpl[b])
	s.L[k] += 2
	return &s.V[e+1]
}

// room is V with room for n more values: grown, when it must be, by an
// eighth beyond them to the end of the allocator's size class, not
// doubled as append would (the arrays grow a few times in a metric's
// life, and a doubled slice of four dense arrays would hold 1 KB spare).
func (s *binSet) room(n int) []float32 {
	if cap(s.V)-len(s.V) >= n {
		return s.V
	}
	want := len(s.V) + n
	return append(slices.Grow([]float32(nil), want+want/8), s.V...)
}

// dense makes array k every bin, and returns it.
func (s *binSet) dense(k int) []float32 {
	tmpl := binTmpl(k)
	a, e := s.span(k)
	if e-a != len(tmpl) {
		d := make([]float32, len(tmpl))
		copy(d, tmpl)
		for i := a; i < e; i += 2 {
			d[int(s.V[i])] = s.V[i+1]
		}
		s.V = s.room(len(d) - (e - a))
		s.V = slices.Replace(s.V, a, e, d...)
		s.L[k] = uint16(len(tmpl))
	}
	return s.V[a : a+len(tmpl) : a+len(tmpl)]
}

// set makes array k hold l's bins (a snapshot's). Bins that do not fit
// the template (a damaged snapshot) are left out: an array of another
// length than the template's and not of whole (bin, value) pairs below
// it, or a pair naming a bin beyond it.
func (s *binSet) set(k int, l lazyBins[float32]) {
	tmpl := binTmpl(k)
	var v []float32
	switch n := len(l.V); {
	case n == len(tmpl):
		v = l.V
	case n%2 == 0 && n/2 <= len(tmpl)/4:
	pairs:
		for i := 0; i < n; i += 2 {
			b := l.V[i]
			if !(b >= 0 && int(b) < len(tmpl) && float32(int(b)) == b) {
				continue
			}
			for j := 0; j < len(v); j += 2 {
				if v[j] == b {
					continue pairs
				}
			}
			v = append(v, b, l.V[i+1])
		}
	}
	a, e := s.span(k)
	s.V = slices.Replace(s.V, a, e, v...)
	s.L[k] = uint16(len(v))
}
