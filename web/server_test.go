package web

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// alertList is a fixed list of alerts (the alert store's part).
type alertList []contract.Alert

func (l alertList) Query(int, string, time.Time) []contract.Alert { return l }
func (l alertList) Get(id string) (contract.Alert, bool) {
	for _, a := range l {
		if a.AlertID == id {
			return a, true
		}
	}
	return contract.Alert{}, false
}

// The server reloads the verdicts stored under labels/ when it starts, and
// stops when its context ends.
func TestVerdictsReloadedAtStart(t *testing.T) {
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := contract.Verdict{AlertID: "a-1", DeviceID: "d", MessageID: "m", Region: "eu", Label: contract.VerdictNormal, Note: "a test", At: time.Now().UTC()}
	b, _ := json.Marshal(v)
	if _, err := st.Put(ctx, contract.LabelKey("eu", "a-1"), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, contract.LabelKey("eu", "junk"), strings.NewReader("not json"), 8); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.Addr, cfg.ShutdownTimeout = "127.0.0.1:0", time.Second
	s, err := New(cfg, Options{
		AdminToken: "t", Store: st, Region: "eu", Gatherer: prometheus.NewRegistry(),
		Alerts: alertList{{AlertID: "a-1", DeviceID: "d", Region: "eu"}, {AlertID: "a-2", DeviceID: "d", Region: "eu"}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/api/v1/alerts", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"note":"a test"`) {
				if strings.Count(string(body), `"feedback"`) != 1 {
					t.Fatalf("verdicts attached to the wrong alerts: %s", body)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stored verdict is not in the alerts list after 10s (last error %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Every answer carries the headers that keep the page from being framed,
// sniffed or leaking its address.
func TestSecurityHeaders(t *testing.T) {
	cfg := Default()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg, Options{AdminToken: "t", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, path := range []string{"/", "/healthz", "/api/v1/alerts", "/nope"} {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for k, want := range map[string]string{"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
			if got := resp.Header.Get(k); !strings.Contains(got, want) {
				t.Errorf("%s: %s = %q, want it to hold %q", path, k, got, want)
			}
		}
	}
}
