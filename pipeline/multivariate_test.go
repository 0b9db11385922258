package pipeline

import (
	"bytes"
	"github.com/vigil/vigil/contract"

	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// Three metrics that move together with a slow shared load: the load's
// swings (larger than any the warm-up saw) raise nothing, one metric
// leaving the others does (as a multivariate alert), and so does a
// one-reading spike (as a spike of that metric).
func TestMultivariateRelationshipAndSpike(t *testing.T) {
	cfg := testCfg()
	cfg.MVWarmup = 400
	off := NewOffline(cfg, "eu", nil)
	rng := rand.New(rand.NewPCG(5, 5))
	load := 0.0
	type hit struct {
		i       int
		feature string
	}
	var hits []hit
	for i := 0; i < 3000; i++ {
		load = 0.995*load + math.Sqrt(1-0.995*0.995)*rng.NormFloat64()
		a := 50 + 2*load + 0.2*rng.NormFloat64()
		b := 10 + 1*load + 0.1*rng.NormFloat64()
		c := 7 + 0.5*load + 0.05*rng.NormFloat64()
		if i >= 2000 && i < 2300 {
			// b leaves a and c, ramping in and out over 50 readings (no
			// jump): 4 units, 6 of b's warm-up spreads
			b -= 4 * math.Min(1, math.Min(float64(i-2000), float64(2300-i))/50)
		}
		if i == 2600 {
			c += 1.5 // a one-reading spike of 30 noise-sd
		}
		r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "pump", TS: t0.Add(secs(i)),
			Metrics: []contract.Metric{{Name: "a", Value: a}, {Name: "b", Value: b}, {Name: "c", Value: c}}}
		_, res := off.Step(&r)
		for _, al := range res.Alerts {
			if al.State == "open" {
				hits = append(hits, hit{i, al.Reasons[0].Feature})
			}
		}
	}
	var early, rel, spike int
	for _, h := range hits {
		switch {
		case h.i < 2000:
			early++
			t.Logf("alert before the break at %d: %s", h.i, h.feature)
		case h.i < 2300 && h.feature == contract.Multivariate:
			rel++
		case h.i == 2600 && h.feature == "c.spike":
			spike++
		}
	}
	if early != 0 || rel != 1 || spike != 1 {
		t.Fatalf("alerts %v: want none from the load, one multivariate for the break, one c.spike", hits)
	}
}

func secs(i int) time.Duration { return time.Duration(i) * time.Second }

// A metric that did not move during the multivariate warm-up gets no
// weight in the model, so the per-metric detector keeps watching it after
// the fit: a later jump of that metric alerts, led by that metric.
func TestUnweightedMetricStaysWatched(t *testing.T) {
	off := NewOffline(Default(), "eu", nil)
	rng := rand.New(rand.NewPCG(8, 8))
	ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	var alerts []contract.Alert
	for i := 0; i < 1500; i++ {
		setpoint := 5.0
		if i >= 1200 {
			setpoint = 7 // changed by hand, long after the fit
		}
		r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "d", TS: ts, IngestedAt: ts, Metrics: []contract.Metric{
			{Name: "temp_c", Value: 60 + rng.NormFloat64()}, {Name: "current_a", Value: 5 + 0.2*rng.NormFloat64()}, {Name: "setpoint", Value: setpoint}}}
		_, res := off.Step(&r)
		if i == 1199 {
			if m := off.part.Devices["d"].MV; m == nil || !m.Fitted || m.watches("setpoint") || !m.watches("temp_c") {
				t.Fatalf("the model should be fitted, weigh temp_c and not setpoint: %+v", m)
			}
		}
		for _, a := range res.Alerts {
			if a.State == "open" && i >= 1200 {
				alerts = append(alerts, a)
			}
		}
		ts = ts.Add(time.Second)
	}
	if len(alerts) == 0 || alerts[0].Metric != "setpoint" || alerts[0].TS.Sub(time.Date(2026, 3, 2, 0, 20, 0, 0, time.UTC)) > 5*time.Second {
		t.Fatalf("the setpoint's jump after the fit: alerts %+v, want one on setpoint within 5 s", alerts)
	}
}

