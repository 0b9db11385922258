package ingest

import (
	"fmt"
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var waitFor = testutil.WaitFor

type rig struct {
	cluster *kfake.Cluster
	reg     *Registry
	h       *Handler
	srv     *httptest.Server
	devKey  string
	gwKey   string
	cancel  context.CancelFunc
	done    chan struct{}
}

// testConfig is Default() with small limits.
func testConfig() Config {
	c := Default()
	c.MaxBodyBytes, c.MaxReadings, c.MaxMetrics, c.ProduceTimeout, c.MaxBufferedRecords = 4096, 5, 4, 2*time.Second, 10
	c.MaxMetricsPerDevice, c.MaxDevicesPerGateway, c.RatePerKey, c.MaxInflightBytes = 6, 3, 0, 1<<20
	return c
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "raw", "devices"))
	if err != nil {
		t.Fatal(err)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	reg, err := NewRegistry(RegistryOptions{Topic: "devices", ClientOpts: opts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{cluster: c, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { _ = reg.Run(ctx); close(r.done) }()
	<-reg.Ready()
	r.devKey, err = reg.RegisterDevice(ctx, contract.Device{DeviceID: "dev-1", Site: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	r.gwKey, err = reg.RegisterGateway(ctx, contract.Gateway{GatewayID: "gw", Devices: []string{"dev-2"}, DevicePrefixes: []string{"line-a."}})
	if err != nil {
		t.Fatal(err)
	}
	r.h, err = NewHandler(cfg, HandlerOptions{Region: "eu", Topic: "raw", Registry: reg, ClientOpts: opts})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(r.h)
	t.Cleanup(func() {
		r.srv.Close()
		ctx, c2 := context.WithTimeout(context.Background(), 3*time.Second)
		r.h.Close(ctx)
		c2()
		cancel()
		<-r.done
		c.Close()
	})
	return r
}

func (r *rig) post(t *testing.T, key, ct, body string) (int, RequestError, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", r.srv.URL, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e RequestError
	if resp.StatusCode != http.StatusAccepted {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("error body is not the documented JSON: %s (%v)", b, err)
		}
		if e.Message == "" {
			t.Fatalf("error body names no problem: %s", b)
		}
	}
	return resp.StatusCode, e, resp.Header
}

func ts(d time.Duration) string { return `"` + time.Now().Add(d).UTC().Format(time.RFC3339Nano) + `"` }

// TestRefusals covers every refusal of POST /v1/ingest: status, a message
// naming the problem, and the index of each bad reading.
func TestRefusals(t *testing.T) {
	r := newRig(t, testConfig())
	ok := `{"device_id":"dev-1","ts":` + ts(-time.Minute) + `,"metrics":{"t":1}}`
	cases := []struct {
		name, key, ct, body string
		status              int
		msg                 string // substring of error or of the first detail's reason
		index               int    // index of the first detail; -1 when none expected
	}{
		{"no key", "", "application/json", ok, 401, "missing device key", -1},
		{"unknown key", "vgl_nope", "application/json", ok, 401, "unknown device or gateway key", -1},
		{"text/plain", r.devKey, "text/plain", ok, 415, "text/plain", -1},
		{"form", r.devKey, "application/x-www-form-urlencoded", ok, 415, "not supported", -1},
		{"body too large", r.devKey, "application/json", `[` + strings.Repeat(ok+",", 80) + ok + `]`, 413, "max_body_bytes", -1},
		{"too many readings", r.devKey, "application/json", `[` + strings.Repeat(ok+",", 5) + ok + `]`, 413, "max_readings", -1},
		{"too many ndjson", r.devKey, "application/x-ndjson", strings.Repeat(ok+"\n", 6), 413, "max_readings", -1},
		{"empty body", r.devKey, "application/json", ``, 400, "empty body", -1},
		{"empty array", r.devKey, "application/json", `[]`, 400, "no readings", -1},
		{"not JSON", r.devKey, "application/json", `hello`, 400, "invalid JSON", -1},
		{"truncated", r.devKey, "application/json", `{"device_id":"dev-1"`, 400, "invalid JSON", 0},
		{"trailing data", r.devKey, "application/json", ok + ` {}`, 400, "after the JSON value", -1},
		{"a number", r.devKey, "application/json", `42`, 400, "JSON object", -1},
		{"array of numbers", r.devKey, "application/json", `[1]`, 400, "must be a JSON object", 0},
		{"missing device_id", r.devKey, "application/json", `{"ts":` + ts(0) + `,"metrics":{"t":1}}`, 400, "device_id is required", 0},
		{"bad device_id", r.devKey, "application/json", `{"device_id":"a b","ts":` + ts(0) + `,"metrics":{"t":1}}`, 400, "device_id", 0},
		{"long device_id", r.devKey, "application/json", `{"device_id":"` + strings.Repeat("x", 129) + `","ts":` + ts(0) + `,"metrics":{"t":1}}`, 400, "1-128", 0},
		{"device_id number", r.devKey, "application/json", `{"device_id":7,"ts":` + ts(0) + `,"metrics":{"t":1}}`, 400, "device_id must be a string", 0},
		{"missing ts", r.devKey, "application/json", `{"device_id":"dev-1","metrics":{"t":1}}`, 400, "ts is required", 0},
		{"bad ts", r.devKey, "application/json", `{"device_id":"dev-1","ts":"yesterday","metrics":{"t":1}}`, 400, "RFC 3339", 0},
		{"ts bool", r.devKey, "application/json", `{"device_id":"dev-1","ts":true,"metrics":{"t":1}}`, 400, "ts must be", 0},
		{"negative epoch", r.devKey, "application/json", `{"device_id":"dev-1","ts":-5,"metrics":{"t":1}}`, 400, "epoch", 0},
		{"future ts", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(time.Hour) + `,"metrics":{"t":1}}`, 400, "future", 0},
		{"no metrics", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `}`, 400, "metrics must hold", 0},
		{"empty metrics", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{}}`, 400, "metrics must hold", 0},
		{"metric string", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":"hot"}}`, 400, "metrics.t must be a finite number", 0},
		{"metric NaN literal", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":NaN}}`, 400, "invalid JSON", 0},
		{"metric overflow", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1e999}}`, 400, "out of the range", 0},
		{"metric null", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":null}}`, 400, "metrics.t", 0},
		{"metric object", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":{"a":1}}}`, 400, "metrics.t must be a number", 0},
		{"bad metric name", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t c":1}}`, 400, "metric name", 0},
		{"too many metrics", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"a":1,"b":2,"c":3,"d":4,"e":5}}`, 400, "max_metrics", 0},
		{"attrs array", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1},"attrs":[1]}`, 400, "attrs must be an object", 0},
		{"attr object", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1},"attrs":{"a":{}}}`, 400, "attrs.a", 0},
		{"bad label", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1},"label":"weird"}`, 400, "label", 0},
		{"bad id", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1},"id":""}`, 400, "id must be", 0},
		{"unknown field", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1},"temp":3}`, 400, `unknown field "temp"`, 0},
		{"duplicate key", r.devKey, "application/json", `{"device_id":"dev-1","device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1}}`, 400, "duplicate", 0},
		{"duplicate metric", r.devKey, "application/json", `{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":1,"t":2}}`, 400, "duplicate", 0},
		{"invalid UTF-8", r.devKey, "application/json", "{\"device_id\":\"dev-1\",\"ts\":" + ts(0) + ",\"metrics\":{\"t\":1},\"attrs\":{\"a\":\"\xff\"}}", 400, "UTF-8", 0},
		{"second of three bad", r.devKey, "application/json", `[` + ok + `,{"device_id":"dev-1","ts":` + ts(0) + `,"metrics":{"t":"x"}},` + ok + `]`, 400, "metrics.t", 1},
		{"ndjson third line bad", r.devKey, "application/x-ndjson", ok + "\n" + ok + "\n{\"device_id\":\"dev-1\"}\n", 400, "ts is required", 2},
		{"device key for other device", r.devKey, "application/json", `{"device_id":"dev-2","ts":` + ts(0) + `,"metrics":{"t":1}}`, 403, "may not post for device", 0},
		{"gateway outside its set", r.gwKey, "application/json", `[{"device_id":"dev-2","ts":` + ts(0) + `,"metrics":{"t":1}},{"device_id":"line-b.7","ts":` + ts(0) + `,"metrics":{"t":1}}]`, 403, "line-b.7", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, e, _ := r.post(t, c.key, c.ct, c.body)
			if code != c.status {
				t.Fatalf("status %d, want %d (%+v)", code, c.status, e)
			}
			text := e.Message
			if c.index >= 0 {
				if len(e.Details) == 0 || e.Details[0].Index != c.index {
					t.Fatalf("want a detail at index %d, got %+v", c.index, e)
				}
				text = e.Details[0].Reason
			} else if len(e.Details) > 0 {
				t.Fatalf("unexpected details %+v", e.Details)
			}
			if !strings.Contains(text, c.msg) {
				t.Fatalf("error %q does not contain %q", text, c.msg)
			}
		})
	}
	// Nothing of a refused request reached Kafka: the raw topic holds only
	// what the accepted request below wrote.
	code, _, _ := r.post(t, r.gwKey, "application/x-ndjson", `{"device_id":"line-a.1","ts":`+ts(0)+`,"metrics":{"t":1}}`+"\n\n"+`{"device_id":"dev-2","ts":1700000000000.5,"metrics":{"t":2},"attrs":{"on":true,"n":3,"s":"x"},"label":"anomaly"}`)
	if code != http.StatusAccepted {
		t.Fatalf("gateway post: %d", code)
	}
	recs := readAll(t, r, "raw")
	if len(recs) != 2 {
		t.Fatalf("raw topic holds %d records, want exactly the 2 accepted ones", len(recs))
	}
	for _, rec := range recs {
		rd, err := contract.DecodeRaw(rec.Value)
		if err != nil {
			t.Fatalf("raw record does not decode: %v: %s", err, rec.Value)
		}
		if rd.Region != "eu" || rd.IngestedAt.IsZero() || !strings.HasPrefix(rd.ID, "h-") || string(rec.Key) != rd.DeviceID {
			t.Fatalf("raw record lacks server fields: %+v", rd)
		}
		if rd.DeviceID == "dev-2" {
			if !rd.TS.Equal(time.UnixMilli(1700000000000).Add(500*time.Microsecond)) || rd.Label != "anomaly" || len(rd.Attrs) != 3 || rd.Attrs[0].Value != "true" {
				t.Fatalf("dev-2 reading decoded wrong: %+v", rd)
			}
		}
	}
}

