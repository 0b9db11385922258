// Command fleet measures Vigil against issue #14's goals, in one run.
// First the backbone, each phase with a fresh Vigil process:
//
//   - the bare loop: franz-go produce -> consume -> produce -> consume
//     through the embedded broker;
//   - closed loop, archive on and archive off: readings/s of 10,000
//     devices from the first POST to the last enriched record committed,
//     and Vigil's CPU time a reading;
//   - open loop at -rate (50,000/s): post-to-alert p50 and p99.
//
// Then the fleet: it warms N devices of four metrics each through
// POST /v1/ingest (a gateway posting batches, closed loop), and reports
//
//   - readings/s from the first POST to the last enriched record committed,
//     while the devices are first seen and warmed up;
//   - RSS and the Go heap after warm-up, and the heap per device (heap
//     after minus heap before the load, divided by N);
//   - restore time after SIGTERM, after SIGKILL, and after a SIGKILL
//     that follows -load-seconds of load at -load-rate (readings the
//     partitions must replay from their last snapshot): from the process
//     start to the first of 64 probe readings of warm devices scored (one
//     partition restored), and to all of them (every partition), with the
//     readings the restore replayed.
//
// It ends with a summary beside the goals.
//
// Usage: go run ./bench/fleet [-devices 1000000] [-warmup 25] [-seconds 15] [-rate 50000] [-load-rate 20000] [-load-seconds 180] [-backbone=false] [-vigil path] [-logs file]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/bench/internal/benchutil"
)

var (
	heapProfile, cpuProfile, memLimit string
	mvWarmup                          int    // Vigil's pipeline.mv_warmup (0: its default)
	logPath                           string // where the fleet's Vigil logs go (info level), or ""
	seconds                           int
	openRate                          float64
	loadRate                          float64 // readings/s of the load before the last SIGKILL
	loadSeconds                       int
	backbone                          bool
	keep                              bool     // leave the data dir in place (to inspect the broker's files)
	restoreProfile                    string   // CPU profile of the last restart's first 30 s
	summary                           []string // the goals' lines, printed at the end
)

