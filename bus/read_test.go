package bus

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is an in-process broker with topic t of 2 partitions holding, in
// each partition, committed transactional records, then an aborted
// transaction, then its markers at the end of the log.
func cluster(t *testing.T) (*kfake.Cluster, []kgo.Opt, int) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	prod, err := kgo.NewClient(With(opts, kgo.TransactionalID("tx"), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx := context.Background()
	n := 0
	for round, commit := range []bool{true, true, false} {
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			r := &kgo.Record{Value: []byte(strconv.Itoa(round*100 + i)), Partition: int32(i % 2)}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if commit {
				n++
			}
		}
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		if err := prod.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	return c, opts, n
}

func TestReadToEndStopsAtTransactionMarkers(t *testing.T) {
	_, opts, want := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := 0
	start := time.Now()
	if err := ReadToEnd(ctx, opts, Span{Topic: "t"}, func(*kgo.Record) { got++ }); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("read %d committed records, want %d", got, want)
	}
	t.Logf("read %d records to the end (markers last) in %s", got, time.Since(start).Round(time.Millisecond))

	// From: the last 5 offsets of each partition hold no committed record
	// (aborted records and markers): nothing, and no hang
	got = 0
	if err := ReadToEnd(ctx, opts, Span{Topic: "t", From: func(_ int32, _, end int64) int64 { return end - 5 }}, func(*kgo.Record) { got++ }); err != nil || got != 0 {
		t.Fatalf("tail of markers and aborted records: %d records, %v", got, err)
	}
	// To: the first 4 offsets of partition 0 only
	got = 0
	span := Span{Topic: "t", From: func(p int32, start, end int64) int64 {
		if p != 0 {
			return end
		}
		return start
	}, To: func(int32, int64, int64) int64 { return 4 }}
	if err := ReadToEnd(ctx, opts, span, func(r *kgo.Record) {
		if r.Partition != 0 || r.Offset >= 4 {
			t.Errorf("record %d/%d outside the span", r.Partition, r.Offset)
		}
		got++
	}); err != nil || got != 4 {
		t.Fatalf("bounded read: %d records, %v", got, err)
	}
}

func TestFollowCatchesUpThenFollows(t *testing.T) {
	_, opts, want := cluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got, atCatchUp atomic.Int64
	caught := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, opts, Span{Topic: "t"}, func() { atCatchUp.Store(got.Load()); close(caught) }, func(*kgo.Record) { got.Add(1) })
	}()
	select {
	case <-caught:
	case <-time.After(20 * time.Second):
		t.Fatal("Follow did not catch up")
	}
	if n := atCatchUp.Load(); n != int64(want) {
		t.Fatalf("caught up after %d records, want %d", n, want)
	}
	prod, err := kgo.NewClient(With(opts, kgo.DefaultProduceTopic("t"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("new")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() != int64(want+1) {
		if time.Now().After(deadline) {
			t.Fatalf("followed %d records, want %d", got.Load(), want+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow returned %v after its context ended", err)
	}
}

func TestWithCopies(t *testing.T) {
	base := make([]kgo.Opt, 1, 4)
	base[0] = kgo.ClientID("a")
	x := With(base, kgo.ClientID("x"))
	y := With(base, kgo.ClientID("y"))
	if &x[0] == &y[0] || &x[0] == &base[0] || len(base) != 1 {
		t.Fatal("With shares the caller's backing array")
	}
}

// A transaction still open when the read begins holds records below the
// end that are not readable until it is decided. With Settle the reader
// waits for it and reads what it committed; without, it gives up after a
// second and takes them for aborted (what the dedup read-back after a
// crash must not do).
func TestReadToEndSettlesAnOpenTransaction(t *testing.T) {
	for _, c := range []struct {
		settle time.Duration
		want   int
	}{{0, 0}, {10 * time.Second, 10}} {
		kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
		if err != nil {
			t.Fatal(err)
		}
		opts := []kgo.Opt{kgo.SeedBrokers(kc.ListenAddrs()...)}
		prod, err := kgo.NewClient(With(opts, kgo.TransactionalID("open"), kgo.DefaultProduceTopic("t"))...)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		got := make(chan int, 1)
		go func() {
			n := 0
			if err := ReadToEnd(ctx, opts, Span{Topic: "t", Settle: c.settle}, func(*kgo.Record) { n++ }); err != nil {
				t.Error(err)
			}
			got <- n
		}()
		time.Sleep(2 * time.Second) // the transaction is decided after the read began
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != c.want {
			t.Errorf("Settle %s: read %d of the 10 records committed 2 s after the read began, want %d", c.settle, n, c.want)
		}
		prod.Close()
		kc.Close()
	}
}