func readAll(t *testing.T, r *rig, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.cluster.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		if fs.NumRecords() == 0 {
			return out
		}
		out = append(out, fs.Records()...)
	}
}

// TestOverloadAndBusDown: a full producer buffer answers 429 and a broker
// that does not acknowledge answers 503, both with Retry-After; the held
// request is acknowledged once the broker answers again.
func TestOverloadAndBusDown(t *testing.T) {
	cfg := testConfig()
	cfg.ProduceTimeout = 500 * time.Millisecond
	cfg.MaxBufferedRecords = 8
	r := newRig(t, cfg)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	r.cluster.KeepControl()
	r.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		r.cluster.SleepControl(func() { <-release })
		return nil, nil, false
	})
	body := func(n int, prefix string) string {
		var b bytes.Buffer
		b.WriteByte('[')
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"device_id":"dev-1","id":"` + prefix + string(rune('a'+i)) + `","ts":` + ts(0) + `,"metrics":{"t":1}}`)
		}
		b.WriteByte(']')
		return b.String()
	}
	first := make(chan int, 1)
	go func() {
		code, _, _ := r.post(t, r.devKey, "application/json", body(5, "x"))
		first <- code
	}()
	waitFor(t, 5*time.Second, "5 readings buffered", func() bool { return r.h.prod.BufferedProduceRecords() >= 5 })
	code, e, hdr := r.post(t, r.devKey, "application/json", body(4, "y")) // 5 buffered + 4 > 8
	if code != http.StatusTooManyRequests || hdr.Get("Retry-After") != "1" || !strings.Contains(e.Message, "overloaded") {
		t.Fatalf("want 429 with Retry-After, got %d %q %+v", code, hdr.Get("Retry-After"), e)
	}
	if c := <-first; c != http.StatusServiceUnavailable {
		t.Fatalf("a request the broker did not acknowledge within produce_timeout got %d, want 503", c)
	}
	open()
	waitFor(t, 5*time.Second, "the buffer to drain", func() bool { return r.h.prod.BufferedProduceRecords() == 0 })
	code, e, _ = r.post(t, r.devKey, "application/json", body(2, "w"))
	if code != http.StatusAccepted {
		t.Fatalf("after the broker recovered: %d %+v", code, e)
	}
}

// TestPerKeyLimits: a device may use at most max_metrics_per_device metric
// names (and attr names), a gateway may post for at most
// max_devices_per_gateway device ids; each refusal names the limit, and a
// refused request teaches nothing (the names it carried stay free).
func TestPerKeyLimits(t *testing.T) {
	r := newRig(t, testConfig()) // 6 names per device, 3 devices per gateway
	post := func(key, body string) (int, RequestError) {
		code, e, _ := r.post(t, key, "application/json", body)
		return code, e
	}
	reading := func(dev string, names ...string) string {
		var b strings.Builder
		for i, n := range names {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%d", n, i)
		}
		return `{"device_id":"` + dev + `","ts":` + ts(-time.Minute) + `,"metrics":{` + b.String() + `}}`
	}
	if code, e := post(r.devKey, `[`+reading("dev-1", "a", "b", "c")+`,`+reading("dev-1", "c", "d")+`]`); code != 202 {
		t.Fatalf("4 names: %d %+v", code, e)
	}
	// 4 known + 3 new in one request: refused whole, naming the limit
	code, e := post(r.devKey, reading("dev-1", "a", "e", "f", "g"))
	if code != 400 || len(e.Details) != 1 || !strings.Contains(e.Details[0].Reason, "max_metrics_per_device") || !strings.Contains(e.Details[0].Reason, `"g"`) {
		t.Fatalf("7th name: %d %+v", code, e)
	}
	// the refused request added nothing: 2 new names still fit, known ones always
	if code, e := post(r.devKey, reading("dev-1", "e", "f", "a")); code != 202 {
		t.Fatalf("6 names: %d %+v", code, e)
	}
	if code, e := post(r.devKey, `[`+reading("dev-1", "a", "b", "c")+`,`+reading("dev-1", "d", "e", "f")+`]`); code != 202 {
		t.Fatalf("known names: %d %+v", code, e)
	}
	// attr names are limited the same way
	attrs := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":"v"`, i)
		}
		return `{"device_id":"dev-1","ts":` + ts(-time.Minute) + `,"metrics":{"a":1},"attrs":{` + b.String() + `}}`
	}
	if code, e := post(r.devKey, attrs(4)); code != 202 {
		t.Fatalf("4 attrs: %d %+v", code, e)
	}
	r2 := `[` + attrs(4) + `,` + strings.Replace(attrs(4), `"k0"`, `"x0"`, 1) + `,` + strings.Replace(attrs(4), `"k0"`, `"x1"`, 1) + `,` + strings.Replace(attrs(4), `"k0"`, `"x2"`, 1) + `]`
	if code, e := post(r.devKey, r2); code != 400 || !strings.Contains(e.Details[0].Reason, "attr names") {
		t.Fatalf("7th attr name: %d %+v", code, e)
	}
	// a gateway: at most 3 device ids
	if code, e := post(r.gwKey, `[`+reading("line-a.1", "t")+`,`+reading("line-a.2", "t")+`,`+reading("line-a.1", "u")+`]`); code != 202 {
		t.Fatalf("2 devices: %d %+v", code, e)
	}
	code, e = post(r.gwKey, `[`+reading("line-a.3", "t")+`,`+reading("line-a.4", "t")+`]`)
	if code != 403 || len(e.Details) != 1 || e.Details[0].Index != 1 || !strings.Contains(e.Details[0].Reason, "max_devices_per_gateway") {
		t.Fatalf("4th device id: %d %+v", code, e)
	}
	if code, e := post(r.gwKey, `[`+reading("line-a.3", "t")+`,`+reading("line-a.1", "t")+`]`); code != 202 {
		t.Fatalf("3rd device after the refusal: %d %+v", code, e)
	}
}

