package pipeline

import (
	"math"
	"sort"
	"strings"
)

// Reason is one feature that drove a score.
type Reason struct {
	Feature      string  `json:"feature"`
	Value        float64 `json:"value"`
	Contribution float64 `json:"contribution"`
}

// Scorer turns an observation into a score in [0, 1] and the features that
// drove it. The baseline detector works from the first minutes with no
// training; trained models from ml/ plug in through this interface.
// Implementations must be safe to call from one goroutine at a time and
// must not keep o.
type Scorer interface {
	// Name is the model version or detector name recorded with each score.
	Name() string
	// Score scores one observation.
	Score(o *Observation, reasons []Reason) (float64, []Reason)
}

// MultivariateFeature names the multivariate detector's figure in reasons
// (and its incidents).
const MultivariateFeature = "multivariate"

// BaselineName is the model name of the streaming baseline detector.
const BaselineName = "baseline-v1"

// Baseline scores from per-device streaming baselines: the largest of the
// z-like figures of enrichment (value z-scores, volatility, stuck values,
// unusual gaps, rare categories) mapped to (0, 1) so that z = 6 scores 0.8.
type Baseline struct{}

// Name implements Scorer.
func (Baseline) Name() string { return BaselineName }

// zScale makes 1-exp(-(z/zScale)^2) equal 0.8 at z = 6.
var zScale = 6 / math.Sqrt(math.Log(5))

// ScoreOfZ maps a z-like figure to a score in [0, 1).
func ScoreOfZ(z float64) float64 {
	z = math.Abs(z)
	return 1 - math.Exp(-(z/zScale)*(z/zScale))
}

// Score implements Scorer.
func (Baseline) Score(o *Observation, reasons []Reason) (float64, []Reason) {
	reasons = reasons[:0]
	add := func(name, suffix string, z float64) {
		if math.Abs(z) >= 2 {
			reasons = append(reasons, Reason{Feature: name + suffix, Value: round3(z)})
		}
	}
	for i := range o.Metrics {
		m := &o.Metrics[i]
		if !m.Warm {
			continue
		}
		// Once the device's multivariate model is fitted it judges level and
		// volatility (jointly, smoothed, drift-aware); the per-metric
		// z-scores stay in the record but score only on a device without one.
		if !o.MV.Warm {
			add(m.Name, ".z", m.Z)
			add(m.Name, ".vol", m.VolZ)
		}
		add(m.Name, ".stuck", m.StuckZ)
	}
	if o.DtZ > 0 {
		add("dt", ".z", o.DtZ)
	}
	if o.MV.Warm {
		add(MultivariateFeature, "", o.MV.Z)
		if o.MV.Spike != "" {
			add(o.MV.Spike, ".spike", o.MV.SpikeZ)
		}
	}
	for _, a := range o.Attrs {
		if a.Z > 0 {
			add("attrs."+a.Name, "="+a.Value, a.Z)
		}
	}
	if len(reasons) == 0 {
		return 0, reasons
	}
	sort.Slice(reasons, func(i, j int) bool { return math.Abs(reasons[i].Value) > math.Abs(reasons[j].Value) })
	if len(reasons) > 3 {
		reasons = reasons[:3]
	}
	var sum float64
	for _, r := range reasons {
		sum += r.Value * r.Value
	}
	for i := range reasons {
		reasons[i].Contribution = round3(reasons[i].Value * reasons[i].Value / sum)
	}
	return round3(ScoreOfZ(reasons[0].Value)), reasons
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// metricOf names the metric a reason's feature belongs to: incidents are
// kept per device and metric. "temp_c.z" and "temp_c.vol" are "temp_c";
// "attrs.mode=fault" is "attrs.mode".
func metricOf(feature string) string {
	if strings.HasPrefix(feature, "attrs.") {
		if i := strings.IndexByte(feature, '='); i > 0 {
			return feature[:i]
		}
		return feature
	}
	if i := strings.LastIndexByte(feature, '.'); i > 0 {
		return feature[:i]
	}
	return feature
}
