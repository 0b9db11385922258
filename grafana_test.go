package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
)

// TestGrafanaDashboard: every metric deploy/grafana/vigil-dashboard.json
// names is served by /metrics of a running Vigil (with MQTT and an alert
// sink configured, and a reading and an alert through it).
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("deploy/grafana/vigil-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash, json.RejectUnknownMembers(false)); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	names := map[string]string{}
	re := regexp.MustCompile(`vigil_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suf)
				}
				names[m] = p.Title
			}
		}
	}
	if len(names) < 15 {
		t.Fatalf("the dashboard names only %d metrics", len(names))
	}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer rcv.Close()
	s := newServer(t, t.TempDir(), "VIGIL_MQTT_ADDR="+freeAddr(t), "VIGIL_ALERTS_WEBHOOK_URL="+rcv.URL)
	s.startInProcess()
	defer s.stop()
	raiseAlert(t, s, "graf-1", "north", time.Now().Add(-10*time.Minute))
	waitFor(t, 20*time.Second, "the alert delivered", func() bool { return s.metric(`vigil_notify_sent_total{sink="webhook"}`) >= 1 })
	_, body, _ := s.do("GET", "/metrics", "", "", nil)
	var missing []string
	for n, panel := range names {
		if !strings.Contains(string(body), "# HELP "+n+" ") {
			missing = append(missing, n+" (panel "+panel+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("metrics the dashboard names but /metrics does not serve: %v", missing)
	}
	t.Logf("the dashboard's %d panels name %d metrics, all served", len(dash.Panels), len(names))
}
