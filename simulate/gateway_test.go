package simulate

import (
	"math"
	"sort"
	"testing"
	"time"
)

// A gateway (every gateway_every-th device) reports a request count alone:
// non-negative whole numbers with a heavy tail (bursts far beyond the
// usual counts), and its anomalies are on that count; the other devices
// report the pumps' four metrics as before.
func TestGatewaysReportHeavyTailedCounts(t *testing.T) {
	f := New(Config{Devices: 8, Rate: 1, AnomalyEvery: 20 * time.Minute, Warmup: 30, Seed: 1, GatewayEvery: 4}, Options{})
	counts := map[string][]float64{}
	pumps := 0
	f.Replay(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), 3*time.Hour, func(r map[string]any) {
		m := r["metrics"].(map[string]float64)
		id := r["device_id"].(string)
		if v, ok := m[requestsName]; ok {
			if len(m) != 1 {
				t.Fatalf("gateway %s reported %v, want the request count alone", id, m)
			}
			if v < 0 || v != math.Round(v) {
				t.Fatalf("gateway %s counted %v requests", id, v)
			}
			counts[id] = append(counts[id], v)
			return
		}
		if len(m) != len(metricSpecs) {
			t.Fatalf("pump %s reported %v", id, m)
		}
		pumps++
	})
	if len(counts) != 2 || pumps == 0 {
		t.Fatalf("%d gateways and %d pump readings, want 2 gateways (sim-0003, sim-0007) and pumps", len(counts), pumps)
	}
	for id, c := range counts {
		sort.Float64s(c)
		med, p999 := c[len(c)/2], c[len(c)*999/1000]
		if p999 < 2.5*med {
			t.Errorf("%s: the 99.9th percentile %v is not far beyond the median %v: no heavy tail", id, p999, med)
		}
	}
	kinds := map[string]bool{}
	for _, a := range f.Anomalies() {
		if a.DeviceID == "sim-0003" || a.DeviceID == "sim-0007" {
			if a.Metric != requestsName && a.Kind != Dropout {
				t.Errorf("a gateway's %s anomaly is on %q", a.Kind, a.Metric)
			}
			kinds[a.Kind] = true
		}
	}
	if len(kinds) < 3 {
		t.Errorf("the gateways got anomalies of %d kinds in 3 hours: %v", len(kinds), kinds)
	}
}
