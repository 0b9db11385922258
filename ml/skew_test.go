package ml

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/storage"
)

// vectorRecorder is a scorer that records the feature vector the streaming
// scorer builds for each reading (by event time), through the same
// vectorizer a trained model uses.
type vectorRecorder struct {
	v   *vectorizer
	buf []float64
	got map[time.Time][]float64
}

func (r *vectorRecorder) Name() string { return "vector-recorder" }

func (r *vectorRecorder) Feature() string { return "model.recorder" }

func (r *vectorRecorder) Score(o *pipeline.Observation) (float64, float64) {
	if len(r.buf) == 0 {
		r.buf = make([]float64, r.v.f.Width())
	}
	r.buf = r.v.vector(o, r.buf)
	r.got[o.Reading.TS] = append([]float64(nil), r.buf...)
	return 0, 0
}

// skewReadings are three devices with two or three metrics and an attr,
// every reading at its own event time.
func skewReadings(n int) []contract.Reading {
	rng := rand.New(rand.NewPCG(3, 3))
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	out := make([]contract.Reading, 0, n)
	for i := 0; i < n; i++ {
		d := i % 3
		r := contract.Reading{ID: "m" + strconv.Itoa(i), DeviceID: "dev-" + strconv.Itoa(d), TS: t0.Add(time.Duration(i)*time.Second + time.Duration(d)*time.Millisecond),
			IngestedAt: t0.Add(time.Duration(i) * time.Second), Region: "eu",
			Metrics: []contract.Metric{{Name: "temp_c", Value: 60 + float64(d) + rng.NormFloat64()}, {Name: "current.a", Value: 5 + 0.1*rng.NormFloat64()}}}
		if d > 0 {
			r.Metrics = append(r.Metrics, contract.Metric{Name: "vibration", Value: 0.03 + 0.002*rng.NormFloat64()})
		}
		if i%7 == 0 {
			r.Attrs = []contract.Attr{{Name: "mode", Value: []string{"auto", "eco"}[i%2]}}
		}
		out = append(out, r)
	}
	return out
}

// TestTrainingServingSkew is the golden skew test: readings go through the
// pipeline (whose scorer records the vectors it sees), their enriched
// records through the archive's Parquet writer into a store, and the
// trainer's loader must yield, row for row, the same feature vectors.
func TestTrainingServingSkew(t *testing.T) {
	rs := skewReadings(900)
	// the features a model trained on this archive would use (names as the
	// loader orders them)
	f := Features{Metrics: []string{storage.ColumnName("m_", "current.a"), "m_temp_c", "m_vibration"}, Buckets: 8}
	rec := &vectorRecorder{v: newVectorizer(f), got: map[time.Time][]float64{}}
	off := pipeline.NewOffline(pipeline.Default(), "eu", nil)
	off.SetModels(rec, nil)
	var rows []contract.Enriched
	var dec contract.EnrichedDecoder
	for i := range rs {
		b, _ := off.Step(&rs[i])
		e, err := dec.Decode(b)
		if err != nil {
			t.Fatalf("reading %d: the pipeline's record does not decode: %v", i, err)
		}
		e.Offset = int64(i)
		rows = append(rows, e)
	}
	var buf bytes.Buffer
	if _, err := storage.WriteParquet(&buf, rows); err != nil {
		t.Fatal(err)
	}
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := contract.ArchiveKey{Region: "eu", Hour: rows[0].IngestedAt.Truncate(time.Hour), Topic: "vigil.enriched", First: 0, Last: int64(len(rows) - 1)}.Format()
	if _, err := st.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatal(err)
	}
	ds, err := LoadArchive(context.Background(), st, LoadOptions{Fraction: 1, Buckets: 8})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ds.Features) != fmt.Sprint(f) {
		t.Fatalf("the loader chose features %+v, the test scored with %+v", ds.Features, f)
	}
	if len(ds.X) != len(rs) {
		t.Fatalf("loader yielded %d rows, want %d", len(ds.X), len(rs))
	}
	names := f.Names()
	bad := 0
	for i, x := range ds.X {
		want, ok := rec.got[ds.TS[i]]
		if !ok {
			t.Fatalf("row %d (ts %s): no streaming vector", i, ds.TS[i])
		}
		for j := range x {
			// the archive keeps derived figures to 9 significant digits
			if d := math.Abs(x[j] - want[j]); d > 1e-8*math.Max(1, math.Abs(want[j])) {
				if bad++; bad <= 10 {
					t.Errorf("row %d (ts %s) feature %s: trainer %v, streaming scorer %v", i, ds.TS[i].Format(time.RFC3339Nano), names[j], x[j], want[j])
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d features differ between training and serving", bad)
	}
}
