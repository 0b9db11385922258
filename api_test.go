package main

import (
	"net/http"
	"strings"
	"testing"

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
