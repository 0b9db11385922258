package bus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
)

// Bus is a connection to Kafka: either the embedded broker it started or
// the external cluster of Config.Brokers.
type Bus struct {
	cfg     Config
	log     *zap.Logger
	cluster *kfake.Cluster
	seeds   []string
	opts    []kgo.Opt
	pipe    kgo.Opt // the pipeline's compressor (kafka.pipeline_compression)
	admin   *kgo.Client
}

// OpenTimeout bounds how long Open waits for the brokers to answer and
// the topics to exist, counted once the embedded broker (if any) is up:
// loading a large embedded broker's data (tens of seconds for a million
// devices' records) does not count against it.
var OpenTimeout = 30 * time.Second

// newCluster starts the embedded broker (a test slows it down).
var newCluster = kfake.NewCluster

// Open starts the embedded broker (persisted under dataDir/kafka) when no
// brokers are configured, checks that the brokers answer, and creates any
// missing topic. It fails when the embedded address is taken, when ctx is
// done, or when the brokers cannot be reached within OpenTimeout.
func Open(ctx context.Context, cfg Config, dataDir string, log *zap.Logger) (*Bus, error) {
	if log == nil {
		log = zap.NewNop()
	}
	b := &Bus{cfg: cfg, log: log}
	if cfg.Embedded() {
		dir := filepath.Join(dataDir, "kafka")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create embedded broker dir %s: %w", dir, err)
		}
		addr := cfg.EmbeddedAddr
		opts := []kfake.Opt{
			kfake.NumBrokers(1),
			kfake.ClusterID("vigil"),
			kfake.DataDir(dir),
			kfake.DefaultNumPartitions(int(cfg.Partitions)),
			kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, addr) }),
			kfake.BrokerConfigs(map[string]string{
				"log.retention.ms": strconv.FormatInt(cfg.Retention.Milliseconds(), 10),
				// how often kfake applies retention.ms and retention.bytes
				// (its default is an hour)
				"log.cleaner.backoff.ms": strconv.FormatInt(cfg.RetentionCheck.Milliseconds(), 10),
			}),
		}
		if cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
		if cfg.EmbeddedSASLUser != "" {
			opts = append(opts, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", cfg.EmbeddedSASLUser, cfg.EmbeddedSASLPassword))
		}
		log.Info("starting the embedded Kafka broker: loading its data (a large fleet's records take tens of seconds)", zap.String("data_dir", dir))
		start := time.Now()
		c, err := newCluster(opts...)
		if err != nil {
			return nil, fmt.Errorf("start embedded Kafka broker on %s (data in %s): %w; is another Vigil using this address or data dir?", addr, dir, err)
		}
		b.cluster = c
		b.seeds = c.ListenAddrs()
		log.Info("embedded Kafka broker started", zap.Strings("addrs", b.seeds), zap.String("data_dir", dir), zap.Duration("took", time.Since(start)))
	} else {
		b.seeds = cfg.Brokers
	}
	opts, err := b.baseOpts()
	if err != nil {
		b.Close()
		return nil, err
	}
	b.opts = opts
	admin, err := kgo.NewClient(b.Opts()...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	b.admin = admin
	tctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()
	if err := b.ensureTopics(tctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// compressor is the compressor of a kafka.compression setting.
func compressor(name string) (kgo.Compressor, error) {
	codec, err := codecOf(name)
	if err != nil {
		return nil, err
	}
	comp, err := kgo.DefaultCompressor(codec)
	if err != nil {
		return nil, err
	}
	if comp == nil { // "none": franz-go's nil compressor means its default, snappy
		comp = noCompression{}
	}
	return comp, nil
}

// Seeds returns the broker addresses clients connect to.
func (b *Bus) Seeds() []string { return b.seeds }

// Opts returns a fresh copy of the client options every Vigil client starts
// from: seeds, client id, TLS, SASL and a zap logger.
func (b *Bus) Opts(extra ...kgo.Opt) []kgo.Opt {
	out := make([]kgo.Opt, 0, len(b.opts)+len(extra))
	out = append(out, b.opts...)
	return append(out, extra...)
}

// PipelineOpts are Opts whose batches are compressed with
// kafka.pipeline_compression: the stream's client, which writes the
// enriched records, alerts and dead letters.
func (b *Bus) PipelineOpts(extra ...kgo.Opt) []kgo.Opt {
	return b.Opts(append([]kgo.Opt{b.pipe}, extra...)...)
}

func (b *Bus) baseOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.seeds...),
		kgo.ClientID(b.cfg.ClientID),
		kgo.WithLogger(kgoLogger{b.log.Named("kafka")}),
		kgo.DialTimeout(5 * time.Second),
	}
	// one compressor for every client (its encoders pooled): an option
	// of codecs (ProducerBatchCompression) is written into by each
	// client that starts with it, and Vigil's clients share their
	// options and start at once (the race detector saw it)
	comp, err := compressor(b.cfg.Compression)
	if err != nil {
		return nil, fmt.Errorf("kafka.compression: %w", err)
	}
	opts = append(opts, kgo.WithCompressor(comp))
	name := b.cfg.PipelineCompression
	if name == "" {
		name = b.cfg.Compression
	}
	pipe, err := compressor(name)
	if err != nil {
		return nil, fmt.Errorf("kafka.pipeline_compression: %w", err)
	}
	b.pipe = kgo.WithCompressor(pipe)

	if b.cfg.TLS.Enabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: b.cfg.TLS.InsecureSkipVerify} //nolint:gosec // opt-in for tests
		if b.cfg.TLS.CAFile != "" {
			pem, err := os.ReadFile(b.cfg.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka.tls.ca_file: %s holds no PEM certificate", b.cfg.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if b.cfg.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(b.cfg.TLS.CertFile, b.cfg.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.cert_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if b.cfg.Embedded() && b.cfg.EmbeddedSASLUser != "" {
		opts = append(opts, kgo.SASL(scram.Auth{User: b.cfg.EmbeddedSASLUser, Pass: b.cfg.EmbeddedSASLPassword}.AsSha256Mechanism()))
	}
	if b.cfg.SASL.Mechanism != "" && !b.cfg.TLS.Enabled {
		b.log.Warn("kafka.sasl is set without kafka.tls: the credentials (PLAIN) or the session cross the network in clear; enable kafka.tls.enabled")
	}
	switch strings.ToUpper(b.cfg.SASL.Mechanism) {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: b.cfg.SASL.Username, Pass: b.cfg.SASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: b.cfg.SASL.Username, Pass: b.cfg.SASL.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: b.cfg.SASL.Username, Pass: b.cfg.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

func (b *Bus) ensureTopics(ctx context.Context) error {
	adm := kadm.NewClient(b.admin)
	retention := strconv.FormatInt(b.cfg.Retention.Milliseconds(), 10)
	retBytes := strconv.FormatInt(b.cfg.RetentionBytes, 10)
	if b.cfg.RetentionBytes == 0 {
		retBytes = "-1"
	}
	type spec struct {
		name    string
		configs map[string]*string
	}
	compact, forever := "compact", "-1"
	bounded := map[string]*string{"retention.ms": &retention, "retention.bytes": &retBytes}
	specs := []spec{
		{b.cfg.Topics.Raw, bounded},
		// No time or size retention on enriched: the archiver deletes
		// records once archived (archive.keep_archived), so nothing
		// unarchived is dropped.
		{b.cfg.Topics.Enriched, map[string]*string{"retention.ms": &forever}},
		{b.cfg.Topics.Alerts, bounded},
		{b.cfg.Topics.DLQ, bounded},
		{b.cfg.Topics.Devices, map[string]*string{"cleanup.policy": &compact}},
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		lastErr = nil
		for _, s := range specs {
			resp, err := adm.CreateTopic(ctx, b.cfg.Partitions, b.cfg.ReplicationFactor, s.configs, s.name)
			if err == nil {
				err = resp.Err
			}
			if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				lastErr = fmt.Errorf("create topic %s: %w", s.name, err)
				break
			}
		}
		if lastErr == nil {
			// topics made by an earlier start keep their configs: set the
			// retention of this configuration on them
			var alters []kadm.AlterConfig
			for _, k := range []string{"retention.ms", "retention.bytes"} {
				alters = append(alters, kadm.AlterConfig{Name: k, Value: bounded[k]})
			}
			resps, err := adm.AlterTopicConfigs(ctx, alters, b.cfg.Topics.Raw, b.cfg.Topics.Alerts, b.cfg.Topics.DLQ)
			if err == nil {
				for _, r := range resps {
					if r.Err != nil && err == nil {
						err = fmt.Errorf("topic %s: %w", r.Name, r.Err)
					}
				}
			}
			if err != nil {
				b.log.Warn("could not set the retention (kafka.retention, retention_bytes) on existing topics; they keep their own", zap.Error(err))
			}
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w; check kafka.brokers %v and that this client may create topics", lastErr, b.seeds)
}

// Ping asks the brokers for metadata; it is how /readyz decides the bus is reachable.
func (b *Bus) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := kadm.NewClient(b.admin).BrokerMetadata(ctx)
	return err
}

// Close closes the admin client and stops the embedded broker, flushing its
// state to disk.
func (b *Bus) Close() {
	if b.admin != nil {
		b.admin.Close()
	}
	if b.cluster != nil {
		b.cluster.Close()
		b.log.Info("embedded Kafka broker stopped")
	}
}

// kgoLogger sends franz-go's logs to zap.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	switch {
	case k.l.Core().Enabled(zap.DebugLevel):
		return kgo.LogLevelDebug
	case k.l.Core().Enabled(zap.InfoLevel):
		// franz-go's info level is chatty (every join, every commit); keep it at warn.
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, fields...)
	case kgo.LogLevelInfo:
		k.l.Info(msg, fields...)
	default:
		k.l.Debug(msg, fields...)
	}
}

// noCompression leaves every batch as it is (kafka.compression "none"):
// franz-go writes the batch uncompressed when a compressor returns nil.
type noCompression struct{}

func (noCompression) Compress(*bytes.Buffer, []byte, ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	return nil, kgo.CodecNone
}
