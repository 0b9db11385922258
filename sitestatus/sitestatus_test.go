package sitestatus

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The writer publishes the figures read out of the process's metrics at
// sites/<region>/status.json, and stops with its context.
func TestWriterPublishes(t *testing.T) {
	reg := prometheus.NewRegistry()
	ing := prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_ingest_readings_total"})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vigil_pipeline_lag_records"}, []string{"partition"})
	reg.MustRegister(ing, lag)
	ing.Add(42)
	lag.WithLabelValues("3").Set(7)
	h := HealthFrom(reg, nil)
	if h.IngestReadings != 42 || h.LagByPartition["3"] != 7 || h.Model != contract.BaselineModel {
		t.Fatalf("health %+v", h)
	}
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := New(Options{Region: "eu", Store: st, Gatherer: reg, Interval: time.Hour})
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
