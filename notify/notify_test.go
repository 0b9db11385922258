package notify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/contract"
)

func TestConfigValidate(t *testing.T) {
	good := Default()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := []struct {
		name string
		mod  func(c *Config)
		key  string
	}{
		{"max tries", func(c *Config) { c.MaxTries = 0 }, "max_tries"},
		{"backoff order", func(c *Config) { c.BackoffMax = c.BackoffInitial / 2 }, "backoff_initial"},
		{"timeout", func(c *Config) { c.Timeout = time.Millisecond }, "timeout"},
		{"resend", func(c *Config) { c.ResendInterval = 0 }, "resend_interval"},
		{"page url", func(c *Config) { c.PageURL = "nohost" }, "page_url"},
		{"secret alone", func(c *Config) { c.WebhookSecret = "x" }, "webhook_secret"},
		{"shortcut url", func(c *Config) { c.AlertmanagerURL = "am:9093" }, "alertmanager_url"},
		{"sink kind", func(c *Config) { c.Sinks = []Sink{{Name: "a", Kind: "pager", URL: "http://x"}} }, "sinks[0].kind"},
		{"sink name", func(c *Config) { c.Sinks = []Sink{{Name: "a b", Kind: KindWebhook, URL: "http://x"}} }, "sinks[0].name"},
		{"sink twice", func(c *Config) {
			c.Sinks = []Sink{{Name: "a", Kind: KindWebhook, URL: "http://x"}, {Name: "a", Kind: KindSlack, URL: "http://y"}}
		}, "sinks[1].name"},
		{"shortcut clashes", func(c *Config) {
			c.Sinks = []Sink{{Name: "webhook", Kind: KindSlack, URL: "http://x"}}
			c.WebhookURL = "http://y"
		}, "webhook_url"},
		{"sink url", func(c *Config) { c.Sinks = []Sink{{Name: "a", Kind: KindWebhook, URL: "ftp://x"}} }, "sinks[0].url"},
		{"severity", func(c *Config) {
			c.Sinks = []Sink{{Name: "a", Kind: KindWebhook, URL: "http://x", MinSeverity: "urgent"}}
		}, "sinks[0].min_severity"},
		{"secret on slack", func(c *Config) { c.Sinks = []Sink{{Name: "a", Kind: KindSlack, URL: "http://x", Secret: "s"}} }, "sinks[0].secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("error %v does not start with %q", err, tc.key)
			}
		})
	}
}

func TestSinkFilters(t *testing.T) {
	a := contract.Alert{DeviceID: "pump-7", Site: "north", Severity: "medium"}
	cases := []struct {
		sink Sink
		want bool
	}{
		{Sink{MinSeverity: "low"}, true},
		{Sink{MinSeverity: "medium"}, true},
		{Sink{MinSeverity: "high"}, false},
		{Sink{MinSeverity: "low", Sites: []string{"south"}}, false},
		{Sink{MinSeverity: "low", Sites: []string{"south", "north"}}, true},
		{Sink{MinSeverity: "low", DevicePrefixes: []string{"fan-"}}, false},
		{Sink{MinSeverity: "low", DevicePrefixes: []string{"fan-", "pump-"}}, true},
	}
	for i, tc := range cases {
		if got := tc.sink.wants(&a); got != tc.want {
			t.Errorf("case %d %+v: wants = %v, want %v", i, tc.sink, got, tc.want)
		}
	}
}

func TestAlertmanagerPayload(t *testing.T) {
	s := &sender{sink: Sink{Kind: KindAlertmanager}, pageURL: "https://vigil.example/", resend: time.Minute}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	open := contract.Alert{AlertID: "a1", DeviceID: "d", Region: "eu", Site: "s", Severity: "high", Metric: "temp", State: "open", TS: now.Add(-time.Minute),
		Reasons: []contract.Reason{{Feature: "temp.level", Expected: 50, Low: 45, High: 55, Observed: 90}}}
	closed := open
	closed.State, closed.Readings = "closed", 12
	out := s.alertmanager([]contract.Alert{open, closed}, now)
	if out[0].EndsAt != now.Add(4*time.Minute) || !out[1].EndsAt.Equal(now) {
		t.Errorf("endsAt: open %s (want 4 resend intervals ahead), closed %s (want now)", out[0].EndsAt, out[1].EndsAt)
	}
	for _, k := range []string{"alertname", "alert_id", "device_id", "site", "region", "severity", "metric"} {
		if out[0].Labels[k] == "" {
			t.Errorf("label %s missing: %v", k, out[0].Labels)
		}
	}
	if out[0].GeneratorURL != "https://vigil.example/alerts/a1" || !strings.Contains(out[0].Annotations["expected_vs_observed"], "observed 90") {
		t.Errorf("generatorURL %q, annotations %v", out[0].GeneratorURL, out[0].Annotations)
	}
}

func TestSignature(t *testing.T) {
	// RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?")
	if got := Signature("Jefe", []byte("what do ya want for nothing?")); got != "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" {
		t.Fatalf("signature %s", got)
	}
}

func TestSlackAndWebhookBodies(t *testing.T) {
	var got []map[string]any
	var hdr []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if err := json.UnmarshalRead(r.Body, &m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		got, hdr = append(got, m), append(hdr, r.Header.Clone())
	}))
	defer srv.Close()
	a := contract.Alert{AlertID: "a-9", DeviceID: "pump-3", Severity: "high", Metric: "temp", State: "open", Score: 0.97,
		Reasons: []contract.Reason{{Feature: "temp.level", Text: "expected 40-55, got 90"}}}
	slack := &sender{sink: Sink{Kind: KindSlack, URL: srv.URL}, client: srv.Client(), pageURL: "http://vigil:8080"}
	hook := &sender{sink: Sink{Kind: KindWebhook, URL: srv.URL, Secret: "k"}, client: srv.Client(), pageURL: "http://vigil:8080"}
	for _, s := range []*sender{slack, hook} {
		if err := s.send(context.Background(), []contract.Alert{a}); err != nil {
			t.Fatal(err)
		}
	}
	text, _ := got[0]["text"].(string)
	for _, want := range []string{"pump-3", "high", "expected 40-55, got 90", "<http://vigil:8080/alerts/a-9|open>"} {
		if !strings.Contains(text, want) {
			t.Errorf("slack text %q lacks %q", text, want)
		}
	}
	if got[1]["alert_id"] != "a-9" || got[1]["link"] != "http://vigil:8080/alerts/a-9" || hdr[1].Get("Idempotency-Key") != "a-9.open" ||
		!strings.HasPrefix(hdr[1].Get("X-Vigil-Signature"), "sha256=") {
		t.Errorf("webhook body %v, headers %v", got[1], hdr[1])
	}
	srv.Close()
	if err := slack.send(context.Background(), []contract.Alert{a}); err == nil {
		t.Error("a send to a closed server did not fail")
	}
}
