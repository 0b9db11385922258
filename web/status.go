package web

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/storage"
)

// SiteStatus is what each region publishes at sites/<region>/status.json
// for the global view.
type SiteStatus struct {
	Region       string           `json:"region"`
	UpdatedAt    time.Time        `json:"updated_at"`
	IngestRate   float64          `json:"ingest_per_s"`
	PipelineRate float64          `json:"pipeline_per_s"`
	Health       Health           `json:"health"`
	TopicSizes   map[string]int64 `json:"topic_records"`
}

// StatusWriter writes this region's SiteStatus to the bucket every interval.
type StatusWriter struct {
	Region    string
	Store     storage.Store
	Models    *ml.Service // nil: no models service
	Gatherer  prometheus.Gatherer
	Interval  time.Duration
	KafkaOpts []kgo.Opt
	Topics    []string
	Logger    *zap.Logger
}

// Run writes until ctx ends. A failed write is logged and retried next time.
func (w *StatusWriter) Run(ctx context.Context) error {
	if w.Logger == nil {
		w.Logger = zap.NewNop()
	}
	cl, err := kgo.NewClient(w.KafkaOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	var last Health
	lastAt := time.Now()
	failing := false
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		h := healthFrom(w.Gatherer, w.Models)
		secs := max(time.Since(lastAt).Seconds(), 0.001)
		st := SiteStatus{Region: w.Region, UpdatedAt: time.Now().UTC(), Health: h, TopicSizes: map[string]int64{},
			IngestRate: (h.IngestReadings - last.IngestReadings) / secs, PipelineRate: (h.PipelineReadings - last.PipelineReadings) / secs}
		last, lastAt = h, time.Now()
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if ends, err := kadm.NewClient(cl).ListEndOffsets(lctx, w.Topics...); err == nil {
			ends.Each(func(o kadm.ListedOffset) { st.TopicSizes[o.Topic] += o.Offset })
		}
		cancel()
		b, _ := json.Marshal(st)
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := w.Store.Put(pctx, contract.SiteStatusKey(w.Region), bytes.NewReader(b), int64(len(b)))
		pcancel()
		if err != nil && !failing && ctx.Err() == nil {
			w.Logger.Warn("could not publish this region's status to the bucket; retrying", zap.Error(err))
		}
		failing = err != nil
	}
}
