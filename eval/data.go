package eval

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metric is one named value of a row.
type Metric struct {
	Name  string
	Value float64
}

// Row is one reading of a labelled series.
type Row struct {
	TS      time.Time
	Metrics []Metric
	Anomaly bool
}

// Series is one labelled file: one device.
type Series struct {
	Name string // file path relative to the data set
	Rows []Row
	// Windows are the labelled anomaly windows as row indexes (NAB data
	// sets; empty for SKAB, whose rows carry their labels).
	Windows []Window
}

// metricName makes a column header a valid metric name ("Volume Flow
// RateRMS" becomes "Volume_Flow_RateRMS").
func metricName(h string) string {
	var b strings.Builder
	for _, c := range strings.TrimSpace(h) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05", time.RFC3339Nano, "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if ms, err := strconv.ParseFloat(s, 64); err == nil {
		return time.UnixMilli(int64(ms)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time %q is neither YYYY-MM-DD hh:mm:ss, RFC 3339 nor epoch milliseconds", s)
}

// LoadSKAB reads every labelled SKAB file under dir (`;`-separated, a
// datetime column, metric columns, then anomaly and changepoint). Files
// without an anomaly column (anomaly-free.csv) are skipped: the benchmark
// scores labelled files only.
func LoadSKAB(dir string) ([]Series, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".csv") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read data set %s: %w", dir, err)
	}
	sort.Strings(files)
	var out []Series
	for _, f := range files {
		s, err := loadDelimited(f, ';', "")
		if err != nil {
			return nil, err
		}
		if s == nil {
			continue
		}
		rel, _ := filepath.Rel(dir, f)
		s.Name = rel
		out = append(out, *s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no labelled SKAB files under %s", dir)
	}
	return out, nil
}

// LoadPlain reads a `timestamp,value[,...]` CSV with a header and a labels
// file of `timestamp,label` lines (label 1 or 0) marking anomalous
// readings; timestamps absent from the labels file are normal.
func LoadPlain(csvPath, labelsPath string) (*Series, error) {
	return loadDelimited(csvPath, ',', labelsPath)
}

func loadDelimited(path string, sep rune, labelsPath string) (*Series, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() {
		return nil, fmt.Errorf("%s: empty file", path)
	}
	header := strings.Split(sc.Text(), string(sep))
	anomalyCol, cpCol := -1, -1
	var metricCols []int
	var names []string
	for i, h := range header {
		switch strings.TrimSpace(strings.ToLower(h)) {
		case "anomaly":
			anomalyCol = i
		case "changepoint":
			cpCol = i
		default:
			if i > 0 {
				metricCols = append(metricCols, i)
				names = append(names, metricName(h))
			}
		}
	}
	_ = cpCol
	var labels map[string]bool
	switch {
	case labelsPath == "-": // labelled elsewhere (NAB's windows)
	case labelsPath != "":
		if labels, err = loadLabels(labelsPath); err != nil {
			return nil, err
		}
	case anomalyCol < 0:
		return nil, nil // an unlabelled file
	}
	s := &Series{Name: path}
	line := 1
	for sc.Scan() {
		line++
		txt := strings.TrimSpace(sc.Text())
		if txt == "" {
			continue
		}
		cells := strings.Split(txt, string(sep))
		if len(cells) != len(header) {
			return nil, fmt.Errorf("%s:%d: %d cells, header has %d", path, line, len(cells), len(header))
		}
		ts, err := parseTime(strings.TrimSpace(cells[0]))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		r := Row{TS: ts}
		for k, c := range metricCols {
			v, err := strconv.ParseFloat(strings.TrimSpace(cells[c]), 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: column %s: %w", path, line, header[c], err)
			}
			r.Metrics = append(r.Metrics, Metric{names[k], v})
		}
		if anomalyCol >= 0 {
			v, _ := strconv.ParseFloat(strings.TrimSpace(cells[anomalyCol]), 64)
			r.Anomaly = v >= 0.5
		}
		if labels != nil {
			r.Anomaly = labels[ts.Format(time.RFC3339Nano)]
		}
		s.Rows = append(s.Rows, r)
	}
	return s, sc.Err()
}

func loadLabels(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ",")
		if len(parts) < 2 {
			continue
		}
		ts, err := parseTime(strings.TrimSpace(parts[0]))
		if err != nil {
			continue // the header
		}
		out[ts.Format(time.RFC3339Nano)] = strings.TrimSpace(parts[1]) == "1"
	}
	return out, sc.Err()
}
