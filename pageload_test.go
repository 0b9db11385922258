package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/contract"
)

// BenchmarkPageLoad loads the status page in Chromium until it is
// interactive (the first view drawn, measured by the page from the start
// of navigation), and then the fleet view: an empty region as the
// baseline, and one with 10,000 registered devices and 1,000 alerts.
//
//	go test -run '^$' -bench PageLoad -benchtime 5x .
func BenchmarkPageLoad(b *testing.B) {
	for _, size := range []struct {
		name            string
		devices, alerts int
	}{{"empty", 0, 0}, {"10000-devices-1000-alerts", 10000, 1000}} {
		b.Run(size.name, func(b *testing.B) {
			s := newServer(b, b.TempDir(), "VIGIL_CONSOLE_REFRESH_INTERVAL=300s")
			s.startInProcess()
			defer s.stop()
			seedFleet(b, s, size.devices, size.alerts)
			br := newBrowser(b, 1280, 1000)
			var load, fleet float64
			b.ResetTimer()
			for b.Loop() {
				var ready, fleetMS float64
				br.run("page load",
					chromedp.Navigate(s.httpURL+"/?token="+s.token),
					chromedp.Poll(fmt.Sprintf(`window.vigilReadyAt && document.querySelectorAll('#alert-rows tr').length === %d`, size.alerts), nil, chromedp.WithPollingTimeout(30*time.Second)),
					chromedp.Evaluate(`window.vigilReadyAt`, &ready),
					chromedp.Evaluate(`(() => { window.fleetStart = performance.now(); document.querySelector('#tabs button[data-tab="fleet"]').click(); return 0; })()`, nil),
					chromedp.Poll(`document.body.dataset.ready === 'fleet'`, nil, chromedp.WithPollingTimeout(30*time.Second)),
					chromedp.Evaluate(`performance.now() - window.fleetStart`, &fleetMS),
				)
				load += ready
				fleet += fleetMS
			}
			n := float64(b.N)
			b.ReportMetric(load/n, "ms-interactive")
			b.ReportMetric(fleet/n, "ms-fleet-view")
		})
	}
}

// seedFleet registers devices (with positions, over the admin API) and
// writes alerts straight to the alerts topic, as the pipeline would.
func seedFleet(b testing.TB, s *server, devices, alerts int) {
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body := fmt.Sprintf(`{"device_id":"load-%05d","attrs":{"site":"site-%d","lat":%g,"lon":%g}}`, i, i%40, 40+float64(i%97)/10, -5+float64(i%89)/8)
				if code, out, _ := s.do("POST", "/api/v1/devices", s.token, "application/json", []byte(body)); code != http.StatusCreated {
					b.Errorf("register: %d %s", code, out)
				}
			}
		}()
	}
	for i := 0; i < devices; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if alerts == 0 {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.kafka))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	now := time.Now()
	for i := 0; i < alerts; i++ {
		a := contract.Alert{AlertID: fmt.Sprintf("load-alert-%04d", i), DeviceID: fmt.Sprintf("load-%05d", i*7%max(devices, 1)), Region: "local", Site: fmt.Sprintf("site-%d", i%40),
			TS: now.Add(-time.Duration(i) * time.Minute), DetectedAt: now.Add(-time.Duration(i) * time.Minute), Score: 0.9, Threshold: 0.8, Severity: "medium", Model: "baseline-v1",
			Metric: "temp_c", State: "open", Readings: 1, LastTS: now.Add(-time.Duration(i) * time.Minute), MaxScore: 0.9,
			Reasons: []contract.Reason{{Feature: "temp_c.level", Value: 9, Detector: "level", Text: "expected 40-55, got 90"}}}
		v, _ := contract.EncodeAlert(&a)
		cl.Produce(context.Background(), &kgo.Record{Topic: "vigil.alerts", Key: []byte(a.DeviceID), Value: v}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 30*time.Second, "the alerts in the alert store", func() bool {
		return len(s.alerts("").Alerts) >= alerts
	})
}
