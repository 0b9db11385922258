package notify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/internal/testutil"
	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOnlyTheRaisingRegionDelivers: two regions' alerts on one topic; the
// eu notifier delivers eu's only, filters apply, and a restart with the
// same group sends nothing again.
func TestOnlyTheRaisingRegionDelivers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "alerts"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	var (
		mu  sync.Mutex
		got []string
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
	}))
	defer rcv.Close()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	put := func(a contract.Alert) {
		b, _ := contract.EncodeAlert(&a)
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "alerts", Key: []byte(a.DeviceID), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put(contract.Alert{AlertID: "eu-1", DeviceID: "d1", Region: "eu", Severity: "high", State: "open"})
	put(contract.Alert{AlertID: "us-1", DeviceID: "d2", Region: "us", Severity: "high", State: "open"})
	put(contract.Alert{AlertID: "eu-2", DeviceID: "d3", Region: "eu", Severity: "low", State: "open"}) // below the sink's min_severity
	put(contract.Alert{AlertID: "eu-1", DeviceID: "d1", Region: "eu", Severity: "high", State: "closed"})
	cfg := Default()
	cfg.Sinks = []Sink{{Name: "hook", Kind: KindWebhook, URL: rcv.URL, MinSeverity: "medium"}}
	runFor := func(want int) {
		n, err := New(cfg, Options{Region: "eu", Topic: "alerts", ClientOpts: opts, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		testutil.WaitFor(t, 10*time.Second, "eu's notifications", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= want
		})
		time.Sleep(300 * time.Millisecond) // a third notification, if one were wrongly sent, would arrive in this time; nothing marks its absence
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	runFor(2)
	mu.Lock()
	first := append([]string(nil), got...)
	mu.Unlock()
	if len(first) != 2 || first[0] != "eu-1.open" || first[1] != "eu-1.closed" {
		t.Fatalf("delivered %v, want [eu-1.open eu-1.closed]", first)
	}
	// a restart: the committed offsets hold, nothing is sent again
	put(contract.Alert{AlertID: "eu-3", DeviceID: "d1", Region: "eu", Severity: "medium", State: "open"})
	runFor(3)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[2] != "eu-3.open" {
		t.Fatalf("after a restart delivered %v, want only eu-3.open more", got)
	}
}
