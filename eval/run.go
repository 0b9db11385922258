package eval

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options say where the running Vigil is and how to score.
type Options struct {
	URL        string // Vigil's HTTP address
	AdminToken string
	Kafka      []string // brokers, to read the enriched records back
	Enriched   string   // enriched topic; default vigil.enriched
	Warmup     int      // leading rows of each file that are not scored; SKAB: 400
	Prefix     string   // device id prefix of this run; default "eval-<unix>-"
	// SendLabels stamps each reading's label field ("anomaly"/"normal")
	// from the data set, so the archive can train the supervised models.
	// The detector never reads it.
	SendLabels bool
	Progress   func(string)
}

// FileResult is one file's figures.
type FileResult struct {
	Name       string
	Device     string
	Counts     Counts
	Windowed   Windowed
	Alerts     int
	DeviceDays float64
}

// Report is the whole run.
type Report struct {
	Files      []FileResult
	Total      Counts
	NAB        float64
	Delays     []time.Duration
	Alerts     int
	DeviceDays float64
	// NABTable is NAB's score of the alerts, per series and for every
	// profile, when the data set is in NAB's format (its series have windows).
	NABTable *NABTable
}

// Run replays every series through the ingest API (each a device, rows in
// order, the file's own timestamps as event time), reads every reading's
// score back from the enriched topic and the alerts from the API, and
// scores the rows after the warm-up.
func Run(ctx context.Context, o Options, data []Series) (*Report, error) {
	if o.Enriched == "" {
		o.Enriched = "vigil.enriched"
	}
	if o.Prefix == "" {
		o.Prefix = "eval-" + strconv.FormatInt(time.Now().Unix(), 10) + "-"
	}
	say := func(f string, a ...any) {
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(f, a...))
		}
	}
	client := &http.Client{Timeout: 60 * time.Second}
	var gw struct {
		Key string `json:"key"`
	}
	if err := call(ctx, client, "POST", o.URL+"/api/v1/gateways", o.AdminToken, map[string]any{"gateway_id": o.Prefix + "gw", "device_prefixes": []string{o.Prefix}}, &gw); err != nil {
		return nil, fmt.Errorf("register the eval gateway: %w", err)
	}
	started := time.Now().UTC()
	devices := make([]string, len(data))
	total := 0
	for i, s := range data {
		devices[i] = o.Prefix + metricName(strings.TrimSuffix(strings.ReplaceAll(s.Name, "/", "-"), ".csv"))
		for start := 0; start < len(s.Rows); start += 1000 {
			end := min(start+1000, len(s.Rows))
			var b bytes.Buffer
			b.WriteByte('[')
			for j := start; j < end; j++ {
				r := s.Rows[j]
				if j > start {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"device_id":%q,"id":"%s-%d","ts":%q,`, devices[i], devices[i], j, r.TS.Format(time.RFC3339Nano))
				if o.SendLabels {
					if r.Anomaly {
						b.WriteString(`"label":"anomaly",`)
					} else {
						b.WriteString(`"label":"normal",`)
					}
				}
				b.WriteString(`"metrics":{`)
				for k, m := range r.Metrics {
					if k > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, "%q:%s", m.Name, strconv.FormatFloat(m.Value, 'g', -1, 64))
				}
				b.WriteString("}}")
			}
			b.WriteByte(']')
			if err := postReadings(ctx, client, o.URL, gw.Key, b.Bytes()); err != nil {
				return nil, fmt.Errorf("post %s: %w", s.Name, err)
			}
		}
		total += len(s.Rows)
		say("posted %s (%d rows) as %s", s.Name, len(s.Rows), devices[i])
	}
	scores, err := readScores(ctx, o, total, say)
	if err != nil {
		return nil, err
	}
	var alerts struct {
		Alerts []struct {
			DeviceID string `json:"device_id"`
			State    string `json:"state"`
		} `json:"alerts"`
	}
	if err := call(ctx, client, "GET", o.URL+"/api/v1/alerts?limit=10000&since="+url.QueryEscape(started.Add(-time.Minute).Format(time.RFC3339Nano)), o.AdminToken, nil, &alerts); err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	perDevice := map[string]int{}
	for _, a := range alerts.Alerts {
		perDevice[a.DeviceID]++ // one alert per incident (an update replaces it)
	}
	rep := &Report{}
	var windowed []Windowed
	nab := false
	detections := make([][]int, len(data))
	for i, s := range data {
		if s.Windows != nil {
			nab = true
		}
		// NAB: a detection is a reading that raised an alert (opened an incident)
		incidents := make([]string, len(s.Rows))
		for j := range s.Rows {
			if sc, ok := scores[fmt.Sprintf("%s-%d", devices[i], j)]; ok {
				incidents[j] = sc.incident
			}
		}
		detections[i] = NABDetections(incidents)
	}
	if nab {
		t := ScoreNABSet(data, detections)
		rep.NABTable = &t
	}
	for i, s := range data {
		fr := FileResult{Name: s.Name, Device: devices[i], Alerts: perDevice[devices[i]]}
		var pts []Point
		for j := o.Warmup; j < len(s.Rows); j++ {
			sc, ok := scores[fmt.Sprintf("%s-%d", devices[i], j)]
			if !ok {
				return nil, fmt.Errorf("no score for row %d of %s", j, s.Name)
			}
			// a reading is flagged when the pipeline counts it in an open
			// incident: it opened one (score >= threshold) or kept one going
			// (the hysteresis band)
			p := Point{TS: s.Rows[j].TS, Truth: s.Rows[j].Anomaly, Flagged: sc.incident != "" || sc.score >= sc.threshold}
			fr.Counts.Add(p)
			pts = append(pts, p)
		}
		fr.Windowed = Score(pts)
		if n := len(s.Rows); n > 1 {
			fr.DeviceDays = s.Rows[n-1].TS.Sub(s.Rows[0].TS).Hours() / 24
		}
		rep.Total.Merge(fr.Counts)
		rep.Delays = append(rep.Delays, fr.Windowed.Delays...)
		rep.Alerts += fr.Alerts
		rep.DeviceDays += fr.DeviceDays
		windowed = append(windowed, fr.Windowed)
		rep.Files = append(rep.Files, fr)
	}
	rep.NAB = NABScore(windowed)
	sort.Slice(rep.Delays, func(i, j int) bool { return rep.Delays[i] < rep.Delays[j] })
	return rep, nil
}

// scored is what the pipeline said about one reading: its score and the
// incident (alert) it belongs to, if any.
type scored struct {
	score, threshold float64
	incident         string
}

// readScores reads the enriched topic from the start (read committed) until
// every reading of this run has its score.
func readScores(ctx context.Context, o Options, want int, say func(string, ...any)) (map[string]scored, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(o.Kafka...), kgo.ConsumeTopics(o.Enriched),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := make(map[string]scored, want)
	var dec contract.EnrichedDecoder
	deadline := time.Now().Add(5 * time.Minute)
	lastSay := time.Now()
	for len(out) < want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("read %d of %d scores from %s in 5 minutes", len(out), want, o.Enriched)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			if !strings.HasPrefix(string(r.Key), o.Prefix) {
				return
			}
			if e, err := dec.Decode(r.Value); err == nil {
				out[e.ID] = scored{e.Score, e.Threshold, e.Incident}
			}
		})
		if time.Since(lastSay) > 5*time.Second {
			say("read %d of %d scores", len(out), want)
			lastSay = time.Now()
		}
	}
	return out, nil
}

func postReadings(ctx context.Context, client *http.Client, base, key string, body []byte) error {
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/ingest", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				return nil
			}
			if resp.StatusCode != 429 && resp.StatusCode != 503 {
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if attempt >= 20 {
			return err
		}
		time.Sleep(500 * time.Millisecond) // the same ids on retry: stored once
	}
}

func call(ctx context.Context, client *http.Client, method, u, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out, json.RejectUnknownMembers(false))
}

// Quantile of sorted durations.
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[int(q*float64(len(d)-1))]
}

// String prints the report as a table, per file and in total.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-58s %6s %6s %6s %6s %7s %8s\n", "file", "F1", "FAR%", "MAR%", "NAB", "alerts", "delay")
	for _, f := range r.Files {
		d := "-"
		if len(f.Windowed.Delays) > 0 {
			d = f.Windowed.Delays[0].String()
		}
		fmt.Fprintf(&b, "%-58s %6.3f %6.2f %6.2f %6.1f %7d %8s\n", f.Name, f.Counts.F1(), 100*f.Counts.FAR(), 100*f.Counts.MAR(), NABScore([]Windowed{f.Windowed}), f.Alerts, d)
	}
	perDay := 0.0
	if r.DeviceDays > 0 {
		perDay = float64(r.Alerts) / r.DeviceDays
	}
	if r.NABTable != nil {
		b.WriteString("\nNAB's scoring of the alerts (a detection is a reading that opened an incident):\n")
		b.WriteString(r.NABTable.String())
	}
	fmt.Fprintf(&b, "TOTAL  F1 %.3f  FAR %.2f%%  MAR %.2f%%  NAB %.1f  detection delay p50 %s  alerts %d (%.1f per device-day)  [TP %d FP %d FN %d TN %d]\n",
		r.Total.F1(), 100*r.Total.FAR(), 100*r.Total.MAR(), r.NAB, Quantile(r.Delays, 0.5), r.Alerts, perDay, r.Total.TP, r.Total.FP, r.Total.FN, r.Total.TN)
	return b.String()
}
