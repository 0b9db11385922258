package ml

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil/vigil/internal/testutil"
	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/storage"
)

// writeArchive writes n enriched rows of two metrics into st as the
// archiver would (files of per rows, two regions); every 25th row is an
// anomaly (temp far off and rpm unrelated to temp), labelled when label.
func writeArchive(t testing.TB, st storage.Store, n, per int, label bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 3))
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for f := 0; f*per < n; f++ {
		rows := make([]contract.Enriched, 0, per)
		for i := f * per; i < min(n, (f+1)*per); i++ {
			temp := 60 + rng.NormFloat64()
			rpm := 1000 + 50*(temp-60) + rng.NormFloat64()*5
			lab := "normal"
			if i%25 == 11 {
				temp += 8
				rpm -= 300
				lab = "anomaly"
			}
			z := temp - 60
			r := contract.Enriched{ID: fmt.Sprintf("r%d", i), DeviceID: fmt.Sprintf("d%d", i%7), TS: t0.Add(time.Duration(i) * time.Second),
				IngestedAt: t0.Add(time.Duration(i) * time.Second), Region: []string{"eu", "us"}[f%2],
				Metrics: []contract.Field{{Name: "temp_c", Value: temp}, {Name: "rpm", Value: rpm}},
				Derived: []contract.Field{{Name: "temp_c.z", Value: z}, {Name: "temp_c.vol", Value: 0}, {Name: "rpm.z", Value: (rpm - 1000) / 50}, {Name: "dt_s", Value: 1}},
				Score:   0.1, Threshold: 0.8, Model: "baseline-v1", Offset: int64(i)}
			if label {
				r.Label = lab
			}
			rows = append(rows, r)
		}
		var buf bytes.Buffer
		if _, err := storage.WriteParquet(&buf, rows); err != nil {
			t.Fatal(err)
		}
		key := contract.ArchiveKey{Region: rows[0].Region, Hour: t0, Topic: "vigil.enriched", Partition: 0, First: int64(f * per), Last: int64(f*per + len(rows) - 1)}.Format()
		if _, err := st.Put(context.Background(), key, &buf, int64(buf.Len())); err != nil {
			t.Fatal(err)
		}
	}
}

// testConfig is Default() with short times and a small training set.
func testConfig() Config {
	c := Default()
	c.LeaseTTL, c.PollInterval, c.TrainInterval, c.MinNewRows = 3*time.Second, 200*time.Millisecond, time.Hour, 1
	c.MaxRows, c.MaxMetrics, c.SupervisedRows, c.MinLabelled, c.AlertRate, c.Promote, c.ShadowFor = 20000, 16, 600, 10, 0.01, "auto", 0
	return c
}

// recorder is a pipeline stand-in that remembers the scorers handed to it.
type recorder struct {
	mu             sync.Mutex
	primary, shade pipeline.Model
}

func (r *recorder) SetModels(s, shadow pipeline.Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.primary, r.shade = s, shadow
}

func (r *recorder) names() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s string
	p := modelName(r.primary)
	if r.shade != nil {
		s = r.shade.Name()
	}
	return p, s
}

