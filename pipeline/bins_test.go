package pipeline

import (
	"math"
	"math/rand/v2"
	"testing"
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
