package web

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/internal/httpx"
	"github.com/vigil/vigil/sitestatus"

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
	history := []sitestatus.Point{}
	if s.o.History != nil {
		history = s.o.History()
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"region": s.o.Region, "refresh_seconds": int(s.o.Console.RefreshInterval().Seconds()), "history": history,
		"alerts_by_minute": list(byMinute, true), "alerts_by_site": list(bySite, false), "alerts_by_kind": list(byKind, false),
		"health": s.health(), "sample": s.o.Console.Status(),
	})
}

// deviceReadings answers one device's enriched readings over a time range
// (range=15m|1h|24h|7d, or from/to in RFC 3339; default: the last 300 from
// Kafka): the recent ones from the tail of the enriched topic, older ones
// from the archive through DuckDB, merged by id, oldest first, and thinned
// to at most points (the highest-scored reading of each slice kept, so a
// spike survives). Each reading carries band: metric -> [low, high], the
// baseline's mean ± 3 standard deviations.
func (s *Server) deviceReadings(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	q := r.URL.Query()
	limit := 300
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5000 {
			writeErr(w, http.StatusBadRequest, "limit must be a whole number from 1 to 5000")
			return
		}
		limit = n
	}
	var from, to time.Time
	if v := q.Get("range"); v != "" {
		d, ok := map[string]time.Duration{"15m": 15 * time.Minute, "1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}[v]
		if !ok {
			writeErr(w, http.StatusBadRequest, "range must be 15m, 1h, 24h or 7d, got "+strconv.Quote(v))
			return
		}
		to = time.Now()
		from = to.Add(-d)
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				writeErr(w, http.StatusBadRequest, p.name+" must be an RFC 3339 time, got "+strconv.Quote(v))
				return
			}
			*p.t = t
		}
	}
	if !from.IsZero() && to.IsZero() {
		to = time.Now()
	}
	if !from.IsZero() && !to.After(from) {
		writeErr(w, http.StatusBadRequest, "to must be after from")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	tailN := limit
	if !from.IsZero() {
		tailN = 1 << 30
	}
	out, err := s.tail(ctx, id, tailN)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "read recent readings from Kafka: "+err.Error())
		return
	}
	sources := []string{"kafka"}
	archived, capped := 0, ""
	if !from.IsZero() {
		kept := out[:0]
		for _, o := range out {
			if t, err := time.Parse(time.RFC3339Nano, tsOf(o)); err == nil && !t.Before(from) && t.Before(to) {
				kept = append(kept, o)
			}
		}
		out = kept
		// older than what the tail holds: the archive
		if s.o.Console != nil && (len(out) == 0 || tsOf(out[0]) > from.UTC().Format(time.RFC3339Nano)) {
			rows, c, err := s.o.Console.DeviceHistory(ctx, id, from, to)
			if err != nil {
				writeErr(w, http.StatusServiceUnavailable, "read the archive: "+err.Error())
				return
			}
			seen := make(map[string]bool, len(out))
			for _, o := range out {
				seen[idOf(o)] = true
			}
			for _, row := range rows {
				if !seen[idOf(row)] {
					out = append(out, row)
					archived++
				}
			}
			sort.SliceStable(out, func(i, j int) bool { return tsOf(out[i]) < tsOf(out[j]) })
			capped = c
			if archived > 0 {
				sources = append(sources, "archive")
			}
		}
		out = thin(out, limit)
	}
	for _, o := range out {
		o["band"] = band(o)
	}
	resp := map[string]any{"device_id": id, "readings": out, "sources": sources, "archive_rows": archived}
	if !from.IsZero() {
		resp["from"], resp["to"] = from.UTC(), to.UTC()
	}
	if capped != "" {
		resp["capped"] = capped
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
}

func idOf(o jsonObject) string { s, _ := o["id"].(string); return s }

// thin keeps at most n readings: of each of n equal slices, the one with
// the highest score.
func thin(rs []jsonObject, n int) []jsonObject {
	if len(rs) <= n {
		return rs
	}
	out := make([]jsonObject, 0, n)
	for i := 0; i < n; i++ {
		lo, hi := i*len(rs)/n, (i+1)*len(rs)/n
		best := rs[lo]
		for _, o := range rs[lo:hi] {
			if score(o) > score(best) {
				best = o
			}
		}
		out = append(out, best)
	}
	return out
}

func score(o jsonObject) float64 { f, _ := o["score"].(float64); return f }

// band is the baseline's expected range of each metric of a reading: its
// mean ± 3 standard deviations, from the derived figures (as the enriched
// topic names them, or as the archive's columns do).
func band(o jsonObject) map[string][2]float64 {
	out := map[string][2]float64{}
	metrics, _ := o["metrics"].(map[string]any)
	derived, _ := o["derived"].(map[string]any)
	for m := range metrics {
		mean, ok1 := derived[m+".mean"].(float64)
		std, ok2 := derived[m+".std"].(float64)
		if !ok1 || !ok2 {
			k := sanitize(m)
			mean, ok1 = derived[k+"_mean"].(float64)
			std, ok2 = derived[k+"_std"].(float64)
		}
		if ok1 && ok2 {
			out[m] = [2]float64{mean - 3*std, mean + 3*std}
		}
	}
	return out
}

// sanitize is the archive's column naming of a metric: characters other
// than letters, digits and _ become _.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			b[i] = '_'
		}
	}
	return string(b)
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
