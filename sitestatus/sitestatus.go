// Package sitestatus publishes this region's figures to the shared bucket
// (contract.SiteStatusKey) for the global view, and computes them for the
// status page.
package sitestatus

import (
	"fmt"
	"github.com/vigil/vigil/pipeline"

	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"time"

	"github.com/go-json-experiment/json"
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

// Options are the site-status writer's settings and dependencies.
type Options struct {
	Region     string
	Store      storage.Store
	Sources    Sources       // whose figures are published
	Interval   time.Duration // console.status_interval
	ClientOpts []kgo.Opt     // the bus's client options, to size the topics
	Topics     []string
	Logger     *zap.Logger
}

// Writer writes this region's SiteStatus to the bucket every interval.
type Writer struct{ o Options }

// New builds a writer; Run starts it.
func New(o Options) *Writer {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Writer{o: o}
}

// Run writes until ctx ends. A failed write is logged and retried next time.
func (w *Writer) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(w.o.ClientOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	t := time.NewTicker(w.o.Interval)
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
		h := HealthOf(w.o.Sources)
		secs := max(time.Since(lastAt).Seconds(), 0.001)
		st := SiteStatus{Region: w.o.Region, UpdatedAt: time.Now().UTC(), Health: h, TopicSizes: map[string]int64{},
			IngestRate: (h.IngestReadings - last.IngestReadings) / secs, PipelineRate: (h.PipelineReadings - last.PipelineReadings) / secs}
		last, lastAt = h, time.Now()
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if ends, err := kadm.NewClient(cl).ListEndOffsets(lctx, w.o.Topics...); err == nil {
			ends.Each(func(o kadm.ListedOffset) { st.TopicSizes[o.Topic] += o.Offset })
		}
		cancel()
		b, _ := json.Marshal(st)
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := w.o.Store.Put(pctx, contract.SiteStatusKey(w.o.Region), bytes.NewReader(b), int64(len(b)))
		pcancel()
		if err != nil && !failing && ctx.Err() == nil {
			w.o.Logger.Warn("could not publish this region's status to the bucket; retrying", zap.Error(err))
		}
		failing = err != nil
	}
}

// Health is the pipeline's figures as the status page shows them.
type Health struct {
	IngestReadings   float64            `json:"ingest_readings"`
	PipelineReadings float64            `json:"pipeline_readings"`
	Batches          float64            `json:"batches"`
	BatchMeanMS      float64            `json:"batch_mean_ms"`
	PostToCommitMS   float64            `json:"post_to_commit_mean_ms"`
	DLQ              float64            `json:"dlq"`
	LagByPartition   map[string]float64 `json:"lag_by_partition"`
	ArchiveRows      float64            `json:"archive_rows"`
	ArchivePending   float64            `json:"archive_pending_rows"`
	ArchiveStoreUp   float64            `json:"archive_store_up"`
	Model            string             `json:"model"`
	Lease            string             `json:"lease"`
}

// ModelsStatus is what the figures need of the models service.
type ModelsStatus interface {
	Status() ml.Status
	Lease() ml.LeaseRecord
}

// Sources are the components whose figures make the Health; each reports
// its own (none is scraped out of the metrics by name). A nil source
// leaves its figures at zero.
type Sources struct {
	Ingest  interface{ Readings() float64 }
	Stream  interface{ Stats() pipeline.Stats }
	Archive interface{ Stats() storage.ArchiveStats }
	Models  ModelsStatus
}

// HealthOf reads the figures of the sources.
func HealthOf(src Sources) Health {
	h := Health{LagByPartition: map[string]float64{}, Model: contract.BaselineModel, Lease: "models service not running"}
	if models := src.Models; models != nil {
		st, l := models.Status(), models.Lease()
		h.Model = st.Running
		if st.RunningShadow != "" {
			h.Model += " (shadow " + st.RunningShadow + ")"
		}
		switch {
		case st.LeaseError != "":
			h.Lease = "not a candidate: " + st.LeaseError
		case st.Leading:
			h.Lease = fmt.Sprintf("held by this process (epoch %d)", st.Epoch)
		case l.Holder != "":
			h.Lease = fmt.Sprintf("held by %s (epoch %d)", l.Holder, l.Epoch)
		case !st.Candidate:
			h.Lease = "this process does not train (models.train: false)"
		default:
			h.Lease = "no holder yet"
		}
	}
	if src.Ingest != nil {
		h.IngestReadings = src.Ingest.Readings()
	}
	if src.Stream != nil {
		st := src.Stream.Stats()
		h.PipelineReadings, h.Batches, h.DLQ, h.BatchMeanMS, h.PostToCommitMS = st.Readings, st.Batches, st.DLQ, st.BatchMeanMS, st.PostToCommitMS
		for p, l := range st.LagByPartition {
			h.LagByPartition[p] = float64(l)
		}
	}
	if src.Archive != nil {
		st := src.Archive.Stats()
		h.ArchiveRows, h.ArchivePending = st.Rows, st.Pending
		if st.StoreUp {
			h.ArchiveStoreUp = 1
		}
	}
	return h
}
