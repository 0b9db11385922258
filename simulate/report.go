package simulate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
)

// AlertRef is what the report needs of an alert.
type AlertRef struct {
	AlertID  string    `json:"alert_id"`
	DeviceID string    `json:"device_id"`
	TS       time.Time `json:"ts"`
	Metric   string    `json:"metric"`
}

// KindStats are the figures of one kind of anomaly.
type KindStats struct {
	Injected, Alerted int
	Delays            []time.Duration
}

// Report scores the alerts against the ground truth.
type Report struct {
	Injected, Alerted int
	FalseAlerts       int
	Alerts            int
	DeviceDays        float64
	Delays            []time.Duration // sorted
	ByKind            map[string]*KindStats
	Posted, Refused   int
	Retried           int
}

// Grace is how long after an anomaly's last reading an alert still counts
// as detecting it.
const Grace = 30 * time.Second

// Score matches alerts to anomalies: an anomaly is alerted when an alert of
// its device has an event time within [start, end+Grace]; an alert that
// matches no anomaly is false. Delay is the first matching alert's event
// time minus the anomaly's start.
// Alerts during an anomaly still in progress (active, with End set to the
// last event time) are neither counted as detections nor as false.
func Score(anoms, active []Anomaly, alerts []AlertRef, devices int, span time.Duration) Report {
	r := Report{ByKind: map[string]*KindStats{}, Injected: len(anoms), Alerts: len(alerts)}
	for _, k := range Kinds {
		r.ByKind[k] = &KindStats{}
	}
	byDev := map[string][]AlertRef{}
	for _, a := range alerts {
		byDev[a.DeviceID] = append(byDev[a.DeviceID], a)
	}
	matched := map[string]bool{}
	for _, an := range anoms {
		ks := r.ByKind[an.Kind]
		if ks == nil {
			ks = &KindStats{}
			r.ByKind[an.Kind] = ks
		}
		ks.Injected++
		var first time.Time
		for _, a := range byDev[an.DeviceID] {
			if !a.TS.Before(an.Start) && !a.TS.After(an.End.Add(Grace)) {
				matched[a.AlertID] = true
				if first.IsZero() || a.TS.Before(first) {
					first = a.TS
				}
			}
		}
		if !first.IsZero() {
			r.Alerted++
			ks.Alerted++
			d := first.Sub(an.Start)
			r.Delays = append(r.Delays, d)
			ks.Delays = append(ks.Delays, d)
		}
	}
	for _, an := range active {
		for _, a := range byDev[an.DeviceID] {
			if !a.TS.Before(an.Start) {
				matched[a.AlertID] = true
			}
		}
	}
	for _, a := range alerts {
		if !matched[a.AlertID] {
			r.FalseAlerts++
		}
	}
	sort.Slice(r.Delays, func(i, j int) bool { return r.Delays[i] < r.Delays[j] })
	r.DeviceDays = float64(devices) * span.Hours() / 24
	return r
}

// Quantile returns the q-quantile of sorted durations (0 when empty).
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i]
}

// String prints the report for a person.
func (r Report) String() string {
	var b strings.Builder
	pct := func(a, n int) float64 {
		if n == 0 {
			return 0
		}
		return 100 * float64(a) / float64(n)
	}
	fmt.Fprintf(&b, "simulation report\n")
	fmt.Fprintf(&b, "  readings posted %d (refused %d, retried batches %d)\n", r.Posted, r.Refused, r.Retried)
	fmt.Fprintf(&b, "  injected anomalies (ended) %d, alerted %d (%.1f%%)\n", r.Injected, r.Alerted, pct(r.Alerted, r.Injected))
	fmt.Fprintf(&b, "  alerts %d, false %d", r.Alerts, r.FalseAlerts)
	if r.DeviceDays > 0 {
		fmt.Fprintf(&b, " (%.2f false alerts per device-day over %.3f device-days)", float64(r.FalseAlerts)/r.DeviceDays, r.DeviceDays)
	}
	fmt.Fprintf(&b, "\n  detection delay p50 %s, p90 %s, max %s\n", Quantile(r.Delays, 0.5), Quantile(r.Delays, 0.9), Quantile(r.Delays, 1))
	for _, k := range Kinds {
		ks := r.ByKind[k]
		fmt.Fprintf(&b, "  %-12s injected %4d alerted %4d (%5.1f%%) delay p50 %s\n", k, ks.Injected, ks.Alerted, pct(ks.Alerted, ks.Injected), Quantile(ks.Delays, 0.5))
	}
	return b.String()
}

// ReportFrom scores the alerts that fetch returns (alerts detected since
// the given time) against the injected anomalies.
func (f *Fleet) ReportFrom(fetch func(since time.Time) []AlertRef) (Report, error) {
	f.mu.Lock()
	started := f.started
	f.mu.Unlock()
	if started.IsZero() {
		return Report{}, ErrNotStarted
	}
	return f.score(fetch(started.Add(-time.Minute))), nil
}

func (f *Fleet) score(alerts []AlertRef) Report {
	f.mu.Lock()
	started, last := f.started, f.lastEvent
	posted, refused, retried := f.posted, f.refused, f.retried
	var active []Anomaly
	for _, a := range f.active {
		active = append(active, a)
	}
	f.mu.Unlock()
	var mine []AlertRef
	for _, a := range alerts {
		if strings.HasPrefix(a.DeviceID, f.o.Prefix) && !a.TS.Before(started) {
			mine = append(mine, a)
		}
	}
	r := Score(f.Anomalies(), active, mine, f.cfg.Devices, last.Sub(started))
	r.Posted, r.Refused, r.Retried = posted, refused, retried
	return r
}

// Report fetches the alerts Vigil raised for the fleet's devices and scores
// them against the injected anomalies that have ended.
func (f *Fleet) Report(ctx context.Context) (Report, error) {
	f.mu.Lock()
	started := f.started
	f.mu.Unlock()
	if started.IsZero() {
		return Report{}, ErrNotStarted
	}
	u := f.o.URL + "/api/v1/alerts?limit=10000&since=" + url.QueryEscape(started.Add(-time.Minute).UTC().Format(time.RFC3339Nano))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Report{}, err
	}
	req.Header.Set("Authorization", "Bearer "+f.o.AdminToken)
	resp, err := f.o.Client.Do(req)
	if err != nil {
		return Report{}, fmt.Errorf("fetch alerts: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return Report{}, fmt.Errorf("fetch alerts: HTTP %d: %s", resp.StatusCode, body)
	}
	var out struct {
		Alerts []AlertRef `json:"alerts"`
	}
	if err := json.Unmarshal(body, &out, json.RejectUnknownMembers(false)); err != nil {
		return Report{}, fmt.Errorf("decode alerts: %w", err)
	}
	return f.score(out.Alerts), nil
}
