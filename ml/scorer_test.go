package ml

import (
	"math/rand/v2"
	"testing"

	"github.com/vigil/vigil/pipeline"
)

// A trained model's own score: a reading far outside its training data
// (each value ordinary, their relationship broken) scores above the alert
// threshold, an ordinary one below. The pipeline combines this score with
// its streaming detectors' (pipeline's TestModelPolicy).
func TestModelScorer(t *testing.T) {
	feats := Features{Metrics: []string{"m_a", "m_b"}}
	names := feats.Names()
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([][]float64, 2000)
	for i := range x {
		a := rng.NormFloat64()
		x[i] = make([]float64, feats.Width())
		x[i][0], x[i][4] = a, 2*a+0.1*rng.NormFloat64() // b follows a
	}
	_, f, err := trainIsolation(x, []int{0, 4}, names, 100, 256)
	if err != nil {
		t.Fatal(err)
	}
	obs := func(a, b float64) *pipeline.Observation {
		return &pipeline.Observation{Metrics: []pipeline.MetricObs{{Name: "a", Value: a}, {Name: "b", Value: b}}}
	}
	// calibrate so that the broken reading is just above the threshold
	// (golearn's depth-limited isolation trees saturate near 0.72)
	probe := NewModelScorer(ModelMeta{Version: "probe", Features: feats, Threshold: 0.5}, f, 0.8)
	far, near := probe.Raw(obs(4, -8)), probe.Raw(obs(0.5, 1))
	if far <= near+0.05 {
		t.Fatalf("the forest scores the broken reading %.3f and an ordinary one %.3f", far, near)
	}
	meta := ModelMeta{Version: "m-test", Features: feats, Threshold: far - 0.02}
	s := NewModelScorer(meta, f, 0.8)
	// b no longer follows a: each value is 4 sd off, in the direction no training row went
	if score, raw := s.Score(obs(4, -8)); score < 0.8 || raw != far {
		t.Fatalf("broken relationship: score %.3f (raw %.3f); want the model to flag it", score, raw)
	}
	if score, _ := s.Score(obs(0.5, 1)); score >= 0.8 {
		t.Fatalf("ordinary reading: score %.3f", score)
	}
	if s.Name() != "m-test" || s.Feature() != "model.iforest" {
		t.Fatalf("name %s, feature %s", s.Name(), s.Feature())
	}
}
