package bus

import (
	"context"
	"github.com/vigil/vigil/internal/testutil"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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
