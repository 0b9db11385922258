package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/internal/testutil"
)

// rssMB is the resident memory of a process, MB (Linux).
func rssMB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// archiveObjects counts the archive's Parquet objects in the local store.
func archiveObjects(dir string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "objects", "enriched"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".parquet") {
			n++
		}
		return nil
	})
	return n
}

// TestHostileDevices runs a real server (a process, its embedded broker)
// with well-behaved devices and probes whose outliers are timed from the
// POST to the alert on vigil.alerts, first alone (10 s), then while four
// hostile keys attack it (10 s): one device sending 10,000 metric names, a
// gateway inventing 100,000 device ids, a key posting at 10× its rate, and
// an 8 MB body every 10 ms. Under attack the well-behaved devices keep a
// post-to-alert p99 under 250 ms, RSS grows by less than 200 MB, the
// archive writes at most twice the objects of the clean period, and no
// acknowledged good reading is lost.
func TestHostileDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile-device suite skipped in -short mode")
	}
	if testutil.Race {
		// Vigil runs as its own process, built without -race; the attackers run
		// here. Under -race they cost several times the CPU, and on two cores
		// that, not Vigil, sets the probes' latency (324 ms p99 in CI against
		// 20 ms without). scripts/test.sh runs this test on its own without -race.
		t.Skip("timed hostile-device suite runs without -race (scripts/test.sh runs it on its own)")
	}
	dir := t.TempDir()
	s := newServer(t, dir, "VIGIL_INGEST_RATE_PER_KEY=1000", "VIGIL_INGEST_BURST_PER_KEY=1000", "VIGIL_INGEST_MAX_READINGS=1000",
		"VIGIL_INGEST_MAX_DEVICES_PER_GATEWAY=2000", "VIGIL_ARCHIVE_FLUSH_INTERVAL=2s", "VIGIL_LOG_LEVEL=warn")
	s.startProcess()
	defer s.stop()
	pid := s.cmd.Process.Pid
	gw := func(id, prefix string) string {
		code, b, _ := s.do("POST", "/api/v1/gateways", s.token, "application/json", []byte(`{"gateway_id":"`+id+`","device_prefixes":["`+prefix+`"]}`))
		if code != http.StatusCreated {
			t.Fatalf("gateway %s: %d %s", id, code, b)
		}
		return strings.Split(strings.Split(string(b), `"key":"`)[1], `"`)[0]
	}
	evilGW := gw("evil-gw", "evil-")
	namesKey, rateKey, bigKey := s.registerDevice("x-names", nil), s.registerDevice("x-rate", nil), s.registerDevice("x-big", nil)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	post := func(key string, body []byte) int {
		req, _ := http.NewRequest("POST", s.httpURL+"/v1/ingest", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	reading := func(dev, id string, ts time.Time, metrics string) string {
		return `{"device_id":"` + dev + `","id":"` + id + `","ts":"` + ts.UTC().Format(time.RFC3339Nano) + `","metrics":{` + metrics + `}}`
	}

	// well-behaved devices: 20, each its own key, 10 readings/s; probes:
	// 100 devices warmed with 60 normal readings, each to send one outlier
	rng := rand.New(rand.NewPCG(11, 11))
	t0 := time.Now().Add(-2 * time.Hour)
	goodKeys := make([]string, 20)
	for i := range goodKeys {
		goodKeys[i] = s.registerDevice(fmt.Sprintf("good-%d", i), nil)
	}
	probes := make([]string, 100)
	for i := range probes {
		dev := fmt.Sprintf("probe-%d", i)
		probes[i] = s.registerDevice(dev, nil)
		rs := make([]string, 60)
		for j := range rs {
			rs[j] = reading(dev, fmt.Sprintf("%s-w%d", dev, j), t0.Add(time.Duration(j)*time.Second), fmt.Sprintf(`"temp_c":%.3f,"vibration":%.4f`, 50+rng.NormFloat64(), 0.03+0.001*rng.NormFloat64()))
		}
		if code := post(probes[i], []byte("["+strings.Join(rs, ",")+"]")); code != http.StatusAccepted {
			t.Fatalf("warm probe %s: %d", dev, code)
		}
	}

	// a probe whose warm-up raised an alert has an open incident, which
	// its outlier would join without a new alert: leave it out
	waitFor(t, 20*time.Second, "the probes' warm-up through the pipeline", func() bool { return s.metric("vigil_pipeline_readings_total") >= 6000 })
	opened := s.metric(`vigil_pipeline_alerts_total{state="open"}`)
	waitFor(t, 10*time.Second, "the alert store to hold every alert the warm-up raised", func() bool { return float64(len(s.alerts("").Alerts)) >= opened })
	var usable []int
	for i := range probes {
		if len(s.alerts(fmt.Sprintf("probe-%d", i)).Alerts) == 0 {
			usable = append(usable, i)
		}
	}
	if len(usable) < 90 {
		t.Fatalf("%d of 100 probes raised an alert while warming up", 100-len(usable))
	}

	// the alerts topic, read as it grows: alert time by message id
	alertAt := sync.Map{}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.kafka), kgo.ConsumeTopics("vigil.alerts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cctx, ccancel := context.WithCancel(context.Background())
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			fs.EachRecord(func(r *kgo.Record) {
				var a struct {
					MessageID string `json:"message_id"`
					State     string `json:"state"`
				}
				if json.Unmarshal(r.Value, &a, json.RejectUnknownMembers(false)) == nil && a.State == "open" {
					alertAt.LoadOrStore(a.MessageID, time.Now())
				}
			})
		}
	}()
	defer func() { ccancel(); cwg.Wait() }()
	time.Sleep(time.Second) // the consumer starts at the end of the topic; nothing to poll for

	var goodMu sync.Mutex
	goodAcked := map[string]bool{}
	var goodSeq atomic.Int64
	nextProbe := 0
	// phase runs the good load and one probe outlier every 200 ms for d,
	// and returns the post-to-alert latencies.
	phase := func(d time.Duration) []time.Duration {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, key := range goodKeys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := time.NewTicker(100 * time.Millisecond)
				defer tk.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tk.C:
					}
					n := goodSeq.Add(1)
					id := fmt.Sprintf("g%d", n)
					body := reading(fmt.Sprintf("good-%d", i), id, time.Now().Add(-time.Second), fmt.Sprintf(`"temp_c":%d`, 40+n%3))
					if post(key, []byte(body)) == http.StatusAccepted {
						goodMu.Lock()
						goodAcked[id] = true
						goodMu.Unlock()
					}
				}
			}()
		}
		type sent struct {
			id string
			at time.Time
		}
		var outs []sent
		end := time.Now().Add(d)
		for time.Now().Before(end) && nextProbe < len(usable) {
			p := usable[nextProbe]
			dev := fmt.Sprintf("probe-%d", p)
			id := dev + "-out"
			body := reading(dev, id, t0.Add(61*time.Second), `"temp_c":80,"vibration":0.03`)
			at := time.Now()
			if code := post(probes[p], []byte(body)); code != http.StatusAccepted {
				t.Errorf("probe %s outlier: %d", dev, code)
			}
			outs = append(outs, sent{id, at})
			nextProbe++
			time.Sleep(200 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		time.Sleep(2 * time.Second) // the last alerts arrive; what is missing is counted below
		var lat []time.Duration
		for _, o := range outs {
			v, ok := alertAt.Load(o.id)
			if !ok {
				dev := strings.TrimSuffix(o.id, "-out")
				_, b, _ := s.do("GET", "/api/v1/alerts?device="+dev, s.token, "", nil)
				_, rb, _ := s.do("GET", "/api/v1/devices/"+dev+"/readings?limit=3", s.token, "", nil)
				t.Errorf("no alert for the probe outlier %s; its alerts %s; last readings %s", o.id, b, rb)
				continue
			}
			lat = append(lat, v.(time.Time).Sub(o.at))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat
	}
	p99 := func(l []time.Duration) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, len(l)*99/100)]
	}

	clean0 := archiveObjects(dir)
	cleanLat := phase(10 * time.Second)
	cleanObjects := archiveObjects(dir) - clean0
	rss0 := rssMB(t, pid)

	// the attack
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refused [4]atomic.Int64
	attack := func(k int, every time.Duration, f func(n int) int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if code := f(n); code != http.StatusAccepted {
					refused[k].Add(1)
				}
				if every > 0 {
					time.Sleep(every)
				}
			}
		}()
	}
	ts := time.Now().Add(-time.Minute)
	attack(0, 50*time.Millisecond, func(n int) int { // 100 new metric names a request, 10,000 in all
		if n >= 100 {
			return http.StatusAccepted
		}
		var b strings.Builder
		for j := 0; j < 100; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"m%d":1`, n*100+j)
		}
		return post(namesKey, []byte(reading("x-names", fmt.Sprintf("n%d", n), ts, b.String())))
	})
	attack(1, 50*time.Millisecond, func(n int) int { // 1,000 new device ids a request, 100,000 in all
		if n >= 100 {
			return http.StatusAccepted
		}
		rs := make([]string, 1000)
		for j := range rs {
			rs[j] = reading(fmt.Sprintf("evil-%d", n*1000+j), fmt.Sprintf("e%d", n*1000+j), ts, `"v":1`)
		}
		return post(evilGW, []byte("["+strings.Join(rs, ",")+"]"))
	})
	attack(2, 10*time.Millisecond, func(n int) int { // 100 readings every 10 ms: 10,000/s, 10× rate_per_key
		rs := make([]string, 100)
		for j := range rs {
			rs[j] = reading("x-rate", fmt.Sprintf("r%d-%d", n, j), ts, `"v":1`)
		}
		return post(rateKey, []byte("["+strings.Join(rs, ",")+"]"))
	})
	var big []byte
	{
		var b bytes.Buffer
		b.WriteByte('[')
		for i := 0; b.Len() < 8<<20-200; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(reading("x-big", fmt.Sprintf("b%d", i), ts, `"v":1`))
		}
		b.WriteByte(']')
		big = b.Bytes()
	}
	var bigInflight sync.WaitGroup
	wg.Add(1)
	go func() { // an 8 MB body every 10 ms, each on its own goroutine
		defer wg.Done()
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				bigInflight.Wait()
				return
			case <-tk.C:
			}
			bigInflight.Add(1)
			go func() {
				defer bigInflight.Done()
				if post(bigKey, big) != http.StatusAccepted {
					refused[3].Add(1)
				}
			}()
		}
	}()
	rssMax := rss0
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if r := rssMB(t, pid); r > rssMax {
				rssMax = r
			}
		}
	}()
	a0 := archiveObjects(dir)
	attackLat := phase(10 * time.Second)
	attackObjects := archiveObjects(dir) - a0
	close(stop)
	wg.Wait()
	rwg.Wait()

	t.Logf("clean: %d alerts, p99 %s, %d archive objects; under attack: %d alerts, p99 %s, %d archive objects; RSS %.0f MB -> max %.0f MB; refused: names %d, ids %d, rate %d, 8 MB bodies %d",
		len(cleanLat), p99(cleanLat), cleanObjects, len(attackLat), p99(attackLat), attackObjects, rss0, rssMax, refused[0].Load(), refused[1].Load(), refused[2].Load(), refused[3].Load())
	if p := p99(attackLat); len(attackLat) < 25 || p > 250*time.Millisecond {
		t.Errorf("under attack the probes' post-to-alert p99 is %s over %d alerts, want under 250 ms", p, len(attackLat))
	}
	if rssMax-rss0 > 200 {
		t.Errorf("RSS grew by %.0f MB under attack, want under 200", rssMax-rss0)
	}
	if attackObjects > 2*max(cleanObjects, 1) {
		t.Errorf("%d archive objects under attack against %d in the clean period, want at most twice", attackObjects, cleanObjects)
	}
	for k, name := range []string{"metric names", "device ids", "rate", "8 MB bodies"} {
		if refused[k].Load() == 0 {
			t.Errorf("the %s attack was never refused", name)
		}
	}

	// no acknowledged good reading is lost
	goodMu.Lock()
	want := len(goodAcked)
	goodMu.Unlock()
	rd, err := kgo.NewClient(kgo.SeedBrokers(s.kafka), kgo.ConsumeTopics("vigil.enriched"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	found := 0
	deadline := time.Now().Add(60 * time.Second)
	seen := map[string]bool{}
	for found < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := rd.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var e struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(r.Value, &e, json.RejectUnknownMembers(false)) == nil && goodAcked[e.ID] && !seen[e.ID] {
				seen[e.ID] = true
				found++
			}
		})
	}
	if found != want || want < 1000 {
		t.Fatalf("%d of %d acknowledged good readings enriched", found, want)
	}
}

// TestDataPermissions: what a running Vigil writes under data.dir (the
// broker's segments, snapshots, the local object store, the console's
// files) is readable by its user only: directories 0700, files 0600.
func TestDataPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := newServer(t, dir, "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_PIPELINE_SNAPSHOT_INTERVAL=1s")
	s.startProcess()
	key := s.registerDevice("perm-1", nil)
	rng := rand.New(rand.NewPCG(2, 2))
	s.do("POST", "/v1/ingest", key, "application/json", readingsJSON("perm-1", time.Now().Add(-time.Minute), 40, rng, func(int) float64 { return 20 + rng.NormFloat64() }))
	waitFor(t, 20*time.Second, "an archive object", func() bool { return archiveObjects(dir) > 0 })
	s.stop()
	files, dirs := 0, 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs++
		} else {
			files++
		}
		if mode := info.Mode().Perm(); mode&0o077 != 0 {
			t.Errorf("%s is %v: readable beyond its user", p, mode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 || dirs < 5 {
		t.Fatalf("only %d files in %d directories under data.dir", files, dirs)
	}
	t.Logf("%d files in %d directories, none readable beyond the user", files, dirs)
}
