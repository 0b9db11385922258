// Package pipeline owns the streaming path from the raw topic to the
// enriched and alerts topics: micro-batching, enrichment with the device
// registry, per-device state (baselines, dedup, incidents), featurizing,
// scoring, alerting, and the exactly-once Kafka transaction around each
// batch. It also keeps the store of recent alerts the API serves.
package pipeline

import (
	"fmt"
	"strings"
	"time"
)

// Config is the pipeline section of config.yaml.
type Config struct {
	// Group is the Kafka consumer group of the stream processors. Default "stream".
	Group string `yaml:"group"`
	// BatchMaxReadings closes a micro-batch at this many readings. Default 5000.
	BatchMaxReadings int `yaml:"batch_max_readings"`
	// BatchMaxWait closes a micro-batch this long after its first reading. Default 5ms.
	BatchMaxWait time.Duration `yaml:"batch_max_wait"`
	// Threshold is the score (0..1) at which a reading raises an alert. Default 0.8.
	Threshold float64 `yaml:"threshold"`
	// WarmupReadings is how many readings of a metric pass before it is
	// scored (score 0 until then). Default 20.
	WarmupReadings int `yaml:"warmup_readings"`
	// HalfLife is the half-life, in readings, of the per-device baselines. Default 500.
	HalfLife float64 `yaml:"half_life"`
	// IncidentQuiet closes an incident after this much event time without
	// an anomalous reading. Default 2m.
	IncidentQuiet time.Duration `yaml:"incident_quiet"`
	// IncidentQuietReadings is how many readings of the device without an
	// anomalous one an incident also waits before it closes (both must
	// pass), so a device that reports every few minutes does not open a
	// new incident at every other reading of one event. Default 150.
	IncidentQuietReadings int `yaml:"incident_quiet_readings"`
	// AlertBudget is the number of false alerts per device-day the
	// per-metric detector is calibrated to: a score of 0.8 is a reading as
	// unlikely as that, on every metric. Default 0.6.
	AlertBudget float64 `yaml:"alert_budget"`
	// RealertReadings: within this many readings of the device after an
	// incident of a metric, a new incident of the metric led by the same
	// reason and scoring no higher than that one's peak is a repeat: it is
	// kept silent, without an alert, unless it grows stronger than the
	// peak or scores repeatNews (0.99) or more. 0 alerts every incident.
	// Default 600.
	RealertReadings int `yaml:"realert_readings"`
	// AcceptAfter is how long (event time) a metric's anomalous run lasts
	// before it is accepted as the new normal: its incident closes as
	// accepted and its baseline restarts from the new values. 0 never
	// accepts. Default 2h.
	AcceptAfter time.Duration `yaml:"accept_after"`
	// DedupWindow is how many recent message ids per device are remembered
	// at most to drop re-sent readings. Default 256.
	DedupWindow int `yaml:"dedup_window"`
	// DedupHorizon is how long (by ingest time) a message id is remembered:
	// a reading re-sent later than this after it was accepted is stored
	// again. The dedup memory is then bounded by the ingest rate times the
	// horizon, not by devices times the window. 0: the window alone.
	// Default 10m.
	DedupHorizon time.Duration `yaml:"dedup_horizon"`
	// DeviceIdleTTL: the state of a device that sent nothing for this long
	// (by ingest time) is dropped; a device that comes back is warmed up
	// again from scratch. 0 keeps every device. Default 168h.
	DeviceIdleTTL time.Duration `yaml:"device_idle_ttl"`
	// SnapshotInterval is how often per-partition state is snapshotted to
	// data.dir/state. Default 30s.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// RestoreLookback is how many raw records per partition are replayed to
	// rebuild state when no snapshot is at hand. Default 200000.
	RestoreLookback int64 `yaml:"restore_lookback"`
	// AlertStoreSize is how many recent alerts the API keeps. Default 10000.
	AlertStoreSize int `yaml:"alert_store_size"`
	// AttrBuckets is the width of the hashed one-hot encoding of attrs. Default 32.
	AttrBuckets int `yaml:"attr_buckets"`
	// MVWarmup is how many readings of a device fit its multivariate model
	// (0 turns the multivariate detector off). Default 400.
	MVWarmup int `yaml:"mv_warmup"`
	// MVSmooth is the rolling-mean window of each metric, in readings. Default 10.
	MVSmooth int `yaml:"mv_smooth"`
	// MVThreshold is the weighted root-mean-square robust z of the smoothed
	// metrics (common mode removed) that scores as z = 6 (0.8). Default 2.7.
	MVThreshold float64 `yaml:"mv_threshold"`
	// MVSpike is the jump of one metric from its recent mean, in units of
	// its short-term noise, that scores as z = 6 (0.8). Default 8.
	MVSpike float64 `yaml:"mv_spike"`
	// MVRefit refits the model on the normal readings every this many
	// readings (0: never). Default 3600.
	MVRefit int `yaml:"mv_refit"`
	// Groups tune the detectors for sets of devices; a device belongs to
	// the first group that matches it, else it uses the settings above.
	Groups []Group `yaml:"groups"`
}

