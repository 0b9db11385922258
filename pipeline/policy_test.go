package pipeline

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil/vigil/contract"
)

// thresholdModel scores a reading by its temp alone: score when temp is
// above at, else 0. It stands for a trained model in the policy test.
type thresholdModel struct {
	name  string
	at    float64
	score float64
}

func (m thresholdModel) Name() string    { return m.name }
func (m thresholdModel) Feature() string { return "model.test" }
func (m thresholdModel) Score(o *Observation) (float64, float64) {
	for _, mo := range o.Metrics {
		if mo.Name == "temp" && mo.Value > m.at {
			return m.score, 7
		}
	}
	return 0, 0
}

// TestModelPolicy: the pipeline owns the scoring policy. The streaming
// detectors always score; a model in charge scores too and the larger
// wins, leading the reasons; a shadow's score is its own, not mixed with
// the detectors'.
func TestModelPolicy(t *testing.T) {
	off := NewOffline(testCfg(), "r", nil)
	rng := rand.New(rand.NewPCG(5, 5))
	var dec contract.EnrichedDecoder
	step := func(i int, v float64) contract.Enriched {
		r := reading("d", i, v)
		b, _ := off.Step(&r)
		e, err := dec.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	i := 0
	for ; i < 300; i++ {
		step(i, 20+rng.NormFloat64()*0.1)
	}
	// a reading the detectors find ordinary but the model flags
	off.SetModels(thresholdModel{name: "m1", at: 20.05, score: 0.9}, thresholdModel{name: "cand", at: 100, score: 0.99})
	e := step(i, 20.1)
	i++
	if e.Model != "m1" || e.Score != 0.9 {
		t.Fatalf("model above the detectors: model %q score %v, want m1 0.9", e.Model, e.Score)
	}
	if e.ShadowModel != "cand" || e.ShadowScore == nil || *e.ShadowScore != 0 {
		t.Fatalf("shadow: %q %v; want cand with its own score 0 (not the detectors' or the model's)", e.ShadowModel, e.ShadowScore)
	}
	// a spike the detectors flag above the model's score: the detectors win
	e = step(i, 20+50)
	i++
	if e.Score <= 0.9 {
		t.Fatalf("spike scored %v with the model at 0.9; want the detectors' larger score", e.Score)
	}
	if e.ShadowScore == nil || *e.ShadowScore != 0 {
		t.Fatalf("shadow of the spike %v, want its own 0", e.ShadowScore)
	}
	// the model leads the reasons of an alert it raised
	off.SetModels(nil, nil)
	for ; i < 600; i++ {
		r := reading("d", i, 20+rng.NormFloat64()*0.1)
		off.Step(&r)
	}
	off.SetModels(thresholdModel{name: "m2", at: 20.05, score: 0.95}, nil)
	r := reading("d", i, 20.1)
	_, res := off.Step(&r)
	if len(res.Alerts) != 1 || res.Alerts[0].Model != "m2" || res.Alerts[0].Reasons[0].Feature != "model.test" || res.Alerts[0].Reasons[0].Detector != "model" {
		t.Fatalf("alert raised by the model: %+v", res.Alerts)
	}
	// no model: the detectors' score and name
	off.SetModels(nil, nil)
	i++
	if e := step(i, 20.1); e.Model != BaselineName || e.ShadowModel != "" {
		t.Fatalf("without a model: model %q shadow %q", e.Model, e.ShadowModel)
	}
}

// replicableModel is a thresholdModel that hands out copies, counting
// them.
type replicableModel struct {
	thresholdModel
	copies *int
}

func (m replicableModel) Replica() Model {
	*m.copies++
	return replicableModel{m.thresholdModel, m.copies}
}

// A processor for a parallel replay carries replicas of the model in
// charge and the shadow, and scores exactly as the processor it came
// from; with a model that cannot be replicated there is none (the
// replays then take turns).
func TestProcessorReplica(t *testing.T) {
	pr := NewProcessor(testCfg(), "r", nil)
	pr.now = func() time.Time { return t0 }
	if pr.replica() == nil {
		t.Fatal("no replica of a processor without a model")
	}
	pr.SetModels(thresholdModel{"m1", 70, 0.9}, nil)
	pr.BeginBatch()
	if pr.replica() != nil {
		t.Fatal("a replica of a processor whose model cannot be replicated")
	}
	copies := 0
	pr.SetModels(replicableModel{thresholdModel{"m2", 70, 0.9}, &copies}, replicableModel{thresholdModel{"s2", 60, 0.85}, &copies})
	pr.BeginBatch()
	rp := pr.replica()
	if rp == nil || copies != 2 {
		t.Fatalf("replica %v, %d model copies; want one, with 2 copies", rp, copies)
	}
	if m, s := rp.ModelNames(); m != "m2" || s != "s2" {
		t.Fatalf("the replica scores with %s (shadow %s)", m, s)
	}
	a, b := newPartition(), newPartition()
	var ra, rb StepResult
	alerts := 0
	for i := 0; i < 300; i++ {
		v := 50 + float64(i%7)
		if i == 250 {
			v = 95 // an anomaly both models and the detectors see
		}
		r := reading("d", i, v)
		outA := string(pr.Step(a, &r, true, nil, &ra))
		r = reading("d", i, v)
		outB := string(rp.Step(b, &r, true, nil, &rb))
		if outA != outB || len(ra.Alerts) != len(rb.Alerts) {
			t.Fatalf("reading %d: the replica wrote\n%s (%d alerts)\nthe processor\n%s (%d alerts)", i, outB, len(rb.Alerts), outA, len(ra.Alerts))
		}
		alerts += len(ra.Alerts)
	}
	if alerts == 0 {
		t.Fatal("no alert to compare: the anomaly did not alert")
	}
}