func main() {
	devices := flag.Int("devices", 100000, "devices to warm")
	warmup := flag.Int("warmup", 25, "readings per device")
	bin := flag.String("vigil", "", "vigil binary (default: go build it)")
	posters := flag.Int("posters", 8, "concurrent HTTP posters")
	batch := flag.Int("batch", 500, "readings per POST")
	archive := flag.Bool("archive", true, "run the archiver in the measured process")
	flag.StringVar(&memLimit, "memory-limit", "auto", "Vigil's memory.limit (auto, off or a size such as 8GiB)")
	flag.IntVar(&mvWarmup, "mv-warmup", 0, "Vigil's pipeline.mv_warmup (0: its default, 400): at most -warmup, the devices are fitted, in their steady state, when memory is measured")
	flag.StringVar(&heapProfile, "heapprofile", "", "write Vigil's heap profile after warm-up to this file")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write Vigil's CPU profile over the first 30 s of the warm-up to this file")
	flag.IntVar(&seconds, "seconds", 15, "length of each backbone load phase")
	flag.Float64Var(&openRate, "rate", 50000, "readings/s of the open-loop latency phase")
	flag.StringVar(&logPath, "logs", "", "append the fleet process's logs, at info level, to this file (shutdown phases, snapshot rounds, restores)")
	flag.Float64Var(&loadRate, "load-rate", 20000, "readings/s of the load before the last SIGKILL (0: no such phase)")
	flag.IntVar(&loadSeconds, "load-seconds", 180, "seconds of that load (longer than a snapshot round's spacing, so the kill finds readings to replay)")
	flag.BoolVar(&backbone, "backbone", true, "measure the backbone (bare loop, closed loops, open loop) before the fleet")
	flag.BoolVar(&keep, "keep", false, "keep the data dir (printed) after the run")
	flag.StringVar(&restoreProfile, "restoreprofile", "", "write Vigil's CPU profile over the first 30 s after the last restart is ready (the restore) to this file")
	flag.Parse()
	if err := run(*devices, *warmup, *bin, *posters, *batch, *archive); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

type vigil struct {
	cmd   *exec.Cmd
	base  string
	kafka string // the embedded broker's address
	logs  bytes.Buffer
	env   []string
	bin   string
	done  chan struct{}
	// logFile, when set, gets the logs too
	logFile *os.File
}

func (v *vigil) start() error {
	v.logs.Reset()
	v.cmd = exec.Command(v.bin, "serve")
	v.cmd.Env = append(os.Environ(), v.env...)
	v.cmd.Stdout, v.cmd.Stderr = &v.logs, &v.logs
	if v.logFile != nil {
		w := io.MultiWriter(&v.logs, v.logFile)
		v.cmd.Stdout, v.cmd.Stderr = w, w
	}
	if err := v.cmd.Start(); err != nil {
		return err
	}
	v.done = make(chan struct{})
	go func() { _ = v.cmd.Wait(); close(v.done) }()
	return nil
}

func (v *vigil) ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(v.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-v.done:
			return fmt.Errorf("vigil exited:\n%s", v.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("vigil not ready")
}

func (v *vigil) stop(sig os.Signal) {
	_ = v.cmd.Process.Signal(sig)
	select {
	case <-v.done:
	case <-time.After(90 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

func run(devices, warmup int, bin string, posters, batch int, archive bool) error {
	dir, err := os.MkdirTemp("", "vigil-fleet-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("data      kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if bin == "" {
		bin = filepath.Join(dir, "vigil")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			return fmt.Errorf("go build (run from the repository root): %w\n%s", err, out)
		}
	}
	if backbone {
		if err := backbonePhases(dir, bin, posters, batch); err != nil {
			return err
		}
	}
	v := newVigil(bin, filepath.Join(dir, "fleet"), archive, devices)
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		v.logFile = f
		v.env = append(v.env, "VIGIL_LOG_LEVEL=info")
	}
	if err := v.start(); err != nil {
		return err
	}
	defer func() {
		if v.cmd.ProcessState == nil {
			v.stop(os.Interrupt)
		}
	}()
	if err := v.ready(60 * time.Second); err != nil {
		return err
	}
	key, err := benchutil.Gateway(v.base, "fleet", "f-")
	if err != nil {
		return err
	}
	gc(v.base)
	heap0 := benchutil.Metric(v.base, "go_memstats_heap_inuse_bytes")
	fmt.Printf("vigil: %d devices of 4 metrics, %d readings each, archiver in process: %t, memory.limit %s%s\n", devices, warmup, archive, memLimit, mvNote())

	// warm every device: readings interleaved across devices, closed loop
	total := int64(devices) * int64(warmup)
	// a device's readings are a minute apart in event time, and the last
	// (the load before the last kill, the probes) must still fall within
	// ingest.future_margin of now: a small fleet under a long load has
	// many readings a device
	perDevice := int64(warmup) + 5
	if loadSeconds > 0 && loadRate > 0 {
		perDevice += int64(loadRate*float64(loadSeconds))/int64(devices) + 1
	}
	evt := time.Now().Add(-time.Duration(perDevice) * time.Minute)
	var prof <-chan error
	if cpuProfile != "" {
		prof = benchutil.Profile(v.base, cpuProfile, 30)
	}
	start := time.Now()
	if err := postReadings(v, key, devices, 0, total, 0, posters, batch, evt); err != nil {
		return err
	}
	posted := time.Since(start)
	for benchutil.Metric(v.base, "vigil_pipeline_readings_total") < float64(total) {
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	if prof != nil {
		if err := <-prof; err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		fmt.Printf("          CPU profile of the warm-up's first 30 s in %s\n", cpuProfile)
	}
	fmt.Printf("warm-up   %d readings posted in %s, enriched and committed in %s: %.0f readings/s\n", total, posted.Round(time.Millisecond), took.Round(time.Millisecond), float64(total)/took.Seconds())
	summary = append(summary, fmt.Sprintf("%d devices warmed up (%d readings each) at %.0f readings/s", devices, warmup, float64(total)/took.Seconds()))
	time.Sleep(2 * time.Second)
	gc(v.base)
	heap := benchutil.Metric(v.base, "go_memstats_heap_inuse_bytes")
	live := benchutil.Metric(v.base, "go_memstats_heap_alloc_bytes")
	rss := rssMB(v.cmd.Process.Pid)
	if heapProfile != "" {
		if resp, err := benchutil.AdminGet(v.base + "/debug/pprof/heap"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = os.WriteFile(heapProfile, b, 0o644)
			fmt.Printf("          heap profile in %s (go tool pprof -top -sample_index=inuse_space %s)\n", heapProfile, heapProfile)
		}
	}
	fmt.Printf("memory    RSS %.0f MB, Go heap in use after a GC %.0f MB; heap per device %.0f bytes ((heap after - heap before) / devices; all of Vigil, not only the device state)\n",
		rss, heap/1e6, (heap-heap0)/float64(devices))
	// in use counts whole spans: the gap to the live objects is memory
	// the size classes hold unfilled
	fmt.Printf("          of it live objects %.0f MB (%.0f bytes a device), spans' unused room %.0f MB\n", live/1e6, live/float64(devices), (heap-live)/1e6)
	summary = append(summary, fmt.Sprintf("RSS %.2f GiB (goal ≤ 6 GiB at 1,000,000 devices), memory.limit %s%s", rss/1024, memLimit, mvNote()),
		fmt.Sprintf("heap per device %.0f bytes, all of Vigil, %s (goal: steady-state state ≤ 2,048; see go test -bench DeviceStateBytes ./pipeline/)", (heap-heap0)/float64(devices), devicePhase(warmup)))

	// restore: SIGTERM, then SIGKILL, then SIGKILL after a stretch of
	// load (open loop at -load-rate for -load-seconds: the partitions have
	// the readings since their last snapshot round to replay); each time,
	// from start to a probe of a warm device scored
	sent := total // readings posted so far
	for phase, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGKILL, syscall.SIGKILL} {
		name := strings.TrimPrefix(fmt.Sprint(sig), "signal ")
		if phase == 2 {
			if loadSeconds <= 0 || loadRate <= 0 {
				break
			}
			n := int64(loadRate * float64(loadSeconds))
			fmt.Printf("load      %d readings at %.0f/s before the kill\n", n, loadRate)
			const lat = "vigil_pipeline_post_to_commit_seconds"
			before := benchutil.Buckets(v.base, lat)
			if err := postReadings(v, key, devices, sent, n, loadRate, posters, batch, evt); err != nil {
				return err
			}
			sent += n
			// the snapshot rounds run under this load: Vigil's own
			// post-to-commit histogram says what they cost the readings
			after := benchutil.Buckets(v.base, lat)
			p50, k := benchutil.Quantile(before, after, 0.5)
			p99, _ := benchutil.Quantile(before, after, 0.99)
			p999, _ := benchutil.Quantile(before, after, 0.999)
			top, _ := benchutil.Quantile(before, after, 1)
			fmt.Printf("          post to commit under the load (Vigil's histogram, bucket bounds): p50 ≤ %s, p99 ≤ %s, p99.9 ≤ %s, max ≤ %s (%.0f readings)\n",
				secs(p50), secs(p99), secs(p999), secs(top), k)
			summary = append(summary, fmt.Sprintf("post to commit under %.0f/s of load with snapshot rounds: p99 ≤ %s, p99.9 ≤ %s, max ≤ %s", loadRate, secs(p99), secs(p999), secs(top)))
			name = "killed under load"
			// what the restart must work through beyond its replay: the
			// readings acknowledged and not yet scored at the kill
			fmt.Printf("          at the kill: %.0f readings acknowledged and not yet scored (vigil_pipeline_lag_records)\n", benchutil.Metric(v.base, "vigil_pipeline_lag_records"))
		}
		v.stop(sig)
		t0 := time.Now()
		if err := v.start(); err != nil {
			return err
		}
		if err := v.ready(5 * time.Minute); err != nil {
			return err
		}
		ready := time.Since(t0)
		var rprof <-chan error
		if restoreProfile != "" && phase == 2 {
			rprof = benchutil.Profile(v.base, restoreProfile, 30)
		}
		// the probes are recognised on the enriched topic by their ids: a
		// count of scored readings would also count the backlog a kill
		// under load leaves (readings acknowledged, not yet scored)
		watch, err := watchProbes(v.kafka, fmt.Sprintf("probe-%d-", t0.UnixNano()), logPath)
		if err != nil {
			return err
		}
		// one probe for each of 64 warm devices spread over the fleet, so
		// every partition restores its state (a partition restores at its
		// first record): the first scored is one partition's restore, the
		// last the whole fleet's
		const probes = 64
		var pb strings.Builder
		pb.WriteByte('[')
		for i := 0; i < probes; i++ {
			if i > 0 {
				pb.WriteByte(',')
			}
			fmt.Fprintf(&pb, `{"device_id":"f-%d","id":"probe-%d-%d","ts":%d,"metrics":{"temp_c":60,"current_a":5,"vibration":0.03,"pressure_bar":3}}`,
				i*devices/probes, t0.UnixNano(), i, evt.Add(time.Duration(sent/int64(devices)+1+int64(phase))*time.Minute).UnixMilli())
		}
		pb.WriteByte(']')
		client := &http.Client{Timeout: 60 * time.Second}
		for {
			if code, err := benchutil.Post(client, v.base+"/v1/ingest", key, []byte(pb.String())); err == nil && code == 202 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		first, last, err := watch(probes, 10*time.Minute)
		if err != nil {
			return fmt.Errorf("restore after %s: %w", name, err)
		}
		took, all := first.Sub(t0), last.Sub(t0)
		if rprof != nil {
			if err := <-rprof; err != nil {
				return fmt.Errorf("restore profile: %w", err)
			}
			fmt.Printf("          CPU profile of the restore's first 30 s in %s\n", restoreProfile)
		}
		replayed := benchutil.Metric(v.base, "vigil_pipeline_restored_readings_total")
		fmt.Printf("restore   after %-8s ready in %s, a warm device's reading scored %s after the start, warm devices of every partition %s (%.0f readings replayed)\n",
			name, ready.Round(time.Millisecond), took.Round(time.Millisecond), all.Round(time.Millisecond), replayed)
		if sig == syscall.SIGKILL {
			summary = append(summary, fmt.Sprintf("restore after SIGKILL%s: a warm device scored %s after the start, warm devices of every partition %s, %.0f readings replayed (goal < 60 s)",
				map[bool]string{true: " under load"}[phase == 2], took.Round(100*time.Millisecond), all.Round(100*time.Millisecond), replayed))
		}
	}
	fmt.Println("summary   (issue #14's goals)")
	for _, l := range summary {
		fmt.Println("         ", l)
	}
	return nil
}

// secs prints a histogram bucket's bound in seconds.
func secs(s float64) string {
	if math.IsInf(s, 1) || math.IsNaN(s) {
		return fmt.Sprint(s)
	}
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// watchProbes follows the enriched topic from its end (read committed:
// scored and committed) and returns a function that waits until n records
// whose ids begin with prefix have gone by, and says when the first and
// the last did.
func watchProbes(kafka, prefix, logPath string) (func(n int, timeout time.Duration) (time.Time, time.Time, error), error) {
	opts := []kgo.Opt{kgo.SeedBrokers(kafka), kgo.ConsumeTopics("vigil.enriched"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(20 * time.Millisecond)}
	var logf *os.File
	if logPath != "" { // the reader's own client log beside the fleet's (a slow restore: was it the reader?)
		f, err := os.OpenFile(logPath+".probes", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		logf = f
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(f, kgo.LogLevelInfo, func() string { return time.Now().Format("15:04:05.000 ") })))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, err
	}
	// take the position before the probes go out
	pctx, pcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	cl.PollFetches(pctx)
	pcancel()
	key := []byte(`"id":"` + prefix)
	return func(n int, timeout time.Duration) (time.Time, time.Time, error) {
		defer cl.Close()
		if logf != nil {
			defer logf.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var first, last time.Time
		seen := 0
		for seen < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return first, last, fmt.Errorf("%d of %d probes scored in %s", seen, n, timeout)
			}
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				if bytes.Contains(r.Value, key) {
					if seen == 0 {
						first = now
					}
					seen++
					last = now
				}
			})
		}
		return first, last, nil
	}, nil
}

// postReadings posts readings first to first+count-1 of the fleet through
// POST /v1/ingest, in batches from posters goroutines: reading i is device
// i mod devices's, at event time evt plus i/devices minutes. rate 0
// posts closed loop (each batch as soon as the one before is
// acknowledged); a rate paces the batches to that many readings/s (open
// loop). Refusals (429, 503) are retried as documented.
func postReadings(v *vigil, key string, devices int, first, count int64, rate float64, posters, batch int, evt time.Time) error {
	var next, acked atomic.Int64
	var refused atomic.Value // the first refusal that a retry will not mend
	var wg sync.WaitGroup
	start := time.Now()
	lastReport := time.Now()
	var repMu sync.Mutex
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 60 * time.Second}
			rng := rand.New(rand.NewPCG(uint64(p), uint64(7+first)))
			var b bytes.Buffer
			for {
				off := next.Add(int64(batch)) - int64(batch)
				if off >= count || refused.Load() != nil {
					return
				}
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(off) / rate * float64(time.Second)))))
				}
				n := min(int64(batch), count-off)
				b.Reset()
				b.WriteByte('[')
				for i := first + off; i < first+off+n; i++ {
					if i > first+off {
						b.WriteByte(',')
					}
					d, k := i%int64(devices), i/int64(devices)
					fmt.Fprintf(&b, `{"device_id":"f-%d","id":"w%d","ts":%d,"metrics":{"temp_c":%.3f,"current_a":%.3f,"vibration":%.5f,"pressure_bar":%.4f}}`,
						d, i, evt.Add(time.Duration(k)*time.Minute).UnixMilli()+d%60000, 60+rng.NormFloat64(), 5+0.1*rng.NormFloat64(), 0.03+0.002*rng.NormFloat64(), 3+0.03*rng.NormFloat64())
				}
				b.WriteByte(']')
				for {
					code, err := benchutil.Post(client, v.base+"/v1/ingest", key, b.Bytes())
					if err == nil && code == 202 {
						break
					}
					if err == nil && code != 429 && code != 503 {
						refused.CompareAndSwap(nil, fmt.Errorf("a batch of readings %d-%d was refused with %d (see the fleet's logs: -logs)", first+off, first+off+n-1, code))
						return
					}
					time.Sleep(100 * time.Millisecond) // 429/503: the documented retry
				}
				done := acked.Add(n)
				repMu.Lock()
				if time.Since(lastReport) > 10*time.Second {
					lastReport = time.Now()
					fmt.Printf("          %d of %d readings acknowledged (%.0f%%), %s\n", done, count, 100*float64(done)/float64(count), time.Since(start).Round(time.Second))
				}
				repMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err, _ := refused.Load().(error); err != nil {
		return err
	}
	return nil
}

