package storage

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// enrichedTopic starts an embedded broker with a one-partition "enriched"
// topic, closed when the test ends, and returns the options to reach it.
func enrichedTopic(t *testing.T) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "enriched"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

func enrichedValue(i int, ingested time.Time) []byte {
	return []byte(fmt.Sprintf(`{"id":"r%d","device_id":"d","ts":"2026-11-25T12:00:%02dZ","ingested_at":%q,"region":"eu","metrics":{"v":%d},"derived":{},"score":0,"threshold":0.8,"model":"baseline-v1"}`,
		i, i%60, ingested.Format(time.RFC3339Nano), i))
}

// Recovery from the names in the bucket: a file stored before a crash but
// never committed (simulated by storing it first) is found by its name and
// skipped; the archiver goes on after its last offset with no duplicate
// and no gap; files roll on max_records and at the roll_interval boundary
// of ingested_at.
func TestArchiverRecoversFromNames(t *testing.T) {
	opts := enrichedTopic(t)
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	t0 := time.Date(2026, 11, 25, 12, 59, 0, 0, time.UTC)
	var rows []contract.Enriched
	for i := 0; i < 250; i++ {
		ing := t0.Add(time.Duration(i) * 500 * time.Millisecond) // crosses 13:00 at i = 120
		v := enrichedValue(i, ing)
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "enriched", Key: []byte("d"), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i < 50 {
			r, _ := contract.DecodeEnriched(v)
			r.Offset = int64(i)
			rows = append(rows, r)
		}
	}
	dir := t.TempDir()
	store, _ := NewLocal(dir)
	// a file for offsets 0..49, stored by a process that died before committing
	var buf bytes.Buffer
	if _, err := WriteParquet(&buf, rows); err != nil {
		t.Fatal(err)
	}
	pre := contract.ArchiveKey{Region: "eu", Hour: t0.Truncate(time.Hour), Topic: "enriched", Partition: 0, First: 0, Last: 49}.Format()
	if _, err := store.PutIfAbsent(context.Background(), pre, &buf, int64(buf.Len())); err != nil {
		t.Fatal(err)
	}
	// keep_archived 1ns: archived records are dropped from the broker at once
	cfg := ArchiveConfig{Group: "arch", MaxRecords: 100, MaxBytes: 1 << 30, RollInterval: time.Hour, FlushInterval: time.Hour, KeepArchived: time.Nanosecond, MaxBackoff: time.Second}
	a, err := NewArchiver(cfg, ArchiverOptions{Topic: "enriched", ClientOpts: opts, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	a.trimEvery = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// 50..149 is a full file (max_records 100) but crosses 13:00 at offset 120
	want := []string{
		contract.ArchiveKey{Region: "eu", Hour: t0.Truncate(time.Hour), Topic: "enriched", Partition: 0, First: 0, Last: 49}.Format(),
		contract.ArchiveKey{Region: "eu", Hour: t0.Truncate(time.Hour), Topic: "enriched", Partition: 0, First: 50, Last: 119}.Format(),
		contract.ArchiveKey{Region: "eu", Hour: t0.Add(time.Hour).Truncate(time.Hour), Topic: "enriched", Partition: 0, First: 120, Last: 219}.Format(),
	}
	deadline := time.Now().Add(20 * time.Second)
	var keys []string
	for time.Now().Before(deadline) {
		objs, _ := store.List(context.Background(), "enriched/")
		keys = keys[:0]
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		if len(keys) >= 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// the broker drops what was archived (up to offset 220), never the rest
	adm := kadm.NewClient(prod)
	var logStart int64
	for time.Now().Before(deadline) {
		so, err := adm.ListStartOffsets(context.Background(), "enriched")
		if err == nil {
			so.Each(func(o kadm.ListedOffset) { logStart = o.Offset })
		}
		if logStart >= 220 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if logStart != 220 {
		t.Fatalf("log start offset %d after archiving up to 219, want 220 (archived records dropped, unarchived kept)", logStart)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// graceful stop stored the open file 220..249
	objs, _ := store.List(context.Background(), "enriched/")
	keys = keys[:0]
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	want = append(want, contract.ArchiveKey{Region: "eu", Hour: t0.Add(time.Hour).Truncate(time.Hour), Topic: "enriched", Partition: 0, First: 220, Last: 249}.Format())
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Fatalf("objects:\n%s\nwant:\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	if n := testutil.ToFloat64(a.m.skipped); n != 1 {
		t.Fatalf("%v files skipped at recovery, want 1", n)
	}
	// every file holds exactly its offsets, in order, with their records:
	// a file is encoded into pooled chunks that earlier files held
	// (chunkBuf), which must not show through
	db := duck(t)
	for _, key := range keys {
		k, err := contract.ParseArchiveKey(key)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := db.Query(`SELECT id, kafka_offset, "m_v" FROM read_parquet(?) ORDER BY kafka_offset`, filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil {
			t.Fatal(err)
		}
		next := k.First
		for rs.Next() {
			var id string
			var off int64
			var v float64
			if err := rs.Scan(&id, &off, &v); err != nil {
				t.Fatal(err)
			}
			if off != next || id != fmt.Sprintf("r%d", off) || v != float64(off) {
				t.Fatalf("%s: row (%s, offset %d, v %g), want r%d at offset %d with v %d", key, id, off, v, next, next, next)
			}
			next++
		}
		rs.Close()
		if next != k.Last+1 {
			t.Fatalf("%s holds offsets %d..%d, want %d..%d", key, k.First, next-1, k.First, k.Last)
		}
	}
}

// Devices that send different metric sets into one partition roll a file
// only when a metric is new to the partition, not at every switch; and a
// device whose multivariate model becomes fitted does not roll one.
func TestSchemaUnionAcrossSwitches(t *testing.T) {
	ap := &archPart{}
	rowOf := func(i int, names ...string) contract.Enriched {
		r := contract.Enriched{ID: fmt.Sprint(i), DeviceID: "d", TS: time.Unix(int64(i), 0), IngestedAt: time.Unix(int64(i), 0), Region: "eu"}
		for _, n := range names {
			r.Metrics = append(r.Metrics, contract.Field{Name: n, Value: 1})
			r.Derived = append(r.Derived, contract.Field{Name: n + contract.SuffixZ, Value: 0})
		}
		if i > 10 {
			r.Derived = append(r.Derived, contract.Field{Name: contract.Multivariate, Value: 0.5})
		}
		return r
	}
	var f *file
	files := 0
	for i := 0; i < 40; i++ {
		r := rowOf(i, "temp", "rpm")
		if i%2 == 1 {
			r = rowOf(i, "flow", "pressure")
		}
		if f == nil || !f.fw.Fits(&r) {
			f = newFile(&r, ap.schema(&r), time.Unix(0, 0), int64(i), 0)
			files++
		}
		if err := f.fw.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if files != 2 {
		t.Fatalf("%d files for 40 rows alternating two metric sets; want 2 (one roll when the second set first appears)", files)
	}
	// the union is bounded: past maxFileMetrics it starts over
	for i := 0; i < maxFileMetrics+5; i++ {
		r := rowOf(i, fmt.Sprintf("m%d", i))
		ap.schema(&r)
	}
	if len(ap.metrics) > maxFileMetrics {
		t.Fatalf("the union holds %d metrics, more than %d", len(ap.metrics), maxFileMetrics)
	}
}
