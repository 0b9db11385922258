package console

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil/vigil/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// archive writes n rows in files of per rows into a local store, under
// two regions, as the archiver names them.
func archive(t testing.TB, n, per int) storage.Store {
	t.Helper()
	st, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for f := 0; f*per < n; f++ {
		rows := make([]contract.Enriched, 0, per)
		for i := f * per; i < min(n, (f+1)*per); i++ {
			rows = append(rows, contract.Enriched{ID: fmt.Sprintf("r%d", i), DeviceID: fmt.Sprintf("d%d", i%1000), TS: t0.Add(time.Duration(i) * time.Millisecond),
				IngestedAt: t0.Add(time.Duration(i) * time.Millisecond), Region: []string{"eu", "us"}[f%2], Site: fmt.Sprintf("site-%d", i%10),
				Metrics: []contract.Field{{Name: "temp_c", Value: 60 + rng.NormFloat64()}}, Score: rng.Float64(), Threshold: 0.8, Model: "baseline-v1", Offset: int64(i)})
		}
		var buf bytes.Buffer
		if _, err := storage.WriteParquet(&buf, rows); err != nil {
			t.Fatal(err)
		}
		key := contract.ArchiveKey{Region: rows[0].Region, Hour: t0, Topic: "vigil.enriched", Partition: 0, First: int64(f * per), Last: int64(f*per + len(rows) - 1)}.Format()
		if _, err := st.Put(context.Background(), key, &buf, int64(buf.Len())); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// running is a console whose Run goes on until the test ends.
func running(t testing.TB, st storage.Store, cfg Config) *Console {
	t.Helper()
	c := New(cfg, Options{Store: st, Dir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console Run: %v", err)
		}
	})
	for {
		c.mu.Lock()
		up := c.runCtx != nil
		c.mu.Unlock()
		if up {
			return c
		}
		time.Sleep(time.Millisecond)
	}
}

func loaded(t testing.TB, st storage.Store, cfg Config, fraction float64) *Console {
	t.Helper()
	c := running(t, st, cfg)
	if err := c.StartLoad(fraction, time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for c.Status().State == "loading" {
		if time.Now().After(deadline) {
			t.Fatal("sample did not load in 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := c.Status(); s.State != "ready" {
		t.Fatalf("sample: %+v", s)
	}
	return c
}

var testConsole = func() Config {
	c := Default()
	c.QueryTimeout, c.MaxRows, c.StatusInterval = 2*time.Second, 50, time.Second
	return c
}()

func TestConsoleSampleAndSafety(t *testing.T) {
	st := archive(t, 20_000, 5_000)
	c := running(t, st, testConsole)
	if _, err := c.Query(context.Background(), "SELECT 1"); !errors.Is(err, ErrNoSample) {
		t.Fatalf("query before a sample: %v", err)
	}
	c = loaded(t, st, testConsole, 1)
	if s := c.Status(); s.Rows != 20_000 || s.ObjectsTotal != 4 || s.ObjectsDone != 4 || s.BytesRead == 0 {
		t.Fatalf("full sample status %+v", s)
	}
	res, err := c.Query(context.Background(), "SELECT region, count(*) AS n FROM enriched GROUP BY region ORDER BY region")
	if err != nil || len(res.Rows) != 2 || res.Rows[0][0] != "eu" || fmt.Sprint(res.Rows[0][1]) != "10000" {
		t.Fatalf("grouped query over both regions: %+v %v", res, err)
	}
	if res, err := c.Query(context.Background(), "SUMMARIZE enriched"); err != nil || len(res.Rows) < 10 {
		t.Fatalf("SUMMARIZE: %v", err)
	}
	if res, err := c.Query(context.Background(), "SELECT * FROM range(100)"); err != nil || len(res.Rows) != 50 || !res.Truncated {
		t.Fatalf("row limit: %d rows, truncated %v, %v", len(res.Rows), res.Truncated, err)
	}
	if _, err := c.Query(context.Background(), "SELECT count(*) FROM range(100000000000) a, range(1000) b"); err == nil || !strings.Contains(err.Error(), "query_timeout") {
		t.Fatalf("time limit: %v", err)
	}
	for _, q := range []string{
		"INSERT INTO enriched (id) VALUES ('x')", "DELETE FROM enriched", "DROP TABLE enriched", "CREATE TABLE x AS SELECT 1",
		"COPY enriched TO '/tmp/out.csv'", "ATTACH '/tmp/x.db'", "INSTALL httpfs", "LOAD httpfs", "SET threads = 1", "PRAGMA version",
		"SELECT 1; DROP TABLE enriched", "UPDATE enriched SET score = 0",
	} {
		if _, err := c.Query(context.Background(), q); err == nil {
			t.Errorf("%q was accepted", q)
		}
	}
	for _, q := range []string{"SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_parquet('/etc/hostname')", "SELECT * FROM 'https://example.com/x.parquet'"} {
		if _, err := c.Query(context.Background(), q); err == nil {
			t.Errorf("%q read outside the sample", q)
		}
	}
	if res, err := c.Query(context.Background(), "SELECT count(*) FROM enriched"); err != nil || fmt.Sprint(res.Rows[0][0]) != "20000" {
		t.Fatalf("the sample changed: %+v %v", res, err)
	}
	// a 1 % sample of the same archive
	c2 := loaded(t, st, testConsole, 0.01)
	if n := c2.Status().Rows; n < 100 || n > 320 {
		t.Fatalf("1%% of 20000 rows gave %d", n)
	}
}

// BenchmarkGroupedQuery: a grouped query over a sample of 1,000,000 rows
// (the whole of a 1M-row archive loaded), the baseline being a plain
// count(*) of the same table.
func BenchmarkGroupedQuery(b *testing.B) {
	st := archive(b, 1_000_000, 100_000)
	cfg := testConsole
	cfg.QueryTimeout = time.Minute
	c := loaded(b, st, cfg, 1)
	if n := c.Status().Rows; n != 1_000_000 {
		b.Fatalf("sample holds %d rows", n)
	}
	for _, bc := range []struct{ name, q string }{
		{"count", "SELECT count(*) FROM enriched"},
		{"group-by-device", "SELECT device_id, site, count(*), avg(score), max(m_temp_c) FROM enriched GROUP BY device_id, site ORDER BY 3 DESC"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.Query(context.Background(), bc.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A load can be cancelled, and the end of Run cancels one in flight; the
// console stays usable and says so.
func TestLoadCancel(t *testing.T) {
	st := archive(t, 1000, 5) // 200 objects: a load of a while
	c := running(t, st, testConsole)
	if err := c.StartLoad(1, time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if c.StartLoad(1, time.Time{}, time.Time{}) == nil {
		t.Fatal("a second load started while one runs")
	}
	if !c.CancelLoad() {
		t.Fatal("CancelLoad found no load")
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().State == "loading" {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled load did not stop in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := c.Status(); s.State != "cancelled" || s.ObjectsDone >= s.ObjectsTotal {
		t.Fatalf("after cancel: %+v", s)
	}
	if c.CancelLoad() {
		t.Fatal("CancelLoad with nothing loading")
	}
	if _, err := c.Query(context.Background(), "SELECT 1"); !errors.Is(err, ErrNoSample) {
		t.Fatalf("query after a cancelled first load: %v, want ErrNoSample", err)
	}
	// the end of Run cancels a load in flight (the cleanup waits for Run)
	c2 := New(testConsole, Options{Store: st, Dir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c2.Run(ctx) }()
	for c2.StartLoad(1, time.Time{}, time.Time{}) != nil {
		time.Sleep(time.Millisecond) // until Run has started
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context ending during a load")
	}
	if s := c2.Status(); s.State != "cancelled" {
		t.Fatalf("load at the end of Run: %+v", s)
	}
	if err := c2.StartLoad(1, time.Time{}, time.Time{}); !errors.Is(err, ErrNotRunning) {
		t.Fatal("a load started after Run returned")
	}
}

// The console's caps: a query over DuckDB's memory limit fails with
// DuckDB's own error and the console goes on answering; an answer over
// max_response_bytes is refused with an error that says how to narrow it;
// a 1 % load of a 1,000-object archive downloads about 1 % of the objects.
func TestConsoleCaps(t *testing.T) {
	cfg := testConsole
	cfg.MemoryLimit, cfg.MaxResponseBytes, cfg.MaxRows = 32<<20, 64<<10, 100_000
	c := loaded(t, archive(t, 2000, 1000), cfg, 1)
	_, err := c.Query(context.Background(), "SELECT string_agg(repeat('x', 1000) || i::VARCHAR, ',') FROM range(200000) t(i)")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "memory") {
		t.Fatalf("a query over memory_limit: %v, want DuckDB's out-of-memory error", err)
	}
	if res, err := c.Query(context.Background(), "SELECT count(*) FROM enriched"); err != nil || len(res.Rows) != 1 {
		t.Fatalf("the console after the failed query: %v", err)
	}
	_, err = c.Query(context.Background(), "SELECT repeat('x', 1000) FROM range(1000)")
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "max_response_bytes") || !strings.Contains(err.Error(), "LIMIT") {
		t.Fatalf("an answer over max_response_bytes: %v", err)
	}
	if res, err := c.Query(context.Background(), "SELECT repeat('x', 1000) FROM range(10)"); err != nil || len(res.Rows) != 10 {
		t.Fatalf("a small answer: %v", err)
	}

	st := archive(t, 5000, 5) // 1,000 objects
	c1 := loaded(t, st, testConsole, 0.01)
	s := c1.Status()
	if s.ObjectsTotal < 3 || s.ObjectsTotal > 25 || s.Rows != int64(5*s.ObjectsTotal) {
		t.Fatalf("a 1%% load of 1,000 objects picked %d objects (%d rows), want about 10 whole objects", s.ObjectsTotal, s.Rows)
	}
	t.Logf("1%% of 1,000 objects: %d objects downloaded, %d bytes", s.ObjectsTotal, s.BytesRead)
	// the caps of one load
	cfg = testConsole
	cfg.MaxLoadObjects = 7
	c2 := loaded(t, st, cfg, 1)
	if s := c2.Status(); s.ObjectsTotal != 7 || !strings.Contains(s.Capped, "max_load_objects") {
		t.Fatalf("capped load: %+v", s)
	}
}
