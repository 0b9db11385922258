package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestViewerToken: admin.viewer_token reads the API (GET) and the page,
// every call that changes something answers 403, and the page shows it no
// button that would (checked in Chromium).
func TestViewerToken(t *testing.T) {
	const viewer = "viewer-token-0123456789abcdef0123"
	s := newServer(t, t.TempDir(), "VIGIL_ADMIN_VIEWER_TOKEN="+viewer)
	s.startInProcess()
	defer s.stop()
	key := s.registerDevice("view-1", nil)
	rng := rand.New(rand.NewPCG(9, 9))
	start := time.Now().Add(-5 * time.Minute)
	s.do("POST", "/v1/ingest", key, "application/json", readingsJSON("view-1", start, 40, rng, func(int) float64 { return 10 + 0.1*rng.NormFloat64() }))
	s.do("POST", "/v1/ingest", key, "application/json", []byte(fmt.Sprintf(`{"device_id":"view-1","id":"x","ts":%q,"metrics":{"temp_c":40,"vibration":0.03}}`, start.Add(41*time.Second).Format(time.RFC3339Nano))))
	var alertID string
	waitFor(t, 10*time.Second, "an alert", func() bool {
		if a := s.alerts("view-1"); len(a.Alerts) > 0 {
			alertID = a.Alerts[0].AlertID
		}
		return alertID != ""
	})
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/api/v1/alerts", "", 200},
		{"GET", "/api/v1/overview", "", 200},
		{"GET", "/api/v1/devices/view-1", "", 200},
		{"GET", "/api/v1/whoami", "", 200},
		{"POST", "/api/v1/devices", `{"device_id":"nope"}`, 403},
		{"POST", "/api/v1/gateways", `{"gateway_id":"g","device_prefixes":["x"]}`, 403},
		{"POST", "/api/v1/alerts/" + alertID + "/feedback", `{"label":"normal"}`, 403},
		{"POST", "/api/v1/sample", `{}`, 403},
		{"DELETE", "/api/v1/sample", "", 403},
		{"PUT", "/api/v1/notebooks/x", `{"paragraphs":[]}`, 403},
		{"DELETE", "/api/v1/notebooks/x", "", 403},
		{"POST", "/api/v1/models/train", "", 403},
		{"POST", "/api/v1/models/rollback", "", 403},
		{"POST", "/api/v1/sql", `{"query":"SELECT 1"}`, 403},
	} {
		code, b, _ := s.do(c.method, c.path, viewer, "application/json", []byte(c.body))
		if code != c.status || c.status == 403 && !strings.Contains(string(b), "viewer_token") {
			t.Errorf("viewer %s %s: %d %s, want %d", c.method, c.path, code, b, c.status)
		}
	}
	if _, b, _ := s.do("GET", "/api/v1/whoami", viewer, "", nil); !strings.Contains(string(b), `"role":"viewer"`) {
		t.Fatalf("whoami: %s", b)
	}
	if code, _, _ := s.do("POST", "/api/v1/alerts/"+alertID+"/feedback", s.token, "application/json", []byte(`{"label":"normal"}`)); code != http.StatusCreated {
		t.Fatalf("the admin token is still the admin: %d", code)
	}

	// the page, as a viewer: no button that would change something
	bin := chromium(t)
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.UserDataDir(profileDir(t)))...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(ctx)
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, 60*time.Second)
	defer cancel3()
	var visible []string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(s.httpURL+"/?token="+viewer),
		chromedp.WaitVisible(`#alert-rows tr.alert`, chromedp.ByQuery),
		chromedp.WaitReady(`body.viewer`, chromedp.ByQuery),
		chromedp.Click(`#tabs button[data-tab="sql"]`, chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll('button')).filter(b => b.offsetParent !== null).map(b => b.id || b.dataset.tab || b.textContent)`, &visible),
	); err != nil {
		t.Fatalf("page as a viewer: %v", err)
	}
	for _, b := range visible {
		switch b {
		case "alerts", "fleet", "overview", "sql", "notebooks", "models", "delivery", "logout", "f-apply", "CV":
		default:
			t.Errorf("the viewer's page shows the button %q", b)
		}
	}
	t.Logf("buttons a viewer sees: %v", visible)
}
