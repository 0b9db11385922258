package main

import (
	"github.com/vigil/vigil/contract"

	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/simulate"
)

// replayFleet generates span of the simulated fleet's readings (no server,
// no clock) and runs them through the pipeline's processor with the
// built-in configuration, then scores the alerts against the injected
// anomalies exactly as a live `vigil serve --simulate` run is scored.
func replayFleet(t testing.TB, sc simulate.Config, span time.Duration) simulate.Report {
	fleet, alerts := replayFleetAlerts(t, sc, span)
	rep, err := fleet.ReportFrom(func(time.Time) []simulate.AlertRef { return alerts })
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// replayFleetAlerts is replayFleet's replay: the fleet (its ground truth)
// and the alerts opened.
func replayFleetAlerts(t testing.TB, sc simulate.Config, span time.Duration) (*simulate.Fleet, []simulate.AlertRef) {
	// SIM_ENV="VIGIL_PIPELINE_MV_REFIT=5000 ..." measures other settings
	cfg, err := loadConfig("", strings.Fields(os.Getenv("SIM_ENV")))

	if err != nil {
		t.Fatal(err)
	}
	fleet := simulate.New(sc, simulate.Options{})
	off := pipeline.NewOffline(cfg.Pipeline, "sim", nil)
	var alerts []simulate.AlertRef
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	var names []string
	fleet.Replay(start, span, func(m map[string]any) {
		ts, _ := time.Parse(time.RFC3339Nano, m["ts"].(string))
		r := contract.Reading{ID: m["id"].(string), DeviceID: m["device_id"].(string), TS: ts, IngestedAt: ts}
		metrics := m["metrics"].(map[string]float64)
		names = names[:0]
		for k := range metrics {
			names = append(names, k)
		}
		sort.Strings(names) // the order JSON gives them on the real path
		for _, k := range names {
			r.Metrics = append(r.Metrics, contract.Metric{Name: k, Value: metrics[k]})
		}
		for k, v := range m["attrs"].(map[string]string) {
			r.Attrs = append(r.Attrs, contract.Attr{Name: k, Value: v})
		}
		_, res := off.Step(&r)
		for _, a := range res.Alerts {
			if a.State == "open" {
				alerts = append(alerts, simulate.AlertRef{AlertID: a.AlertID, DeviceID: a.DeviceID, TS: a.TS, Metric: a.Metric})
			}
		}
	})
	return fleet, alerts
}

// simEnv applies SIM_DEVICES, SIM_EVERY and SIM_SPAN, when set, to a
// replayed fleet, and reports whether any was.
func simEnv(sc *simulate.Config, span *time.Duration) bool {
	set := false
	if v := os.Getenv("SIM_DEVICES"); v != "" {
		sc.Devices, _ = strconv.Atoi(v)
		set = true
	}
	if v := os.Getenv("SIM_EVERY"); v != "" {
		sc.AnomalyEvery, _ = time.ParseDuration(v)
		set = true
	}
	if v := os.Getenv("SIM_SPAN"); v != "" {
		*span, _ = time.ParseDuration(v)
		set = true
	}
	return set
}

// TestSimulatedFleetDetection: with the built-in configuration, at least
// 95 % of the anomalies injected into the simulated fleet are alerted, with
// at most 1 false alert per device-day; the report gives the delays.
func TestSimulatedFleetDetection(t *testing.T) {
	cfg, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Simulate // the demo's fleet: 1 reading/s, an anomaly every 20 min per device, one device in four a gateway
	sc.Devices = 300
	span := 2 * time.Hour
	if os.Getenv("SIM_LONG") != "" {
		sc.Devices, span = 1000, 6*time.Hour
	}
	simEnv(&sc, &span) // a live run's settings
	rep := replayFleet(t, sc, span)
	t.Logf("\n%s", rep.String())
	if rep.Injected < 100 {
		t.Fatalf("only %d anomalies injected", rep.Injected)
	}
	if got := float64(rep.Alerted) / float64(rep.Injected); got < 0.95 {
		t.Errorf("%.1f%% of injected anomalies alerted, want at least 95%%", 100*got)
	}
	if f := float64(rep.FalseAlerts) / rep.DeviceDays; f > 1 {
		t.Errorf("%.2f false alerts per device-day, want at most 1", f)
	}
}

// TestSimulatedGateways scores the demo fleet's two kinds of device apart
// (simulate.gateway_every 4: one device in four a gateway reporting a
// heavy-tailed request count, a reading a second, with Pareto bursts; the
// others pumps with four gauges). TestSimulatedFleetDetection holds the
// whole fleet to its goals; here the gateways' floors sit just under
// today's figures (87.2 % alerted, 0.4 false alerts a device-day), so a
// change that makes the harder half worse fails here even while the
// fleet as a whole passes (120 devices, to keep the test run short;
// README, "Detection quality", gives the 480- and 1,000-device figures).
func TestSimulatedGateways(t *testing.T) {
	cfg, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Simulate
	sc.Devices, sc.GatewayEvery = 120, 4
	span := 2 * time.Hour
	custom := simEnv(&sc, &span) // other fleets: the floors below hold for the defaults
	fleet, alerts := replayFleetAlerts(t, sc, span)
	gateway := func(id string) bool {
		n, err := strconv.Atoi(strings.TrimPrefix(id, "sim-"))
		return err == nil && n%sc.GatewayEvery == sc.GatewayEvery-1
	}
	for _, g := range []bool{false, true} {
		var an []simulate.Anomaly
		var al []simulate.AlertRef
		for _, a := range fleet.Anomalies() {
			if gateway(a.DeviceID) == g {
				an = append(an, a)
			}
		}
		for _, a := range alerts {
			if gateway(a.DeviceID) == g {
				al = append(al, a)
			}
		}
		devices := sc.Devices / sc.GatewayEvery
		if !g {
			devices = sc.Devices - devices
		}
		rep := simulate.Score(an, nil, al, devices, span)
		if !g {
			t.Logf("pumps:\n%s", rep.String())
			continue
		}
		name, minAlerted, maxFalse := "gateways", 0.85, 1.2
		t.Logf("%s:\n%s", name, rep.String())
		if custom {
			continue
		}
		if rep.Injected < 50 {
			t.Fatalf("%s: only %d anomalies injected", name, rep.Injected)
		}
		if got := float64(rep.Alerted) / float64(rep.Injected); got < minAlerted {
			t.Errorf("%s: %.1f%% of injected anomalies alerted, want at least %.0f%%", name, 100*got, 100*minAlerted)
		}
		if f := float64(rep.FalseAlerts) / rep.DeviceDays; f > maxFalse {
			t.Errorf("%s: %.2f false alerts per device-day, want at most %g", name, f, maxFalse)
		}
	}
}
