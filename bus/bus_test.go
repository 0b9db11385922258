package bus

import (
	"context"
	"crypto/rand"
	"fmt"
	"github.com/vigil/vigil/internal/testutil"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

var freeAddr = testutil.FreeAddr

// An embedded broker beyond loopback needs SASL: the configuration says
// so before anything starts; with SASL set, Vigil's own clients get in and
// a client without credentials does not.
func TestEmbeddedBrokerSASL(t *testing.T) {
	cfg := Default()
	cfg.EmbeddedAddr = "0.0.0.0:9092"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "embedded_sasl_user") || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("non-loopback embedded broker without SASL: %v", err)
	}
	cfg.EmbeddedSASLUser, cfg.EmbeddedSASLPassword = "vigil", "a-long-enough-secret"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with SASL: %v", err)
	}
	cfg.EmbeddedSASLPassword = "short"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "embedded_sasl_password") {
		t.Fatalf("short password: %v", err)
	}

	cfg = Default()
	cfg.EmbeddedAddr, cfg.Partitions = freeAddr(t), 1
	cfg.EmbeddedSASLUser, cfg.EmbeddedSASLPassword = "vigil", "a-long-enough-secret"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, t.TempDir(), nil) // creates the topics: Vigil's client is in
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Vigil's own client: %v", err)
	}
	anon, err := kgo.NewClient(kgo.SeedBrokers(b.Seeds()...), kgo.DialTimeout(time.Second), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	defer acancel()
	if topics, err := kadm.NewClient(anon).ListTopics(actx); err == nil && len(topics) > 0 {
		t.Fatalf("a client without credentials listed %d topics", len(topics))
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Seeds()...), kgo.DefaultProduceTopic(cfg.Topics.Devices), kgo.RecordDeliveryTimeout(2*time.Second), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(actx, &kgo.Record{Key: []byte("gateway/evil"), Value: []byte(`{}`)}).FirstErr(); err == nil {
		t.Fatal("a client without credentials wrote to the registry topic")
	}
}

