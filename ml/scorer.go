package ml

import (
	"github.com/vigil/vigil/contract"

	"math"

	"github.com/vigil/vigil/pipeline"
)

// ModelScorer scores readings with a trained model beside the streaming
// detectors: the reading's feature vector (see Features) goes through the
// compiled forest, and its raw score is mapped so that the model's
// calibrated threshold lands on the pipeline's alert threshold. The
// reading's score is the larger of that and the streaming detectors' score
// (per-device baselines, multivariate, spikes, gaps), so a trained model
// adds what it learnt from the whole fleet's history without losing what
// the per-device detectors see. The reasons say which: the streaming
// detectors' strongest figures, or the model itself ("model.iforest").
type ModelScorer struct {
	meta  ModelMeta
	f     *Forest
	v     *vectorizer
	vec   []float64
	thr   float64 // the pipeline's alert threshold
	label string
}

// NewModelScorer builds the scorer of a loaded model; thr is the
// pipeline's alert threshold.
func NewModelScorer(meta ModelMeta, f *Forest, thr float64) *ModelScorer {
	return &ModelScorer{meta: meta, f: f, v: newVectorizer(meta.Features), vec: make([]float64, meta.Features.Width()), thr: thr, label: "model." + f.Kind}
}

// Name implements pipeline.Scorer: the model version.
func (s *ModelScorer) Name() string { return s.meta.Version }

// Raw is the forest's own score of o.
func (s *ModelScorer) Raw(o *pipeline.Observation) float64 {
	return s.f.Score(s.v.vector(o, s.vec))
}

// calibrate maps a raw score to [0, 1] with the model's threshold t going
// to the pipeline threshold T, linearly on each side.
func calibrate(raw, t, T float64) float64 {
	var s float64
	switch {
	case raw <= t:
		s = T * raw / math.Max(t, 1e-12)
	case t >= 1:
		s = 1
	default:
		s = T + (1-T)*(raw-t)/(1-t)
	}
	return math.Min(math.Max(s, 0), 1)
}

// Score implements pipeline.Scorer.
func (s *ModelScorer) Score(o *pipeline.Observation, reasons []contract.Reason) (float64, []contract.Reason) {
	base, reasons := pipeline.Baseline{}.Score(o, reasons)
	raw := s.Raw(o)
	score := math.Round(calibrate(raw, s.meta.Threshold, s.thr)*1000) / 1000
	if score <= base {
		return base, reasons
	}
	// the model sees more than the streaming detectors: it leads the reasons
	reasons = append(reasons, contract.Reason{})
	copy(reasons[1:], reasons)
	reasons[0] = contract.Reason{Feature: s.label, Value: math.Round(raw*1000) / 1000, Contribution: 1}
	for i := 1; i < len(reasons); i++ {
		reasons[i].Contribution = 0
	}
	return score, reasons
}
