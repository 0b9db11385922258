package eval

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-json-experiment/json"
)

// NAB's format and scoring method (the Numenta Anomaly Benchmark): a
// data set is data/<folder>/<series>.csv files of `timestamp,value` rows
// and labels/windows.json, which maps each series to its anomaly windows
// ([start, end] timestamps, inclusive). A detector is scored on its
// detections (for Vigil, the readings that raised an alert) by the
// application profiles below.

// NABProfile is one of NAB's application profiles: the weight of a found
// window, of a false detection and of a missed window.
type NABProfile struct {
	Name       string
	TP, FP, FN float64
}

// NABProfiles are NAB's three profiles, standard first.
var NABProfiles = []NABProfile{
	{"standard", 1, 0.11, 1},
	{"reward_low_FP_rate", 1, 0.22, 1},
	{"reward_low_FN_rate", 1, 0.11, 2},
}

// NABProbation is the number of leading rows of a series of n rows in
// which detections do not count: 15 % of its rows, at most 750.
func NABProbation(n int) int { return min(int(math.Floor(0.15*float64(n))), 750) }

// nabScaledSigma is NAB's scaled sigmoid: 2/(1+e^(5y)) - 1, and -1 for
// y beyond 3 (a detection far after the preceding window).
func nabScaledSigma(y float64) float64 {
	if y > 3 {
		return -1
	}
	return nabSigma(y)
}

// NABSeriesScore is one series scored under one profile.
type NABSeriesScore struct {
	Windows, Found  int
	FalseDetections int     // detections outside every window, after the probation
	Raw             float64 // rewards minus costs
	Null, Perfect   float64 // what silence and a perfect detector would score
	FirstDetections []int   // per window, the index of its first detection (-1: missed)
}

// ScoreNAB scores the detections (row indexes, any order) of a series of
// n rows with the given windows (row indexes, inclusive, in order) under
// profile p, by NAB's method:
//   - detections in the probation period (NABProbation(n)) do not count;
//   - each window earns p.TP·σ(y)/σ(-1) for its earliest detection, where
//     y = -(end - i + 1)/width is the detection's position (-1 at the
//     window's first row, about 0 at its last), or costs p.FN when missed;
//     later detections in a window neither earn nor cost;
//   - a detection outside every window costs p.FP·σ(y), y = (i - end of
//     the preceding window)/(its width - 1), or p.FP when no window
//     precedes it (σ is -1 beyond y = 3).
func ScoreNAB(n int, windows []Window, detections []int, p NABProfile) NABSeriesScore {
	det := append([]int(nil), detections...)
	sort.Ints(det)
	prob := NABProbation(n)
	s := NABSeriesScore{Windows: len(windows), FirstDetections: make([]int, len(windows))}
	for k := range s.FirstDetections {
		s.FirstDetections[k] = -1
	}
	s.Null = -p.FN * float64(len(windows))
	s.Perfect = p.TP * float64(len(windows))
	top := nabSigma(-1)
	for _, i := range det {
		if i < prob || i < 0 || i >= n {
			continue
		}
		k := sort.Search(len(windows), func(k int) bool { return windows[k].End >= i })
		if k < len(windows) && windows[k].Start <= i {
			if s.FirstDetections[k] < 0 {
				s.FirstDetections[k] = i
				w := windows[k]
				width := float64(w.End - w.Start + 1)
				s.Raw += p.TP * nabSigma(-float64(w.End-i+1)/width) / top
				s.Found++
			}
			continue
		}
		s.FalseDetections++
		if k == 0 {
			s.Raw -= p.FP
			continue
		}
		prev := windows[k-1]
		y := float64(i - prev.End)
		if w := float64(prev.End - prev.Start); w > 0 {
			y /= w
		} else {
			y = 4
		}
		s.Raw += p.FP * nabScaledSigma(y)
	}
	s.Raw -= p.FN * float64(len(windows)-s.Found)
	return s
}

// NABNormalized is 100·(raw - null)/(perfect - null) over several series:
// 0 is silence, 100 a perfect detector.
func NABNormalized(ss []NABSeriesScore) float64 {
	var raw, null, perfect float64
	for _, s := range ss {
		raw, null, perfect = raw+s.Raw, null+s.Null, perfect+s.Perfect
	}
	if perfect == null {
		return 0
	}
	return 100 * (raw - null) / (perfect - null)
}

