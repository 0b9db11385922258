package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/vigil/vigil/eval"
)

// evalCmd is `vigil eval`: replay a labelled data set through Vigil and
// score what it raised. Without --url it starts a fresh Vigil in this
// process (embedded broker, temporary data dir) and stops it afterwards.
func evalCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "a SKAB data set folder (;-separated CSV files with anomaly columns)")
	nabDir := fs.String("nab", "", "a NAB-format data set folder (data/**/*.csv of timestamp,value and labels/windows.json), scored by NAB's method")
	csvPath := fs.String("csv", "", "a plain timestamp,value[,...] CSV (with --labels)")
	labels := fs.String("labels", "", "labels of --csv: timestamp,label lines (1 = anomalous)")
	url := fs.String("url", "", "a running Vigil (default: start one in this process)")
	token := fs.String("token", "", "its admin token (or VIGIL_ADMIN_TOKEN)")
	kafka := fs.String("kafka", "127.0.0.1:9092", "its Kafka brokers, comma-separated (with --url)")
	warmup := fs.Int("warmup", 400, "leading rows of each file not scored (SKAB's rule: 400)")
	sendLabels := fs.Bool("send-labels", false, "stamp each reading's label field from the data set (training data for the supervised models; the detector never reads it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var series []eval.Series
	switch {
	case *data != "":
		s, err := eval.LoadSKAB(*data)
		if err != nil {
			return err
		}
		series = s
	case *nabDir != "":
		s, err := eval.LoadNAB(*nabDir)
		if err != nil {
			return err
		}
		series = s
		if !flagSet(fs, "warmup") {
			*warmup = 0 // NAB's probation period is applied by its scorer
		}
	case *csvPath != "" && *labels != "":
		s, err := eval.LoadPlain(*csvPath, *labels)
		if err != nil {
			return err
		}
		series = []eval.Series{*s}
	default:
		return errors.New("eval needs --data DIR (SKAB), --nab DIR (NAB) or --csv FILE --labels FILE")
	}
	opts := eval.Options{URL: strings.TrimRight(*url, "/"), AdminToken: *token, Kafka: strings.Split(*kafka, ","), Warmup: *warmup, SendLabels: *sendLabels,
		Progress: func(s string) { fmt.Fprintln(stderr, "eval:", s) }}
	if opts.AdminToken == "" {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, "VIGIL_ADMIN_TOKEN="); ok {
				opts.AdminToken = v
			}
		}
	}
	if opts.URL == "" {
		stop, err := startEmbedded(ctx, environ, stderr, &opts)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep, err := eval.Run(ctx, opts, series)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.String())
	return nil
}

// startEmbedded runs `vigil serve` in this process on free loopback ports
// and a temporary data dir, for one eval.
func startEmbedded(ctx context.Context, environ []string, stderr io.Writer, o *eval.Options) (func(), error) {
	free := func() (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer l.Close()
		return l.Addr().String(), nil
	}
	httpAddr, err := free()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := free()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vigil-eval-")
	if err != nil {
		return nil, err
	}
	var tb [16]byte
	_, _ = rand.Read(tb[:])
	o.AdminToken, o.URL, o.Kafka = hex.EncodeToString(tb[:]), "http://"+httpAddr, []string{kafkaAddr}
	env := append(append([]string{}, environ...), "VIGIL_DATA_DIR="+dir, "VIGIL_HTTP_ADDR="+httpAddr, "VIGIL_KAFKA_EMBEDDED_ADDR="+kafkaAddr,
		"VIGIL_ADMIN_TOKEN="+o.AdminToken, "VIGIL_ARCHIVE_ENABLED=false", "VIGIL_LOG_LEVEL=warn")
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(sctx, []string{"serve"}, env, io.Discard, stderr) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(stderr, "eval: the embedded Vigil stopped with", err)
		}
		os.RemoveAll(dir)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(o.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return stop, nil
			}
		}
		select {
		case err := <-done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("embedded Vigil for eval stopped: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("embedded Vigil for eval not ready after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
