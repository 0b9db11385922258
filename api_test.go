package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
)

// The admin API: token checks, registration (201 with a key shown once,
// 409 on a second registration, 400 naming the bad field), device lookup
// without the key hash, alerts query validation, health, readiness,
// metrics and the OpenAPI document.
func TestAdminAPI(t *testing.T) {
	s := newServer(t, t.TempDir())
	s.startInProcess()
	defer s.stop()
	cases := []struct {
		name, method, path, token, body string
		status                          int
		contains                        string
	}{
		{"no token", "POST", "/api/v1/devices", "", `{"device_id":"a"}`, 401, "missing admin token"},
		{"wrong token", "POST", "/api/v1/devices", "nope", `{"device_id":"a"}`, 401, "wrong admin token"},
		{"device key is not admin", "GET", "/api/v1/alerts", "vgl_x", ``, 401, "wrong admin token"},
		{"register", "POST", "/api/v1/devices", s.token, `{"device_id":"pump-1","attrs":{"site":"s1","location":{"lat":1,"lon":2},"tags":["a"],"fw":"1.2","rpm":3000}}`, 201, `"key":"vgl_`},
		{"register again", "POST", "/api/v1/devices", s.token, `{"device_id":"pump-1"}`, 409, "already registered"},
		{"bad id", "POST", "/api/v1/devices", s.token, `{"device_id":"a b"}`, 400, "device_id"},
		{"bad lat", "POST", "/api/v1/devices", s.token, `{"device_id":"p2","attrs":{"lat":100,"lon":0}}`, 400, "attrs.lat"},
		{"lat without lon", "POST", "/api/v1/devices", s.token, `{"device_id":"p2","attrs":{"lat":1}}`, 400, "go together"},
		{"bad tags", "POST", "/api/v1/devices", s.token, `{"device_id":"p2","attrs":{"tags":"x"}}`, 400, "attrs.tags"},
		{"unknown field", "POST", "/api/v1/devices", s.token, `{"device_id":"p2","colour":"red"}`, 400, "colour"},
		{"not json", "POST", "/api/v1/devices", s.token, `{`, 400, "invalid request body"},
		{"get device", "GET", "/api/v1/devices/pump-1", s.token, ``, 200, `"site":"s1"`},
		{"get missing device", "GET", "/api/v1/devices/nope", s.token, ``, 404, "not registered"},
		{"gateway", "POST", "/api/v1/gateways", s.token, `{"gateway_id":"gw","devices":["pump-1"]}`, 201, `"key":"vgl_`},
		{"gateway again", "POST", "/api/v1/gateways", s.token, `{"gateway_id":"gw","devices":["pump-1"]}`, 409, "already registered"},
		{"empty gateway", "POST", "/api/v1/gateways", s.token, `{"gateway_id":"gw2"}`, 400, "devices or device_prefixes"},
		{"alerts", "GET", "/api/v1/alerts?limit=5&device=pump-1&since=2026-01-01T00:00:00Z", s.token, ``, 200, `{"alerts":[]}`},
		{"alerts bad limit", "GET", "/api/v1/alerts?limit=0", s.token, ``, 400, "limit"},
		{"alerts bad since", "GET", "/api/v1/alerts?since=yesterday", s.token, ``, 400, "since"},
		{"healthz", "GET", "/healthz", "", ``, 200, "alive"},
		{"readyz", "GET", "/readyz", "", ``, 200, "ready"},
		{"metrics", "GET", "/metrics", "", ``, 200, "vigil_pipeline_readings_total"},
		{"openapi", "GET", "/api/v1/openapi.json", "", ``, 200, `"openapi": "3.0.3"`},
		{"status page", "GET", "/", "", ``, 200, "<title>Vigil</title>"},
		{"unknown path", "GET", "/nope", "", ``, 404, "no such endpoint"},
		{"ingest GET", "GET", "/v1/ingest", "", ``, 405, "not allowed"},
		{"profiler without token", "GET", "/debug/pprof/", "", ``, 401, "admin token"},
		{"profiler with a device key", "GET", "/debug/pprof/heap?debug=1", "vgl_x", ``, 401, "admin token"},
		{"profiler", "GET", "/debug/pprof/heap?debug=1", s.token, ``, 200, "heap profile"},
		{"alert view", "GET", "/alerts/a-1", "", ``, 200, "<title>Vigil</title>"},
		{"device view", "GET", "/devices/pump-1", "", ``, 200, "<title>Vigil</title>"},
		{"fleet view", "GET", "/fleet", "", ``, 200, "<title>Vigil</title>"},
		{"fleet", "GET", "/api/v1/fleet", s.token, ``, 200, `"noisiest_devices"`},
		{"readings bad range", "GET", "/api/v1/devices/pump-1/readings?range=3w", s.token, ``, 400, "15m, 1h, 24h or 7d"},
		{"readings bad from", "GET", "/api/v1/devices/pump-1/readings?from=monday", s.token, ``, 400, "RFC 3339"},
		{"readings to before from", "GET", "/api/v1/devices/pump-1/readings?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", s.token, ``, 400, "after from"},
		{"missing alert", "GET", "/api/v1/alerts/nope", s.token, ``, 404, "no alert"},
		{"retry without sinks", "POST", "/api/v1/sinks/x/dead-letters/a.open/retry", s.token, ``, 404, "no such alert sink"},
		{"vendored chart library", "GET", "/static/vendor/VERSIONS", "", ``, 200, "uplot 1.6.32 MIT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, b, _ := s.do(c.method, c.path, c.token, "application/json", []byte(c.body))
			if code != c.status || !strings.Contains(string(b), c.contains) {
				t.Fatalf("%s %s: %d %s; want %d containing %q", c.method, c.path, code, b, c.status, c.contains)
			}
		})
	}
	code, b, _ := s.do("GET", "/api/v1/devices/pump-1", s.token, "", nil)
	if code != 200 || strings.Contains(string(b), "key_hash\":\"") && !strings.Contains(string(b), `"key_hash":""`) {
		t.Fatalf("device lookup leaks the key hash: %s", b)
	}
	var doc map[string]any
	_, b, _ = s.do("GET", "/api/v1/openapi.json", "", "", nil)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if code, _, _ := s.do("GET", "/v1/ingest", "", "", nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/ingest: %d", code)
	}
}

