package pipeline

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/vigil/vigil/contract"
)

// A device judged by its multivariate model: a lasting change of one
// metric alerts once, and after accept_after its incident closes as
// accepted and the model's level moves, so it raises nothing more; a
// fault shorter than accept_after stays an anomaly for its whole length.
func TestMultivariateAcceptsLastingChange(t *testing.T) {
	cfg := testCfg()
	cfg.MVWarmup, cfg.MVRefit, cfg.AcceptAfter = 400, 3600, 10*time.Minute
	off := NewOffline(cfg, "r", nil)
	rng := rand.New(rand.NewPCG(6, 6))
	i := 0
	step := func(shift float64) *StepResult {
		load := rng.NormFloat64()
		r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "m", TS: t0.Add(time.Duration(i) * time.Second), IngestedAt: t0,
			Metrics: []contract.Metric{{Name: "temp", Value: 60 + 2*load + 0.3*rng.NormFloat64() + shift}, {Name: "current", Value: 5 + 0.5*load + 0.1*rng.NormFloat64()},
				{Name: "flow", Value: 10 + load + 0.2*rng.NormFloat64()}}}
		i++
		_, res := off.Step(&r)
		return res
	}
	for i < 1500 {
		step(0)
	}
	if ds := off.part.Devices["m"]; ds.MV == nil || !ds.MV.Fitted {
		t.Fatal("the multivariate model is not fitted")
	}
	if n := len(off.part.Devices["m"].Incidents); n != 0 {
		t.Fatalf("%d incidents open before the change", n)
	}
	// a fault of 5 minutes: anomalous throughout, never accepted
	opened, accepted := 0, 0
	flagged := 0
	for k := 0; k < 300; k++ {
		res := step(6)
		if res.Incident != "" {
			flagged++
		}
		for _, a := range res.Alerts {
			if a.State == "open" {
				opened++
			}
			if a.Accepted {
				accepted++
			}
		}
	}
	if opened != 1 || accepted != 0 || flagged < 280 {
		t.Fatalf("5-minute fault: %d alerts opened, %d accepted, %d of 300 readings in the incident", opened, accepted, flagged)
	}
	for k := 0; k < 1200; k++ { // back to normal; the incident closes
		step(0)
	}
	// a lasting change: one alert, accepted after 10 minutes, then quiet
	opened, accepted = 0, 0
	var acceptedAt, lastOpen int
	for k := 0; k < 3000; k++ {
		for _, a := range step(6).Alerts {
			if a.State == "open" {
				opened++
				lastOpen = k
			}
			if a.Accepted {
				accepted++
				acceptedAt = k
			}
		}
	}
	if opened != 1 || accepted != 1 || acceptedAt < 600 || acceptedAt > 700 {
		t.Fatalf("lasting change: %d alerts opened (last at %d), %d accepted at reading %d; want 1, accepted after 600", opened, lastOpen, accepted, acceptedAt)
	}
}
