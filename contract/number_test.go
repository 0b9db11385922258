package contract

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// numberCases are values the fast paths must write and read exactly as
// strconv does: the edges of their ranges, ties, powers of ten, the
// values of sensors and of derived figures.
func numberCases() []float64 {
	vs := []float64{0, 1, -1, 0.1, 0.2, 0.3, 1.5, 71.2, -3.02, 0.031, 1e-4, 9.99999e-5, 1e-3, 0.00099999999999, 1e6, 999999.5, 1e6 + 0.5, 123456.5,
		1e8, 1e9, 999999999.5, 999999999.4, 123456789.5, 0.5, 2.5, 1.0000000005, 1.0000000015, 0.1234567895, 12345.6789012345, 5e-324, math.MaxFloat64,
		-0.000123456789, 1.23456789e-4, 100.00000001, 0.835, 0.883, 2.7, 1e15, 1e15 + 0.5, 4503599627370496.5, 1 << 53}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 200_000; i++ {
		e := rng.IntN(14) - 6 // magnitudes 1e-6 .. 1e7
		v := rng.Float64() * math.Pow(10, float64(e))
		switch i % 4 {
		case 1: // a sensor's few decimals
			v = math.Round(v*1000) / 1000
		case 2:
			v = -v
		case 3: // ties at the ninth digit
			v = math.Round(v*1e9) / 1e9
		}
		vs = append(vs, v)
	}
	return vs
}

func TestNumbersMatchStrconv(t *testing.T) {
	for _, v := range numberCases() {
		checkNumber(t, v)
	}
}

func checkNumber(t *testing.T, v float64) {
	t.Helper()
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	want := strconv.AppendFloat(nil, v, 'g', -1, 64)
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		want = strconv.AppendInt(nil, int64(v), 10)
	}
	if got := AppendFloat(nil, v); string(got) != string(want) {
		t.Fatalf("AppendFloat(%v) = %s, strconv %s", v, got, want)
	}
	for _, s := range [][]byte{AppendFloat(nil, v), strconv.AppendFloat(nil, v, 'g', 9, 64)} {
		want, err := strconv.ParseFloat(string(s), 64)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := parseSimple(string(s)); ok && math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("parseSimple(%s) = %v, strconv %v", s, got, want)
		}
	}
}

// FuzzNumbers holds the fast paths to strconv on any float64 and any
// text: what parseSimple takes, strconv reads to the same value.
func FuzzNumbers(f *testing.F) {
	for _, v := range numberCases()[:64] {
		f.Add(math.Float64bits(v), []byte(strconv.FormatFloat(v, 'g', -1, 64)))
	}
	f.Add(uint64(0), []byte("-0"))
	f.Add(uint64(0), []byte("00.5"))
	f.Fuzz(func(t *testing.T, bits uint64, text []byte) {
		checkNumber(t, math.Float64frombits(bits))
		if got, ok := parseSimple(string(text)); ok {
			want, err := strconv.ParseFloat(string(text), 64)
			if err != nil || math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("parseSimple(%q) = %v, strconv %v, %v", text, got, want, err)
			}
		}
	})
}

func BenchmarkNumbers(b *testing.B) {
	// what the records carry: sensor values of a few decimals and scores
	// (shortest), and derived figures as the encoder writes them (9 digits)
	// read back
	rng := rand.New(rand.NewPCG(1, 1))
	vs, few := make([]float64, 4096), make([]float64, 4096)
	texts := make([][]byte, len(vs))
	for i := range vs {
		vs[i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(5)-2))
		few[i] = math.Round(vs[i]*1000) / 1000
		texts[i] = strconv.AppendFloat(nil, vs[i], 'g', 9, 64)
	}
	buf := make([]byte, 0, 64)
	for _, c := range []struct {
		name string
		fn   func(i int)
	}{
		{"shortest/strconv", func(i int) { buf = strconv.AppendFloat(buf[:0], few[i], 'g', -1, 64) }},
		{"shortest/AppendFloat", func(i int) { buf = AppendFloat(buf[:0], few[i]) }},
		{"parse/strconv", func(i int) { _, _ = strconv.ParseFloat(string(texts[i]), 64) }},
		{"parse/ParseNumber", func(i int) { _, _ = ParseNumber(string(texts[i])) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				c.fn(i & 4095)
				i++
			}
		})
	}
}
