package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/notify"
)

// postSeries posts n readings of dev, one a second from start, ids
// <prefix>-<i>, temperature temp(i).
func postSeries(t *testing.T, s *server, key, dev, prefix string, start time.Time, n int, temp func(i int) float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(len(prefix)), uint64(n)))
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"device_id":%q,"id":"%s-%d","ts":%q,"metrics":{"temp_c":%.4f,"vibration":%.5f}}`,
			dev, prefix, i, start.Add(time.Duration(i)*time.Second).UTC().Format(time.RFC3339Nano), temp(i), 0.03+0.001*rng.NormFloat64())
	}
	b.WriteByte(']')
	if code, body, _ := s.do("POST", "/v1/ingest", key, "application/json", []byte(b.String())); code != http.StatusAccepted {
		t.Fatalf("post %s: %d %s", prefix, code, body)
	}
}

// raiseAlert registers dev at site, posts a minute of normal readings and
// then an outlier; it returns the device key and the outlier's event time.
func raiseAlert(t *testing.T, s *server, dev, site string, start time.Time) (string, time.Time) {
	t.Helper()
	key := s.registerDevice(dev, map[string]any{"site": site})
	rng := rand.New(rand.NewPCG(3, uint64(len(dev))))
	postSeries(t, s, key, dev, dev+"-n", start, 60, func(int) float64 { return 60 + 0.5*rng.NormFloat64() })
	postSeries(t, s, key, dev, dev+"-spike", start.Add(61*time.Second), 1, func(int) float64 { return 99 })
	return key, start.Add(61 * time.Second)
}

// startAlertmanager runs Debian's prometheus-alertmanager on loopback.
func startAlertmanager(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		t.Fatal("prometheus-alertmanager is needed (apt-get install prometheus-alertmanager; the README's test command installs it)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(conf, []byte("route:\n  receiver: nowhere\n  group_wait: 1s\nreceivers:\n  - name: nowhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.path="+dir, "--web.listen-address="+addr, "--cluster.listen-address=")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	waitFor(t, 20*time.Second, "Alertmanager ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return "http://" + addr
}

type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Status       struct {
		State string `json:"state"`
	} `json:"status"`
}

func amAlerts(t *testing.T, am string) []amAlert {
	t.Helper()
	resp, err := http.Get(am + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []amAlert
	if err := json.UnmarshalRead(resp.Body, &out, json.RejectUnknownMembers(false)); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAlertmanagerDelivery: an anomalous reading raises an alert that a
// real Alertmanager shows with Vigil's labels; when the incident closes,
// Alertmanager has it resolved.
func TestAlertmanagerDelivery(t *testing.T) {
	am := startAlertmanager(t)
	s := newServer(t, t.TempDir(), "VIGIL_ALERTS_ALERTMANAGER_URL="+am, "VIGIL_REGION=eu-west",
		"VIGIL_PIPELINE_INCIDENT_QUIET=5s", "VIGIL_PIPELINE_INCIDENT_QUIET_READINGS=10", "VIGIL_ALERTS_RESEND_INTERVAL=2s")
	s.startInProcess()
	defer s.stop()
	start := time.Now().Add(-10 * time.Minute)
	key, spike := raiseAlert(t, s, "am-pump", "plant-7", start)
	var got amAlert
	waitFor(t, 20*time.Second, "the alert in Alertmanager", func() bool {
		for _, a := range amAlerts(t, am) {
			if a.Labels["device_id"] == "am-pump" {
				got = a
				return true
			}
		}
		return false
	})
	for k, want := range map[string]string{"alertname": "VigilAnomaly", "site": "plant-7", "region": "eu-west", "metric": "temp_c"} {
		if got.Labels[k] != want {
			t.Errorf("label %s = %q, want %q (labels %v)", k, got.Labels[k], want, got.Labels)
		}
	}
	if got.Labels["severity"] == "" || got.Labels["alert_id"] == "" || got.Status.State != "active" {
		t.Errorf("alert %+v lacks severity or alert_id, or is not active", got)
	}
	if !strings.Contains(got.Annotations["reasons"], "temp_c") || got.Annotations["score"] == "" || !strings.Contains(got.Annotations["expected_vs_observed"], "observed 99") {
		t.Errorf("annotations do not explain the alert: %v", got.Annotations)
	}
	if !strings.HasPrefix(got.GeneratorURL, s.httpURL+"/alerts/") {
		t.Errorf("generatorURL %q does not point to the alert on this region's page (%s)", got.GeneratorURL, s.httpURL)
	}
	// the link opens the page on the alert's device
	code, body, _ := s.do("GET", "/api/v1/alerts/"+got.Labels["alert_id"], s.token, "", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"device_id":"am-pump"`) {
		t.Errorf("GET /api/v1/alerts/<id>: %d %s", code, body)
	}

	// normal readings after the spike close the incident: resolved in Alertmanager
	rng := rand.New(rand.NewPCG(9, 9))
	postSeries(t, s, key, "am-pump", "am-after", spike.Add(time.Second), 30, func(int) float64 { return 60 + 0.5*rng.NormFloat64() })
	waitFor(t, 30*time.Second, "the incident closed in Vigil", func() bool {
		a := s.alerts("am-pump")
		return len(a.Alerts) == 1 && a.Alerts[0].State == "closed"
	})
	waitFor(t, 30*time.Second, "the alert resolved in Alertmanager", func() bool {
		for _, a := range amAlerts(t, am) {
			if a.Labels["alert_id"] == got.Labels["alert_id"] {
				return !a.EndsAt.After(time.Now()) // resolved (or about to be dropped from the list)
			}
		}
		return true // Alertmanager lists only unresolved alerts: it is gone
	})
	// it does not come back with the next re-sends of open incidents
	time.Sleep(5 * time.Second) // two resend intervals: a re-send of a closed incident would show here; no event marks its absence
	for _, a := range amAlerts(t, am) {
		if a.Labels["alert_id"] == got.Labels["alert_id"] && a.EndsAt.After(time.Now()) {
			t.Fatalf("the closed incident fires again: %+v", a)
		}
	}
}