// TestRateAndInflight: a key over its token bucket gets 429 with the
// Retry-After the bucket needs, other keys are not slowed; requests over
// the in-flight byte cap get 503.
func TestRateAndInflight(t *testing.T) {
	cfg := testConfig()
	cfg.RatePerKey, cfg.BurstPerKey = 2, 5 // 2 readings/s, 5 at once
	r := newRig(t, cfg)
	now := time.Now()
	r.h.limits.now = func() time.Time { return now } // the bucket's clock, moved by the test
	batch := func(dev string, n int) string {
		rs := make([]string, n)
		for i := range rs {
			rs[i] = `{"device_id":"` + dev + `","ts":` + ts(-time.Minute) + `,"metrics":{"t":1}}`
		}
		return `[` + strings.Join(rs, ",") + `]`
	}
	if code, e, _ := r.post(t, r.devKey, "application/json", batch("dev-1", 5)); code != 202 {
		t.Fatalf("burst: %d %+v", code, e)
	}
	code, e, h := r.post(t, r.devKey, "application/json", batch("dev-1", 3))
	if code != 429 || !strings.Contains(e.Message, "rate_per_key") || h.Get("Retry-After") != "2" {
		t.Fatalf("over the rate: %d %+v Retry-After %q", code, e, h.Get("Retry-After"))
	}
	// another key is not slowed by this one
	if code, e, _ := r.post(t, r.gwKey, "application/json", batch("dev-2", 5)); code != 202 {
		t.Fatalf("another key: %d %+v", code, e)
	}
	now = now.Add(1500 * time.Millisecond) // 3 tokens back
	if code, e, _ := r.post(t, r.devKey, "application/json", batch("dev-1", 3)); code != 202 {
		t.Fatalf("after the wait: %d %+v", code, e)
	}

	// the byte rate: charged from Content-Length before the body is read
	cfg = testConfig()
	cfg.BytesPerKey = 1000 // burst: 2 × max_body_bytes = 8192
	r3 := newRig(t, cfg)
	fixed := time.Now()
	r3.h.limits.now = func() time.Time { return fixed }
	body := batch("dev-1", 5)
	sent := 0
	for sent+len(body) <= 8192 {
		if code, e, _ := r3.post(t, r3.devKey, "application/json", body); code != 202 {
			t.Fatalf("within the byte burst: %d %+v", code, e)
		}
		sent += len(body)
	}
	code, e, h = r3.post(t, r3.devKey, "application/json", body)
	if code != 429 || !strings.Contains(e.Message, "bytes_per_key") || h.Get("Retry-After") == "" {
		t.Fatalf("over the byte rate: %d %+v", code, e)
	}

	// the in-flight cap: a request that says it is larger than what is left
	cfg = testConfig()
	cfg.MaxInflightBytes = cfg.MaxBodyBytes
	r2 := newRig(t, cfg)
	r2.h.inflight.Add(cfg.MaxBodyBytes - 10) // other requests hold all but 10 bytes
	code, e, h = r2.post(t, r2.devKey, "application/json", batch("dev-1", 1))
	if code != 503 || !strings.Contains(e.Message, "max_inflight_bytes") || h.Get("Retry-After") == "" {
		t.Fatalf("over the in-flight cap: %d %+v", code, e)
	}
	r2.h.inflight.Add(-(cfg.MaxBodyBytes - 10))
	if code, e, _ := r2.post(t, r2.devKey, "application/json", batch("dev-1", 1)); code != 202 {
		t.Fatalf("under the cap: %d %+v", code, e)
	}
}

