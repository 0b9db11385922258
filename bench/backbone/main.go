// Command backbone measures Vigil's backbone on this machine, beside a
// baseline in the same run:
//
//   - baseline: a bare franz-go loop through the same embedded broker:
//     produce -> consume (group) -> produce -> consume, records of the size
//     of a raw reading;
//   - throughput: readings/s from the first POST /v1/ingest to the last
//     enriched record committed (read_committed), and Vigil's CPU time a
//     reading (its process_cpu_seconds_total over the readings enriched:
//     the figure to compare across runs on a noisy machine);
//   - latency: post-to-alert p50/p99 while an open-loop background load
//     runs at half the measured throughput (or -rate): outliers to
//     warmed-up probe devices, timed from the start of the POST to the
//     alert read from the alerts topic.
//
// Usage: go run ./bench/backbone [-seconds 10] [-rate 50000] [-vigil path/to/vigil]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil/vigil/bench/internal/benchutil"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	seconds := flag.Int("seconds", 10, "length of each load phase")
	bin := flag.String("vigil", "", "vigil binary (default: go build it)")
	archive := flag.Bool("archive", true, "run the archiver in the measured process (archive.enabled)")
	posters := flag.Int("posters", 8, "concurrent HTTP posters")
	batch := flag.Int("batch", 500, "readings per POST")
	mqttToo := flag.Bool("mqtt", true, "also measure MQTT ingest beside HTTP ingest")
	flag.Float64Var(&openRate, "rate", 0, "readings/s of the latency phase's open-loop background load (0: half the measured throughput; issue #14 asks for 50000)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write Vigil's CPU profile over the throughput phase to this file (from /debug/pprof)")
	flag.Parse()
	if err := run(*seconds, *bin, *posters, *batch, *archive, *mqttToo); err != nil {
		fmt.Fprintln(os.Stderr, "backbone:", err)
		os.Exit(1)
	}
}

var (
	cpuProfile string
	openRate   float64
)

func run(seconds int, bin string, posters, batch int, archive, mqttToo bool) error {
	dir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "vigil")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			return fmt.Errorf("go build (run from the repository root): %w\n%s", err, out)
		}
	}
	httpAddr, kafkaAddr, mqttAddr := benchutil.FreeAddr(), benchutil.FreeAddr(), benchutil.FreeAddr()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "VIGIL_DATA_DIR="+filepath.Join(dir, "data"), "VIGIL_HTTP_ADDR="+httpAddr,
		"VIGIL_KAFKA_EMBEDDED_ADDR="+kafkaAddr, "VIGIL_ADMIN_TOKEN="+benchutil.Token, "VIGIL_LOG_LEVEL=warn", "VIGIL_MQTT_ADDR="+mqttAddr,
		fmt.Sprintf("VIGIL_ARCHIVE_ENABLED=%t", archive),
		"VIGIL_INGEST_RATE_PER_KEY=0") // one gateway key carries the whole load
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	base := "http://" + httpAddr
	if err := waitReady(base); err != nil {
		return fmt.Errorf("%w\n%s", err, logs.String())
	}
	fmt.Printf("machine: %d cores; vigil at %s, embedded Kafka at %s; archiver in process: %t\n", numCPU(), base, kafkaAddr, archive)

	base1, err := baseline(kafkaAddr, seconds)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	fmt.Printf("baseline  franz-go produce->consume->produce->consume: %8.0f records/s\n", base1)

	gwKey, err := benchutil.Gateway(base, "bench", "b-")
	if err != nil {
		return err
	}
	var prof <-chan error
	if cpuProfile != "" {
		prof = benchutil.Profile(base, cpuProfile, seconds)
	}
	cpu0, done0 := benchutil.Metric(base, "process_cpu_seconds_total"), benchutil.Metric(base, "vigil_pipeline_readings_total")
	thr, err := throughput(base, kafkaAddr, gwKey, seconds, posters, batch)
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	cpu1, done1 := benchutil.Metric(base, "process_cpu_seconds_total"), benchutil.Metric(base, "vigil_pipeline_readings_total")
	if prof != nil {
		if err := <-prof; err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		fmt.Printf("          CPU profile of the throughput phase in %s (go tool pprof -top %s)\n", cpuProfile, cpuProfile)
	}
	fmt.Printf("backbone  POST -> enriched committed:                   %8.0f readings/s  (%.2f of baseline)\n", thr, thr/base1)
	// Vigil's own CPU time a reading: unlike the rate, it does not move
	// with what else the machine runs (the load generator included)
	fmt.Printf("          Vigil's CPU: %.1f µs a reading to enriched committed", (cpu1-cpu0)/(done1-done0)*1e6)

	if archive {
		// Steady state: let the archiver take in the backlog of the
		// throughput phase before latency is measured.
		start := time.Now()
		for time.Since(start) < 120*time.Second {
			if benchutil.Metric(base, "vigil_archive_rows_total")+benchutil.Metric(base, "vigil_archive_pending_rows") >= benchutil.Metric(base, "vigil_pipeline_readings_total") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cpu2 := benchutil.Metric(base, "process_cpu_seconds_total")
		fmt.Printf(", %.1f µs with its archiving\n", (cpu2-cpu0)/(done1-done0)*1e6)
		fmt.Printf("          archiver caught up with the backlog in %s\n", time.Since(start).Round(100*time.Millisecond))
	} else {
		fmt.Println()
	}
	bg := thr / 2
	if openRate > 0 {
		bg = openRate
	}
	p50, p99, n, rate, err := latency(base, kafkaAddr, gwKey, seconds, bg, batch)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	fmt.Printf("latency   post-to-alert at %.0f readings/s background: p50 %s, p99 %s (%d alerts)\n", rate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), n)
	if mqttToo {
		var seq atomic.Int64
		evt := time.Now().Add(-24 * time.Hour)
		for _, per := range []int{1, 100} {
			h, m, err := ingestRates(base, mqttAddr, gwKey, seconds, posters, per, evt, &seq)
			if err != nil {
				return fmt.Errorf("ingest rates: %w", err)
			}
			fmt.Printf("ingest    %3d reading(s) of one device per request/message, %d clients: HTTP %8.0f readings/s, MQTT QoS 1 %8.0f readings/s (%.2f of HTTP)\n", per, posters, h, m, m/h)
		}
	}
	return nil
}