// webhookReceiver is a webhook endpoint that fails on purpose: the first
// failFirst calls, or every call while failing is set.
type webhookReceiver struct {
	srv       *httptest.Server
	secret    string
	failFirst int64
	failing   atomic.Bool
	calls     atomic.Int64
	mu        sync.Mutex
	got       map[string]int // idempotency key -> calls answered 200
	badSig    int
	delay     atomic.Int64 // a slow receiver takes this long per call (ns)
}

func newWebhookReceiver(t *testing.T, secret string, failFirst int64) *webhookReceiver {
	w := &webhookReceiver{secret: secret, failFirst: failFirst, got: map[string]int{}}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := w.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		time.Sleep(time.Duration(w.delay.Load()))
		if n <= w.failFirst || w.failing.Load() {
			http.Error(rw, "receiver down on purpose", http.StatusServiceUnavailable)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.secret != "" && r.Header.Get("X-Vigil-Signature") != notify.Signature(w.secret, body) {
			w.badSig++
			http.Error(rw, "bad signature", http.StatusUnauthorized)
			return
		}
		var a contract.Alert
		if err := json.Unmarshal(body, &a, json.RejectUnknownMembers(false)); err != nil || a.AlertID == "" {
			http.Error(rw, "not an alert", http.StatusBadRequest)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		if key != notify.IdempotencyKey(&a) {
			http.Error(rw, "idempotency key does not name the alert", http.StatusBadRequest)
			return
		}
		w.got[key]++
		rw.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookReceiver) keys() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.got {
		out[k] = v
	}
	return out
}

func openKeys(m map[string]int) int {
	n := 0
	for k := range m {
		if strings.HasSuffix(k, ".open") {
			n++
		}
	}
	return n
}

// TestWebhookDelivery: a receiver that fails its first 3 calls still gets
// each alert exactly once by idempotency key, with a valid signature.
func TestWebhookDelivery(t *testing.T) {
	const secret = "webhook-secret-0123456789"
	rcv := newWebhookReceiver(t, secret, 3)
	s := newServer(t, t.TempDir(), "VIGIL_ALERTS_WEBHOOK_URL="+rcv.srv.URL, "VIGIL_ALERTS_WEBHOOK_SECRET="+secret,
		"VIGIL_ALERTS_BACKOFF_INITIAL=20ms", "VIGIL_ALERTS_BACKOFF_MAX=100ms")
	s.startInProcess()
	defer s.stop()
	start := time.Now().Add(-10 * time.Minute)
	for i := 0; i < 3; i++ {
		raiseAlert(t, s, fmt.Sprintf("wh-%d", i), "plant-1", start)
	}
	waitFor(t, 20*time.Second, "three alerts at the receiver", func() bool { return openKeys(rcv.keys()) == 3 })
	waitFor(t, 10*time.Second, "the sink's figures on the delivery API", func() bool {
		_, body, _ := s.do("GET", "/api/v1/delivery", s.token, "", nil)
		return strings.Contains(string(body), `"delivered":3`) && strings.Contains(string(body), `"failed_tries":3`)
	})
	for k, n := range rcv.keys() {
		if n != 1 {
			t.Errorf("notification %s taken %d times, want once", k, n)
		}
	}
	if rcv.badSig > 0 {
		t.Errorf("%d calls carried a bad signature", rcv.badSig)
	}
	if got := rcv.calls.Load(); got != 6 {
		t.Errorf("the receiver saw %d calls, want 6 (3 refused, then 3 taken)", got)
	}
}

// TestWebhookKillNine: SIGKILL while alerts are being delivered to a slow
// receiver loses none: after a restart, every alert reaches it.
func TestWebhookKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test skipped in -short mode")
	}
	rcv := newWebhookReceiver(t, "", 0)
	rcv.failing.Store(true) // down while the alerts are raised: they wait in delivery
	rcv.delay.Store(int64(300 * time.Millisecond))
	s := newServer(t, t.TempDir(), "VIGIL_ALERTS_WEBHOOK_URL="+rcv.srv.URL, "VIGIL_ALERTS_BACKOFF_INITIAL=50ms", "VIGIL_ALERTS_BACKOFF_MAX=200ms", "VIGIL_ALERTS_MAX_TRIES=1000")
	s.startProcess()
	start := time.Now().Add(-10 * time.Minute)
	const n = 6
	for i := 0; i < n; i++ {
		raiseAlert(t, s, fmt.Sprintf("k9-%d", i), "plant-2", start)
	}
	waitFor(t, 20*time.Second, "the alerts raised and delivery retrying", func() bool {
		return s.metric(`vigil_pipeline_alerts_total{state="open"}`) >= n && rcv.calls.Load() >= 3
	})
	rcv.failing.Store(false)
	waitFor(t, 10*time.Second, "a first delivery", func() bool { return openKeys(rcv.keys()) >= 1 })
	s.kill() // mid-delivery: some alerts taken, others not yet
	before := openKeys(rcv.keys())
	if before == n {
		t.Fatalf("all %d alerts were delivered before the SIGKILL; the test did not kill mid-delivery", n)
	}
	s.startProcess()
	defer s.stop()
	waitFor(t, 30*time.Second, "every alert at the receiver after the restart", func() bool { return openKeys(rcv.keys()) == n })
	dups := 0
	for _, c := range rcv.keys() {
		if c > 1 {
			dups++
		}
	}
	t.Logf("%d of %d alerts delivered before SIGKILL; all %d after the restart; %d delivered twice (at least once: the receiver dedupes by Idempotency-Key)", before, n, n, dups)
}

