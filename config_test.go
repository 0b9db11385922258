package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/console"
	"github.com/vigil/vigil/ingest"
	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/mqtt"
	"github.com/vigil/vigil/notify"
	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/simulate"
	"github.com/vigil/vigil/storage"
	"github.com/vigil/vigil/web"
)

func TestDefaultsAreTheConfigFile(t *testing.T) {
	c, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "local" || c.Data.Dir != "./data" || c.HTTP.Addr != "127.0.0.1:8080" || len(c.Kafka.Brokers) != 0 ||
		c.Kafka.EmbeddedAddr != "127.0.0.1:9092" || c.Storage.Endpoint != "" || c.Storage.Bucket != "vigil" || c.Admin.Token != "" ||
		c.Kafka.Topics.Raw != "vigil.raw" || c.Kafka.Topics.DLQ != "vigil.dlq" || c.Pipeline.BatchMaxWait != 5*time.Millisecond {
		t.Fatalf("built-in defaults differ from DESIGN.md: %+v", c)
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := loadConfig("", []string{"VIGIL_REGION=eu-west", "VIGIL_KAFKA_BROKERS=a:9092, b:9092", "VIGIL_KAFKA_TOPICS_RAW=my.raw",
		"VIGIL_PIPELINE_THRESHOLD=0.9", "VIGIL_PIPELINE_BATCH_MAX_WAIT=20ms", "VIGIL_KAFKA_TLS_ENABLED=true", "VIGIL_ADMIN_TOKEN=s3cret-s3cret-s3cret-s3cret-s3cret", "PATH=/bin", "VIGIL_MINIO_BIN=/x"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "eu-west" || len(c.Kafka.Brokers) != 2 || c.Kafka.Brokers[1] != "b:9092" || c.Kafka.Topics.Raw != "my.raw" ||
		c.Pipeline.Threshold != 0.9 || c.Pipeline.BatchMaxWait != 20*time.Millisecond || !c.Kafka.TLS.Enabled || c.Admin.Token != "s3cret-s3cret-s3cret-s3cret-s3cret" {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

// Every bad value stops the start with an error that names the key.
func TestBadConfigNamesTheKey(t *testing.T) {
	cases := []struct{ env, key string }{
		{"VIGIL_REGION=a b", "region"},
		{"VIGIL_DATA_DIR=", "data.dir"},
		{"VIGIL_HTTP_ADDR=nonsense", "http.addr"},
		{"VIGIL_HTTP_READ_TIMEOUT=0s", "http.read_timeout"},
		{"VIGIL_HTTP_READ_TIMEOUT=soon", "http.read_timeout"},
		{"VIGIL_KAFKA_PARTITIONS=0", "kafka.partitions"},
		{"VIGIL_KAFKA_PARTITIONS=many", "kafka.partitions"},
		{"VIGIL_KAFKA_EMBEDDED_ADDR=9092", "kafka.embedded_addr"},
		{"VIGIL_KAFKA_BROKERS=nohost", "kafka.brokers[0]"},
		{"VIGIL_KAFKA_TOPICS_ALERTS=vigil.raw", "kafka.topics.alerts"},
		{"VIGIL_KAFKA_SASL_MECHANISM=GSSAPI", "kafka.sasl.mechanism"},
		{"VIGIL_KAFKA_REPLICATION_FACTOR=0", "kafka.replication_factor"},
		{"VIGIL_KAFKA_TLS_ENABLED=maybe", "kafka.tls.enabled"},
		{"VIGIL_STORAGE_BUCKET=A_B", "storage.bucket"},
		{"VIGIL_STORAGE_ENDPOINT=127.0.0.1:9000", "storage.access_key"},
		{"VIGIL_INGEST_MAX_READINGS=0", "ingest.max_readings"},
		{"VIGIL_INGEST_MAX_BODY_BYTES=10", "ingest.max_body_bytes"},
		{"VIGIL_PIPELINE_THRESHOLD=1.5", "pipeline.threshold"},
		{"VIGIL_PIPELINE_WARMUP_READINGS=1", "pipeline.warmup_readings"},
		{"VIGIL_PIPELINE_GROUP=", "pipeline.group"},
		{"VIGIL_PIPELINE_DEDUP_HORIZON=10ms", "pipeline.dedup_horizon"},
		{"VIGIL_PIPELINE_DEDUP_WINDOW=2000000", "pipeline.dedup_window"},
		{"VIGIL_MEMORY_LIMIT=lots", "memory.limit"},
		{"VIGIL_MEMORY_LIMIT=1MiB", "memory.limit"},
		{"VIGIL_PIPELINE_DEDUP_HORIZON=-1m", "pipeline.dedup_horizon"},
		{"VIGIL_SIMULATE_RATE=0", "simulate.rate"},
		{"VIGIL_SIMULATE_GATEWAY_EVERY=-1", "simulate.gateway_every"},
		{"VIGIL_LOG_LEVEL=loud", "log.level"},
		{"VIGIL_SHUTDOWN_BUDGET=0s", "shutdown.budget"},
		{"VIGIL_SHUTDOWN_BUDGET=2h", "shutdown.budget"},
		{"VIGIL_MQTT_MAX_CLIENTS=0", "mqtt.max_clients"},
		{"VIGIL_MQTT_BRIDGE_URL=http://broker:80", "mqtt.bridge.url"},
		{"VIGIL_MQTT_BRIDGE_URL=mqtt://broker:1883|VIGIL_MQTT_BRIDGE_TOPIC=devices/+/readings", "mqtt.bridge.topic"},
		{"VIGIL_MQTT_BRIDGE_URL=mqtt://broker:1883|VIGIL_MQTT_BRIDGE_GROUP=a/b", "mqtt.bridge.group"},
		{"VIGIL_ALERTS_ALERTMANAGER_URL=am:9093", "alerts.alertmanager_url"},
		{"VIGIL_ALERTS_WEBHOOK_SECRET=s", "alerts.webhook_secret"},
		{"VIGIL_ALERTS_MAX_TRIES=0", "alerts.max_tries"},
		{"VIGIL_ALERTS_RESEND_INTERVAL=10ms", "alerts.resend_interval"},
		{"VIGIL_ALERTS_SINKS=a,b", "alerts.sinks"},
		{"VIGIL_KAFKA_RETENTION_BYTES=5", "kafka.retention_bytes"},
		{"VIGIL_KAFKA_RETENTION_CHECK=0s", "kafka.retention_check"},
		{"VIGIL_KAFKA_COMPRESSION=brotli", "kafka.compression"},
		{"VIGIL_KAFKA_PIPELINE_COMPRESSION=lzma", "kafka.pipeline_compression"},
		{"VIGIL_INGEST_MAX_PIPELINE_LAG=-1", "ingest.max_pipeline_lag"},
		{"VIGIL_CONSOLE_HISTORY_INTERVAL=1ms", "console.history_interval"},
		{"VIGIL_ADMIN_TOKEN=short", "admin.token"},
		{"VIGIL_ADMIN_VIEWER_TOKEN=short", "admin.viewer_token"},
		{"VIGIL_KAFKA_EMBEDDED_ADDR=0.0.0.0:9092", "kafka.embedded_addr"},
		{"VIGIL_HTTP_TLS_CERT_FILE=/etc/hostname", "http.tls_cert_file"},
		{"VIGIL_HTTP_CLIENT_CA_FILE=/etc/hostname", "http.client_ca_file"},
		{"VIGIL_KAFKA_BROKRS=a:1", "VIGIL_KAFKA_BROKRS"},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			_, err := loadConfig("", strings.Split(c.env, "|"))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), c.key) {
				t.Fatalf("error %q does not start with the key %q", err, c.key)
			}
		})
	}
}

func TestConfigFileStrict(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kafka:\n  partitons: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(bad, nil)
	if err == nil || !strings.Contains(err.Error(), "partitons") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("unknown key not refused with its name and line: %v", err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("region: eu\nkafka:\n  partitions: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(good, []string{"VIGIL_KAFKA_PARTITIONS=5"})
	if err != nil || c.Region != "eu" || c.Kafka.Partitions != 5 {
		t.Fatalf("file then env: %+v %v", c, err)
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--config", good, "--check-config"}, nil, &out, &errb); err != nil || out.String() != "config OK\n" {
		t.Fatalf("--check-config: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"serve", "--check-config"}, []string{"VIGIL_PIPELINE_THRESHOLD=2"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "pipeline.threshold") {
		t.Fatalf("--check-config with a bad value: %v", err)
	}
}

func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, nil, &out, &out); err != nil || !strings.HasPrefix(out.String(), "vigil dev") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
}

// The built-in config.yaml's pipeline section is pipeline.Default().
// Each package's Default() is its section of config.yaml: the built-in
// defaults live in code, documented on each field, and config.yaml shows
// them.
func TestDefaultsMirrorConfigYAML(t *testing.T) {
	c, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pipeline.Groups) == 0 {
		c.Pipeline.Groups = nil // "groups: []"
	}
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = nil // "brokers: []"
	}
	if len(c.Alerts.Sinks) == 0 {
		c.Alerts.Sinks = nil // "sinks: []"
	}
	for _, s := range []struct {
		name      string
		yaml, def any
	}{
		{"pipeline", c.Pipeline, pipeline.Default()},
		{"http", c.HTTP, web.Default()},
		{"kafka", c.Kafka, bus.Default()},
		{"storage", c.Storage, storage.Default()},
		{"archive", c.Archive, storage.DefaultArchive()},
		{"ingest", c.Ingest, ingest.Default()},
		{"models", c.Models, ml.Default()},
		{"console", c.Console, console.Default()},
		{"simulate", c.Simulate, simulate.Default()},
		{"mqtt", c.MQTT, mqtt.Default()},
		{"alerts", c.Alerts, notify.Default()},
	} {
		if !reflect.DeepEqual(s.yaml, s.def) {
			t.Errorf("config.yaml section %s %+v\ndiffers from its Default() %+v", s.name, s.yaml, s.def)
		}
	}
}
