package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type alertsAnswer struct {
	Alerts []struct {
		AlertID    string    `json:"alert_id"`
		DeviceID   string    `json:"device_id"`
		MessageID  string    `json:"message_id"`
		Score      float64   `json:"score"`
		Severity   string    `json:"severity"`
		Model      string    `json:"model"`
		Site       string    `json:"site"`
		State      string    `json:"state"`
		DetectedAt time.Time `json:"detected_at"`
		Reasons    []struct {
			Feature      string  `json:"feature"`
			Value        float64 `json:"value"`
			Contribution float64 `json:"contribution"`
			Detector     string  `json:"detector"`
			Text         string  `json:"text"`
		} `json:"reasons"`
	} `json:"alerts"`
}

func readingsJSON(device string, start time.Time, n int, rng *rand.Rand, temp func(i int) float64) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"device_id":%q,"id":"%s-%d","ts":%q,"metrics":{"temp_c":%.4f,"vibration":%.5f},"attrs":{"mode":"auto"}}`,
			device, device, i, start.Add(time.Duration(i)*time.Second).UTC().Format(time.RFC3339Nano), temp(i), 0.03+0.001*rng.NormFloat64())
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// TestAlertWithinOneSecond is the backbone's first "done when": a real
// server (HTTP, embedded Kafka on a random port, temporary data dir), a
// registered device, normal readings then an outlier, and the alert found
// in the API and on the alerts topic read by kcat within 1 s of the post.
func TestAlertWithinOneSecond(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is needed (apt-get install kcat; the README's test command installs it)")
	}
	s := newServer(t, t.TempDir())
	s.startInProcess()
	defer s.stop()

	key := s.registerDevice("pump-17", map[string]any{"site": "plant-<b>1</b>", "model": "P-100", "lat": 52.1, "lon": 4.3, "tags": []string{"line-a"}})
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(-10 * time.Minute)
	normal := readingsJSON("pump-17", start, 60, rng, func(int) float64 { return 70 + 0.5*rng.NormFloat64() })
	code, body, _ := s.do("POST", "/v1/ingest", key, "application/json", normal)
	if code != http.StatusAccepted || string(body) != `{"accepted":60}`+"\n" {
		t.Fatalf("normal readings: %d %s", code, body)
	}
	// no alert for normal readings, once the pipeline has committed them all
	waitFor(t, 10*time.Second, "60 readings through the pipeline", func() bool { return s.metric("vigil_pipeline_readings_total") >= 60 })
	if got := s.alerts("pump-17"); len(got.Alerts) != 0 {
		t.Fatalf("normal readings raised alerts: %+v", got)
	}

	outlier := fmt.Sprintf(`{"device_id":"pump-17","id":"outlier-1","ts":%q,"metrics":{"temp_c":95.0,"vibration":0.03}}`, start.Add(61*time.Second).Format(time.RFC3339Nano))
	posted := time.Now()
	code, body, _ = s.do("POST", "/v1/ingest", key, "application/json", []byte(outlier))
	if code != http.StatusAccepted {
		t.Fatalf("outlier: %d %s", code, body)
	}
	var inAPI time.Duration
	waitFor(t, 5*time.Second, "the alert in the API", func() bool {
		a := s.alerts("pump-17")
		if len(a.Alerts) == 0 {
			return false
		}
		inAPI = time.Since(posted)
		al := a.Alerts[0]
		if al.MessageID != "outlier-1" || al.Score < 0.8 || al.Model != "baseline-v1" || al.State != "open" || al.Site != "plant-<b>1</b>" {
			t.Fatalf("unexpected alert %+v", al)
		}
		if len(al.Reasons) == 0 || !strings.HasPrefix(al.Reasons[0].Feature, "temp_c.") || al.Reasons[0].Text == "" || al.Reasons[0].Detector == "" {
			t.Fatalf("alert reasons do not name temp_c with a detector and an explanation: %+v", al.Reasons)
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", "vigil.alerts", "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-X", "fetch.wait.max.ms=5").CombinedOutput()
	onTopic := time.Since(posted)
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"message_id":"outlier-1"`) {
		t.Fatalf("kcat did not show the alert on vigil.alerts:\n%s", out)
	}
	t.Logf("post to alert: %s in the API, %s on the topic through kcat (kcat start-up included)", inAPI, onTopic)
	if inAPI > time.Second || onTopic > time.Second {
		t.Fatalf("alert took too long: API %s, kcat %s (want ≤ 1s)", inAPI, onTopic)
	}
	// the readings' topics are compressed (kafka.compression, zstd by
	// default; kafka.pipeline_compression, snappy) and still plain JSON
	// to kcat
	for _, topic := range []string{"vigil.raw", "vigil.enriched"} {
		out, err := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed").CombinedOutput()
		if err != nil {
			t.Fatalf("kcat %s: %v\n%s", topic, err, out)
		}
		if !strings.Contains(string(out), `"id":"outlier-1"`) || !strings.Contains(string(out), `"device_id":"pump-17"`) {
			t.Fatalf("kcat did not show the outlier's reading on %s:\n%.2000s", topic, out)
		}
	}
	// each enriched record names its raw record in a header (the dedup
	// read-back's bound after a restart), which kcat shows too
	out, err = exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", "vigil.enriched", "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed", "-f", "%p %h %s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat vigil.enriched: %v\n%s", err, out)
	}
	var rawAt []string // partition, offset
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `"id":"outlier-1"`) {
			m := regexp.MustCompile(`^(\d+) vigil-raw-offset=(\d+) `).FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("the outlier's enriched record has no vigil-raw-offset header: %.300s", line)
			}
			rawAt = m[1:]
		}
	}
	if rawAt == nil {
		t.Fatalf("kcat did not show the outlier's enriched record:\n%.2000s", out)
	}
	out, err = exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", "vigil.raw", "-p", rawAt[0], "-o", rawAt[1], "-c", "1", "-e", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"id":"outlier-1"`) {
		t.Fatalf("vigil.raw partition %s offset %s (the header's) is not the outlier's reading: %v\n%.500s", rawAt[0], rawAt[1], err, out)
	}
	if codecs := topicCodecs(t, s.kafka, "vigil.raw"); len(codecs) != 1 || !codecs["zstd"] {
		t.Fatalf("batches on vigil.raw are %v, want zstd only (kafka.compression's default)", codecs)
	}
	if codecs := topicCodecs(t, s.kafka, "vigil.enriched"); len(codecs) != 1 || !codecs["snappy"] {
		t.Fatalf("batches on vigil.enriched are %v, want snappy only (kafka.pipeline_compression's default)", codecs)
	}

	// A record on the raw topic that is not a reading goes to the dead-letter
	// topic with the reason in a header, and the partition moves on.
	prod, err := kgo.NewClient(kgo.SeedBrokers(s.kafka))
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "vigil.raw", Key: []byte("pump-17"), Value: []byte("not a reading")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	prod.Close()
	after := fmt.Sprintf(`{"device_id":"pump-17","id":"after-poison","ts":%q,"metrics":{"temp_c":70,"vibration":0.03}}`, start.Add(62*time.Second).Format(time.RFC3339Nano))
	if code, b, _ := s.do("POST", "/v1/ingest", key, "application/json", []byte(after)); code != http.StatusAccepted {
		t.Fatalf("post after poison: %d %s", code, b)
	}
	waitFor(t, 10*time.Second, "the poison record in the DLQ and the next reading scored", func() bool {
		return s.metric("vigil_pipeline_dlq_total") == 1 && s.metric("vigil_pipeline_readings_total") >= 62
	})
	dlq, err := exec.CommandContext(ctx, kcat, "-b", s.kafka, "-C", "-t", "vigil.dlq", "-o", "beginning", "-e", "-q", "-X", "fetch.wait.max.ms=5", "-f", "%h %s\n").CombinedOutput()
	if err != nil || !strings.Contains(string(dlq), "reason=raw record is not a Vigil reading") || !strings.Contains(string(dlq), "not a reading") {
		t.Fatalf("DLQ record: %v %s", err, dlq)
	}

	// The alert store is rebuilt from the alerts topic at start.
	s.stop()
	s.startInProcess()
	if a := s.alerts("pump-17"); len(a.Alerts) != 1 || a.Alerts[0].MessageID != "outlier-1" {
		t.Fatalf("after a restart the API shows %+v", a.Alerts)
	}
}

