package pipeline

import (
	"math/rand/v2"
	"testing"
	"time"
)

// A device idle for longer than device_idle_ttl (by ingest time) has its
// state dropped, by a clock taken from the data (a replay evicts the same
// devices); when it comes back it is warmed up again and raises nothing
// while it warms.
func TestIdleDeviceEviction(t *testing.T) {
	cfg := testCfg()
	cfg.DeviceIdleTTL = 24 * time.Hour
	off := NewOffline(cfg, "r", nil)
	step := func(dev string, i int, v float64, ingested time.Time) *StepResult {
		r := reading(dev, i, v)
		r.IngestedAt = ingested
		_, res := off.Step(&r)
		return res
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for i := 0; i < 50; i++ {
		step("idle", i, 20+rng.NormFloat64(), t0)
	}
	if n := len(off.part.Devices["idle"].Incidents); n != 0 {
		t.Fatalf("the idle device has %d open incidents before it goes quiet", n)
	}
	later := t0.Add(48 * time.Hour)
	for i := 0; i < 2*evictEvery; i++ {
		step("busy", i, 20+rng.NormFloat64(), later)
		if i == 10 && off.part.Devices["idle"] == nil {
			t.Fatal("evicted before a scan")
		}
	}
	if off.part.Devices["idle"] != nil || off.part.Devices["busy"] == nil || off.part.Evicted != 1 {
		t.Fatalf("after two days: idle kept %v, busy kept %v, evicted %d", off.part.Devices["idle"] != nil, off.part.Devices["busy"] != nil, off.part.Evicted)
	}
	// it comes back with a value its old baseline would have flagged: it is
	// warming up again, so no alert
	res := step("idle", 51, 90, later)
	if ds := off.part.Devices["idle"]; ds == nil || ds.N != 1 || res.Score != 0 || len(res.Alerts) != 0 {
		t.Fatalf("a returning device: state %+v, score %v, alerts %d", ds, res.Score, len(res.Alerts))
	}
	// with the TTL off nothing is evicted
	cfg.DeviceIdleTTL = 0
	off = NewOffline(cfg, "r", nil)
	step("idle", 0, 20, t0)
	for i := 0; i < 2*evictEvery; i++ {
		step("busy", i, 20+rng.NormFloat64(), later)
	}
	if off.part.Devices["idle"] == nil {
		t.Fatal("evicted with device_idle_ttl 0")
	}
}
