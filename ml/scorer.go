package ml

import (
	"math"

	"github.com/vigil/vigil/pipeline"
)

// ModelScorer is a trained model as the pipeline uses it (pipeline.Model):
// the reading's feature vector (see Features) goes through the compiled
// forest, and its raw score is mapped so that the model's calibrated
// threshold lands on the pipeline's alert threshold. It returns only the
// model's own score; the pipeline combines it with its streaming
// detectors'.
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

// Replica implements pipeline.ReplicableModel: a scorer for another
// goroutine, with its own feature vector and metric slots (the forest is
// shared: scoring only reads it).
func (s *ModelScorer) Replica() pipeline.Model {
	return NewModelScorer(s.meta, s.f, s.thr)
}

// Name implements pipeline.Model: the model version.
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

// Feature implements pipeline.Model: "model.<kind>".
func (s *ModelScorer) Feature() string { return s.label }

// Score implements pipeline.Model: the model's calibrated score and raw score.
func (s *ModelScorer) Score(o *pipeline.Observation) (float64, float64) {
	raw := s.Raw(o)
	return calibrate(raw, s.meta.Threshold, s.thr), raw
}