// LoadNAB reads a NAB-format data set: every data/**/*.csv with its
// windows from labels/windows.json. A series missing from windows.json is
// refused (a typo would otherwise score as a series with no anomaly).
// Each row's Anomaly is set when it lies in a window, and the series'
// Windows hold the windows as row indexes.
func LoadNAB(dir string) ([]Series, error) {
	lb, err := os.ReadFile(filepath.Join(dir, "labels", "windows.json"))
	if err != nil {
		return nil, fmt.Errorf("NAB data set %s: %w (want labels/windows.json beside data/)", dir, err)
	}
	var labels map[string][][2]string
	if err := json.Unmarshal(lb, &labels); err != nil {
		return nil, fmt.Errorf("NAB data set %s: labels/windows.json: %w", dir, err)
	}
	root := filepath.Join(dir, "data")
	var files []string
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".csv") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("NAB data set %s: %w", dir, err)
	}
	sort.Strings(files)
	var out []Series
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		rel = filepath.ToSlash(rel)
		wins, ok := labels[rel]
		if !ok {
			return nil, fmt.Errorf("NAB data set %s: %s has no entry in labels/windows.json", dir, rel)
		}
		s, err := loadDelimited(f, ',', "-")
		if err != nil {
			return nil, err
		}
		s.Name = rel
		for wi, w := range wins {
			from, err1 := parseTime(strings.TrimSpace(w[0]))
			to, err2 := parseTime(strings.TrimSpace(w[1]))
			if err1 != nil || err2 != nil || to.Before(from) {
				return nil, fmt.Errorf("NAB data set %s: window %d of %s: %q..%q is not a time range", dir, wi, rel, w[0], w[1])
			}
			win := Window{Start: -1, End: -1}
			for i, r := range s.Rows {
				if !r.TS.Before(from) && !r.TS.After(to) {
					if win.Start < 0 {
						win.Start = i
					}
					win.End = i
					s.Rows[i].Anomaly = true
				}
			}
			if win.Start >= 0 {
				s.Windows = append(s.Windows, win)
			}
		}
		sort.Slice(s.Windows, func(a, b int) bool { return s.Windows[a].Start < s.Windows[b].Start })
		out = append(out, *s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("NAB data set %s: no CSV files under data/", dir)
	}
	return out, nil
}

// NABDetections are the readings of a series that raised an alert: the
// first reading of each incident (a reading whose incident differs from
// every earlier one of the device).
func NABDetections(incidents []string) []int {
	var out []int
	seen := map[string]bool{}
	for i, inc := range incidents {
		if inc != "" && !seen[inc] {
			seen[inc] = true
			out = append(out, i)
		}
	}
	return out
}

// NABTable is a NAB result over several series for every profile.
type NABTable struct {
	Series   []string
	Rows     int
	Scores   [][]NABSeriesScore // [profile][series]
	Profiles []NABProfile
}

// ScoreNABSet scores each series' detections under every profile.
func ScoreNABSet(data []Series, detections [][]int) NABTable {
	t := NABTable{Profiles: NABProfiles, Scores: make([][]NABSeriesScore, len(NABProfiles))}
	for i, s := range data {
		t.Series = append(t.Series, s.Name)
		t.Rows += len(s.Rows)
		for k, p := range NABProfiles {
			t.Scores[k] = append(t.Scores[k], ScoreNAB(len(s.Rows), s.Windows, detections[i], p))
		}
	}
	return t
}

// Normalized is the profile's normalized score over every series.
func (t NABTable) Normalized(profile int) float64 { return NABNormalized(t.Scores[profile]) }

// Found and FalseDetections total over the series (standard profile).
func (t NABTable) Found() (found, windows, falseDet int) {
	for _, s := range t.Scores[0] {
		found, windows, falseDet = found+s.Found, windows+s.Windows, falseDet+s.FalseDetections
	}
	return
}

// String prints a per-series table and the totals of every profile.
func (t NABTable) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-58s %7s %6s %9s\n", "series", "windows", "false", "standard")
	for i, name := range t.Series {
		s := t.Scores[0][i]
		fmt.Fprintf(&b, "%-58s %3d/%-3d %6d %9.2f\n", name, s.Found, s.Windows, s.FalseDetections, s.Raw)
	}
	found, windows, fd := t.Found()
	fmt.Fprintf(&b, "NAB")
	for k, p := range t.Profiles {
		fmt.Fprintf(&b, "  %s %.1f", p.Name, t.Normalized(k))
	}
	fmt.Fprintf(&b, "  windows found %d/%d  false detections %d\n", found, windows, fd)
	return b.String()
}
