package web

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/internal/httpx"

	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/pipeline"
)

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

// healthFrom reads the figures out of the process's metrics.
func healthFrom(g prometheus.Gatherer, models *ml.Service) Health {
	h := Health{LagByPartition: map[string]float64{}, Model: pipeline.BaselineName, Lease: "models service not running"}
	if models != nil {
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
	mfs, err := g.Gather()
	if err != nil {
		return h
	}
	val := func(m *dto.Metric) float64 {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
		return 0
	}
	for _, mf := range mfs {
		ms := mf.GetMetric()
		if len(ms) == 0 {
			continue
		}
		switch mf.GetName() {
		case "vigil_ingest_readings_total":
			h.IngestReadings = val(ms[0])
		case "vigil_pipeline_readings_total":
			h.PipelineReadings = val(ms[0])
		case "vigil_pipeline_batches_total":
			h.Batches = val(ms[0])
		case "vigil_pipeline_dlq_total":
			h.DLQ = val(ms[0])
		case "vigil_archive_rows_total":
			h.ArchiveRows = val(ms[0])
		case "vigil_archive_pending_rows":
			h.ArchivePending = val(ms[0])
		case "vigil_archive_store_up":
			h.ArchiveStoreUp = val(ms[0])
		case "vigil_pipeline_batch_seconds":
			if hs := ms[0].GetHistogram(); hs.GetSampleCount() > 0 {
				h.BatchMeanMS = 1000 * hs.GetSampleSum() / float64(hs.GetSampleCount())
			}
		case "vigil_pipeline_post_to_commit_seconds":
			if hs := ms[0].GetHistogram(); hs.GetSampleCount() > 0 {
				h.PostToCommitMS = 1000 * hs.GetSampleSum() / float64(hs.GetSampleCount())
			}
		case "vigil_pipeline_lag_records":
			for _, m := range ms {
				for _, l := range m.GetLabel() {
					if l.GetName() == "partition" {
						h.LagByPartition[l.GetValue()] = val(m)
					}
				}
			}
		}
	}
	return h
}

type bucketCount struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

func (s *Server) overview(w http.ResponseWriter, _ *http.Request) {
	alerts := s.o.Alerts.Query(10000, "", time.Time{})
	byMinute, bySite, byKind := map[string]int{}, map[string]int{}, map[string]int{}
	for _, a := range alerts {
		if a.State != "open" && a.Readings == 0 {
			continue
		}
		byMinute[a.DetectedAt.UTC().Truncate(time.Minute).Format(time.RFC3339)]++
		site := a.Site
		if site == "" {
			site = "(none)"
		}
		bySite[site]++
		byKind[a.Metric]++
	}
	list := func(m map[string]int, byKey bool) []bucketCount {
		out := make([]bucketCount, 0, len(m))
		for k, v := range m {
			out = append(out, bucketCount{k, v})
		}
		sort.Slice(out, func(i, j int) bool {
			if byKey {
				return out[i].Key < out[j].Key
			}
			return out[i].Count > out[j].Count || out[i].Count == out[j].Count && out[i].Key < out[j].Key
		})
		return out
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"region": s.o.Region, "refresh_seconds": int(s.o.Console.RefreshInterval().Seconds()),
		"alerts_by_minute": list(byMinute, true), "alerts_by_site": list(bySite, false), "alerts_by_kind": list(byKind, false),
		"health": healthFrom(s.o.Gatherer, s.o.Models), "sample": s.o.Console.Status(),
	})
}

// deviceReadings answers the recent enriched readings of one device, read
// from the tail of every partition of the enriched topic.
func (s *Server) deviceReadings(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	limit := 300
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5000 {
			writeErr(w, http.StatusBadRequest, "limit must be a whole number from 1 to 5000")
			return
		}
		limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	out, err := s.tail(ctx, id, limit)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "read recent readings from Kafka: "+err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"device_id": id, "readings": out})
}

func (s *Server) tail(ctx context.Context, device string, limit int) ([]jsonObject, error) {
	const window = 5000 // records read back per partition
	var out []jsonObject
	span := bus.Span{Topic: s.o.EnrichedTopic, From: func(_ int32, _, end int64) int64 { return end - window }}
	err := bus.ReadToEnd(ctx, s.o.KafkaOpts, span, func(rec *kgo.Record) {
		if string(rec.Key) != device {
			return
		}
		var o jsonObject
		if json.Unmarshal(rec.Value, &o) == nil {
			out = append(out, o)
		}
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return tsOf(out[i]) < tsOf(out[j]) })
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

type jsonObject = map[string]any

func tsOf(o jsonObject) string { s, _ := o["ts"].(string); return s }