func TestLooksNDJSON(t *testing.T) {
	cases := map[string]bool{
		`{"a":1}`: false, `[{"a":1},{"a":2}]`: false, "{\"a\":1}\n": false, "  {\n \"a\": {\"b\": 1}\n}\n": false,
		"{\"a\":1}\n{\"a\":2}": true, "{\"a\":1}\n{\"a\":2}\n": true, `{"a":1}{"a":2}`: true, `not json`: false, ``: false,
	}
	for body, want := range cases {
		if got := LooksNDJSON([]byte(body)); got != want {
			t.Errorf("LooksNDJSON(%q) = %v, want %v", body, got, want)
		}
	}
}

// TestPipelineLagRefuses: while the pipeline is more than
// ingest.max_pipeline_lag records behind, readings are refused with 503
// naming the bound; nothing is produced.
func TestPipelineLagRefuses(t *testing.T) {
	var lag atomic.Int64
	h := &Handler{cfg: Default(), backlog: lag.Load}
	lag.Store(h.cfg.MaxPipelineLag + 1)
	_, err := h.Submit(context.Background(), Submission{Body: []byte(`{}`)})
	if err == nil || err.Status != http.StatusServiceUnavailable || !strings.Contains(err.Message, "ingest.max_pipeline_lag") {
		t.Fatalf("over the lag bound: %v", err)
	}
}