// The warm-up keeps its values as float32 differences from the first
// one: a metric of a large magnitude (near 1e7, where a float32 step is
// 1, three times its smoothed noise) still fits a scale of its noise, and
// its normal readings stay quiet.
func TestMVWarmupKeepsPrecisionAtLargeMagnitudes(t *testing.T) {
	// from 1e9: raw sums of x and x² cancel there (the variance came out 0
	// and the metric was left out of the model)
	for _, mag := range []float64{1e7, 1e9, 1e10} {
		t.Run(strconv.FormatFloat(mag, 'g', -1, 64), func(t *testing.T) {
			d := &DeviceState{}
			p := &mvParams{warmup: 400, smooth: 10, threshold: 4, drift: 3, spike: 8}
			rng := rand.New(rand.NewPCG(9, 9))
			var obs MVObs
			for i := 0; i < 1000; i++ {
				a := mag + rng.NormFloat64()
				b := 5 + 0.1*rng.NormFloat64()
				d.mvObserve(p, []MetricObs{{Name: "a", Value: a}, {Name: "b", Value: b}}, t0.Add(secs(i)), &obs)
				if d.MV.Fitted && obs.Z >= 6 {
					t.Fatalf("reading %d of a normal device scored z %.1f", i, obs.Z)
				}
			}
			m := d.MV
			if !m.Fitted || m.scale()[0] <= 0 || m.weight()[0] <= 0 {
				t.Fatalf("the metric near %g is not in the model: %+v", mag, m)
			}
			// the smoothed values' spread is about 1/sqrt(10) of the noise
			if m.scale()[0] > 1 || m.scale()[0] < 0.1 {
				t.Fatalf("a metric near %g fitted a scale of %g, want its smoothed noise (about 0.3)", mag, m.scale()[0])
			}
			if math.Abs(m.med()[0]-mag) > 0.2 {
				t.Fatalf("a metric near %g fitted a median %f, want it within its smoothed noise", mag, m.med()[0])
			}
			// its trend ratio is a stationary metric's (about 1), as the
			// small metric's is
			if r := m.weight()[0] / m.weight()[1]; r < 0.2 || r > 5 {
				t.Fatalf("weights %v: the metric near %g weighs %.2f times the small one's", m.weight(), mag, r)
			}
			// a snapshot written before the accumulators were one
			// struct a metric has no Cols, and one of another metric set
			// has others: its collection starts again rather than
			// fitting nothing
			for _, old := range []*MVCollect{
				{Collected: 390},
				{Cols: make([]MVCol, 3), Collected: 390},
			} {
				m.Collect = old
				if c := m.collect(); len(c.Cols) != 2 || c.Collected != 0 {
					t.Fatalf("an old collection was kept: %+v", c)
				}
			}
		})
	}
}

// A fitted device's multivariate state is two arrays (F, PF) and a small
// struct, live and restored from a snapshot, with the same values; its
// snapshot encoding is the layout before session 18 (one array a
// quantity), so an older Vigil's snapshot restores into it, and one whose
// arrays do not fit one another starts the detector over.
func TestMVStatePackedAfterRestore(t *testing.T) {
	if sz := unsafe.Sizeof(MVState{}); sz > 112 {
		t.Errorf("MVState is %d bytes, want at most 112 (a size class)", sz)
	}
	pr := NewProcessor(Default(), "eu", nil)
	rng := rand.New(rand.NewPCG(3, 3))
	part := newPartition()
	var res StepResult
	for i := 0; i < 600; i++ {
		r := ingest1(i, 1, rng)
		pr.Step(part, &r, false, nil, &res)
	}
	live := part.Devices["dev-0"].MV
	if live == nil || !live.Fitted || !live.valid() {
		t.Fatal("the device's multivariate model is not fitted after 600 readings")
	}
	snap := &snapshots{dir: t.TempDir(), group: "g", topic: "raw"}
	if err := snap.save(0, part); err != nil {
		t.Fatal(err)
	}
	got, err := snap.load(0)
	if err != nil || got == nil {
		t.Fatalf("the snapshot did not load: %v", err)
	}
	r := got.Devices["dev-0"].MV
	if r == nil || !r.valid() {
		t.Fatal("the restored state is not valid")
	}
	for name, m := range map[string]*MVState{"live": live, "restored": r} {
		if cap(m.F) != len(m.F) || cap(m.PF) != len(m.PF) {
			t.Errorf("%s: arrays of %d and %d with capacities %d and %d: more than they hold", name, len(m.F), len(m.PF), cap(m.F), cap(m.PF))
		}
	}
	if !slices.Equal(live.F, r.F) || !slices.Equal(live.PF, r.PF) || live.Smooth != r.Smooth || live.SinceFit != r.SinceFit {
		t.Errorf("restored %+v, live %+v", r, live)
	}
	// the encoding is the earlier layout's: what an older Vigil wrote
	// restores, and what this one writes an older one reads
	w := live.wire()
	old, err := w.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := live.MarshalMsg(nil)
	if err != nil || !bytes.Equal(enc, old) {
		t.Fatalf("the state encodes otherwise than the earlier layout (%v)", err)
	}
	var fromOld MVState
	if _, err := fromOld.UnmarshalMsg(old); err != nil || !slices.Equal(fromOld.F, live.F) || !slices.Equal(fromOld.PF, live.PF) {
		t.Fatalf("an earlier layout's snapshot restored %+v (%v), want %+v", fromOld, err, live)
	}
	n := len(live.Names)
	for _, c := range []struct {
		name string
		edit func(w *mvWire)
	}{
		{"a sum short", func(w *mvWire) { w.Sum = w.Sum[:n-1] }},
		{"a ring not whole windows", func(w *mvWire) { w.Ring = w.Ring[:len(w.Ring)-1] }},
		{"fitted without noises", func(w *mvWire) { w.Noise = nil }},
		{"a position beyond the window", func(w *mvWire) { w.Pos = []int32{0, 0, 0, 99}[:n] }},
		{"a negative fill", func(w *mvWire) { w.Filled = append([]int32{-1}, w.Filled[1:]...) }},
	} {
		w := live.wire()
		w.Sum, w.Noise, w.Pos, w.Filled = slices.Clone(w.Sum), slices.Clone(w.Noise), slices.Clone(w.Pos), slices.Clone(w.Filled)
		c.edit(&w)
		b, err := w.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		var m MVState
		if _, err := m.UnmarshalMsg(b); err != nil || m.valid() {
			t.Errorf("%s: decoded valid %v (%v), want a state that starts over", c.name, m.valid(), err)
		}
	}
}

