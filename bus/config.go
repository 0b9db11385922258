// Package bus owns Vigil's connection to Kafka: the embedded kfake broker
// used when no brokers are configured, the client options shared by every
// stage (seeds, TLS, SASL), and the creation of the topics Vigil needs.
package bus

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics names the Kafka topics Vigil reads and writes.
type Topics struct {
	// Raw holds readings as accepted by ingest. Default "vigil.raw".
	Raw string `yaml:"raw"`
	// Enriched holds every reading with its derived fields and score. Default "vigil.enriched".
	Enriched string `yaml:"enriched"`
	// Alerts holds alerts and incident updates. Default "vigil.alerts".
	Alerts string `yaml:"alerts"`
	// DLQ holds raw records the pipeline could not process, with the reason in a header. Default "vigil.dlq".
	DLQ string `yaml:"dlq"`
	// Devices is the compacted device registry. Default "vigil.devices".
	Devices string `yaml:"devices"`
}

// TLSConfig configures TLS to external brokers.
type TLSConfig struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust; empty uses the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify disables certificate verification (tests only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication to external brokers.
type SASLConfig struct {
	// Mechanism is "", "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512". Default "" (none).
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// Config is the kafka section of config.yaml.
type Config struct {
	// Brokers lists external seed brokers. Empty (the default) starts the
	// embedded kfake broker.
	Brokers []string `yaml:"brokers"`
	// EmbeddedAddr is where the embedded broker listens. Default "127.0.0.1:9092".
	EmbeddedAddr string `yaml:"embedded_addr"`
	// ClientID is sent to the brokers. Default "vigil".
	ClientID string `yaml:"client_id"`
	// Partitions is the partition count of topics Vigil creates. Default 8.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of topics Vigil creates; -1 uses the broker default. Default -1.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// Retention is how long the raw, alerts and dlq topics keep data (the
	// enriched topic keeps records until archived, see archive.keep_archived). Default 168h.
	Retention time.Duration `yaml:"retention"`
	// RetentionBytes bounds each partition of the raw, alerts and dlq
	// topics, bytes (0: no bound): the embedded broker's disk, and its
	// per-batch index in memory. Keep it above the largest backlog the
	// pipeline may fall behind by (ingest.max_pipeline_lag refuses readings
	// well before). Default 1 GiB.
	RetentionBytes int64 `yaml:"retention_bytes"`
	// RetentionCheck is how often the embedded broker applies retention
	// (and archive deletions). Default 1m.
	RetentionCheck time.Duration `yaml:"retention_check"`
	// Compression is the codec of the batches Vigil produces outside the
	// pipeline (raw readings, the device registry): "none",
	// "gzip", "snappy", "lz4" or "zstd". Readings are JSON, which shrinks
	// severalfold, and the embedded broker reads and checks every byte it
	// holds when it starts, so the codec sets its start time. Any Kafka
	// client (kcat included) decompresses all of them. Default "zstd" (at its fastest level).
	Compression string `yaml:"compression"`
	// PipelineCompression is the codec of the batches the pipeline
	// produces: enriched records (the bulk of what Vigil writes, five
	// times a raw reading's bytes, read once by the archiver and dropped
	// keep_archived after it), its alerts and its dead letters. "" is
	// Compression. Default "snappy": franz-go writes it with s2, which on
	// enriched records encodes in a quarter of zstd's time and decodes in
	// a quarter, for batches 1.7 times larger (BenchmarkCodecs).
	PipelineCompression string `yaml:"pipeline_compression"`
	// SyncWrites makes the embedded broker fsync every batch (survives power
	// loss, not only process crashes) at a cost in throughput. Default false.
	SyncWrites bool `yaml:"sync_writes"`
	// EmbeddedSASLUser and EmbeddedSASLPassword turn on SASL
	// (SCRAM-SHA-256) on the embedded broker, and Vigil's own clients use
	// them. Required for an embedded_addr beyond loopback: without them any
	// process that reaches the broker could write the device registry.
	// Default "" (no SASL; loopback only).
	EmbeddedSASLUser     string     `yaml:"embedded_sasl_user"`
	EmbeddedSASLPassword string     `yaml:"embedded_sasl_password"`
	Topics               Topics     `yaml:"topics"`
	TLS                  TLSConfig  `yaml:"tls"`
	SASL                 SASLConfig `yaml:"sasl"`
}

// Embedded reports whether the embedded broker is used.
func (c Config) Embedded() bool { return len(c.Brokers) == 0 }

// Default is the kafka section's built-in configuration (config.yaml
// mirrors it): the embedded broker on 127.0.0.1:9092, 8 partitions, the
// replication factor of the cluster, a week of retention, Vigil's topics.
func Default() Config {
	return Config{EmbeddedAddr: "127.0.0.1:9092", ClientID: "vigil", Partitions: 8, ReplicationFactor: -1, Retention: 168 * time.Hour,
		RetentionBytes: 1 << 30, RetentionCheck: time.Minute, Compression: "zstd", PipelineCompression: "snappy",
		Topics: Topics{Raw: "vigil.raw", Enriched: "vigil.enriched", Alerts: "vigil.alerts", DLQ: "vigil.dlq", Devices: "vigil.devices"}}
}

// Validate checks the kafka section; errors name the key below "kafka.".
func (c Config) Validate() error {
	if c.Embedded() {
		host, _, err := net.SplitHostPort(c.EmbeddedAddr)
		if err != nil {
			return fmt.Errorf("embedded_addr: %q is not host:port: %w", c.EmbeddedAddr, err)
		}
		if host == "" {
			return fmt.Errorf("embedded_addr: %q has no host; give a loopback address such as 127.0.0.1:9092", c.EmbeddedAddr)
		}
		if (c.EmbeddedSASLUser == "") != (c.EmbeddedSASLPassword == "") {
			return fmt.Errorf("embedded_sasl_user and embedded_sasl_password: set both or neither")
		}
		if c.EmbeddedSASLPassword != "" && len(c.EmbeddedSASLPassword) < 16 {
			return fmt.Errorf("embedded_sasl_password: must be at least 16 characters, got %d", len(c.EmbeddedSASLPassword))
		}
		if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && c.EmbeddedSASLUser == "" {
			return fmt.Errorf("embedded_addr: %s is not a loopback address, and the embedded broker has no authentication: any process that reaches it could register a gateway and post as any device. Bind 127.0.0.1, or set kafka.embedded_sasl_user and kafka.embedded_sasl_password", c.EmbeddedAddr)
		}
		if c.SASL.Mechanism != "" {
			return fmt.Errorf("sasl.mechanism: is for external brokers; the embedded broker's SASL is kafka.embedded_sasl_user and kafka.embedded_sasl_password")
		}
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("brokers[%d]: %q is not host:port", i, b)
		}
	}
	if _, err := codecOf(c.Compression); err != nil {
		return fmt.Errorf("compression: %w", err)
	}
	if _, err := codecOf(c.PipelineCompression); err != nil {
		return fmt.Errorf("pipeline_compression: %w", err)
	}
	if c.ClientID == "" {
		return fmt.Errorf("client_id: must not be empty")
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		return fmt.Errorf("partitions: must be between 1 and 1024, got %d", c.Partitions)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		return fmt.Errorf("replication_factor: must be -1 (broker default) or at least 1, got %d", c.ReplicationFactor)
	}
	if c.Retention < time.Minute {
		return fmt.Errorf("retention: must be at least 1m, got %s", c.Retention)
	}
	if c.RetentionBytes != 0 && c.RetentionBytes < 1<<20 {
		return fmt.Errorf("retention_bytes: must be 0 (no bound) or at least 1 MiB, got %d", c.RetentionBytes)
	}
	if c.RetentionCheck < time.Second || c.RetentionCheck > time.Hour {
		return fmt.Errorf("retention_check: must be between 1s and 1h, got %s", c.RetentionCheck)
	}
	names := map[string]string{"raw": c.Topics.Raw, "enriched": c.Topics.Enriched, "alerts": c.Topics.Alerts, "dlq": c.Topics.DLQ, "devices": c.Topics.Devices}
	seen := map[string]string{}
	for _, k := range []string{"raw", "enriched", "alerts", "dlq", "devices"} {
		v := names[k]
		if v == "" {
			return fmt.Errorf("topics.%s: must not be empty", k)
		}
		if len(v) > 249 || strings.ContainsAny(v, " /\\,:") {
			return fmt.Errorf("topics.%s: %q is not a valid Kafka topic name", k, v)
		}
		if other, ok := seen[v]; ok {
			return fmt.Errorf("topics.%s: %q is already used by topics.%s", k, v, other)
		}
		seen[v] = k
	}
	switch strings.ToUpper(c.SASL.Mechanism) {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return fmt.Errorf("sasl.mechanism: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.SASL.Mechanism)
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		return fmt.Errorf("sasl.username: required when sasl.mechanism is set")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return fmt.Errorf("tls.cert_file: cert_file and key_file go together")
	}
	return nil
}

// codecOf is the producers' compression codec of a compression setting
// (see Config.Compression).
func codecOf(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd", "":
		// its fastest level (1): within a few percent of the default
		// level's ratio on readings, at a fifth less CPU
		return kgo.ZstdCompression().WithLevel(1), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%q is not one of none, gzip, snappy, lz4, zstd", name)
}
