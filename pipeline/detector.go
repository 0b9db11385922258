package pipeline

import (
	"github.com/vigil/vigil/contract"

	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Model is a trained model (ml/ builds them). It scores an observation on
// its own; the processor owns the policy that combines that score with the
// streaming detectors' (the larger wins, see Processor). Implementations
// must be safe to call from one goroutine at a time and must not keep o.
type Model interface {
	// Name is the model version, recorded with each score it leads.
	Name() string
	// Feature names the model in reasons, e.g. "model.iforest".
	Feature() string
	// Score is the model's own score of o in [0, 1], calibrated so that
	// the model's threshold lands on the pipeline's alert threshold, and
	// its raw score.
	Score(o *Observation) (score, raw float64)
}

// ReplicableModel is a Model that hands out a copy to score from another
// goroutine at the same time: a restore replays its partitions on every
// core, each through its own processor. With a model in charge (or in
// the shadow) that is not replicable the replays take turns.
type ReplicableModel interface {
	Model
	Replica() Model
}

// BaselineName is the model name of the streaming baseline detector.
const BaselineName = contract.BaselineModel

// Baseline scores from the streaming detectors: the largest of their
// calibrated figures (per-metric tail, level, cycle, regime; stuck values,
// gaps, the multivariate model, spikes, rare categories).
type Baseline struct{}

// zScale makes 1-exp(-(z/zScale)^2) equal 0.8 at z = 6.
var zScale = 6 / math.Sqrt(math.Log(5))

// ScoreOfZ maps a z-like figure to a score in [0, 1).
func ScoreOfZ(z float64) float64 {
	z = math.Abs(z)
	return 1 - math.Exp(-(z/zScale)*(z/zScale))
}

// Score scores one observation and says which figures drove it.
func (Baseline) Score(o *Observation, reasons []contract.Reason) (float64, []contract.Reason) {
	reasons = reasons[:0]
	minScore := ScoreOfZ(2)
	add := func(name, suffix, detector string, z float64) {
		if sc := ScoreOfZ(z); sc >= minScore {
			reasons = append(reasons, contract.Reason{Feature: name + suffix, Value: round3(z), Detector: detector, Score: sc})
		}
	}
	for i := range o.Metrics {
		m := &o.Metrics[i]
		// Once the device's multivariate model is fitted it judges level and
		// volatility (jointly, smoothed, drift-aware) of the metrics it
		// weighs; the per-metric detector scores the others (it does not
		// run for those, so their UV is not Warm).
		if u := &m.UV; u.Warm {
			pointL, regimeL := u.PointL, u.RegimeL
			shift := u.Shift && !u.RecordLed && u.Kind != "cycle"
			if shift {
				// away from its level for several readings: a shift, not
				// a spike; the short-term figure that the shift lifts
				// is the shift's, not a change of volatility
				pointL, regimeL = max(pointL, regimeL), 0
			}
			if sc := scoreOfL(pointL, u.AlertL); sc >= minScore {
				det, exp := "tail", u.Expected
				switch {
				case u.RecordLed:
					det, exp = "record", u.Record
				case u.Kind == "cycle":
					det = "cycle"
				case shift:
					det = "level"
				}
				reasons = append(reasons, contract.Reason{Feature: m.Name + "." + det, Value: round3(u.S), Detector: det, Score: sc,
					Observed: m.Value, Expected: round6(exp), Low: round6(u.Low), High: round6(u.High)})
			}
			if sc := scoreOfL(regimeL, u.AlertL); sc >= minScore {
				reasons = append(reasons, contract.Reason{Feature: m.Name + ".regime", Value: round3(u.S), Detector: "regime", Score: sc,
					Observed: m.Value, Expected: round6(u.Expected), Low: round6(u.Low), High: round6(u.High)})
			}
		}
		if m.Warm {
			if sc := ScoreOfZ(m.StuckZ); sc >= minScore {
				// (its words, which name the runs, are written when it
				// raises an alert: Processor.newAlert)
				reasons = append(reasons, contract.Reason{Feature: m.Name + ".stuck", Value: round3(m.StuckZ), Detector: "stuck", Score: sc, Observed: m.Value})
			}
		}
	}
	if o.DtZ > 0 && o.GapAL > 0 {
		if sc := scoreOfL(o.GapL, o.GapAL); sc >= minScore {
			reasons = append(reasons, contract.Reason{Feature: "dt.gap", Value: round3(o.DtS), Detector: "gap", Score: sc})
		}
	}
	if o.MV.Warm {
		add(contract.Multivariate, "", "multivariate", o.MV.Z)
		if o.MV.Spike != "" {
			add(o.MV.Spike, ".spike", "spike", o.MV.SpikeZ)
		}
	}
	for _, a := range o.Attrs {
		if sc := scoreOfL(a.L, a.AL); a.AL > 0 && sc >= minScore {
			reasons = append(reasons, contract.Reason{Feature: "attrs." + a.Name + "=" + a.Value, Value: round3(a.L), Detector: "attr", Score: sc})
		}
	}
	if len(reasons) == 0 {
		return 0, reasons
	}
	slices.SortStableFunc(reasons, func(a, b contract.Reason) int { return cmp.Compare(b.Score, a.Score) })
	if len(reasons) > 3 {
		reasons = reasons[:3]
	}
	var sum float64
	for _, r := range reasons {
		sum += r.Score
	}
	for i := range reasons {
		reasons[i].Contribution = round3(reasons[i].Score / sum)
		reasons[i].Score = round3(reasons[i].Score)
	}
	return reasons[0].Score, reasons
}

// scoreOfL maps a tail probability p = e^-l to a score calibrated by the
// alert budget: 1 - 5^-(l/alertL) reaches 0.8 at p = e^-alertL.
func scoreOfL(l, alertL float64) float64 {
	if l <= 0 || alertL <= 0 {
		return 0
	}
	return 1 - math.Pow(5, -l/alertL)
}

func round6(v float64) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return float64(float32(v))
}

// Describe fills each reason's Text: what its detector saw, in words
// ("expected 40 to 55 at 14:00 Tue, got 210"). It runs when an alert is
// raised, not for every reading.
func Describe(reasons []contract.Reason, ts time.Time) {
	for i := range reasons {
		r := &reasons[i]
		band := "expected " + fmtNum(r.Low) + " to " + fmtNum(r.High)
		got := ", got " + fmtNum(r.Observed)
		switch r.Detector {
		case "cycle":
			r.Text = band + " at " + ts.UTC().Format("15:04") + " " + ts.UTC().Weekday().String()[:3] + got
		case "tail", "level":
			r.Text = band + got
		case "record":
			r.Text = "beyond every value in its history (the record was " + fmtNum(r.Expected) + ")" + got
		case "regime":
			r.Text = "the recent readings move more than usual (" + band + got + ")"
		case "gap":
			r.Text = "no reading for " + time.Duration(r.Value*float64(time.Second)).Round(time.Second).String()
		case "stuck":
			if r.Text == "" {
				r.Text = "the same value repeats for longer than usual"
			}
		case "multivariate":
			r.Text = "the metrics moved apart from their usual relationship"
		case "spike":
			r.Text = "one metric jumped far from its recent mean"
		case "attr":
			r.Text = "an attribute took a rare value"
		}
	}
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

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
