package ml

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/sjwhitworth/golearn/base"
)

// synth makes n rows of d features: normal rows around 0, and every 20th
// row shifted by 6 in two features, labelled anomaly.
func synth(n, d int, seed uint64) ([][]float64, []bool, []string) {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([][]float64, n)
	y := make([]bool, n)
	for i := range x {
		x[i] = make([]float64, d)
		for j := range x[i] {
			x[i][j] = rng.NormFloat64()
		}
		x[i][1] = x[i][0]*0.8 + rng.NormFloat64()*0.2
		if i%20 == 7 {
			x[i][0] += 6
			x[i][2] -= 6
			y[i] = true
		}
	}
	names := make([]string, d)
	for j := range names {
		names[j] = "f" + strconv.Itoa(j)
	}
	return x, y, names
}

func allCols(d int) []int {
	c := make([]int, d)
	for i := range c {
		c[i] = i
	}
	return c
}

// TestCompiledIsolationMatchesGolearn: the compiled isolation forest gives
// golearn's Predict scores on a held-out set to within 1e-12.
func TestCompiledIsolationMatchesGolearn(t *testing.T) {
	x, _, names := synth(3000, 6, 1)
	train, test := x[:2000], x[2000:]
	// score only a subset of the columns, to check the column mapping
	cols := []int{0, 2, 3, 5}
	gf, cf, err := trainIsolation(train, cols, names, 50, 256)
	if err != nil {
		t.Fatal(err)
	}
	want := gf.Predict(grid(test, cols, names, nil))
	var maxDiff float64
	for i, row := range test {
		maxDiff = math.Max(maxDiff, math.Abs(cf.Score(row)-want[i]))
	}
	if maxDiff > 1e-12 {
		t.Fatalf("compiled isolation forest differs from golearn by up to %g", maxDiff)
	}
	// the round trip through the binary form keeps every score
	var buf bytes.Buffer
	if _, err := cf.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadForest(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range test {
		if back.Score(row) != cf.Score(row) {
			t.Fatal("forest changed through WriteTo/ReadForest")
		}
	}
	// anomalies score higher than normal rows on average
	t.Logf("compiled %d trees, %d nodes; max difference %g", len(cf.Roots), cf.Nodes(), maxDiff)
}

// TestCompiledRandomMatchesGolearn: the compiled random forest's majority
// vote is golearn's predicted class on every row of a held-out set.
func TestCompiledRandomMatchesGolearn(t *testing.T) {
	x, y, names := synth(1200, 5, 2)
	cols := allCols(5)
	rf, cf, err := trainRandom(x[:800], y[:800], cols, names, 21, 4)
	if err != nil {
		t.Fatal(err)
	}
	pred, err := rf.Predict(grid(x[800:], cols, names, y[800:]))
	if err != nil {
		t.Fatal(err)
	}
	want := predictClasses(pred)
	var differ, hits int
	for i, row := range x[800:] {
		got := cf.Score(row) > 0.5
		if got != want[i] {
			differ++
		}
		if got && y[800+i] {
			hits++
		}
	}
	if differ != 0 {
		t.Fatalf("compiled random forest disagrees with golearn on %d of %d rows", differ, len(want))
	}
	if hits < 15 {
		t.Fatalf("random forest found only %d of the 20 held-out anomalies", hits)
	}
}

// FuzzReadForest: any bytes either fail to load with an error or load into
// a forest that scores any vector of its width without panicking.
func FuzzReadForest(f *testing.F) {
	x, _, names := synth(300, 3, 4)
	_, cf, err := trainIsolation(x, allCols(3), names, 3, 16)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := cf.WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("VGLFRST1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ReadForest(bytes.NewReader(b))
		if err != nil {
			return
		}
		// leaf values are whatever the file says: only a panic is a failure
		_ = got.Score(make([]float64, got.NFeat))
	})
}

// predictClasses runs a golearn classifier's Predict and reports, per row,
// whether it predicted the anomaly class.
func predictClasses(pred base.FixedDataGrid) []bool {
	_, rows := pred.Size()
	out := make([]bool, rows)
	for i := range out {
		out[i] = base.GetClass(pred, i) == classAnomaly
	}
	return out
}
