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
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/vigil/vigil/bench/internal/benchutil"
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
		"VIGIL_INGEST_RATE_PER_KEY=0", "VIGIL_INGEST_BYTES_PER_KEY=0") // one gateway key carries the whole load
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
	if err := benchutil.WaitReady(base); err != nil {
		return fmt.Errorf("%w\n%s", err, logs.String())
	}
	fmt.Printf("machine: %d cores; vigil at %s, embedded Kafka at %s; archiver in process: %t\n", runtime.NumCPU(), base, kafkaAddr, archive)

	base1, err := benchutil.Baseline(kafkaAddr, seconds)
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
	bt0, bn0 := benchutil.Metric(base, "vigil_pipeline_batch_seconds_sum"), benchutil.Metric(base, "vigil_pipeline_batches_total")
	t0 := time.Now()
	thr, err := benchutil.Throughput(base, kafkaAddr, gwKey, 1000, seconds, posters, batch)
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	cpu1, done1 := benchutil.Metric(base, "process_cpu_seconds_total"), benchutil.Metric(base, "vigil_pipeline_readings_total")
	bt1, bn1 := benchutil.Metric(base, "vigil_pipeline_batch_seconds_sum"), benchutil.Metric(base, "vigil_pipeline_batches_total")
	phase := time.Since(t0)
	if prof != nil {
		if err := <-prof; err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		fmt.Printf("          CPU profile of the throughput phase in %s (go tool pprof -top %s)\n", cpuProfile, cpuProfile)
	}
	fmt.Printf("backbone  POST -> enriched committed:                   %8.0f readings/s  (%.2f of baseline)\n", thr, thr/base1)
	// Vigil's own CPU time a reading: unlike the rate, it does not move
	// with what else the machine runs (the load generator included)
	// The stream scores and commits one micro-batch at a time: busy near
	// 100 % means its loop, not the cores, sets the pace.
	fmt.Printf("          stream: %.0f micro-batches of %.0f readings, %.1f ms each, busy %.0f %% of the phase\n",
		bn1-bn0, (done1-done0)/max(1, bn1-bn0), (bt1-bt0)/max(1, bn1-bn0)*1e3, (bt1-bt0)/phase.Seconds()*100)
	fmt.Printf("          Vigil's CPU: %.1f µs a reading to enriched committed (%.2f cores)", (cpu1-cpu0)/(done1-done0)*1e6, (cpu1-cpu0)/phase.Seconds())

	// Steady state: the pipeline scores the throughput phase's backlog
	// (without it the latency phase's first posts meet ingest's
	// backpressure), and the archiver takes it in, before latency is
	// measured.
	_, behind := benchutil.WaitEnriched(base, int64(benchutil.Metric(base, "vigil_ingest_readings_total")), 120*time.Second)
	if archive {
		start := time.Now()
		for time.Since(start) < 120*time.Second {
			if benchutil.Metric(base, "vigil_archive_rows_total")+benchutil.Metric(base, "vigil_archive_pending_rows") >= benchutil.Metric(base, "vigil_pipeline_readings_total") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cpu2 := benchutil.Metric(base, "process_cpu_seconds_total")
		fmt.Printf(", %.1f µs with its archiving\n", (cpu2-cpu0)/(done1-done0)*1e6)
		fmt.Printf("          archiver caught up with the backlog in %s; %.0f %% of its rows were handed over by the stream, not fetched\n",
			time.Since(start).Round(100*time.Millisecond), 100*benchutil.Metric(base, "vigil_archive_handoff_records_total")/max(1, benchutil.Metric(base, "vigil_archive_rows_total")+benchutil.Metric(base, "vigil_archive_pending_rows")))
	} else {
		fmt.Println()
	}
	if behind != nil {
		fmt.Printf("          the latency phase starts behind a backlog: %v\n", behind)
	}
	bg := thr / 2
	if openRate > 0 {
		bg = openRate
	}
	p50, p99, n, rate, err := benchutil.Latency(base, kafkaAddr, gwKey, seconds, bg, batch)
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
