package main

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

//go:embed web/testdata/axe/axe.min.js
var axeJS string

// browser starts headless Chromium for a test: it records every request
// the page makes, and writes screenshots to the artifacts folder.
type browser struct {
	t        testing.TB
	ctx      context.Context
	art      string
	mu       sync.Mutex
	requests []string
}

// profileDir is a browser's profile directory, removed when the test
// ends. Chromium's helper processes can still write to it for a moment
// after the browser was stopped, and t.TempDir's removal then failed the
// test ("directory not empty"), so the removal retries for a few seconds.
// Call it before starting the browser: cleanups run last first, so the
// removal comes after the browser is stopped.
func profileDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "vigil-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = os.RemoveAll(dir); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Logf("browser profile %s not removed: %v", dir, err)
		}
	})
	return dir
}

func newBrowser(t testing.TB, w, h int) *browser {
	bin := chromium(t)
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(w, h),
		chromedp.UserDataDir(profileDir(t)))...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(ctx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	b := &browser{t: t, ctx: ctx, art: artifactsDir(t)}
	chromedp.ListenTarget(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			b.mu.Lock()
			b.requests = append(b.requests, e.Request.URL)
			b.mu.Unlock()
		}
	})
	if err := chromedp.Run(ctx, network.Enable()); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	if err := chromedp.Run(b.ctx, actions...); err != nil {
		var html string
		_ = chromedp.Run(b.ctx, chromedp.OuterHTML("main", &html, chromedp.ByQuery))
		if len(html) > 3000 {
			html = html[:3000]
		}
		b.t.Fatalf("%s: %v\n%s", what, err, html)
	}
}

func (b *browser) shot(name string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		var buf []byte
		if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b.art, name), buf, 0o644)
	})
}

// audit runs axe-core in the page and fails on any serious or critical
// violation, naming the rule and the elements.
func (b *browser) audit(view string) {
	b.t.Helper()
	var res []struct {
		ID     string `json:"id"`
		Impact string `json:"impact"`
		Help   string `json:"help"`
		Nodes  []struct {
			Target []any `json:"target"`
		} `json:"nodes"`
	}
	await := func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }
	b.run("axe-core on "+view,
		chromedp.Evaluate(axeJS, nil),
		chromedp.Evaluate(`axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => ({target: n.target}))})))`, &res, await),
	)
	bad := 0
	var minor []string
	for _, v := range res {
		minor = append(minor, v.ID+" ("+v.Impact+")")
		if v.Impact == "serious" || v.Impact == "critical" {
			bad++
			b.t.Errorf("axe-core on %s: %s (%s): %s at %v", view, v.ID, v.Impact, v.Help, v.Nodes)
		}
	}
	b.t.Logf("axe-core on %s: %d violations %v, %d serious or critical", view, len(res), minor, bad)
}

// offServer lists the requests that did not go to base.
func (b *browser) offServer(base string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, u := range b.requests {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") && u != base {
			out = append(out, u)
		}
	}
	return out
}

