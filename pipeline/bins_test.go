package pipeline

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// TestLazyBinsActAsTheArray: random writes and reads of lazy bins give
// bit for bit what a plain array started from the template gives, through
// the sparse form, its turning dense, and scaling.
func TestLazyBinsActAsTheArray(t *testing.T) {
	for _, tmpl := range [][]float32{uvPriorHist[:], uvUnseenDay, uvUnseenWeek} {
		rng := rand.New(rand.NewPCG(1, uint64(len(tmpl))))
		for trial := 0; trial < 50; trial++ {
			var l lazyBins[float32]
			plain := append([]float32(nil), tmpl...)
			spread := 1 + rng.IntN(len(tmpl)) // how many distinct bins this trial writes
			for op := 0; op < 200; op++ {
				b := rng.IntN(spread)
				switch rng.IntN(3) {
				case 0:
					w := float32(rng.Float64())
					*l.ref(b, tmpl) += w
					plain[b] += w
				case 1:
					x := rng.Float64()
					updBin(l.ref(b, tmpl), x, 0.3)
					updBin(&plain[b], x, 0.3)
				case 2:
					if got := l.at(b, tmpl); math.Float32bits(got) != math.Float32bits(plain[b]) {
						t.Fatalf("bin %d: %v, the array %v", b, got, plain[b])
					}
				}
				var tmp [uvWeekBins]float32
				all := l.all(tmp[:len(tmpl)], tmpl)
				for i := range plain {
					if math.Float32bits(all[i]) != math.Float32bits(plain[i]) {
						t.Fatalf("trial %d op %d: all()[%d] = %v, the array %v", trial, op, i, all[i], plain[i])
					}
				}
			}
			if spread <= len(tmpl)/4 && len(l.V) >= len(tmpl) {
				t.Fatalf("%d distinct bins of %d made the bins dense", spread, len(tmpl))
			}
		}
	}
}

// TestLazyByteBinsActAsTheArray: the same for the recurrence memory's
// byte bins (raised to a maximum, read, and turned dense at a new day).
func TestLazyByteBinsActAsTheArray(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for trial := 0; trial < 100; trial++ {
		var l lazyBins[uint8]
		plain := make([]uint8, len(uvRecZero))
		spread := 1 + rng.IntN(len(plain))
		for op := 0; op < 300; op++ {
			b := rng.IntN(spread)
			switch rng.IntN(8) {
			case 0:
				l.densify(uvRecZero)
			case 1, 2, 3:
				q := uint8(rng.IntN(200))
				if q > l.at(b, uvRecZero) {
					*l.ref(b, uvRecZero) = q
				}
				plain[b] = max(plain[b], q)
			default:
				if got := l.at(b, uvRecZero); got != plain[b] {
					t.Fatalf("trial %d op %d: bin %d = %d, the array %d", trial, op, b, got, plain[b])
				}
			}
		}
		var tmp [4 * uvDayBins]uint8
		if got := l.all(tmp[:], uvRecZero); string(got) != string(plain) {
			t.Fatalf("trial %d: all() differs from the array", trial)
		}
	}
}

// TestBinSetActsAsFourLazyBins: random writes, reads and scalings of the
// four arrays of a binSet, interleaved, give bit for bit what four
// lazyBins give (so the detector's figures are the same), each array in
// the same form (untouched, sparse or dense: the snapshot encoding is the
// same too), and a set of the arrays a snapshot held gives them back,
// bins that do not fit left out.
func TestBinSetActsAsFourLazyBins(t *testing.T) {
	if sz := unsafe.Sizeof(UVState{}); sz > 320 {
		t.Errorf("UVState is %d bytes, want at most 320 (a size class; four lazyBins made it 384)", sz)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	for trial := 0; trial < 100; trial++ {
		var set binSet
		var ls [uvArrs]lazyBins[float32]
		var spread [uvArrs]int
		for k := range spread {
			spread[k] = 1 + rng.IntN(len(binTmpl(k)))
		}
		for op := 0; op < 400; op++ {
			k := rng.IntN(uvArrs)
			tmpl := binTmpl(k)
			b := rng.IntN(spread[k])
			switch rng.IntN(4) {
			case 0:
				w := float32(rng.Float64())
				*set.ref(k, b) += w
				*ls[k].ref(b, tmpl) += w
			case 1:
				x := rng.Float64()
				updBin(set.ref(k, b), x, 0.3)
				updBin(ls[k].ref(b, tmpl), x, 0.3)
			case 2:
				if got, want := set.at(k, b), ls[k].at(b, tmpl); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("array %d bin %d: %v, lazyBins %v", k, b, got, want)
				}
			case 3:
				if k <= uvArrRHist && rng.IntN(10) == 0 {
					q := uvQ{}
					q.scale(histRef{set: &set, k: k}, 3)
					q.scale(histRef{own: &ls[k]}, 3)
				}
			}
			for j := range ls {
				v := set.view(j)
				if len(v.V) != len(ls[j].V) {
					t.Fatalf("trial %d op %d: array %d holds %d values, lazyBins %d", trial, op, j, len(v.V), len(ls[j].V))
				}
				for i := range v.V {
					if math.Float32bits(v.V[i]) != math.Float32bits(ls[j].V[i]) {
						t.Fatalf("trial %d op %d: array %d value %d is %v, lazyBins %v", trial, op, j, i, v.V[i], ls[j].V[i])
					}
				}
			}
		}
		var back binSet
		for k := range ls {
			back.set(k, ls[k])
		}
		for k := range ls {
			if v := back.view(k); !slices.EqualFunc(v.V, set.view(k).V, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
				t.Fatalf("trial %d: array %d set back as %v, was %v", trial, k, v.V, set.view(k).V)
			}
		}
	}
	var s binSet
	for _, c := range []struct {
		name string
		v    []float32
		want []float32
	}{
		{"a bin beyond the template", []float32{3, 1, 200, 2}, []float32{3, 1}},
		{"a bin twice", []float32{3, 1, 3, 2}, []float32{3, 1}},
		{"a bin not whole", []float32{2.5, 1, 4, 2}, []float32{4, 2}},
		{"a negative bin", []float32{-1, 1}, nil},
		{"an odd length", []float32{3, 1, 4}, nil},
		{"more pairs than a sparse array holds", make([]float32, 2*(uvBins/4+1)), nil},
	} {
		s.set(uvArrRHist, lazyBins[float32]{V: c.v})
		if got := s.view(uvArrRHist).V; !slices.Equal(got, c.want) {
			t.Errorf("%s: set %v, want %v", c.name, got, c.want)
		}
	}
}
