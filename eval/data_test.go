package eval

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The SKAB development data shipped beside the repository: 34 labelled
// files (anomaly-free.csv has no labels and is skipped), 8 metrics each.
func TestLoadSKAB(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "data", "skab")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("SKAB data expected at %s (shared/ beside the repository): %v", dir, err)
	}
	ss, err := LoadSKAB(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 34 {
		t.Fatalf("%d labelled files, want 34", len(ss))
	}
	anomalous := 0
	for _, s := range ss {
		if len(s.Rows) < 700 || len(s.Rows[0].Metrics) != 8 {
			t.Fatalf("%s: %d rows, %d metrics", s.Name, len(s.Rows), len(s.Rows[0].Metrics))
		}
		for _, r := range s.Rows {
			if r.Anomaly {
				anomalous++
			}
		}
	}
	if anomalous < 10000 {
		t.Fatalf("only %d anomalous rows", anomalous)
	}
	if ss[0].Rows[0].Metrics[7].Name != "Volume_Flow_RateRMS" {
		t.Fatalf("metric name %q", ss[0].Rows[0].Metrics[7].Name)
	}
}

func TestLoadPlain(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "x.csv")
	lab := filepath.Join(dir, "labels.csv")
	_ = os.WriteFile(csv, []byte("timestamp,value,other\n2026-01-01T00:00:00Z,1,2\n2026-01-01T00:00:01Z,9,2\n1767225602000,1,2\n"), 0o644)
	_ = os.WriteFile(lab, []byte("timestamp,label\n2026-01-01 00:00:01,1\n"), 0o644)
	s, err := LoadPlain(csv, lab)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rows) != 3 || !s.Rows[1].Anomaly || s.Rows[0].Anomaly || s.Rows[1].Metrics[0].Value != 9 || !s.Rows[2].TS.Equal(time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)) {
		t.Fatalf("%+v", s.Rows)
	}
	if _, err := LoadPlain(csv+"x", lab); err == nil {
		t.Fatal("missing file accepted")
	}
}