// metric reads one unlabelled metric from /metrics (0 when absent).
func (s *server) metric(name string) float64 {
	s.t.Helper()
	code, b, _ := s.do("GET", "/metrics", "", "", nil)
	if code != 200 {
		s.t.Fatalf("metrics: %d", code)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

func (s *server) alerts(device string) alertsAnswer {
	s.t.Helper()
	code, b, _ := s.do("GET", "/api/v1/alerts?device="+url.QueryEscape(device), s.token, "", nil)
	if code != 200 {
		s.t.Fatalf("alerts: %d %s", code, b)
	}
	var a alertsAnswer
	if err := json.Unmarshal(b, &a, json.RejectUnknownMembers(false)); err != nil {
		s.t.Fatalf("alerts answer %s: %v", b, err)
	}
	return a
}

// topicCodecs reads the topics from the start and returns the compression
// codecs of their records' batches as the broker stores them ("none",
// "gzip", "snappy", "lz4", "zstd").
func topicCodecs(t *testing.T, seeds string, topics ...string) map[string]bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	// a partition is read once its last record is (a transactional
	// topic's last offset is the commit marker, one before is a record)
	last := map[string]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			last[fmt.Sprint(o.Topic, o.Partition)] = o.Offset - 2
		}
	})
	names := []string{"none", "gzip", "snappy", "lz4", "zstd"}
	codecs := map[string]bool{}
	for len(last) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %v: %d partitions not read to their end", topics, len(last))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if c := int(r.Attrs.CompressionType()); c < len(names) {
				codecs[names[c]] = true
			}
			if k := fmt.Sprint(r.Topic, r.Partition); r.Offset >= last[k] {
				delete(last, k)
			}
		})
	}
	return codecs
}