// The console's API: site status published to the bucket, operator
// feedback stored under labels/, notebooks stored under notebooks/, SQL
// refusals.
func TestConsoleAPI(t *testing.T) {
	s := newServer(t, t.TempDir(), "VIGIL_CONSOLE_STATUS_INTERVAL=1s", "VIGIL_REGION=eu-west")
	s.startInProcess()
	defer s.stop()
	objects := s.dir + "/objects/"
	waitFor(t, 10*time.Second, "sites/eu-west/status.json in the bucket", func() bool {
		_, err := os.Stat(objects + "sites/eu-west/status.json")
		return err == nil
	})
	code, b, _ := s.do("GET", "/api/v1/sites", s.token, "", nil)
	if code != 200 || !strings.Contains(string(b), `"region":"eu-west"`) || !strings.Contains(string(b), `"topic_records"`) {
		t.Fatalf("sites: %d %s", code, b)
	}

	key := s.registerDevice("fb-1", map[string]any{"site": "s"})
	rng := rand.New(rand.NewPCG(3, 3))
	start := time.Now().Add(-5 * time.Minute)
	s.do("POST", "/v1/ingest", key, "application/json", readingsJSON("fb-1", start, 40, rng, func(int) float64 { return 10 + 0.1*rng.NormFloat64() }))
	s.do("POST", "/v1/ingest", key, "application/json", []byte(fmt.Sprintf(`{"device_id":"fb-1","id":"x","ts":%q,"metrics":{"temp_c":40,"vibration":0.03}}`, start.Add(41*time.Second).Format(time.RFC3339Nano))))
	var alertID string
	waitFor(t, 10*time.Second, "an alert", func() bool {
		a := s.alerts("fb-1")
		if len(a.Alerts) > 0 {
			alertID = a.Alerts[0].AlertID
		}
		return alertID != ""
	})
	// the page's health figures are the components' own reports, equal to their metrics
	waitFor(t, 10*time.Second, "the overview's health to match the metrics", func() bool {
		_, b, _ := s.do("GET", "/api/v1/overview", s.token, "", nil)
		var o struct {
			Health struct {
				Ingest   float64 `json:"ingest_readings"`
				Pipeline float64 `json:"pipeline_readings"`
				Batches  float64 `json:"batches"`
			} `json:"health"`
		}
		if json.Unmarshal(b, &o, json.RejectUnknownMembers(false)) != nil {
			return false
		}
		return o.Health.Ingest == 41 && o.Health.Pipeline == s.metric("vigil_pipeline_readings_total") && o.Health.Pipeline >= 41 && o.Health.Batches > 0
	})
	for _, c := range []struct {
		path, body string
		status     int
	}{
		{"/api/v1/alerts/" + alertID + "/feedback", `{"label":"maybe"}`, 400},
		{"/api/v1/alerts/nope/feedback", `{"label":"normal"}`, 404},
		{"/api/v1/alerts/" + alertID + "/feedback", `{"label":"anomaly","note":"bearing <b>worn</b>"}`, 201},
	} {
		if code, b, _ := s.do("POST", c.path, s.token, "application/json", []byte(c.body)); code != c.status {
			t.Fatalf("feedback %s %s: %d %s", c.path, c.body, code, b)
		}
	}
	lb, err := os.ReadFile(objects + "labels/eu-west/" + alertID + ".json")
	if err != nil || !strings.Contains(string(lb), `"label":"anomaly"`) || !strings.Contains(string(lb), `"message_id":"x"`) {
		t.Fatalf("label in the bucket: %s %v", lb, err)
	}
	if _, b, _ := s.do("GET", "/api/v1/alerts?device=fb-1", s.token, "", nil); !strings.Contains(string(b), `"feedback":{`) {
		t.Fatalf("alert list lacks the verdict: %s", b)
	}
	// the verdict survives a restart: the alerts list reloads it from labels/
	s.stop()
	s.startInProcess()
	waitFor(t, 10*time.Second, "the verdict in the alerts list after a restart", func() bool {
		_, b, _ := s.do("GET", "/api/v1/alerts?device=fb-1", s.token, "", nil)
		return strings.Contains(string(b), `"feedback":{`) && strings.Contains(string(b), `"note":"bearing`)
	})

	nb := `{"title":"Fleet","paragraphs":[{"sql":"SELECT 1","chart":"bar","refresh":30}]}`
	if code, b, _ := s.do("PUT", "/api/v1/notebooks/fleet", s.token, "application/json", []byte(nb)); code != 200 {
		t.Fatalf("put notebook: %d %s", code, b)
	}
	if code, _, _ := s.do("PUT", "/api/v1/notebooks/bad", s.token, "application/json", []byte(`{"paragraphs":[{"sql":"x","chart":"radar"}]}`)); code != 400 {
		t.Fatalf("bad chart accepted: %d", code)
	}
	if _, err := os.Stat(objects + "notebooks/fleet.json"); err != nil {
		t.Fatalf("notebook not in the bucket: %v", err)
	}
	if code, b, _ := s.do("GET", "/api/v1/notebooks", s.token, "", nil); code != 200 || !strings.Contains(string(b), `"id":"fleet"`) {
		t.Fatalf("list notebooks: %d %s", code, b)
	}
	if code, b, _ := s.do("GET", "/api/v1/notebooks/fleet", s.token, "", nil); code != 200 || !strings.Contains(string(b), `"refresh":30`) {
		t.Fatalf("get notebook: %d %s", code, b)
	}
	if code, _, _ := s.do("DELETE", "/api/v1/notebooks/fleet", s.token, "", nil); code != 204 {
		t.Fatalf("delete notebook: %d", code)
	}
	if code, _, _ := s.do("GET", "/api/v1/notebooks/fleet", s.token, "", nil); code != 404 {
		t.Fatalf("deleted notebook: %d", code)
	}
	if code, b, _ := s.do("POST", "/api/v1/sql", s.token, "application/json", []byte(`{"query":"SELECT 1"}`)); code != 409 || !strings.Contains(string(b), "Load sample") {
		t.Fatalf("sql before a sample: %d %s", code, b)
	}
	if code, b, _ := s.do("DELETE", "/api/v1/sample", s.token, "", nil); code != 409 || !strings.Contains(string(b), "no sample is loading") {
		t.Fatalf("cancel with no load: %d %s", code, b)
	}
}