func numCPU() int { return runtimeNumCPU() }

func waitReady(base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("vigil not ready after 60s")
}

// payload builds a batch of n readings of the simulator's shape.
func payload(rng *rand.Rand, devices int, n int, seq *atomic.Int64, evt time.Time) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		s := seq.Add(1)
		d := int(s) % devices
		fmt.Fprintf(&b, `{"device_id":"b-%d","id":"m%d","ts":%d,"metrics":{"temp_c":%.3f,"current_a":%.3f,"vibration":%.5f,"pressure_bar":%.4f},"attrs":{"status":"auto"}}`,
			d, s, evt.UnixMilli()+s/int64(devices), 60+rng.NormFloat64(), 5+0.1*rng.NormFloat64(), 0.03+0.002*rng.NormFloat64(), 3+0.03*rng.NormFloat64())
	}
	b.WriteByte(']')
	return b.Bytes()
}

// throughput posts as fast as the posters go for `seconds`, then waits for
// the pipeline to commit everything, timed from the first POST.
func throughput(base, kafka, key string, seconds, posters, batch int) (float64, error) {
	var (
		seq      atomic.Int64
		accepted atomic.Int64
		wg       sync.WaitGroup
	)
	evt := time.Now().Add(-48 * time.Hour)
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for time.Now().Before(stop) {
				body := payload(rng, 1000, batch, &seq, evt)
				code, err := benchutil.Post(client, base+"/v1/ingest", key, body)
				if err == nil && code == 202 {
					accepted.Add(int64(batch))
				} else if code == 429 || code == 503 {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}(p)
	}
	wg.Wait()
	posted := time.Since(start)
	want := accepted.Load()
	fmt.Printf("          posted %d readings in %s (%.0f/s acknowledged by ingest)\n", want, posted.Round(time.Millisecond), float64(want)/posted.Seconds())
	done, err := waitEnriched(base, want, 120*time.Second)
	if err != nil {
		return 0, err
	}
	return float64(want) / done.Sub(start).Seconds(), nil
}

