package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/bus"
)

// The archiver takes the runs a transactional producer in its process
// hands it as they commit, with its fetch paused, as long as each run
// continues what it read; another writer's records between two runs send
// it back to the fetch from where it stopped. Every record is archived
// once, in offset order, whichever way it came.
func TestArchiverTakesHandoffs(t *testing.T) {
	opts := enrichedTopic(t)
	txn, err := kgo.NewClient(append(opts, kgo.TransactionalID("stream"), kgo.DefaultProduceTopic("enriched"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	other, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dir := t.TempDir()
	store, _ := NewLocal(dir)
	a, err := NewArchiver(ArchiveConfig{Group: "arch", MaxRecords: 1000, MaxBytes: 1 << 30, RollInterval: time.Hour, FlushInterval: time.Hour, MaxBackoff: time.Second},
		ArchiverOptions{Topic: "enriched", ClientOpts: opts, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	a.handoffIdle = time.Hour // only a refused run returns a partition to its fetch here
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	id := 0
	after := int64(-1)
	// commit writes n records in one transaction and hands them over as
	// the stream does (bus.Committed.After: its previous run's last)
	commit := func(n int) bus.Committed {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		run := bus.Committed{Topic: "enriched", Partition: 0, After: after}
		for i := 0; i < n; i++ {
			r := &kgo.Record{Key: []byte("d"), Value: enrichedValue(id, t0)}
			id++
			if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			run.Records = append(run.Records, r)
		}
		if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		after = run.Records[n-1].Offset
		a.Offer([]bus.Committed{run})
		return run
	}
	next := func() int64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if ap := a.parts[0]; ap != nil {
			return ap.next
		}
		return -1
	}
	waitNext := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for next() < want {
			if time.Now().After(deadline) {
				t.Fatalf("archiver read up to %d, want %d", next(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fed := func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.parts[0] != nil && a.parts[0].fed
	}
	// the first run comes before the archiver holds the partition: it is
	// fetched, and offered again it feeds the partition (read already)
	first := commit(20)
	waitNext(first.Records[19].Offset + 1)
	a.Offer([]bus.Committed{first})
	deadline := time.Now().Add(15 * time.Second)
	for !fed() {
		if time.Now().After(deadline) {
			t.Fatal("partition not fed after a run it had read already was offered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		r := commit(20)
		waitNext(r.Records[19].Offset + 1)
	}
	// a fetch already in flight when the fetch paused may bring the next
	// run first (it is then taken once, see TestArchiverTakesEachRecordOnce)
	if n := testutil.ToFloat64(a.m.handed); n < 80 {
		t.Fatalf("%v records taken from handoffs, want at least 80 of the 100 of the five runs after the first", n)
	}
	if !fed() {
		t.Fatal("partition not fed by handoffs after five runs that continued one another")
	}
	// another producer's records between two runs: the run is refused
	// and the fetch takes them all, from where the handoffs stopped
	for i := 0; i < 3; i++ {
		if err := other.ProduceSync(ctx, &kgo.Record{Topic: "enriched", Key: []byte("d"), Value: enrichedValue(id, t0)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		id++
	}
	r := commit(20)
	waitNext(r.Records[19].Offset + 1)
	if n := testutil.ToFloat64(a.m.refused); n < 1 {
		t.Fatal("a run after another writer's records was not refused")
	}
	// and the handoffs take over again
	for i := 0; i < 3; i++ {
		r := commit(20)
		waitNext(r.Records[19].Offset + 1)
	}
	handed := testutil.ToFloat64(a.m.handed)
	if handed < 100 {
		t.Fatalf("%v records taken from handoffs, want at least 80 of the five runs and one of the last three runs", handed)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// every record once, in order: ids 0..id-1 across the files
	objs, _ := store.List(context.Background(), "enriched/")
	db := duck(t)
	want := 0
	for _, o := range objs {
		rs, err := db.Query(`SELECT id FROM read_parquet(?) ORDER BY kafka_offset`, filepath.Join(dir, filepath.FromSlash(o.Key)))
		if err != nil {
			t.Fatal(err)
		}
		for rs.Next() {
			var got string
			if err := rs.Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != fmt.Sprintf("r%d", want) {
				t.Fatalf("%s: row %q, want r%d (every record once, in order)", o.Key, got, want)
			}
			want++
		}
		rs.Close()
	}
	if want != id {
		t.Fatalf("%d rows archived, want %d", want, id)
	}
	t.Logf("%d rows archived, %v from handoffs, %v runs refused", want, handed, testutil.ToFloat64(a.m.refused))
}

// A record that comes both from the fetch and from a handoff (a fetch in
// flight when the partition was paused, a run the fetch already brought)
// is archived once.
func TestArchiverTakesEachRecordOnce(t *testing.T) {
	store, _ := NewLocal(t.TempDir())
	a, err := NewArchiver(ArchiveConfig{Group: "arch", MaxRecords: 1000, MaxBytes: 1 << 30, RollInterval: time.Hour, FlushInterval: time.Hour, MaxBackoff: time.Second},
		ArchiverOptions{Topic: "enriched", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if a.cl, err = kgo.NewClient(append(enrichedTopic(t), kgo.ConsumerGroup("arch"), kgo.ConsumeTopics("enriched"))...); err != nil {
		t.Fatal(err)
	}
	defer a.cl.Close()
	ap := &archPart{p: 0, next: -1}
	a.parts[0] = ap
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	rec := func(i int) *kgo.Record { return &kgo.Record{Offset: int64(i), Value: enrichedValue(i, t0)} }
	run := func(from, to int) []bus.Committed {
		c := bus.Committed{Topic: "enriched", Partition: 0, After: -1}
		for i := from; i <= to; i++ {
			c.Records = append(c.Records, rec(i))
		}
		return []bus.Committed{c}
	}
	ctx := context.Background()
	for i := 0; i < 10; i++ { // fetched
		a.add(ctx, ap, rec(i))
	}
	a.Offer(run(5, 14)) // its first half fetched already
	a.takeHandoffs(ctx)
	for i := 12; i < 17; i++ { // a fetch that was in flight, and two records after it
		a.add(ctx, ap, rec(i))
	}
	a.Offer(run(15, 20)) // the fetch brought 15 and 16
	a.takeHandoffs(ctx)
	if ap.open == nil || ap.open.rows != 21 || ap.next != 21 {
		t.Fatalf("open file holds %d rows, next %d; want offsets 0..20 once each (21 rows, next 21)", ap.open.rows, ap.next)
	}
	if n := testutil.ToFloat64(a.m.handed); n != 5+4 {
		t.Fatalf("%v records taken from handoffs, want 10..14 and 17..20", n)
	}
}
