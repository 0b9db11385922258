package simulate

import (
	"testing"
	"time"
)

// Score on a hand-computed case: two anomalies, one detected after 3 s, one
// missed; one alert during an anomaly still running (neither), one false.
func TestScore(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	anoms := []Anomaly{
		{DeviceID: "a", Kind: Spike, Start: at(100), End: at(100)},
		{DeviceID: "b", Kind: Drift, Start: at(200), End: at(320)},
	}
	active := []Anomaly{{DeviceID: "c", Kind: Stuck, Start: at(500)}}
	alerts := []AlertRef{
		{AlertID: "1", DeviceID: "a", TS: at(103)}, // detects a's spike within grace (3 s)
		{AlertID: "2", DeviceID: "a", TS: at(100)}, // same anomaly, earlier: delay 0
		{AlertID: "3", DeviceID: "b", TS: at(400)}, // after b's end + 30 s grace: false
		{AlertID: "4", DeviceID: "c", TS: at(510)}, // during c's running anomaly
		{AlertID: "5", DeviceID: "a", TS: at(131)}, // 31 s after a's end: false
	}
	r := Score(anoms, active, alerts, 10, 12*time.Hour)
	if r.Injected != 2 || r.Alerted != 1 || r.FalseAlerts != 2 || r.Alerts != 5 {
		t.Fatalf("got %+v", r)
	}
	if len(r.Delays) != 1 || r.Delays[0] != 0 {
		t.Fatalf("delays %v, want [0s]", r.Delays)
	}
	if r.DeviceDays != 5 {
		t.Fatalf("device-days %g, want 10 devices × 0.5 day = 5", r.DeviceDays)
	}
	if r.ByKind[Spike].Alerted != 1 || r.ByKind[Drift].Alerted != 0 || r.ByKind[Drift].Injected != 1 {
		t.Fatalf("by kind %+v %+v", r.ByKind[Spike], r.ByKind[Drift])
	}
	if q := Quantile([]time.Duration{3, 1, 2}, 0.5); q != 2 {
		t.Fatalf("median of 1,2,3 = %d", q)
	}
}