// TestDeadLetterOnPage: a receiver that always fails produces a dead
// letter, visible on the status page in Chromium; once the receiver is
// back, the page's Retry button delivers it and the dead letter goes.
func TestDeadLetterOnPage(t *testing.T) {
	bin := chromium(t)
	art := artifactsDir(t)
	rcv := newWebhookReceiver(t, "", 0)
	rcv.failing.Store(true)
	rcv.delay.Store(int64(3 * time.Second)) // slow as well as failing: it parks only after 2 tries of 3 s
	ok := newWebhookReceiver(t, "", 0)
	dir := t.TempDir()
	conf := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`alerts:
  max_tries: 2
  backoff_initial: 20ms
  backoff_max: 50ms
  sinks:
    - {name: broken-hook, kind: webhook, url: %q}
    - {name: good-hook, kind: webhook, url: %q, min_severity: low}
`, rcv.srv.URL, ok.srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, filepath.Join(dir, "data"))
	s.config = conf
	s.startInProcess()
	defer s.stop()
	raiseAlert(t, s, "dl-pump", "plant-3", time.Now().Add(-10*time.Minute))
	waitFor(t, 20*time.Second, "the good sink took the alert", func() bool { return openKeys(ok.keys()) == 1 })
	if _, body, _ := s.do("GET", "/api/v1/delivery", s.token, "", nil); strings.Contains(string(body), `"dead_letters":[{`) {
		t.Fatal("the good sink got the alert only after the slow, failing one gave up: one sink blocked the other")
	}
	waitFor(t, 20*time.Second, "a dead letter on the delivery API", func() bool {
		_, body, _ := s.do("GET", "/api/v1/delivery", s.token, "", nil)
		return strings.Contains(string(body), `"dead_letters":[{`)
	})

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1400, 900), chromedp.UserDataDir(profileDir(t)))...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(ctx)
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, 60*time.Second)
	defer cancel3()
	var row, health string
	var buf []byte
	if err := chromedp.Run(ctx,
		chromedp.Navigate(s.httpURL+"/?token="+s.token),
		chromedp.WaitVisible(`#alert-rows`, chromedp.ByQuery),
		chromedp.Click(`#tabs button[data-tab="delivery"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#d-dead tr.dead-letter`, chromedp.ByQuery),
		chromedp.Text(`#d-dead tr.dead-letter`, &row, chromedp.ByQuery),
		chromedp.Text(`#d-sinks`, &health, chromedp.ByQuery),
		chromedp.FullScreenshot(&buf, 100),
	); err != nil {
		t.Fatalf("dead letter on the page: %v", err)
	}
	_ = os.WriteFile(filepath.Join(art, "7-dead-letter.png"), buf, 0o644)
	if !strings.Contains(row, "broken-hook") || !strings.Contains(row, "dl-pump") || !strings.Contains(row, "503") {
		t.Fatalf("dead-letter row %q does not name the sink, the device and the error", row)
	}
	if !strings.Contains(health, "FAILING") {
		t.Fatalf("the sinks table does not show the broken sink failing: %q", health)
	}
	rcv.failing.Store(false)
	var status string
	if err := chromedp.Run(ctx,
		chromedp.Click(`#d-dead tr.dead-letter button`, chromedp.ByQuery),
		chromedp.WaitNotPresent(`#d-dead tr.dead-letter`, chromedp.ByQuery),
		chromedp.Text(`#d-status`, &status, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("retry from the page: %v", err)
	}
	if !strings.Contains(status, "delivered") || openKeys(rcv.keys()) != 1 {
		t.Fatalf("after Retry: status %q, receiver has %v", status, rcv.keys())
	}
}