// Group is a set of devices with their own detector settings. A device
// matches when every match field that is set matches; a setting left out
// (zero) keeps the pipeline-wide value.
type Group struct {
	Name string `yaml:"name"`
	// Match fields.
	DevicePrefix string `yaml:"device_prefix"`
	Site         string `yaml:"site"`
	Model        string `yaml:"model"` // the device's registered model
	// Settings.
	Threshold      float64       `yaml:"threshold"`
	WarmupReadings int           `yaml:"warmup_readings"`
	HalfLife       float64       `yaml:"half_life"`
	IncidentQuiet  time.Duration `yaml:"incident_quiet"`
	MVWarmup       *int          `yaml:"mv_warmup"` // 0 turns the multivariate detector off for the group
	MVSmooth       int           `yaml:"mv_smooth"`
	MVThreshold    float64       `yaml:"mv_threshold"`
	MVSpike        float64       `yaml:"mv_spike"`
}

// matches reports whether a device belongs to g.
func (g *Group) matches(deviceID, site, model string) bool {
	return (g.DevicePrefix == "" || strings.HasPrefix(deviceID, g.DevicePrefix)) &&
		(g.Site == "" || g.Site == site) && (g.Model == "" || g.Model == model)
}

// apply returns c with g's settings.
func (g *Group) apply(c Config) Config {
	if g.Threshold != 0 {
		c.Threshold = g.Threshold
	}
	if g.WarmupReadings != 0 {
		c.WarmupReadings = g.WarmupReadings
	}
	if g.HalfLife != 0 {
		c.HalfLife = g.HalfLife
	}
	if g.IncidentQuiet != 0 {
		c.IncidentQuiet = g.IncidentQuiet
	}
	if g.MVWarmup != nil {
		c.MVWarmup = *g.MVWarmup
	}
	if g.MVSmooth != 0 {
		c.MVSmooth = g.MVSmooth
	}
	if g.MVThreshold != 0 {
		c.MVThreshold = g.MVThreshold
	}
	if g.MVSpike != 0 {
		c.MVSpike = g.MVSpike
	}
	c.Groups = nil
	return c
}