func TestLoadArchiveAndTrainUnsupervised(t *testing.T) {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writeArchive(t, st, 3000, 500, false)
	ds, err := LoadArchive(context.Background(), st, LoadOptions{Fraction: 1, MaxRows: 2000, MaxMetrics: 8, Buckets: 8})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Stats.RowsRead != 3000 || ds.Stats.Rows != 2000 || ds.Stats.Objects != 6 || ds.Stats.Labelled != 0 {
		t.Fatalf("stats %+v, want 3000 read, 2000 kept, 6 objects, 0 labelled", ds.Stats)
	}
	if got := strings.Join(ds.Features.Metrics, ","); got != "m_rpm,m_temp_c" || ds.Features.Buckets != 0 {
		t.Fatalf("features %+v", ds.Features)
	}
	if strings.Join(ds.Stats.Regions, ",") != "eu,us" {
		t.Fatalf("regions %v", ds.Stats.Regions)
	}
	for i := 1; i < len(ds.TS); i++ {
		if ds.TS[i].Before(ds.TS[i-1]) {
			t.Fatal("rows are not in event-time order")
		}
	}
	res, err := Train(context.Background(), ds, TrainOptions{Folds: 3, AlertRate: 0.04, SupervisedRows: 500, MinLabelled: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Supervised || res.Calibration != "alert_rate" || len(res.Candidates) != 3 {
		t.Fatalf("unsupervised run: supervised=%v calibration=%s candidates=%d", res.Supervised, res.Calibration, len(res.Candidates))
	}
	for _, c := range res.Candidates {
		if len(c.Folds) != 3 || c.Model != "iforest" {
			t.Fatalf("candidate %+v", c)
		}
		for _, f := range c.Folds {
			if f.TestRows == 0 || f.TrainRows == 0 || f.AlertRate < 0.005 || f.AlertRate > 0.12 {
				t.Fatalf("fold %+v: held-out alert rate far from the 4%% target", f)
			}
		}
	}
}

func TestTrainSupervisedRecordsEveryModel(t *testing.T) {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writeArchive(t, st, 2400, 800, true)
	ds, err := LoadArchive(context.Background(), st, LoadOptions{Fraction: 1, MaxRows: 5000, MaxMetrics: 8})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Stats.Labelled != 2400 || ds.Stats.Anomalies != 96 {
		t.Fatalf("labelled %d anomalies %d, want 2400 and 96", ds.Stats.Labelled, ds.Stats.Anomalies)
	}
	res, err := Train(context.Background(), ds, TrainOptions{Folds: 3, AlertRate: 0.01, SupervisedRows: 750, MinLabelled: 10})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range res.Candidates {
		seen[c.Model] = true
		if len(c.Folds) != 3 {
			t.Fatalf("%s has %d folds", c.Model, len(c.Folds))
		}
		t.Logf("%-12s %v mean F1 %.3f (folds %.3f %.3f %.3f)", c.Model, c.Params, c.MeanF1, c.Folds[0].F1, c.Folds[1].F1, c.Folds[2].F1)
		if c.MeanF1 < 0.5 {
			t.Errorf("%s %v: held-out F1 %.3f on separable anomalies", c.Model, c.Params, c.MeanF1)
		}
	}
	if !seen["iforest"] || !seen["randomforest"] || !seen["mlp"] {
		t.Fatalf("candidates %v: want iforest, randomforest and mlp", seen)
	}
	if !res.Supervised || res.Calibration != "best_f1" || res.Winner.MeanF1 < 0.8 || !res.Winner.Deploy {
		t.Fatalf("winner %+v (calibration %s): want a deployable model with held-out F1 >= 0.8 on these separable anomalies", res.Winner, res.Calibration)
	}
}

func TestRegistryFenceAndRollback(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			reg := &Registry{Store: st}
			x, _, names := synth(800, 4, 5)
			_, f, err := trainIsolation(x, allCols(4), names, 20, 128)
			if err != nil {
				t.Fatal(err)
			}
			feats := Features{Metrics: []string{"m_a"}} // width 4+2 = 6
			f.NFeat = feats.Width()
			save := func(epoch int64) string {
				t.Helper()
				m, err := reg.Save(ctx, ModelMeta{Version: NewVersion(epoch, time.Now()), CreatedAt: time.Now().UTC(), Epoch: epoch, Features: feats, Threshold: 0.6}, f)
				if err != nil {
					t.Fatal(err)
				}
				if m.ModelBytes == 0 || m.SHA256 == "" || m.Trees != 20 {
					t.Fatalf("saved meta %+v", m)
				}
				return m.Version
			}
			cur, _, err := reg.Current(ctx)
			if err != nil || cur.Version != pipeline.BaselineName || cur.Fence != 0 {
				t.Fatalf("empty registry: %+v %v", cur, err)
			}
			v1 := save(1)
			sc, _, err := reg.Load(ctx, v1, 0.8)
			if err != nil || sc.Name() != v1 {
				t.Fatalf("load %s: %v", v1, err)
			}
			if c, err := reg.Promote(ctx, v1, "a", 1); err != nil || c.Version != v1 || c.Fence != 1 {
				t.Fatalf("promote v1: %+v %v", c, err)
			}
			// a new trainer (epoch 2) raises the fence; the old trainer's
			// late model cannot be promoted or shadowed, by it or via the API
			if _, err := reg.RaiseFence(ctx, 2, "b"); err != nil {
				t.Fatal(err)
			}
			stale := save(1)
			if _, err := reg.Promote(ctx, stale, "a", 1); !errors.Is(err, ErrStale) {
				t.Fatalf("promote of an epoch-1 model after the fence rose to 2: %v, want ErrStale", err)
			}
			if _, err := reg.Promote(ctx, stale, "api", 0); !errors.Is(err, ErrStale) {
				t.Fatalf("API promote of an epoch-1 model: %v, want ErrStale", err)
			}
			if _, err := reg.SetShadow(ctx, stale, "a", 1); !errors.Is(err, ErrStale) {
				t.Fatalf("shadow of an epoch-1 model: %v, want ErrStale", err)
			}
			if _, err := reg.RaiseFence(ctx, 1, "a"); !errors.Is(err, ErrStale) {
				t.Fatalf("lowering the fence: %v, want ErrStale", err)
			}
			v2 := save(2)
			if c, err := reg.SetShadow(ctx, v2, "b", 2); err != nil || c.Shadow != v2 || c.Version != v1 {
				t.Fatalf("shadow v2: %+v %v", c, err)
			}
			c, err := reg.Promote(ctx, v2, "b", 2)
			if err != nil || c.Version != v2 || c.Shadow != "" || c.Fence != 2 || len(c.History) != 2 || c.History[0] != v1 || c.History[1] != pipeline.BaselineName {
				t.Fatalf("promote v2: %+v %v", c, err)
			}
			// rollback is the operator's explicit choice: it may go below the fence
			if c, err = reg.Rollback(ctx, "", "ops"); err != nil || c.Version != v1 || c.Fence != 2 || c.Action != "rollback" {
				t.Fatalf("rollback: %+v %v", c, err)
			}
			if c, err = reg.Rollback(ctx, pipeline.BaselineName, "ops"); err != nil || c.Version != pipeline.BaselineName {
				t.Fatalf("rollback to the baseline: %+v %v", c, err)
			}
			if _, err = reg.Rollback(ctx, "no-such-version", "ops"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("rollback to a missing version: %v", err)
			}
			list, err := reg.List(ctx)
			if err != nil || len(list) != 3 {
				t.Fatalf("list: %d models, %v", len(list), err)
			}
			// a damaged model file is refused by its checksum
			if _, err := st.Put(ctx, contract.ModelKey(v2, modelFile), strings.NewReader("VGLFRST1garbage"), 15); err != nil {
				t.Fatal(err)
			}
			if _, _, err := reg.Load(ctx, v2, 0.8); err == nil {
				t.Fatal("a damaged model loaded")
			}
		})
	}
}