// A refit keeps every mvRefitEvery-th smoothed value (its array sized for
// them), the first fit every value; the refitted model follows the
// device's new set point.
func TestMVRefitKeepsEveryFourthValue(t *testing.T) {
	cfg := Default()
	cfg.MVRefit = 1000
	pr := NewProcessor(cfg, "eu", nil)
	rng := rand.New(rand.NewPCG(5, 5))
	part := newPartition()
	var res StepResult
	maxVals := func() (n, c int) {
		if m := part.Devices["dev-0"].MV; m != nil && m.Collect != nil {
			for _, col := range m.Collect.Cols {
				n, c = max(n, len(col.Vals)), max(c, cap(col.Vals))
			}
		}
		return n, c
	}
	step := func(i int, shift float64) {
		r := ingest1(i, 1, rng)
		r.Metrics[0].Value += shift
		pr.Step(part, &r, false, nil, &res)
	}
	i := 0
	for ; i < cfg.MVWarmup-1; i++ {
		step(i, 0)
	}
	if n, _ := maxVals(); n < cfg.MVWarmup-cfg.MVSmooth {
		t.Fatalf("the first fit collected %d values a metric, want every smoothed one (about %d)", n, cfg.MVWarmup-cfg.MVSmooth)
	}
	step(i, 0)
	i++
	m := part.Devices["dev-0"].MV
	if !m.Fitted {
		t.Fatal("not fitted after mv_warmup readings")
	}
	med := m.med()[slices.Index(m.Names, "temp_c")]
	// the set point of temp_c moves by 0.5 (half a noise deviation: the
	// refit collects most readings) before the refit
	refitted := false
	for end := i + cfg.MVRefit + 3*cfg.MVWarmup; i < end && !refitted; i++ {
		before := m.SinceFit
		step(i, 0.5)
		refitted = m.SinceFit < before
		if n, c := maxVals(); n > cfg.MVWarmup/4 || c > cfg.MVWarmup/4 {
			t.Fatalf("reading %d: a refit holds %d values a metric (capacity %d), want at most a quarter of mv_warmup, %d", i, n, c, cfg.MVWarmup/4)
		}
	}
	if !refitted {
		t.Fatalf("no refit within mv_refit and three mv_warmups of readings")
	}
	if got := m.med()[slices.Index(m.Names, "temp_c")]; math.Abs(got-med-0.5) > 0.2 {
		t.Errorf("the refitted median of temp_c is %.3f, want about %.3f (the first fit's %.3f moved by 0.5)", got, med+0.5, med)
	}
}