// waitEnriched polls the pipeline's committed-readings counter until it
// reaches want, and returns when it did.
func waitEnriched(base string, want int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n := benchutil.Metric(base, "vigil_pipeline_readings_total"); n >= float64(want) {
			return time.Now(), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("pipeline committed %v of %d readings in %s", benchutil.Metric(base, "vigil_pipeline_readings_total"), want, timeout)
}

// latency runs a paced background load at rate readings/s and measures
// post-to-alert for outliers to probe devices, each warmed up first.
func latency(base, kafka, key string, seconds int, rate float64, batch int) (p50, p99 time.Duration, n int, actual float64, err error) {
	const probes = 400
	client := &http.Client{Timeout: 30 * time.Second}
	// warm the probe devices: 30 normal readings each, event time in the past
	evt := time.Now().Add(-2 * time.Hour)
	rng := rand.New(rand.NewPCG(42, 42))
	for w := 0; w < 30; w++ {
		var b bytes.Buffer
		b.WriteByte('[')
		for d := 0; d < probes; d++ {
			if d > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"device_id":"b-probe-%d","id":"w%d-%d","ts":%d,"metrics":{"temp_c":%.3f}}`, d, w, d, evt.Add(time.Duration(w)*time.Second).UnixMilli(), 60+rng.NormFloat64())
		}
		b.WriteByte(']')
		if code, err := benchutil.Post(client, base+"/v1/ingest", key, b.Bytes()); err != nil || code != 202 {
			return 0, 0, 0, 0, fmt.Errorf("warm probes: %d %w", code, err)
		}
	}
	// follow the alerts topic from its end
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("vigil.alerts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer cl.Close()
	var (
		mu     sync.Mutex
		sent   = map[string]time.Time{}
		lats   []time.Duration
		cctx   context.Context
		cancel context.CancelFunc
	)
	cctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	// make sure the consumer has its position before the outliers go out
	pctx, pcancel := context.WithTimeout(cctx, 300*time.Millisecond)
	cl.PollFetches(pctx)
	pcancel()
	go func() {
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				var a struct {
					MessageID string `json:"message_id"`
					State     string `json:"state"`
				}
				if json.Unmarshal(r.Value, &a, json.RejectUnknownMembers(false)) != nil || a.State != "open" {
					return
				}
				mu.Lock()
				if t, ok := sent[a.MessageID]; ok {
					lats = append(lats, now.Sub(t))
					delete(sent, a.MessageID)
				}
				mu.Unlock()
			})
		}
	}()
	// background load, paced
	var (
		seq      atomic.Int64
		accepted atomic.Int64
		wg       sync.WaitGroup
	)
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	perPoster := rate / 4 / float64(batch) // requests per second per poster
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			r := rand.New(rand.NewPCG(uint64(p), 9))
			interval := time.Duration(float64(time.Second) / perPoster)
			next := time.Now()
			for time.Now().Before(stop) {
				body := payload(r, 1000, batch, &seq, evt.Add(-time.Hour))
				if code, err := benchutil.Post(c, base+"/v1/ingest", key, body); err == nil && code == 202 {
					accepted.Add(int64(batch))
				}
				next = next.Add(interval)
				time.Sleep(time.Until(next))
			}
		}(p)
	}
	// outliers: one per probe device, spread over the phase
	gap := time.Duration(seconds) * time.Second / probes
	for d := 0; d < probes && time.Now().Before(stop); d++ {
		id := fmt.Sprintf("outlier-%d", d)
		body := []byte(fmt.Sprintf(`{"device_id":"b-probe-%d","id":%q,"ts":%d,"metrics":{"temp_c":95}}`, d, id, evt.Add(31*time.Second).UnixMilli()))
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		if code, err := benchutil.Post(client, base+"/v1/ingest", key, body); err != nil || code != 202 {
			return 0, 0, 0, 0, fmt.Errorf("outlier post: %d %w", code, err)
		}
		time.Sleep(gap)
	}
	wg.Wait()
	actual = float64(accepted.Load()) / time.Since(start).Seconds()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) > 0 {
		return 0, 0, 0, 0, fmt.Errorf("%d outliers raised no alert within 10s", len(sent))
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(f float64) time.Duration { return lats[int(f*float64(len(lats)-1))] }
	return q(0.5), q(0.99), len(lats), actual, nil
}