// TestServiceStaleLeaderNeverPromotes: trainer A (epoch 1) goes silent;
// B takes the lease after the TTL on its own clock (epoch 2) and raises the
// fence. A's training then finishes: its model is saved but never
// promoted. B's model is promoted and reaches the pipeline of both.
func TestServiceStaleLeaderNeverPromotes(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			writeArchive(t, st, 1500, 500, false)
			ra, rb := &recorder{}, &recorder{}
			a := NewService(testConfig(), ServiceOptions{Holder: "a", Store: st, Target: ra, Threshold: 0.8})
			b := NewService(testConfig(), ServiceOptions{Holder: "b", Store: st, Target: rb, Threshold: 0.8})
			ca, cb := &clock{t: time.Unix(1000, 0)}, &clock{t: time.Unix(5000, 0)}
			a.lease.now, b.lease.now = ca.now, cb.now
			if ok, err := a.lease.Tick(ctx); !ok || err != nil {
				t.Fatalf("a did not lead: %v", err)
			}
			if ok, _ := b.lease.Tick(ctx); ok {
				t.Fatal("b led while a held the lease")
			}
			cb.t = cb.t.Add(4 * time.Second) // A silent for more than the 3 s TTL, on B's clock
			if ok, err := b.lease.Tick(ctx); !ok || err != nil {
				t.Fatalf("b did not take over: %v", err)
			}
			if _, e := b.lease.Leading(); e != 2 {
				t.Fatalf("b leads at epoch %d, want 2", e)
			}
			if _, err := b.reg.RaiseFence(ctx, 2, "b"); err != nil {
				t.Fatal(err)
			}
			ma, err := a.TrainOnce(ctx, 1)
			if !errors.Is(err, ErrStale) {
				t.Fatalf("stale leader's training: %v, want ErrStale", err)
			}
			mb, err := b.TrainOnce(ctx, 2)
			if err != nil {
				t.Fatal(err)
			}
			cur, _, _ := b.reg.Current(ctx)
			if cur.Version != mb.Version || cur.Version == ma.Version {
				t.Fatalf("current %s, want B's %s (A's is %s)", cur.Version, mb.Version, ma.Version)
			}
			if len(mb.CV) != 3 || mb.Data.RowsRead != 1500 || mb.Epoch != 2 || mb.Holder != "b" {
				t.Fatalf("meta of B's model: cv %d rows %d epoch %d holder %s", len(mb.CV), mb.Data.RowsRead, mb.Epoch, mb.Holder)
			}
			a.Refresh(ctx)
			b.Refresh(ctx)
			for _, r := range []*recorder{ra, rb} {
				if p, _ := r.names(); p != mb.Version {
					t.Fatalf("pipeline runs %q, want %s", p, mb.Version)
				}
			}
		})
	}
}