// TestOperatorConsole drives the operator's views in Chromium: from an
// alert in the list to its explanation to the device view with its band
// and incident span in two clicks; the fleet view with its map and the
// noisiest devices; a time-range change reaching the archive; every view
// audited by axe-core (no serious or critical violation), used by
// keyboard, and at 390 px wide; no request leaves the server.
func TestOperatorConsole(t *testing.T) {
	dir := t.TempDir()
	objects := filepath.Join(dir, "objects")
	// first a region whose Kafka then goes away: its readings remain only
	// in the archive of the shared bucket
	old := newServer(t, filepath.Join(dir, "old"), "VIGIL_STORAGE_DIR="+objects, "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s")
	old.startInProcess()
	okey := old.registerDevice("hist-1", map[string]any{"site": "north", "lat": 52.0, "lon": 4.0})
	rng := rand.New(rand.NewPCG(11, 12))
	postSeries(t, old, okey, "hist-1", "old", time.Now().Add(-20*time.Hour), 120, func(int) float64 { return 40 + rng.NormFloat64() })
	waitFor(t, 30*time.Second, "the old readings archived", func() bool { return old.metric("vigil_archive_rows_total") >= 120 })
	old.stop()

	s := newServer(t, filepath.Join(dir, "data"), "VIGIL_STORAGE_DIR="+objects, "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_CONSOLE_HISTORY_INTERVAL=200ms", "VIGIL_CONSOLE_REFRESH_INTERVAL=300s")
	s.startInProcess()
	defer s.stop()
	s.registerDevice("hist-1", map[string]any{"site": "north", "lat": 52.0, "lon": 4.0})
	start := time.Now().Add(-10 * time.Minute)
	for i := 0; i < 12; i++ {
		dev := fmt.Sprintf("pump-%02d", i)
		site := []string{"north", "south", "east"}[i%3]
		key := s.registerDevice(dev, map[string]any{"site": site, "lat": 50 + float64(i%4), "lon": 3 + float64(i%5)*0.7, "model": "P-100"})
		rr := rand.New(rand.NewPCG(uint64(i), 3))
		postSeries(t, s, key, dev, dev+"-n", start, 60, func(int) float64 { return 60 + 0.5*rr.NormFloat64() })
		if i < 4 {
			postSeries(t, s, key, dev, dev+"-spike", start.Add(61*time.Second), 1, func(int) float64 { return 99 })
		}
	}
	waitFor(t, 20*time.Second, "four alerts", func() bool { return len(s.alerts("").Alerts) >= 4 })

	b := newBrowser(t, 1280, 1000)
	// the alert list; then, two clicks: the explanation, the device view
	var why, timeline string
	b.run("alert list",
		chromedp.Navigate(s.httpURL+"/?token="+s.token),
		chromedp.WaitVisible(`#alert-rows tr.alert a.explain`, chromedp.ByQuery),
		b.shot("10-alert-list.png"),
	)
	b.audit("the alert list")
	b.run("click 1: the alert's explanation",
		chromedp.Click(`#alert-rows tr.alert a.explain`, chromedp.ByQuery),
		chromedp.WaitVisible(`#alert-why li`, chromedp.ByQuery),
		chromedp.WaitVisible(`#alert-chart .uplot canvas`, chromedp.ByQuery),
		chromedp.Text(`#alert-why`, &why, chromedp.ByQuery),
		chromedp.Text(`#alert-timeline`, &timeline, chromedp.ByQuery),
		b.shot("11-alert-view.png"),
	)
	var path string
	b.run("the alert's address", chromedp.Evaluate(`location.pathname`, &path))
	if !strings.HasPrefix(path, "/alerts/") || !strings.Contains(why, "expected") || !strings.Contains(why, "got 99") || !strings.Contains(timeline, "opened") {
		t.Fatalf("alert view at %s: why %q, timeline %q", path, why, timeline)
	}
	b.audit("the alert view")
	var band, spans, marks string
	b.run("click 2: the device view",
		chromedp.Click(`#alert-device-link`, chromedp.ByQuery),
		chromedp.WaitVisible(`#device-panes .metric-pane[data-metric="temp_c"] .uplot canvas`, chromedp.ByQuery),
		chromedp.WaitVisible(`#device-panes .score-pane .uplot canvas`, chromedp.ByQuery),
		chromedp.AttributeValue(`#device-panes .metric-pane[data-metric="temp_c"]`, "data-band", &band, nil, chromedp.ByQuery),
		chromedp.AttributeValue(`#device-panes .metric-pane[data-metric="temp_c"]`, "data-spans", &spans, nil, chromedp.ByQuery),
		chromedp.AttributeValue(`#device-panes .metric-pane[data-metric="temp_c"]`, "data-marks", &marks, nil, chromedp.ByQuery),
		b.shot("12-device-view.png"),
	)
	if band != "1" || spans == "0" || marks == "0" {
		t.Fatalf("device view: band %q, incident spans %q, alert marks %q", band, spans, marks)
	}
	b.audit("the device view")
	// a tooltip on hover
	var tip string
	b.run("tooltip",
		chromedp.ScrollIntoView(`#device-panes .metric-pane[data-metric="temp_c"] .u-over`, chromedp.ByQuery),
		chromedp.ActionFunc(func(ctx context.Context) error {
			var box []float64
			if err := chromedp.Evaluate(`(() => { const r = document.querySelector('#device-panes .metric-pane[data-metric="temp_c"] .u-over').getBoundingClientRect(); return [r.left + r.width/2, r.top + r.height/2]; })()`, &box).Do(ctx); err != nil {
				return err
			}
			return chromedp.MouseEvent("mouseMoved", box[0], box[1]).Do(ctx)
		}),
		chromedp.Text(`#device-panes .metric-pane[data-metric="temp_c"] .u-tooltip`, &tip, chromedp.ByQuery),
	)
	if !strings.Contains(tip, "temp_c:") || !strings.Contains(tip, "UTC") {
		t.Fatalf("tooltip %q does not show the time and the value", tip)
	}

	// a time range that reaches the archive: hist-1's readings are only there
	var src15, src24 string
	b.run("time ranges",
		chromedp.Navigate(s.httpURL+"/devices/hist-1"),
		chromedp.Poll(`document.body.dataset.deviceLoaded === 'hist-1:1h'`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Click(`.ranges button[data-range="15m"]`, chromedp.ByQuery),
		chromedp.Poll(`document.body.dataset.deviceLoaded === 'hist-1:15m'`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Text(`#device-source`, &src15, chromedp.ByQuery),
		chromedp.Click(`.ranges button[data-range="24h"]`, chromedp.ByQuery),
		chromedp.Poll(`document.body.dataset.deviceLoaded === 'hist-1:24h'`, nil, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.WaitVisible(`#device-panes .metric-pane[data-metric="temp_c"] .uplot canvas`, chromedp.ByQuery),
		chromedp.Text(`#device-source`, &src24, chromedp.ByQuery),
		b.shot("13-device-24h-from-archive.png"),
	)
	if !strings.HasPrefix(src15, "0 readings") || !strings.Contains(src24, "120 from the archive") {
		t.Fatalf("range 15m: %q; range 24h: %q (want 120 readings from the archive)", src15, src24)
	}

	// the fleet view, by keyboard: focus the tab, press Enter
	var mapLabel string
	var noisy int
	b.run("fleet view",
		chromedp.Focus(`#tabs button[data-tab="fleet"]`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
		chromedp.Poll(`document.body.dataset.ready === 'fleet' && document.querySelectorAll('#fleet-noisy tr').length > 0`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.AttributeValue(`#fleet-map`, "aria-label", &mapLabel, nil, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('#fleet-noisy tr').length`, &noisy),
		b.shot("14-fleet.png"),
	)
	if !strings.Contains(mapLabel, "13 devices") || !strings.Contains(mapLabel, "4 with an incident open") || noisy != 4 {
		t.Fatalf("fleet: map %q, %d noisy devices (want 13 devices on the map, 4 open, 4 noisy)", mapLabel, noisy)
	}
	b.audit("the fleet view")
	// and the alert's explanation by keyboard from the list
	b.run("keyboard to an alert",
		chromedp.Focus(`#tabs button[data-tab="alerts"]`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(`#alert-rows tr.alert a.explain`, chromedp.ByQuery),
		chromedp.Focus(`#alert-rows tr.alert a.explain`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(`#alert-why li`, chromedp.ByQuery),
	)

	// the other views: rendered and audited
	for _, v := range []struct{ tab, ready string }{
		{"overview", `document.querySelector('#ts-rate .uplot') !== null && document.querySelectorAll('#topics tr').length > 0`},
		{"sql", `document.getElementById('s-status').textContent !== ''`},
		{"notebooks", `document.body.dataset.ready === 'notebooks'`},
		{"models", `document.querySelectorAll('#m-self span').length > 0`},
		{"delivery", `document.querySelectorAll('#d-mqtt span').length > 0`},
	} {
		b.run(v.tab,
			chromedp.Click(`#tabs button[data-tab="`+v.tab+`"]`, chromedp.ByQuery),
			chromedp.Poll(v.ready, nil, chromedp.WithPollingTimeout(20*time.Second)),
			b.shot("15-"+v.tab+".png"),
		)
		b.audit("the " + v.tab + " view")
	}

	// a notebook's report view
	nb := `{"title":"fleet report","paragraphs":[{"sql":"SELECT 1 AS one","chart":"table","refresh":0}]}`
	if code, out, _ := s.do("PUT", "/api/v1/notebooks/ops", s.token, "application/json", []byte(nb)); code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("save notebook: %d %s", code, out)
	}
	b.run("report view",
		chromedp.Navigate(s.httpURL+"/report/ops"),
		chromedp.Poll(`document.getElementById('report-title').textContent === 'fleet report'`, nil, chromedp.WithPollingTimeout(20*time.Second)),
	)
	b.audit("the report view")

	// 390 px wide: nothing wider than the screen
	for _, p := range []string{"/", "/fleet", "/devices/pump-00"} {
		var overflow bool
		b.run("390 px "+p,
			chromedp.EmulateViewport(390, 844),
			chromedp.Navigate(s.httpURL+p),
			chromedp.Poll(`document.body.dataset.ready !== undefined`, nil, chromedp.WithPollingTimeout(20*time.Second)),
			chromedp.Evaluate(`document.documentElement.scrollWidth > window.innerWidth + 1`, &overflow),
			b.shot("16-narrow"+strings.ReplaceAll(p, "/", "-")+".png"),
		)
		if overflow {
			t.Errorf("at 390 px the page %s is wider than the screen", p)
		}
	}
	if off := b.offServer(s.httpURL); len(off) > 0 {
		t.Fatalf("the page made requests off the server: %v", off)
	}
	b.mu.Lock()
	t.Logf("%d requests, all to %s", len(b.requests), s.httpURL)
	b.mu.Unlock()
}