// Validate checks the pipeline section; errors name the key below "pipeline.".
func (c Config) Validate() error {
	switch {
	case c.Group == "":
		return fmt.Errorf("group: must not be empty")
	case c.BatchMaxReadings < 1:
		return fmt.Errorf("batch_max_readings: must be at least 1, got %d", c.BatchMaxReadings)
	case c.BatchMaxWait < 0 || c.BatchMaxWait > 10*time.Second:
		return fmt.Errorf("batch_max_wait: must be between 0 and 10s, got %s", c.BatchMaxWait)
	case !(c.Threshold > 0 && c.Threshold < 1):
		return fmt.Errorf("threshold: must be between 0 and 1 (exclusive), got %g", c.Threshold)
	case c.WarmupReadings < 2:
		return fmt.Errorf("warmup_readings: must be at least 2, got %d", c.WarmupReadings)
	case c.HalfLife < 2:
		return fmt.Errorf("half_life: must be at least 2 readings, got %g", c.HalfLife)
	case c.IncidentQuiet <= 0:
		return fmt.Errorf("incident_quiet: must be positive, got %s", c.IncidentQuiet)
	case c.IncidentQuietReadings < 0:
		return fmt.Errorf("incident_quiet_readings: must not be negative, got %d", c.IncidentQuietReadings)
	case !(c.AlertBudget > 0 && c.AlertBudget <= 100):
		return fmt.Errorf("alert_budget: must be more than 0 and at most 100 false alerts per device-day, got %g", c.AlertBudget)
	case c.RealertReadings < 0:
		return fmt.Errorf("realert_readings: must not be negative (0 alerts every incident), got %d", c.RealertReadings)
	case c.AcceptAfter < 0:
		return fmt.Errorf("accept_after: must not be negative (0 never accepts), got %s", c.AcceptAfter)
	case c.DedupWindow < 1 || c.DedupWindow > maxDedupWindow:
		return fmt.Errorf("dedup_window: must be between 1 and %d message ids a device, got %d", maxDedupWindow, c.DedupWindow)
	case c.DedupHorizon < 0 || c.DedupHorizon > 0 && c.DedupHorizon < time.Second:
		return fmt.Errorf("dedup_horizon: must be 0 (the window alone) or at least 1s, got %s", c.DedupHorizon)
	case c.DeviceIdleTTL < 0 || c.DeviceIdleTTL > 0 && c.DeviceIdleTTL < time.Minute:
		return fmt.Errorf("device_idle_ttl: must be 0 (keep every device) or at least 1m, got %s", c.DeviceIdleTTL)
	case c.SnapshotInterval < time.Second:
		return fmt.Errorf("snapshot_interval: must be at least 1s, got %s", c.SnapshotInterval)
	case c.RestoreLookback < 0:
		return fmt.Errorf("restore_lookback: must not be negative, got %d", c.RestoreLookback)
	case c.AlertStoreSize < 1:
		return fmt.Errorf("alert_store_size: must be at least 1, got %d", c.AlertStoreSize)
	case c.AttrBuckets < 1 || c.AttrBuckets > 4096:
		return fmt.Errorf("attr_buckets: must be between 1 and 4096, got %d", c.AttrBuckets)
	case c.MVWarmup != 0 && (c.MVWarmup < 20 || c.MVWarmup > 100000):
		return fmt.Errorf("mv_warmup: must be 0 (off) or between 20 and 100000, got %d", c.MVWarmup)
	case c.MVSmooth < 1 || c.MVSmooth > 1000 || c.MVWarmup > 0 && c.MVSmooth*2 > c.MVWarmup:
		return fmt.Errorf("mv_smooth: must be between 1 and half of mv_warmup, got %d", c.MVSmooth)
	case !(c.MVThreshold > 0):
		return fmt.Errorf("mv_threshold: must be positive, got %g", c.MVThreshold)
	case !(c.MVSpike > 0):
		return fmt.Errorf("mv_spike: must be positive, got %g", c.MVSpike)
	case c.MVRefit < 0:
		return fmt.Errorf("mv_refit: must not be negative, got %d", c.MVRefit)
	}
	names := map[string]bool{}
	for i := range c.Groups {
		g := &c.Groups[i]
		if g.Name == "" || names[g.Name] {
			return fmt.Errorf("groups[%d]: needs a unique name, got %q", i, g.Name)
		}
		names[g.Name] = true
		if g.DevicePrefix == "" && g.Site == "" && g.Model == "" {
			return fmt.Errorf("groups[%d] (%s): set at least one of device_prefix, site, model", i, g.Name)
		}
		if err := g.apply(c).Validate(); err != nil {
			return fmt.Errorf("groups[%d] (%s).%w", i, g.Name, err)
		}
	}
	return nil
}

// maxDedupWindow bounds dedup_window below the snapshot decoder's limit on
// an array (1 Mi elements, see msgp.go): a device's ring must fit it.
const maxDedupWindow = 1_000_000

// Default is the pipeline section at its built-in defaults; config.yaml
// mirrors it (a test checks that they agree).
func Default() Config {
	return Config{Group: "stream", BatchMaxReadings: 5000, BatchMaxWait: 5 * time.Millisecond, Threshold: 0.8,
		WarmupReadings: 20, HalfLife: 500, IncidentQuiet: 2 * time.Minute, IncidentQuietReadings: 150,
		AlertBudget: 0.6, RealertReadings: 600, AcceptAfter: 2 * time.Hour, DedupWindow: 256, DedupHorizon: 10 * time.Minute, DeviceIdleTTL: 7 * 24 * time.Hour,
		SnapshotInterval: 30 * time.Second, RestoreLookback: 200000, AlertStoreSize: 10000, AttrBuckets: 32,
		MVWarmup: 400, MVSmooth: 10, MVThreshold: 2.7, MVSpike: 8, MVRefit: 3600}
}