// TestServiceRunsOneTrainerAndSwaps runs three services on one bucket with
// their real loops: one leads and trains on request, the model runs in
// shadow then is promoted, and all three pipelines get it.
func TestServiceRunsOneTrainerAndSwaps(t *testing.T) {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writeArchive(t, st, 1500, 500, false)
	cfg := testConfig()
	cfg.Promote, cfg.ShadowFor = "shadow", 500*time.Millisecond
	cfg.TrainInterval = 24 * time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var svcs []*Service
	var recs []*recorder
	for i := 0; i < 3; i++ {
		r := &recorder{}
		s := NewService(cfg, ServiceOptions{Holder: fmt.Sprintf("p%d", i), Store: st, Target: r, Threshold: 0.8})
		svcs, recs = append(svcs, s), append(recs, r)
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	leaders := func() (n int, who *Service) {
		for _, s := range svcs {
			if st := s.Status(); st.Leading {
				n++
				who = s
			}
		}
		return n, who
	}
	waitFor(t, 10*time.Second, "a leader", func() bool { n, _ := leaders(); return n == 1 })
	// the newest model is none, so the schedule trains at once; wait for the shadow
	waitFor(t, 60*time.Second, "a shadow model in every process", func() bool {
		for _, r := range recs {
			if _, s := r.names(); s == "" {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "the shadow promoted in every process", func() bool {
		for _, r := range recs {
			if p, s := r.names(); s != "" || !strings.HasPrefix(p, "m") {
				return false
			}
		}
		return true
	})
	if n, _ := leaders(); n != 1 {
		t.Fatalf("%d leaders", n)
	}
	_, leader := leaders()
	models, _ := leader.reg.List(context.Background())
	if len(models) != 1 || models[0].Holder != leader.Status().Holder {
		t.Fatalf("%d models (want 1, by the leader %s)", len(models), leader.Status().Holder)
	}
}

var waitFor = testutil.WaitFor

// A process that does not run for the lease still reports who holds it.
func TestServiceNonCandidateSeesLease(t *testing.T) {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	leader := NewService(cfg, ServiceOptions{Holder: "leader", Store: st, Target: &recorder{}, Threshold: 0.8})
	cfg.Train = false
	watcher := NewService(cfg, ServiceOptions{Holder: "watcher", Store: st, Target: &recorder{}, Threshold: 0.8})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []*Service{leader, watcher} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, 10*time.Second, "the watcher to see the leader", func() bool { return watcher.Lease().Holder == "leader" })
	if st := watcher.Status(); st.Leading || st.Candidate {
		t.Fatalf("watcher status %+v", st)
	}
}
