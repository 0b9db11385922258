package ml

import (
	"math/rand/v2"
	"testing"

	"github.com/vigil/vigil/pipeline"
)

// A trained model scores beside the streaming detectors: a reading the
// model finds far outside its training data, which the per-metric
// baselines do not flag, is scored by the model (and says so in its
// reasons); an ordinary reading keeps the streaming score.
func TestModelScorerBesideBaseline(t *testing.T) {
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
	score, reasons := s.Score(obs(4, -8), nil)
	if score < 0.8 || len(reasons) == 0 || reasons[0].Feature != "model.iforest" {
		t.Fatalf("broken relationship: score %.3f reasons %v; want the model to flag it", score, reasons)
	}
	score, reasons = s.Score(obs(0.5, 1), nil)
	if score >= 0.8 || len(reasons) != 0 && reasons[0].Feature == "model.iforest" && score >= 0.8 {
		t.Fatalf("ordinary reading: score %.3f reasons %v", score, reasons)
	}
	if s.Name() != "m-test" {
		t.Fatalf("name %s", s.Name())
	}
}
