package sitestatus

import (
	"bytes"
	"context"
	"github.com/vigil/vigil/pipeline"
	"io"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ingestFigures float64

func (f ingestFigures) Readings() float64 { return float64(f) }

type streamFigures pipeline.Stats

func (f streamFigures) Stats() pipeline.Stats { return pipeline.Stats(f) }

// The figures come from the components' own reports (HealthOf), and the
// writer publishes the figures read out of the process's metrics at
// sites/<region>/status.json, and stops with its context.
func TestWriterPublishes(t *testing.T) {
	src := Sources{Ingest: ingestFigures(42), Stream: streamFigures{Readings: 40, Batches: 3, LagByPartition: map[string]int64{"3": 7}}}
	h := HealthOf(src)
	if h.IngestReadings != 42 || h.PipelineReadings != 40 || h.LagByPartition["3"] != 7 || h.Model != contract.BaselineModel || h.ArchiveStoreUp != 0 {
		t.Fatalf("health %+v", h)
	}
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := New(Options{Region: "eu", Store: st, Sources: src, Interval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var got SiteStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rc, _, err := st.Get(ctx, contract.SiteStatusKey("eu")); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			if err := json.Unmarshal(bytes.TrimSpace(b), &got); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no status published in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.Region != "eu" || got.Health.IngestReadings != 42 {
		t.Fatalf("published %+v", got)
	}
}
