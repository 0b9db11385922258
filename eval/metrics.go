// Package eval measures detection quality the way a user would: it replays
// a labelled data set through a running Vigil (the real ingest API and
// pipeline), reads back every reading's score, and computes SKAB's
// outlier-detection metrics, a NAB-style windowed score, detection delays
// and alerts per device-day.
package eval

import (
	"math"
	"time"
)

// Point is one scored reading of one device, in event-time order.
type Point struct {
	TS      time.Time
	Truth   bool // labelled anomalous
	Flagged bool // Vigil's score reached the threshold
}

// Counts are a confusion matrix over points.
type Counts struct{ TP, FP, FN, TN int }

// Add counts one point.
func (c *Counts) Add(p Point) {
	switch {
	case p.Truth && p.Flagged:
		c.TP++
	case !p.Truth && p.Flagged:
		c.FP++
	case p.Truth:
		c.FN++
	default:
		c.TN++
	}
}

// Merge adds other's counts.
func (c *Counts) Merge(o Counts) { c.TP, c.FP, c.FN, c.TN = c.TP+o.TP, c.FP+o.FP, c.FN+o.FN, c.TN+o.TN }

// F1 is SKAB's F1 = TP / (TP + (FN + FP) / 2); 0 when undefined.
func (c Counts) F1() float64 {
	d := float64(c.TP) + float64(c.FN+c.FP)/2
	if d == 0 {
		return 0
	}
	return float64(c.TP) / d
}

// FAR is the false alarm rate FP / (FP + TN).
func (c Counts) FAR() float64 {
	if c.FP+c.TN == 0 {
		return 0
	}
	return float64(c.FP) / float64(c.FP+c.TN)
}

// MAR is the missed alarm rate FN / (FN + TP).
func (c Counts) MAR() float64 {
	if c.FN+c.TP == 0 {
		return 0
	}
	return float64(c.FN) / float64(c.FN+c.TP)
}

// Window is one labelled anomaly: a run of consecutive anomalous points.
type Window struct{ Start, End int } // indexes into the points, inclusive

// Windows finds the labelled anomaly windows of a series.
func Windows(ps []Point) []Window {
	var ws []Window
	for i := 0; i < len(ps); i++ {
		if !ps[i].Truth {
			continue
		}
		j := i
		for j+1 < len(ps) && ps[j+1].Truth {
			j++
		}
		ws = append(ws, Window{i, j})
		i = j
	}
	return ws
}

// nabSigma is NAB's scaled sigmoid of the relative position y of a
// detection: y = -1 at the window's start, 0 at its end; early detections
// earn almost 1, late ones almost 0.
func nabSigma(y float64) float64 { return 2/(1+math.Exp(5*y)) - 1 }

// NAB weights of the standard profile.
const (
	nabTP = 1.0
	nabFN = -1.0
	nabFP = -0.11
)

// Windowed is the NAB-style result of one series.
type Windowed struct {
	Windows, Detected int
	FalseDetections   int             // flagged runs that start outside every window
	Raw               float64         // sum of rewards and penalties
	Delays            []time.Duration // first detection minus window start, per detected window
}

// Score computes the NAB-style windowed score: each window earns
// nabTP·σ(y) for its first detection (y its relative position in the
// window), or nabFN when missed; each flagged run that begins outside every
// window costs nabFP. Only the first point of a flagged run counts as a
// detection, as an alert does.
func Score(ps []Point) Windowed {
	ws := Windows(ps)
	r := Windowed{Windows: len(ws)}
	in := make([]int, len(ps)) // window index+1 of each point, 0 outside
	for k, w := range ws {
		for i := w.Start; i <= w.End; i++ {
			in[i] = k + 1
		}
	}
	detected := make([]bool, len(ws))
	for i, p := range ps {
		if !p.Flagged || (i > 0 && ps[i-1].Flagged) && in[i] == in[i-1] {
			continue // not the start of a flagged run (a run entering a window counts again)
		}
		if k := in[i] - 1; k >= 0 {
			if !detected[k] {
				detected[k] = true
				w := ws[k]
				n := w.End - w.Start + 1
				y := -1.0
				if n > 1 {
					y = float64(i-w.Start)/float64(n-1) - 1
				}
				r.Raw += nabTP * nabSigma(y)
				r.Detected++
				r.Delays = append(r.Delays, p.TS.Sub(ps[w.Start].TS))
			}
			continue
		}
		r.FalseDetections++
		r.Raw += nabFP
	}
	r.Raw += nabFN * float64(len(ws)-r.Detected)
	return r
}

// NABScore normalizes summed windowed results to 0-100: 0 is a detector
// that flags nothing, 100 one that flags every window at its first point.
func NABScore(rs []Windowed) float64 {
	var raw, null, perfect float64
	for _, r := range rs {
		raw += r.Raw
		null += nabFN * float64(r.Windows)
		perfect += nabTP * nabSigma(-1) * float64(r.Windows)
	}
	if perfect == null {
		return 0
	}
	return 100 * (raw - null) / (perfect - null)
}