// newVigil is a Vigil process (not started yet) with its data under dir.
func newVigil(bin, dir string, archive bool, devices int) *vigil {
	httpAddr, kafka := benchutil.FreeAddr(), benchutil.FreeAddr()
	v := &vigil{bin: bin, base: "http://" + httpAddr, kafka: kafka, env: []string{"VIGIL_DATA_DIR=" + dir, "VIGIL_HTTP_ADDR=" + httpAddr,
		"VIGIL_KAFKA_EMBEDDED_ADDR=" + kafka, "VIGIL_ADMIN_TOKEN=" + benchutil.Token, "VIGIL_LOG_LEVEL=warn",
		fmt.Sprintf("VIGIL_ARCHIVE_ENABLED=%t", archive), "VIGIL_INGEST_RATE_PER_KEY=0", "VIGIL_INGEST_BYTES_PER_KEY=0",
		fmt.Sprintf("VIGIL_INGEST_MAX_DEVICES_PER_GATEWAY=%d", devices+10), "VIGIL_MEMORY_LIMIT=" + memLimit}}
	if mvWarmup > 0 {
		v.env = append(v.env, fmt.Sprintf("VIGIL_PIPELINE_MV_WARMUP=%d", mvWarmup))
	}
	return v
}

// backbonePhases measures the bare loop, the closed loop with the archive
// on and off (10,000 devices), and the open loop at openRate, each Vigil
// started fresh.
func backbonePhases(dir, bin string, posters, batch int) error {
	const devices = 10000
	var (
		thr  [2]float64
		bare float64
	)
	for i, archive := range []bool{true, false} {
		v := newVigil(bin, filepath.Join(dir, fmt.Sprintf("backbone-%t", archive)), archive, devices+400)
		if err := v.start(); err != nil {
			return err
		}
		err := func() error {
			defer v.stop(os.Interrupt)
			if err := v.ready(60 * time.Second); err != nil {
				return err
			}
			if archive {
				b, err := benchutil.Baseline(v.kafka, seconds)
				if err != nil {
					return fmt.Errorf("baseline: %w", err)
				}
				fmt.Printf("baseline  franz-go produce->consume->produce->consume: %8.0f records/s\n", b)
				summary = append(summary, fmt.Sprintf("bare loop %.0f records/s", b))
				bare = b
			}
			key, err := benchutil.Gateway(v.base, "bench", "b-")
			if err != nil {
				return err
			}
			cpu0, done0 := benchutil.Metric(v.base, "process_cpu_seconds_total"), benchutil.Metric(v.base, "vigil_pipeline_readings_total")
			thr[i], err = benchutil.Throughput(v.base, v.kafka, key, devices, seconds, posters, batch)
			if err != nil {
				return fmt.Errorf("throughput: %w", err)
			}
			cpu1, done1 := benchutil.Metric(v.base, "process_cpu_seconds_total"), benchutil.Metric(v.base, "vigil_pipeline_readings_total")
			fmt.Printf("closed    archive %-5t POST -> enriched committed: %8.0f readings/s, Vigil's CPU %.1f µs a reading\n", archive, thr[i], (cpu1-cpu0)/(done1-done0)*1e6)
			goal := ""
			if archive {
				goal = " (goal ≥ 100,000)"
			}
			summary = append(summary, fmt.Sprintf("closed loop, archive %t: %.0f readings/s, %.2f of the bare loop%s", archive, thr[i], thr[i]/bare, goal))
			if !archive {
				return nil
			}
			// let the archiver take in the backlog before the open loop
			start := time.Now()
			for time.Since(start) < 120*time.Second && benchutil.Metric(v.base, "vigil_archive_rows_total")+benchutil.Metric(v.base, "vigil_archive_pending_rows") < benchutil.Metric(v.base, "vigil_pipeline_readings_total") {
				time.Sleep(100 * time.Millisecond)
			}
			p50, p99, n, rate, err := benchutil.Latency(v.base, v.kafka, key, seconds, openRate, batch)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			fmt.Printf("open      post-to-alert at %.0f readings/s: p50 %s, p99 %s (%d alerts)\n", rate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), n)
			summary = append(summary, fmt.Sprintf("open loop at %.0f readings/s: post-to-alert p50 %s, p99 %s (goal p99 ≤ 100 ms at 50,000/s)", rate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond)))
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

// gc makes Vigil collect garbage (through its profiler's heap endpoint),
// so the heap in use is what is live.
func gc(base string) {
	if resp, err := benchutil.AdminGet(base + "/debug/pprof/heap?gc=1"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// mvNote labels a run whose devices fit their multivariate model sooner
// than Vigil's default (-mv-warmup).
func mvNote() string {
	if mvWarmup <= 0 {
		return ""
	}
	return fmt.Sprintf(", pipeline.mv_warmup %d (devices fitted: the steady state; the default is 400)", mvWarmup)
}

// devicePhase says where the warmed devices are: fitted when -mv-warmup
// let them fit within their readings, else in their warm-up.
func devicePhase(warmup int) string {
	if mvWarmup > 0 && mvWarmup <= warmup {
		return fmt.Sprintf("devices fitted (their multivariate model after %d of their %d readings)", mvWarmup, warmup)
	}
	return fmt.Sprintf("devices %d readings into their warm-up", warmup)
}
