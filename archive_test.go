package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // reads the archive back

	"github.com/vigil/vigil/internal/testminio"
	"github.com/vigil/vigil/storage"
)

// archiveView is what DuckDB sees of an archive tree on disk.
type archiveView struct {
	rows, distinct int64
	ids            map[string]bool
}

func readArchive(t *testing.T, dir string) archiveView {
	t.Helper()
	v := archiveView{ids: map[string]bool{}}
	if m, _ := filepath.Glob(filepath.Join(dir, "enriched", "*", "*", "*", "*.parquet")); len(m) == 0 {
		return v
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src := fmt.Sprintf("read_parquet('%s/enriched/**/*.parquet', hive_partitioning = true, union_by_name = true)", dir)
	if err := db.QueryRow("SELECT count(*), count(DISTINCT id) FROM "+src).Scan(&v.rows, &v.distinct); err != nil {
		t.Fatalf("duckdb over the archive: %v", err)
	}
	rs, err := db.Query("SELECT id FROM " + src)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			t.Fatal(err)
		}
		v.ids[id] = true
	}
	return v
}

// download copies every enriched/ object of a store into dir, reading each
// one whole (so an unreadable object fails the test).
func download(t *testing.T, s storage.Store, dir string) int {
	t.Helper()
	ctx := context.Background()
	objs, err := s.List(ctx, "enriched/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		rc, info, err := s.Get(ctx, o.Key)
		if err != nil {
			t.Fatalf("object %s unreadable: %v", o.Key, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || int64(len(b)) != info.Size {
			t.Fatalf("object %s: read %d of %d bytes: %v", o.Key, len(b), info.Size, err)
		}
		p := filepath.Join(dir, filepath.FromSlash(o.Key))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return len(objs)
}

// checkNoOverlap: within each topic-partition, no two objects hold the same offset.
func checkNoOverlap(t *testing.T, keys []string) {
	t.Helper()
	type span struct{ first, last int64 }
	byPart := map[string][]span{}
	for _, k := range keys {
		name := strings.TrimSuffix(k[strings.LastIndex(k, "/")+1:], ".parquet")
		parts := strings.Split(name, "-")
		var first, last int64
		fmt.Sscan(parts[len(parts)-2], &first)
		fmt.Sscan(parts[len(parts)-1], &last)
		tp := strings.Join(parts[:len(parts)-2], "-")
		byPart[tp] = append(byPart[tp], span{first, last})
	}
	for tp, spans := range byPart {
		sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
		for i := 1; i < len(spans); i++ {
			if spans[i].first <= spans[i-1].last {
				t.Fatalf("%s: objects %v and %v overlap", tp, spans[i-1], spans[i])
			}
		}
	}
}

func objectKeys(t *testing.T, s storage.Store) []string {
	t.Helper()
	objs, err := s.List(context.Background(), "enriched/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// poster posts batches of readings with unique ids until stopped, and
// remembers which ids were acknowledged and whether any post was refused.
type poster struct {
	s        *server
	key      string
	mu       sync.Mutex
	acked    map[string]bool
	refused  atomic.Int64
	failed   atomic.Int64
	seq      atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
	interval time.Duration
	prefix   string
}

// newPoster starts posting; ids are prefix + a sequence number, so give
// every poster of one test its own prefix.
func newPoster(s *server, key, prefix string, workers int, interval time.Duration) *poster {
	p := &poster{s: s, key: key, acked: map[string]bool{}, stop: make(chan struct{}), interval: interval, prefix: prefix}
	for w := 0; w < workers; w++ {
		p.wg.Add(1)
		go p.run()
	}
	return p
}

func (p *poster) run() {
	defer p.wg.Done()
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		var b strings.Builder
		ids := make([]string, 20)
		b.WriteByte('[')
		for i := range ids {
			n := p.seq.Add(1)
			ids[i] = fmt.Sprintf("%s%d", p.prefix, n)
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"device_id":"dev-%d","id":%q,"ts":%d,"metrics":{"v":%d,"w":%d}}`, n%10, ids[i], time.Now().Add(-time.Hour).UnixMilli()+n, n%13, n%7)
		}
		b.WriteByte(']')
		req, _ := http.NewRequest("POST", p.s.httpURL+"/v1/ingest", strings.NewReader(b.String()))
		req.Header.Set("Authorization", "Bearer "+p.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			p.failed.Add(1)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted {
			p.mu.Lock()
			for _, id := range ids {
				p.acked[id] = true
			}
			p.mu.Unlock()
		} else {
			p.refused.Add(1)
		}
		if p.interval > 0 {
			time.Sleep(p.interval)
		}
	}
}

func (p *poster) halt() map[string]bool {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

func gatewayKey(t *testing.T, s *server) string { return registerGateway(t, s, "gw-a", "dev-") }

// registerGateway registers a gateway for the ids under prefix and returns its key.
func registerGateway(t *testing.T, s *server, id, prefix string) string {
	t.Helper()
	code, b, _ := s.do("POST", "/api/v1/gateways", s.token, "application/json", []byte(`{"gateway_id":"`+id+`","device_prefixes":["`+prefix+`"]}`))
	if code != http.StatusCreated {
		t.Fatalf("gateway %s: %d %s", id, code, b)
	}
	return strings.Split(strings.Split(string(b), `"key":"`)[1], `"`)[0]
}

// waitArchived polls the archive (through view) until it holds every id
// of want, or fails after timeout with what is missing.
func waitArchived(t *testing.T, timeout time.Duration, want map[string]bool, view func() archiveView) archiveView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := view()
		missing := 0
		for id := range want {
			if !v.ids[id] {
				missing++
			}
		}
		if missing == 0 {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive lacks %d of %d acknowledged readings after %s (rows %d)", missing, len(want), timeout, v.rows)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func assertExactlyOnce(t *testing.T, v archiveView, acked map[string]bool) {
	t.Helper()
	if v.rows != v.distinct {
		t.Fatalf("archive holds %d rows for %d distinct ids: duplicates", v.rows, v.distinct)
	}
	for id := range acked {
		if !v.ids[id] {
			t.Fatalf("acknowledged reading %s missing from the archive", id)
		}
	}
}

// N readings posted give exactly N rows, every id once, read by DuckDB as a
// Hive-partitioned table; on the local store and on a real MinIO.
func TestArchiveExactlyOnce(t *testing.T) {
	for _, store := range []string{"local", "minio"} {
		t.Run(store, func(t *testing.T) {
			env := []string{"VIGIL_ARCHIVE_FLUSH_INTERVAL=1s"}
			var m *testminio.Server
			if store == "minio" {
				m = testminio.Start(t)
				env = append(env, "VIGIL_STORAGE_ENDPOINT=http://"+m.Endpoint, "VIGIL_STORAGE_ACCESS_KEY="+m.AccessKey, "VIGIL_STORAGE_SECRET_KEY="+m.SecretKey, "VIGIL_STORAGE_BUCKET=lake")
			}
			s := newServer(t, t.TempDir(), env...)
			s.startInProcess()
			p := newPoster(s, gatewayKey(t, s), "a", 2, 0)
			waitFor(t, 30*time.Second, "5000 acknowledged readings", func() bool { return p.seq.Load() > 5000 })
			acked := p.halt()
			n := len(acked)
			var st storage.Store
			view := func() archiveView { return readArchive(t, filepath.Join(s.dir, "objects")) }
			if m != nil {
				s3, err := storage.NewS3(context.Background(), storage.Config{Endpoint: m.Endpoint, Bucket: "lake", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
				if err != nil {
					t.Fatal(err)
				}
				st = s3
				view = func() archiveView {
					dir := t.TempDir()
					download(t, s3, dir)
					return readArchive(t, dir)
				}
			} else {
				st, _ = storage.NewLocal(filepath.Join(s.dir, "objects"))
			}
			waitArchived(t, 60*time.Second, acked, view)
			s.stop()
			v := view() // after the graceful stop flushed the rest
			if int(v.rows) != n || int(v.distinct) != n {
				t.Fatalf("%d readings posted, archive holds %d rows, %d distinct", n, v.rows, v.distinct)
			}
			assertExactlyOnce(t, v, acked)
			checkNoOverlap(t, objectKeys(t, st))
			t.Logf("%s: %d readings posted, %d rows archived in %d objects, every id once", store, n, v.rows, len(objectKeys(t, st)))
		})
	}
}

// SIGKILL during archiving (small files, one a second per partition, so
// kills land between a store and its commit), three times, then a
// restart: the archive holds every acknowledged reading once, and no two
// objects of a partition overlap.
func TestArchiveKillNine(t *testing.T) {
	s := newServer(t, t.TempDir(), "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_ARCHIVE_MAX_RECORDS=300")
	s.startProcess()
	key := gatewayKey(t, s)
	acked := map[string]bool{}
	for round := 0; round < 3; round++ {
		if round > 0 {
			s.startProcess()
		}
		p := newPoster(s, key, fmt.Sprintf("r%d-", round), 2, 0)
		waitFor(t, 30*time.Second, "files being archived", func() bool { return s.metric("vigil_archive_files_total") >= 4 })
		s.kill()
		for id := range p.halt() {
			acked[id] = true
		}
	}
	s.startProcess()
	st, _ := storage.NewLocal(filepath.Join(s.dir, "objects"))
	waitArchived(t, 60*time.Second, acked, func() archiveView { return readArchive(t, filepath.Join(s.dir, "objects")) })
	s.stop()
	v := readArchive(t, filepath.Join(s.dir, "objects"))
	keys := objectKeys(t, st)
	if v.rows != v.distinct {
		dumpDuplicates(t, filepath.Join(s.dir, "objects"), keys)
		for _, l := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(l, "pipeline") || strings.Contains(l, "Vigil is up") {
				t.Log(l)
			}
		}
	}
	assertExactlyOnce(t, v, acked)
	checkNoOverlap(t, keys)
	t.Logf("3 SIGKILLs while archiving: %d acknowledged, %d rows in %d objects, no duplicate, no overlap", len(acked), v.rows, len(keys))
}

// MinIO stopped for 30 s under load: ingest never refuses a request, the
// archiver waits and catches up, and the archive is exact.
func TestArchiveMinIOOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage test skipped in -short mode")
	}
	m := testminio.Start(t)
	s := newServer(t, t.TempDir(), "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_ARCHIVE_MAX_BACKOFF=2s",
		"VIGIL_STORAGE_ENDPOINT="+m.Endpoint, "VIGIL_STORAGE_ACCESS_KEY="+m.AccessKey, "VIGIL_STORAGE_SECRET_KEY="+m.SecretKey)
	s.startInProcess()
	defer s.stop()
	p := newPoster(s, gatewayKey(t, s), "a", 1, 20*time.Millisecond)
	waitFor(t, 30*time.Second, "archiving under way", func() bool { return s.metric("vigil_archive_files_total") >= 4 })
	m.Stop()
	outage := time.Now()
	processedBefore := s.metric("vigil_pipeline_readings_total")
	waitFor(t, 20*time.Second, "the archiver to notice the outage", func() bool { return s.metric("vigil_archive_store_up") == 0 })
	time.Sleep(30*time.Second - time.Since(outage)) // the outage lasts 30 s by design
	processedDuring := s.metric("vigil_pipeline_readings_total") - processedBefore
	m.Start(t)
	waitFor(t, 60*time.Second, "the archiver to report the store back", func() bool { return s.metric("vigil_archive_store_up") == 1 })
	acked := p.halt()
	if r := p.refused.Load(); r > 0 || p.failed.Load() > 0 {
		t.Fatalf("ingest refused %d and failed %d requests during the outage", r, p.failed.Load())
	}
	if processedDuring < 100 {
		t.Fatalf("the pipeline processed only %v readings during the outage", processedDuring)
	}
	s3, err := storage.NewS3(context.Background(), storage.Config{Endpoint: m.Endpoint, Bucket: "vigil", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	view := func() archiveView {
		dir := t.TempDir()
		download(t, s3, dir)
		return readArchive(t, dir)
	}
	v := waitArchived(t, 90*time.Second, acked, view)
	assertExactlyOnce(t, v, acked)
	checkNoOverlap(t, objectKeys(t, s3))
	t.Logf("30 s MinIO outage: %d readings acknowledged (none refused), %v scored during the outage, %d archived once, failed writes retried: %v",
		len(acked), processedDuring, v.rows, s.metric("vigil_archive_store_failures_total"))
}

// One of MinIO's four drive folders deleted under load: every object
// stays readable and the archive is exact.
func TestArchiveMinIODriveLoss(t *testing.T) {
	m := testminio.Start(t)
	s := newServer(t, t.TempDir(), "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s",
		"VIGIL_STORAGE_ENDPOINT="+m.Endpoint, "VIGIL_STORAGE_ACCESS_KEY="+m.AccessKey, "VIGIL_STORAGE_SECRET_KEY="+m.SecretKey)
	s.startInProcess()
	defer s.stop()
	p := newPoster(s, gatewayKey(t, s), "a", 1, 10*time.Millisecond)
	waitFor(t, 30*time.Second, "archiving under way", func() bool { return s.metric("vigil_archive_files_total") >= 4 })
	if err := os.RemoveAll(m.Drives[1]); err != nil {
		t.Fatal(err)
	}
	before := s.metric("vigil_archive_files_total")
	waitFor(t, 30*time.Second, "more files after the drive loss", func() bool { return s.metric("vigil_archive_files_total") >= before+4 })
	acked := p.halt()
	s3, err := storage.NewS3(context.Background(), storage.Config{Endpoint: m.Endpoint, Bucket: "vigil", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	var objects int
	v := waitArchived(t, 60*time.Second, acked, func() archiveView {
		dir := t.TempDir()
		objects = download(t, s3, dir) // reads every object whole
		return readArchive(t, dir)
	})
	assertExactlyOnce(t, v, acked)
	t.Logf("drive %s deleted under load: all %d objects readable, %d rows, every acknowledged id once", filepath.Base(m.Drives[1]), objects, v.rows)
}

func dumpDuplicates(t *testing.T, dir string, keys []string) {
	db, _ := sql.Open("duckdb", "")
	defer db.Close()
	rs, err := db.Query(fmt.Sprintf(`SELECT id, list(filename), list(kafka_partition), list(kafka_offset) FROM read_parquet('%s/enriched/**/*.parquet', filename = true, union_by_name = true) GROUP BY id HAVING count(*) > 1 LIMIT 5`, dir))
	if err != nil {
		t.Log(err)
		return
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		var a, b, c any
		_ = rs.Scan(&id, &a, &b, &c)
		t.Logf("duplicate %s: %v %v %v", id, a, b, c)
	}
	t.Logf("keys: %v", keys)
}
