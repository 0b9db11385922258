package web

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/internal/httpx"

	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
		"health": s.health(), "sample": s.o.Console.Status(),
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
