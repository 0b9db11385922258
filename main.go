// Command vigil is streaming anomaly detection for IoT fleets in one binary:
// `vigil serve` runs a region (ingest, Kafka, pipeline, alerts, web),
// `vigil simulate` runs a device fleet against a server, `vigil version`
// prints the version. main loads config.yaml and wires the stages.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"github.com/vigil/vigil/console"
	"github.com/vigil/vigil/sitestatus"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/ingest"
	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/notify"
	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/simulate"
	"github.com/vigil/vigil/storage"
	"github.com/vigil/vigil/web"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "vigil: %s: stopping in order (a second signal exits at once)\n", sig)
		cancel()
		sig = <-sigs
		fmt.Fprintf(os.Stderr, "vigil: second signal (%s) during the shutdown: exiting now without finishing it; readings acknowledged before are in Kafka, the stream resumes from its last commit at the next start\n", sig)
		os.Exit(2)
	}()
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	signal.Stop(sigs)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  vigil serve [--config config.yaml] [--check-config] [--simulate]
  vigil simulate --url http://127.0.0.1:8080 --token ADMIN_TOKEN [--mqtt 127.0.0.1:1883] [--config config.yaml] [--duration 0]
  vigil eval --data ../shared/data/skab [--url http://host:8080 --token T --kafka host:9092] [--warmup 400]
  vigil eval --csv FILE --labels FILE
  vigil version`

func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], environ, stdout, stderr)
	case "simulate":
		return simulateCmd(ctx, args[1:], environ, stdout, stderr)
	case "eval":
		return evalCmd(ctx, args[1:], environ, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "vigil", versionString())
		return nil
	case "help", "--help", "-h":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		v += " " + bi.GoVersion
	}
	return v
}

func newLogger(c Config, stderr io.Writer) *zap.Logger {
	var lvl zapcore.Level
	_ = lvl.Set(c.Log.Level)
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Log.Format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(stderr), lvl)).With(zap.String("region", c.Region))
}

func serve(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (default: built-in defaults, see config.yaml)")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	sim := fs.Bool("simulate", false, "also run the simulated fleet (simulate section) against this server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, environ)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if *check {
		fmt.Fprintln(stdout, "config OK")
		return nil
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	defer setMemoryLimit(cfg.Memory.Limit, environ, log)()

	// every directory and file Vigil makes (the broker's segments and
	// DuckDB's spill files too) is its user's alone: 0700 and 0600
	syscall.Umask(0o077)
	if err := os.MkdirAll(cfg.Data.Dir, 0o700); err != nil {
		return fmt.Errorf("data.dir %s: %w", cfg.Data.Dir, err)
	}
	// (bus.OpenTimeout bounds the wait for the brokers, once the embedded
	// one has loaded its data)
	b, err := bus.Open(ctx, cfg.Kafka, cfg.Data.Dir, log)
	if err != nil {
		return err
	}
	closeOnErr := []func(){b.Close} // what is open, closed in reverse if serve fails before the conductor owns it
	defer func() {
		for i := len(closeOnErr) - 1; i >= 0; i-- {
			closeOnErr[i]()
		}
	}()

	sctx, cancelStore := context.WithTimeout(ctx, 30*time.Second)
	store, err := storage.Open(sctx, cfg.Storage, cfg.Data.Dir)
	cancelStore()
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	log.Info("object store ready", zap.String("store", store.String()))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	registry, err := ingest.NewRegistry(ingest.RegistryOptions{Topic: cfg.Kafka.Topics.Devices, ClientOpts: b.Opts(), Logger: log.Named("registry")})
	if err != nil {
		return err
	}
	closeOnErr = append(closeOnErr, registry.Close)
	var stream *pipeline.Stream // made below; ingest reads its lag once serving
	ing, err := ingest.NewHandler(cfg.Ingest, ingest.HandlerOptions{Region: cfg.Region, Topic: cfg.Kafka.Topics.Raw, DLQTopic: cfg.Kafka.Topics.DLQ, Registry: registry,
		Backlog:    func() int64 { return stream.Backlog() },
		ClientOpts: b.Opts(), Logger: log.Named("ingest"), Registerer: reg})
	if err != nil {
		return err
	}
	closeOnErr = append(closeOnErr, func() { ing.Close(context.Background()) })
	alerts := pipeline.NewAlertStore(cfg.Pipeline, pipeline.AlertStoreOptions{Topic: cfg.Kafka.Topics.Alerts, ClientOpts: b.Opts(), Logger: log.Named("alerts")})
	txnID := "" // fresh per start: see DESIGN.md, "the embedded broker after a crash"
	if !cfg.Kafka.Embedded() {
		host, _ := os.Hostname()
		abs, _ := filepath.Abs(cfg.Data.Dir)
		txnID = "vigil-stream-" + cfg.Region + "-" + host + "-" + shortHash(abs)
	}
	var archiver *storage.Archiver
	var handOn func([]bus.Committed)
	if cfg.Archive.Enabled {
		// the archiver takes what the stream commits without fetching it
		// back (its partitions; the rest it fetches)
		handOn = func(runs []bus.Committed) { archiver.Offer(runs) }
	}
	stream, err = pipeline.NewStream(cfg.Pipeline, pipeline.StreamOptions{
		Region: cfg.Region, ClientOpts: b.PipelineOpts(), TransactionalID: txnID,
		Topics:   pipeline.Topics{Raw: cfg.Kafka.Topics.Raw, Enriched: cfg.Kafka.Topics.Enriched, Alerts: cfg.Kafka.Topics.Alerts, DLQ: cfg.Kafka.Topics.DLQ},
		StateDir: filepath.Join(cfg.Data.Dir, "state"), Devices: registry, Logger: log.Named("pipeline"), Registerer: reg,
		StopBudget:  max(cfg.Shutdown.Budget/2, cfg.Shutdown.Budget-15*time.Second), // the rest for the archive's flush and the later phases
		OnCommitted: handOn,
	})
	if err != nil {
		return err
	}
	archiver, err = storage.NewArchiver(cfg.Archive, storage.ArchiverOptions{Topic: cfg.Kafka.Topics.Enriched,
		ClientOpts: b.Opts(), Store: store, Logger: log.Named("archive"), Registerer: reg})
	if err != nil {
		return err
	}
	holder := cfg.Models.Holder
	if holder == "" {
		host, _ := os.Hostname()
		var hb [3]byte
		_, _ = rand.Read(hb[:])
		holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(hb[:]))
	}
	models := ml.NewService(cfg.Models, ml.ServiceOptions{Holder: cfg.Region + "/" + holder, Store: store, Target: stream.Processor(),
		Threshold: cfg.Pipeline.Threshold, Buckets: cfg.Pipeline.AttrBuckets, Logger: log.Named("models")})
	token := cfg.Admin.Token
	if token == "" {
		var rb [24]byte
		_, _ = rand.Read(rb[:])
		token = hex.EncodeToString(rb[:])
	}
	consoleDir := filepath.Join(cfg.Data.Dir, "console")
	if err := os.MkdirAll(consoleDir, 0o700); err != nil {
		return fmt.Errorf("data.dir: %w", err)
	}
	sqlConsole := console.New(cfg.Console, console.Options{Store: store, Dir: consoleDir, Logger: log.Named("console")})
	sources := sitestatus.Sources{Ingest: ing, Stream: stream, Models: models}
	if cfg.Archive.Enabled {
		sources.Archive = archiver
	}
	history := sitestatus.NewRecorder(sources, cfg.Console.HistoryInterval, int(time.Hour/cfg.Console.HistoryInterval))
	status := sitestatus.New(sitestatus.Options{Region: cfg.Region, Store: store, Sources: sources, Interval: cfg.Console.StatusInterval, ClientOpts: b.Opts(),
		Topics: []string{cfg.Kafka.Topics.Raw, cfg.Kafka.Topics.Enriched, cfg.Kafka.Topics.Alerts, cfg.Kafka.Topics.DLQ}, Logger: log.Named("status")})
	mq, err := newMQTT(cfg, ing, reg, log)
	if err != nil {
		return err
	}
	closeOnErr = append(closeOnErr, mq.close)
	scheme := "http://"
	if cfg.HTTP.TLS() {
		scheme = "https://"
	}
	notifier, err := notify.New(cfg.Alerts, notify.Options{Region: cfg.Region, Topic: cfg.Kafka.Topics.Alerts, ClientOpts: b.Opts(), Store: store,
		Open:    func() []contract.Alert { return alerts.Query(1<<30, "", time.Time{}) },
		PageURL: scheme + loopbackAddr(cfg.HTTP.Addr), Logger: log.Named("notify"), Registerer: reg})
	if err != nil {
		return err
	}
	ready := []web.Check{
		{Name: "kafka", Fn: b.Ping},
		{Name: "registry", Fn: chanReady(registry.Ready(), "device registry still loading")},
		{Name: "alerts", Fn: chanReady(alerts.Loaded(), "alert store still loading")},
		{Name: "pipeline", Fn: func(context.Context) error {
			if !stream.Healthy() {
				return errors.New("stream processor not running")
			}
			return nil
		}},
	}
	if mq.bridge != nil {
		ready = append(ready, web.Check{Name: "mqtt-bridge", Fn: mq.bridge.Ready})
	}
	srv, err := web.New(cfg.HTTP, web.Options{
		AdminToken: token, ViewerToken: cfg.Admin.ViewerToken, Ingest: ing, Registry: registry, Alerts: alerts, Gatherer: reg, Logger: log.Named("web"),
		Health:  func() sitestatus.Health { return sitestatus.HealthOf(sources) },
		Console: sqlConsole, Store: store, Region: cfg.Region, KafkaOpts: b.Opts(), EnrichedTopic: cfg.Kafka.Topics.Enriched,
		Models: models, Notifier: notifier, MQTT: mq.status, Ready: ready, History: history.Points,
	})
	if err != nil {
		return err
	}
	base := scheme + loopbackAddr(srv.Addr())
	if !isLoopback(srv.Addr()) && !cfg.HTTP.TLS() {
		log.Warn("http.addr " + cfg.HTTP.Addr + " listens beyond this machine over plain HTTP: device keys and the admin token cross the network in clear. Put a TLS-terminating proxy in front, or bind 127.0.0.1")
	}
	log.Info("Vigil is up", zap.String("version", versionString()), zap.String("http", srv.Addr()), zap.Strings("kafka", b.Seeds()), zap.String("data_dir", cfg.Data.Dir))
	if cfg.Admin.Token == "" {
		log.Info("no admin.token configured; made one for this run, shown only here. Log in at " + base + "/?token=" + token + " (API clients send it as Authorization: Bearer)")
	}

	closeOnErr = nil // the conductor closes them, in phases
	c := newConductor(log.Named("lifecycle"))
	c.start("registry", registry.Run)
	c.start("alerts", alerts.Run)
	c.start("stream", stream.Run)
	c.start("http", srv.Run)
	c.start("status", status.Run)
	c.start("models", models.Run)
	c.start("console", sqlConsole.Run)
	c.start("notify", notifier.Run)
	c.start("history", history.Run)
	if mq.listener != nil {
		c.start("mqtt", mq.listener.Run)
	}
	if mq.bridge != nil {
		c.start("mqtt-bridge", mq.bridge.Run)
	}
	if cfg.Archive.Enabled {
		c.start("archive", archiver.Run)
	}
	var fleet *simulate.Fleet
	if *sim {
		fleet = simulate.New(cfg.Simulate, simulate.Options{URL: base, AdminToken: token, Logger: log.Named("simulate")})
		c.start("simulate", func(ctx context.Context) error {
			if err := fleet.Run(ctx); err != nil {
				log.Error("simulated fleet stopped", zap.Error(err))
			}
			<-ctx.Done() // a fleet that gave up does not stop the server
			return nil
		})
		c.start("alert-log", func(ctx context.Context) error { return logAlerts(ctx, alerts, log.Named("alerts")) })
	}
	cause := c.wait(ctx)
	if cause != nil {
		log.Error("a component stopped; shutting down", zap.Error(cause))
	} else {
		log.Info("stopping", zap.Duration("budget", cfg.Shutdown.Budget))
	}
	err = c.shutdown(cfg.Shutdown.Budget, []phase{
		{name: "http", comps: []string{"simulate", "alert-log", "http", "status", "history", "mqtt", "mqtt-bridge"}}, // stop taking readings
		{name: "ingest", fn: func(ctx context.Context) error { ing.Close(ctx); return nil }},                         // what was acknowledged is in Kafka
		{name: "stream", comps: []string{"stream"}},                                                                  // the last micro-batch committed
		{name: "archive", comps: []string{"archive"}},                                                                // what it holds flushed to the bucket
		{name: "models", comps: []string{"models"}},                                                                  // the trainer lease released
		{name: "readers", comps: []string{"registry", "alerts", "console", "notify"}},                                // a sample load cancelled, DuckDB closed; delivery resumes from its commits
		{name: "broker", fn: func(context.Context) error { b.Close(); return nil }},
	})
	if fleet != nil {
		// the server is stopped; score what the store already holds
		if r, rerr := fleetReportFromStore(fleet, alerts); rerr == nil {
			fmt.Fprint(stdout, r.String())
		}
	}
	if cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	log.Info("Vigil stopped")
	return nil
}

func chanReady(ch <-chan struct{}, msg string) func(context.Context) error {
	return func(context.Context) error {
		select {
		case <-ch:
			return nil
		default:
			return errors.New(msg)
		}
	}
}

func shortHash(s string) string {
	var h uint64 = 1469598103934665603
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return fmt.Sprintf("%012x", h&0xffffffffffff)
}

// loopbackAddr turns ":8080" or "0.0.0.0:8080" into "127.0.0.1:8080".
func loopbackAddr(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "127.0.0.1" + addr
	}
	if strings.HasPrefix(addr, "0.0.0.0:") || strings.HasPrefix(addr, "[::]:") {
		return "127.0.0.1" + addr[strings.LastIndex(addr, ":"):]
	}
	return addr
}

// isLoopback reports whether a listener address is a loopback one.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// logAlerts prints each new alert, for the demo.
func logAlerts(ctx context.Context, store *pipeline.AlertStore, log *zap.Logger) error {
	ch, stop := store.Subscribe()
	defer stop()
	seen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
		for _, a := range store.Query(50, "", time.Now().Add(-time.Minute)) {
			if a.State != "open" || seen[a.AlertID] {
				continue
			}
			seen[a.AlertID] = true
			reasons := make([]string, 0, len(a.Reasons))
			for _, r := range a.Reasons {
				reasons = append(reasons, fmt.Sprintf("%s=%.1f", r.Feature, r.Value))
			}
			log.Info("ALERT", zap.String("device", a.DeviceID), zap.String("site", a.Site), zap.Float64("score", a.Score),
				zap.String("severity", a.Severity), zap.String("metric", a.Metric), zap.String("reasons", strings.Join(reasons, " ")))
		}
	}
}

func fleetReportFromStore(f *simulate.Fleet, store *pipeline.AlertStore) (simulate.Report, error) {
	return f.ReportFrom(func(since time.Time) []simulate.AlertRef {
		var out []simulate.AlertRef
		for _, a := range store.Query(1<<30, "", since) {
			out = append(out, simulate.AlertRef{AlertID: a.AlertID, DeviceID: a.DeviceID, TS: a.TS, Metric: a.Metric})
		}
		return out
	})
}

func simulateCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file for the simulate section (default: built-in)")
	url := fs.String("url", "http://127.0.0.1:8080", "Vigil server to post to")
	token := fs.String("token", "", "admin token of that server (or VIGIL_ADMIN_TOKEN)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until Ctrl-C)")
	mqttAddr := fs.String("mqtt", "", "send the readings over MQTT to this host:port (the server's mqtt.addr) instead of HTTP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, environ)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if *token == "" {
		*token = cfg.Admin.Token
	}
	if *token == "" {
		return errors.New("simulate needs the server's admin token: --token or VIGIL_ADMIN_TOKEN")
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	defer setMemoryLimit(cfg.Memory.Limit, environ, log)()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fleet := simulate.New(cfg.Simulate, simulate.Options{URL: strings.TrimRight(*url, "/"), AdminToken: *token, MQTTAddr: *mqttAddr, Logger: log})
	if err := fleet.Run(ctx); err != nil {
		return err
	}
	// Give the pipeline a moment to raise the last alerts, then score.
	time.Sleep(2 * time.Second)
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := fleet.Report(rctx)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, r.String())
	return nil
}
