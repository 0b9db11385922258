package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// artifactsDir is where the browser tests leave their screenshots:
// $VIGIL_ARTIFACTS or ./artifacts.
func artifactsDir(t testing.TB) string {
	dir := os.Getenv("VIGIL_ARTIFACTS")
	if dir == "" {
		dir, _ = filepath.Abs("artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func chromium(t testing.TB) string {
	for _, p := range []string{os.Getenv("VIGIL_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("headless Chromium is needed (apt-get install chromium; ./scripts/test.sh installs it)")
	return ""
}

// TestStatusPageInBrowser drives the status page in a real headless
// Chromium: the page loads; an alert appears after an anomalous reading
// (and a device attribute holding <script> shows as text); the device
// chart marks the alert; a query runs over a loaded sample and draws its
// chart; a notebook is saved and its report view opens.
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	art := artifactsDir(t)
	s := newServer(t, t.TempDir(), "VIGIL_CONSOLE_REFRESH_INTERVAL=1s", "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s")
	s.startInProcess()
	defer s.stop()

	const evil = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`
	key := s.registerDevice("pump-9", map[string]any{"site": evil, "model": "P-100"})
	rng := rand.New(rand.NewPCG(5, 5))
	start := time.Now().Add(-5 * time.Minute)
	if code, b, _ := s.do("POST", "/v1/ingest", key, "application/json", readingsJSON("pump-9", start, 60, rng, func(int) float64 { return 50 + rng.NormFloat64() })); code != http.StatusAccepted {
		t.Fatalf("readings: %d %s", code, b)
	}

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(profileDir(t)))...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(ctx)
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	defer cancel3()
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(art, name), buf, 0o644)
		})
	}

	// 1. the page loads, logged in by the token in the address
	if err := chromedp.Run(ctx,
		chromedp.Navigate(s.httpURL+"/?token="+s.token),
		chromedp.WaitVisible(`#alert-rows`, chromedp.ByQuery),
		chromedp.WaitReady(`#updated`, chromedp.ByQuery),
		shot("1-page.png"),
	); err != nil {
		t.Fatalf("load page: %v", err)
	}

	// 2. an anomalous reading: its alert appears on the page by itself
	outlier := fmt.Sprintf(`{"device_id":"pump-9","id":"spike-1","ts":%q,"metrics":{"temp_c":80,"vibration":0.03}}`, start.Add(61*time.Second).Format(time.RFC3339Nano))
	if code, b, _ := s.do("POST", "/v1/ingest", key, "application/json", []byte(outlier)); code != http.StatusAccepted {
		t.Fatalf("outlier: %d %s", code, b)
	}
	var rowText, siteText string
	var pwned bool
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#alert-rows tr.alert`, chromedp.ByQuery),
		chromedp.Text(`#alert-rows tr.alert`, &rowText, chromedp.ByQuery),
		chromedp.Text(`#alert-rows tr.alert td:nth-child(4)`, &siteText, chromedp.ByQuery),
		chromedp.Evaluate(`window.pwned !== undefined || document.querySelectorAll('script').length !== 2 || document.querySelector('#alert-rows img') !== null`, &pwned),
		shot("2-alert.png"),
	); err != nil {
		t.Fatalf("alert on the page: %v", err)
	}
	if !strings.Contains(rowText, "pump-9") || !strings.Contains(rowText, "temp_c.") {
		t.Fatalf("alert row: %q", rowText)
	}
	if siteText != evil || pwned {
		t.Fatalf("the site attribute was not rendered as text: %q (script ran or element injected: %v)", siteText, pwned)
	}

	// 3. click through to the device's chart, with the alert marked
	if err := chromedp.Run(ctx,
		chromedp.Click(`#alert-rows tr.alert a.dev`, chromedp.ByQuery),
		chromedp.WaitVisible(`#device-panes .metric-pane .uplot canvas`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelector('#device-panes .metric-pane').dataset.marks > 0`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		shot("3-device-chart.png"),
	); err != nil {
		t.Fatalf("device chart: %v", err)
	}

	// the overview: alert histograms and pipeline health
	if err := chromedp.Run(ctx,
		chromedp.Click(`#tabs button[data-tab="overview"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#h-time .uplot canvas`, chromedp.ByQuery),
		chromedp.WaitVisible(`#health span`, chromedp.ByQuery),
		shot("6-overview.png"),
	); err != nil {
		t.Fatalf("overview: %v", err)
	}

	// 4. load a sample (all of it) and run a query as a bar chart
	waitFor(t, 30*time.Second, "the readings in the archive", func() bool { return s.metric("vigil_archive_rows_total") >= 61 })
	var status string
	if err := chromedp.Run(ctx,
		chromedp.Click(`#tabs button[data-tab="sql"]`, chromedp.ByQuery),
		chromedp.SetValue(`#s-fraction`, "1", chromedp.ByQuery),
		chromedp.Click(`#s-load`, chromedp.ByQuery),
		chromedp.Poll(`document.getElementById('s-status').textContent.indexOf('ready') >= 0`, nil, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Text(`#s-status`, &status, chromedp.ByQuery),
		chromedp.SetValue(`#q`, `SELECT device_id, count(*) AS readings FROM enriched GROUP BY device_id`, chromedp.ByQuery),
		chromedp.SetValue(`#q-chart`, "bar", chromedp.ByQuery),
		chromedp.Click(`#q-run`, chromedp.ByQuery),
		chromedp.WaitVisible(`#q-chart-out .uplot canvas`, chromedp.ByQuery),
		chromedp.WaitVisible(`#q-out table td`, chromedp.ByQuery),
		shot("4-query-chart.png"),
	); err != nil {
		t.Fatalf("query and chart: %v", err)
	}
	if !strings.Contains(status, "61 rows") {
		t.Fatalf("sample status %q, want the 61 archived rows", status)
	}
	var statsRows int
	if err := chromedp.Run(ctx,
		chromedp.Click(`#q-stats`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelectorAll('#q-out tbody tr').length > 10`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Evaluate(`document.querySelectorAll('#q-out tbody tr').length`, &statsRows),
		shot("7-statistics.png"),
		chromedp.SetValue(`#q`, `SELECT device_id, count(*) AS readings FROM enriched GROUP BY device_id`, chromedp.ByQuery),
		chromedp.Click(`#q-run`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelectorAll('#q-out tbody tr').length === 1`, nil, chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("statistics: %v", err)
	}
	var cell string
	if err := chromedp.Run(ctx, chromedp.Text(`#q-out table tbody tr td:nth-child(2)`, &cell, chromedp.ByQuery)); err != nil || cell != "61" {
		t.Fatalf("query result cell %q (%v), want 61", cell, err)
	}

	// 6. the models tab: train on the archive, see the model in shadow with
	// its cross-validation, promote it, and this process runs it
	var version, selfText string
	if err := chromedp.Run(ctx,
		chromedp.Click(`#tabs button[data-tab="models"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#m-self span`, chromedp.ByQuery),
		chromedp.Click(`#m-train`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelectorAll('#m-rows tr').length > 0 && document.querySelector('#m-rows tr td:nth-child(2)').textContent === 'shadow'`, nil, chromedp.WithPollingTimeout(60*time.Second)),
		chromedp.Text(`#m-rows tr td:nth-child(1)`, &version, chromedp.ByQuery),
		chromedp.Click(`#m-rows tr td:last-child button`, chromedp.ByQuery), // CV
		chromedp.WaitVisible(`#m-cv table td`, chromedp.ByQuery),
		shot("8-models.png"),
		chromedp.Click(`#m-rows tr td:last-child button:nth-child(2)`, chromedp.ByQuery), // Promote
		chromedp.Poll(`document.querySelector('#m-rows tr td:nth-child(2)').textContent === 'current'`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Text(`#m-self`, &selfText, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("models tab: %v", err)
	}
	if !strings.HasPrefix(version, "m") || !strings.Contains(selfText, version) {
		t.Fatalf("models tab: version %q, this process shows %q", version, selfText)
	}

	// 5. save the query as a notebook paragraph and open the report view
	var title string
	if err := chromedp.Run(ctx,
		chromedp.Click(`#tabs button[data-tab="sql"]`, chromedp.ByQuery),
		chromedp.SetValue(`#nb-id`, "fleet", chromedp.ByQuery),
		chromedp.Click(`#nb-add`, chromedp.ByQuery),
		chromedp.Poll(`document.getElementById('q-status').textContent.indexOf('saved') >= 0`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Navigate(s.httpURL+"/report/fleet"),
		chromedp.WaitVisible(`#report-body .chart-out .uplot canvas`, chromedp.ByQuery),
		chromedp.Text(`#report-title`, &title, chromedp.ByQuery),
		shot("5-report.png"),
	); err != nil {
		t.Fatalf("notebook report: %v", err)
	}
	if title != "fleet" {
		t.Fatalf("report title %q", title)
	}
	var editors int
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.querySelectorAll('#report textarea, #report pre, #report input').length`, &editors)); err != nil || editors != 0 {
		t.Fatalf("the report view shows %d editors (%v)", editors, err)
	}
	t.Logf("screenshots in %s", art)
}
