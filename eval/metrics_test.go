package eval

import (
	"math"
	"testing"
	"time"
)

func series(truth, flagged string) []Point {
	t0 := time.Date(2020, 3, 9, 10, 0, 0, 0, time.UTC)
	ps := make([]Point, len(truth))
	for i := range ps {
		ps[i] = Point{TS: t0.Add(time.Duration(i) * time.Second), Truth: truth[i] == '1', Flagged: flagged[i] == '1'}
	}
	return ps
}

// Hand-computed: truth 0011110000, flagged 0101100001.
// TP = 2 (indexes 3, 4), FP = 2 (1, 9), FN = 2 (2, 5), TN = 4.
// F1 = 2 / (2 + 4/2) = 0.5; FAR = 2/6; MAR = 2/4.
func TestCounts(t *testing.T) {
	var c Counts
	for _, p := range series("0011110000", "0101100001") {
		c.Add(p)
	}
	if c != (Counts{TP: 2, FP: 2, FN: 2, TN: 4}) {
		t.Fatalf("counts %+v", c)
	}
	if c.F1() != 0.5 || math.Abs(c.FAR()-1.0/3) > 1e-12 || c.MAR() != 0.5 {
		t.Fatalf("F1 %g FAR %g MAR %g", c.F1(), c.FAR(), c.MAR())
	}
	var z Counts
	if z.F1() != 0 || z.FAR() != 0 || z.MAR() != 0 {
		t.Fatal("empty counts must give 0, not NaN")
	}
	z.Merge(c)
	z.Merge(c)
	if z.TP != 4 || z.TN != 8 {
		t.Fatalf("merge %+v", z)
	}
}

func TestWindows(t *testing.T) {
	ws := Windows(series("0110011100", "0000000000"))
	if len(ws) != 2 || ws[0] != (Window{1, 2}) || ws[1] != (Window{5, 7}) {
		t.Fatalf("windows %+v", ws)
	}
}

// Hand-computed NAB: windows [2,5] and [7,8] in 10 points.
// flagged 0001000010: the run at 3 detects window 1 at y = (3-2)/3 - 1 = -2/3:
// σ = 2/(1+e^(-10/3)) - 1 = 0.93133; the run at 8 detects window 2 at
// y = (8-7)/1 - 1 = 0: σ = 0. Raw = 0.93133 + 0; no false detections.
// A second series flags 1000000000 (no windows... truth 0000000000): one
// false detection, raw -0.11.
func TestScoreNAB(t *testing.T) {
	r := Score(series("0011110110", "0001000010"))
	want := 2/(1+math.Exp(-10.0/3)) - 1
	if r.Windows != 2 || r.Detected != 2 || r.FalseDetections != 0 || math.Abs(r.Raw-want) > 1e-9 {
		t.Fatalf("%+v, raw want %g", r, want)
	}
	if len(r.Delays) != 2 || r.Delays[0] != time.Second || r.Delays[1] != time.Second {
		t.Fatalf("delays %v", r.Delays)
	}
	miss := Score(series("0011110110", "1000000000"))
	if miss.Detected != 0 || miss.FalseDetections != 1 || math.Abs(miss.Raw-(-2.11)) > 1e-9 {
		t.Fatalf("all missed plus one false: %+v", miss)
	}
	// a long flagged run counts once
	long := Score(series("0000000000", "0111111100"))
	if long.FalseDetections != 1 {
		t.Fatalf("a flagged run of 7 counted %d times", long.FalseDetections)
	}
	// normalization: nothing flagged = 0, perfect = 100
	if s := NABScore([]Windowed{Score(series("0011", "0000"))}); s != 0 {
		t.Fatalf("null detector scores %g", s)
	}
	if s := NABScore([]Windowed{Score(series("0011", "0010"))}); math.Abs(s-100) > 1e-9 {
		t.Fatalf("perfect detector scores %g", s)
	}
}