// TestRetentionBoundsTheEmbeddedBroker: with kafka.retention_bytes the raw
// topic drops its oldest records once a partition holds more, within
// kafka.retention_check; a restart with another bound sets it on the
// existing topics; the enriched topic is not bounded.
func TestRetentionBoundsTheEmbeddedBroker(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.EmbeddedAddr, cfg.Partitions = freeAddr(t), 1
	cfg.RetentionBytes, cfg.RetentionCheck = 1<<20, time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(b.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4000; i++ { // 4 MB into raw and into enriched
		value := make([]byte, 1000)
		_, _ = rand.Read(value) // incompressible: the producer compresses batches
		cl.Produce(ctx, &kgo.Record{Topic: cfg.Topics.Raw, Value: value}, nil)
		cl.Produce(ctx, &kgo.Record{Topic: cfg.Topics.Enriched, Value: value}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	start := func(topic string) int64 {
		offs, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := offs.Lookup(topic, 0)
		return o.Offset
	}
	testutil.WaitFor(t, 20*time.Second, "the raw topic trimmed to retention_bytes", func() bool { return start(cfg.Topics.Raw) > 2000 })
	if s := start(cfg.Topics.Enriched); s != 0 {
		t.Fatalf("the enriched topic was trimmed to offset %d; only the archiver may delete from it", s)
	}
	t.Logf("raw starts at offset %d of 4000 (at most 1 MiB kept, whole batches dropped)", start(cfg.Topics.Raw))
	cl.Close()
	b.Close()

	// a restart with another bound: set on the existing topics
	cfg.RetentionBytes = 64 << 20
	b, err = Open(ctx, cfg, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl2, err := kgo.NewClient(b.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	rc, err := kadm.NewClient(cl2).DescribeTopicConfigs(ctx, cfg.Topics.Raw, cfg.Topics.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rc {
		got := ""
		for _, c := range r.Configs {
			if c.Key == "retention.bytes" && c.Value != nil {
				got = *c.Value
			}
		}
		if got != "67108864" {
			t.Errorf("topic %s: retention.bytes %q after the restart, want 67108864", r.Name, got)
		}
	}
}

// The wait for the brokers is counted once the embedded broker is up: a
// broker that takes longer than OpenTimeout to load its data (a million
// devices' records took 49 s) must not make the start fail with an
// expired deadline before any topic is asked for.
func TestOpenTimeoutStartsAfterTheEmbeddedBrokerLoads(t *testing.T) {
	defer func(d time.Duration, f func(...kfake.Opt) (*kfake.Cluster, error)) { OpenTimeout, newCluster = d, f }(OpenTimeout, newCluster)
	OpenTimeout = 2 * time.Second
	newCluster = func(opts ...kfake.Opt) (*kfake.Cluster, error) {
		time.Sleep(3 * time.Second) // longer than OpenTimeout, as a large data dir is
		return kfake.NewCluster(opts...)
	}
	cfg := Default()
	cfg.EmbeddedAddr, cfg.Partitions = freeAddr(t), 1
	b, err := Open(context.Background(), cfg, t.TempDir(), nil)
	if err != nil {
		t.Fatalf("a broker that loads for longer than OpenTimeout: %v", err)
	}
	defer b.Close()
	if err := b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCompressionCodecs: kafka.compression sets the codec of the batches
// every client made from the bus's options writes ("none" is stored
// uncompressed, not in franz-go's default snappy), and clients that start
// at once from the same options do not share the codec list franz-go
// writes into (a data race under -race before).
func TestCompressionCodecs(t *testing.T) {
	for _, tc := range []struct {
		setting string
		want    kgo.CompressionCodecType
	}{{"none", kgo.CodecNone}, {"gzip", kgo.CodecGzip}, {"snappy", kgo.CodecSnappy}, {"lz4", kgo.CodecLz4}, {"zstd", kgo.CodecZstd}, {"", kgo.CodecZstd}} {
		t.Run(tc.setting, func(t *testing.T) {
			cfg := Default()
			cfg.EmbeddedAddr, cfg.Partitions, cfg.Compression = freeAddr(t), 1, tc.setting
			ctx, b := openEmbedded(t, cfg)
			opts := b.Opts()
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					cl, err := kgo.NewClient(opts...)
					if err != nil {
						t.Error(err)
						return
					}
					defer cl.Close()
					// JSON readings: compressible
					value := []byte(strings.Repeat(fmt.Sprintf(`{"device_id":"d-%d","metrics":{"temp_c":60.5}}`, i), 20))
					if err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfg.Topics.Raw, Value: value}).FirstErr(); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			cl, err := kgo.NewClient(b.Opts(kgo.ConsumeTopics(cfg.Topics.Raw), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			seen := 0
			for seen < 4 {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("read %d of 4 records", seen)
				}
				fs.EachRecord(func(r *kgo.Record) {
					if got := r.Attrs.CompressionType(); got != uint8(tc.want) {
						t.Errorf("kafka.compression %q: a batch in codec %d, want %d", tc.setting, got, tc.want)
					}
					seen++
				})
			}
		})
	}
	cfg := Default()
	cfg.Compression = "brotli"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "compression") {
		t.Fatalf("an unknown codec: %v, want an error naming compression", err)
	}
	cfg = Default()
	cfg.PipelineCompression = "lzma"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "pipeline_compression") {
		t.Fatalf("an unknown pipeline codec: %v, want an error naming pipeline_compression", err)
	}
}

// openEmbedded opens cfg's embedded broker for a test: a context of 30 s
// and the bus, both ended with the test.
func openEmbedded(t *testing.T, cfg Config) (context.Context, *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	b, err := Open(ctx, cfg, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return ctx, b
}

// TestPipelineCompression: the pipeline's client (PipelineOpts) writes in
// kafka.pipeline_compression, every other client in kafka.compression; an
// empty pipeline_compression is compression.
func TestPipelineCompression(t *testing.T) {
	for _, tc := range []struct {
		compression, pipeline string
		want, wantPipe        kgo.CompressionCodecType
	}{{"zstd", "snappy", kgo.CodecZstd, kgo.CodecSnappy}, {"lz4", "", kgo.CodecLz4, kgo.CodecLz4}, {"none", "zstd", kgo.CodecNone, kgo.CodecZstd}} {
		t.Run(tc.compression+"/"+tc.pipeline, func(t *testing.T) {
			cfg := Default()
			cfg.EmbeddedAddr, cfg.Partitions, cfg.Compression, cfg.PipelineCompression = freeAddr(t), 1, tc.compression, tc.pipeline
			ctx, b := openEmbedded(t, cfg)
			value := []byte(strings.Repeat(`{"device_id":"d","metrics":{"temp_c":60.5}}`, 20))
			for _, c := range []struct {
				opts  []kgo.Opt
				topic string
			}{{b.Opts(), cfg.Topics.Raw}, {b.PipelineOpts(), cfg.Topics.Enriched}} {
				cl, err := kgo.NewClient(c.opts...)
				if err != nil {
					t.Fatal(err)
				}
				err = cl.ProduceSync(ctx, &kgo.Record{Topic: c.topic, Value: value}).FirstErr()
				cl.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			cl, err := kgo.NewClient(b.Opts(kgo.ConsumeTopics(cfg.Topics.Raw, cfg.Topics.Enriched), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for seen := 0; seen < 2; {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("read %d of 2 records", seen)
				}
				fs.EachRecord(func(r *kgo.Record) {
					want := tc.want
					if r.Topic == cfg.Topics.Enriched {
						want = tc.wantPipe
					}
					if got := r.Attrs.CompressionType(); got != uint8(want) {
						t.Errorf("compression %q, pipeline_compression %q: a batch on %s in codec %d, want %d", tc.compression, tc.pipeline, r.Topic, got, want)
					}
					seen++
				})
			}
		})
	}
}
