// Package console is the SQL console: a sample of the archive of every
// region pulled from the bucket into an embedded DuckDB, queried read-only,
// and the notebooks saved in the bucket. It runs with Run(ctx): a sample
// load runs on that context and can be cancelled.
package console

import (
	"github.com/vigil/vigil/contract"
	"hash/fnv"
	"sort"

	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"

	"github.com/vigil/vigil/storage"

	_ "github.com/duckdb/duckdb-go/v2" // the SQL console's engine
)

// Config is the console section of config.yaml.
type Config struct {
	// SampleFraction is the share of archived rows "Load sample" pulls. Default 0.01.
	SampleFraction float64 `yaml:"sample_fraction"`
	// QueryTimeout bounds one query. Default 10s.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// MaxRows bounds the rows one query returns. Default 10000.
	MaxRows int `yaml:"max_rows"`
	// RefreshInterval is the status page's default refresh. Default 60s.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// StatusInterval is how often this region writes sites/<region>/status.json. Default 5s.
	StatusInterval time.Duration `yaml:"status_interval"`
	// MemoryLimit is DuckDB's memory, bytes; a query over it fails with
	// DuckDB's error. Default 1 GiB.
	MemoryLimit int64 `yaml:"memory_limit"`
	// Threads are DuckDB's threads. Default 1.
	Threads int `yaml:"threads"`
	// MaxTempBytes caps DuckDB's spill files (under data.dir/console). Default 4 GiB.
	MaxTempBytes int64 `yaml:"max_temp_bytes"`
	// MaxResponseBytes caps one answer; a larger one is refused with an
	// error that says how to narrow the query. Default 8 MiB.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// MaxLoadObjects and MaxLoadBytes cap one sample load (the objects it
	// picks, newest first). Default 10000 and 2 GiB.
	MaxLoadObjects int   `yaml:"max_load_objects"`
	MaxLoadBytes   int64 `yaml:"max_load_bytes"`
	// HistoryInterval is the step of the overview's time series (the last
	// hour, kept in memory). Default 10s.
	HistoryInterval time.Duration `yaml:"history_interval"`
}

// Default is the console section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{SampleFraction: 0.01, QueryTimeout: 10 * time.Second, MaxRows: 10_000, RefreshInterval: time.Minute, StatusInterval: 5 * time.Second,
		MemoryLimit: 1 << 30, Threads: 1, MaxTempBytes: 4 << 30, MaxResponseBytes: 8 << 20, MaxLoadObjects: 10_000, MaxLoadBytes: 2 << 30, HistoryInterval: 10 * time.Second}
}

// Validate checks the console section; errors name the key below "console.".
func (c Config) Validate() error {
	switch {
	case !(c.SampleFraction > 0 && c.SampleFraction <= 1):
		return fmt.Errorf("sample_fraction: must be above 0 and at most 1, got %g", c.SampleFraction)
	case c.QueryTimeout < 100*time.Millisecond:
		return fmt.Errorf("query_timeout: must be at least 100ms, got %s", c.QueryTimeout)
	case c.MaxRows < 1:
		return fmt.Errorf("max_rows: must be at least 1, got %d", c.MaxRows)
	case c.RefreshInterval < time.Second:
		return fmt.Errorf("refresh_interval: must be at least 1s, got %s", c.RefreshInterval)
	case c.StatusInterval < time.Second:
		return fmt.Errorf("status_interval: must be at least 1s, got %s", c.StatusInterval)
	case c.MemoryLimit < 16<<20:
		return fmt.Errorf("memory_limit: must be at least 16 MiB, got %d bytes", c.MemoryLimit)
	case c.Threads < 1 || c.Threads > 64:
		return fmt.Errorf("threads: must be between 1 and 64, got %d", c.Threads)
	case c.MaxTempBytes < 0:
		return fmt.Errorf("max_temp_bytes: must not be negative, got %d", c.MaxTempBytes)
	case c.MaxResponseBytes < 1024:
		return fmt.Errorf("max_response_bytes: must be at least 1024, got %d", c.MaxResponseBytes)
	case c.MaxLoadObjects < 1:
		return fmt.Errorf("max_load_objects: must be at least 1, got %d", c.MaxLoadObjects)
	case c.MaxLoadBytes < 1<<20:
		return fmt.Errorf("max_load_bytes: must be at least 1 MiB, got %d", c.MaxLoadBytes)
	case c.HistoryInterval < 100*time.Millisecond || c.HistoryInterval > 5*time.Minute:
		return fmt.Errorf("history_interval: must be between 100ms and 5m, got %s", c.HistoryInterval)
	}
	return nil
}

// SampleStatus is the progress of "Load sample".
type SampleStatus struct {
	State        string    `json:"state"` // empty, loading, ready, failed
	Fraction     float64   `json:"fraction"`
	From         time.Time `json:"from,omitzero"`
	To           time.Time `json:"to,omitzero"`
	ObjectsDone  int       `json:"objects_done"`
	ObjectsTotal int       `json:"objects_total"`
	BytesRead    int64     `json:"bytes_read"`
	Rows         int64     `json:"rows"`
	Error        string    `json:"error,omitzero"`
	LoadedAt     time.Time `json:"loaded_at,omitzero"`
	Capped       string    `json:"capped,omitzero"` // the load stopped at a cap
}

// Console is the SQL console: a sample of the archive of every region,
// pulled from the bucket into an embedded DuckDB that is then locked (no
// file or network access, configuration locked) and queried read-only.
type Console struct {
	cfg   Config
	store storage.Store
	dir   string
	log   *zap.Logger

	db      atomic.Pointer[sql.DB]
	mu      sync.Mutex
	status  SampleStatus
	loading bool
	runCtx  context.Context    // set by Run: loads run on it
	cancel  context.CancelFunc // cancels the load in flight
	loads   sync.WaitGroup
}

// Options are a console's dependencies.
type Options struct {
	Store  storage.Store // the shared bucket: the archive and the notebooks
	Dir    string        // where downloads and DuckDB's files go
	Logger *zap.Logger
}

// New builds a console; Run starts it.
func New(cfg Config, o Options) *Console {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Console{cfg: cfg, store: o.Store, dir: o.Dir, log: o.Logger, status: SampleStatus{State: "empty"}}
}

// ErrNotRunning is returned by StartLoad before Run or after it returned.
var ErrNotRunning = errors.New("the console is not running")

// Run serves until ctx ends; then it cancels a load in flight, waits for
// it, and closes the sample database.
func (c *Console) Run(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.runCtx = nil
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.loads.Wait()
	c.close()
	return nil
}

// CancelLoad cancels the sample load in flight; false when none runs.
func (c *Console) CancelLoad() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loading || c.cancel == nil {
		return false
	}
	c.cancel()
	return true
}

// RefreshInterval is the status page's default refresh.
func (c *Console) RefreshInterval() time.Duration { return c.cfg.RefreshInterval }

// Status returns the sample's load progress.
func (c *Console) Status() SampleStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// close closes the sample database.
func (c *Console) close() {
	if db := c.db.Swap(nil); db != nil {
		db.Close()
	}
}

// StartLoad begins loading a sample of fraction of the archived rows whose
// hour lies in [from, to] (zero: unbounded). It returns at once; Status
// shows progress. A load already running is an error.
func (c *Console) StartLoad(fraction float64, from, to time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loading {
		return errors.New("a sample is already loading")
	}
	if fraction == 0 {
		fraction = c.cfg.SampleFraction
	}
	if !(fraction > 0 && fraction <= 1) {
		return fmt.Errorf("fraction must be above 0 and at most 1, got %g", fraction)
	}
	if c.runCtx == nil {
		return ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(c.runCtx, 30*time.Minute)
	c.loading, c.cancel = true, cancel
	c.status = SampleStatus{State: "loading", Fraction: fraction, From: from, To: to}
	c.loads.Add(1)
	go func() {
		defer c.loads.Done()
		defer cancel()
		c.load(ctx, fraction, from, to)
	}()
	return nil
}

func (c *Console) setStatus(f func(*SampleStatus)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

func (c *Console) load(ctx context.Context, fraction float64, from, to time.Time) {
	err := c.doLoad(ctx, fraction, from, to)
	c.mu.Lock()
	c.loading, c.cancel = false, nil
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		c.status.State, c.status.Error = "cancelled", "the load was cancelled; the previous sample, if any, stays"
		c.log.Info("sample load cancelled", zap.Int("objects_done", c.status.ObjectsDone), zap.Int("objects", c.status.ObjectsTotal))
	case err != nil:
		c.status.State, c.status.Error = "failed", err.Error()
		c.log.Error("sample load failed", zap.Error(err))
	default:
		c.status.State, c.status.LoadedAt = "ready", time.Now().UTC()
		c.log.Info("sample loaded", zap.Int64("rows", c.status.Rows), zap.Int("objects", c.status.ObjectsTotal))
	}
	c.mu.Unlock()
}

func (c *Console) doLoad(ctx context.Context, fraction float64, from, to time.Time) error {
	objs, err := c.store.List(ctx, contract.ArchivePrefix)
	if err != nil {
		return fmt.Errorf("list the archive in %s: %w", c.store, err)
	}
	var keys []storage.ObjectInfo
	for _, o := range objs {
		k, err := contract.ParseArchiveKey(o.Key)
		if err != nil {
			continue
		}
		h := k.Hour
		if (!from.IsZero() && h.Add(time.Hour).Before(from)) || (!to.IsZero() && h.After(to)) {
			continue
		}
		keys = append(keys, o)
	}
	// Pick by fraction before downloading: when the fraction of the
	// objects is at least one, whole objects are picked (by a hash of
	// their names, so a repeated load picks the same) and their rows all
	// kept; otherwise every object is read and the rows sampled.
	rowSample := fraction < 1
	if fraction < 1 && float64(len(keys))*fraction >= 1 {
		picked := keys[:0]
		for _, o := range keys {
			h := fnv.New64a()
			_, _ = h.Write([]byte(o.Key))
			if float64(h.Sum64()%1_000_000) < fraction*1_000_000 {
				picked = append(picked, o)
			}
		}
		keys, rowSample = picked, false
	}
	// the caps of one load: the newest objects first
	capped := ""
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].Key > keys[j].Key })
	var total int64
	for i, o := range keys {
		if i >= c.cfg.MaxLoadObjects || total+o.Size > c.cfg.MaxLoadBytes {
			capped = fmt.Sprintf("capped at %d objects, %d bytes (console.max_load_objects %d, max_load_bytes %d); narrow the time range or the fraction for the rest", i, total, c.cfg.MaxLoadObjects, c.cfg.MaxLoadBytes)
			keys = keys[:i]
			break
		}
		total += o.Size
	}
	c.setStatus(func(s *SampleStatus) { s.ObjectsTotal, s.Capped = len(keys), capped })
	dir, err := os.MkdirTemp(c.dir, "sample-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var files []string
	for i, o := range keys {
		if err := ctx.Err(); err != nil {
			return err // cancelled, or Run ended
		}
		p := filepath.Join(dir, fmt.Sprintf("%06d.parquet", i))
		n, err := c.download(ctx, o.Key, p)
		if err != nil {
			return err
		}
		files = append(files, p)
		c.setStatus(func(s *SampleStatus) { s.ObjectsDone, s.BytesRead = i+1, s.BytesRead+n })
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1) // one connection: the locks below are per database, set once
	conn := db
	// resource caps, set before the configuration is locked
	for _, q := range []string{
		fmt.Sprintf(`SET memory_limit = '%dB'`, c.cfg.MemoryLimit),
		fmt.Sprintf(`SET threads = %d`, c.cfg.Threads),
		fmt.Sprintf(`SET temp_directory = '%s'`, strings.ReplaceAll(filepath.Join(c.dir, "duckdb-tmp"), "'", "''")),
		fmt.Sprintf(`SET max_temp_directory_size = '%dB'`, c.cfg.MaxTempBytes),
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			db.Close()
			return fmt.Errorf("configure the sample database (%s): %w", q, err)
		}
	}
	if len(files) == 0 {
		_, err = conn.ExecContext(ctx, `CREATE TABLE enriched (id VARCHAR, device_id VARCHAR, ts TIMESTAMPTZ, ingested_at TIMESTAMPTZ, region VARCHAR, site VARCHAR, score DOUBLE, model VARCHAR)`)
	} else {
		list := make([]string, len(files))
		for i, f := range files {
			list[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
		}
		q := fmt.Sprintf(`CREATE TABLE enriched AS SELECT * FROM read_parquet([%s], union_by_name = true)`, strings.Join(list, ","))
		if rowSample {
			q += fmt.Sprintf(` USING SAMPLE %g PERCENT (bernoulli, 42)`, math.Round(fraction*1e6)/1e4)
		}
		_, err = conn.ExecContext(ctx, q)
	}
	if err == nil {
		_, err = conn.ExecContext(ctx, `SET enable_external_access = false`)
	}
	if err == nil {
		_, err = conn.ExecContext(ctx, `SET lock_configuration = true`)
	}
	var rows int64
	if err == nil {
		err = conn.QueryRowContext(ctx, `SELECT count(*) FROM enriched`).Scan(&rows)
	}
	if err != nil {
		db.Close()
		return fmt.Errorf("build the sample: %w", err)
	}
	c.setStatus(func(s *SampleStatus) { s.Rows = rows })
	if old := c.db.Swap(db); old != nil {
		old.Close()
	}
	return nil
}

func (c *Console) download(ctx context.Context, key, path string) (int64, error) {
	rc, _, err := c.store.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("download %s: %w", key, err)
	}
	return n, nil
}

// QueryResult is the answer of POST /api/v1/sql.
type QueryResult struct {
	Columns   []string `json:"columns"`
	Types     []string `json:"types"`
	Rows      [][]any  `json:"rows"`
	Truncated bool     `json:"truncated"`
	ElapsedMS float64  `json:"elapsed_ms"`
}

// ErrNotReadOnly refuses a statement that is not a single query.
var ErrNotReadOnly = errors.New("only one read-only query (SELECT, WITH, FROM, SUMMARIZE, DESCRIBE, SHOW, EXPLAIN, VALUES) is allowed")

// ErrNoSample is returned before a sample was loaded.
var ErrNoSample = errors.New(`no sample loaded yet: press "Load sample" (POST /api/v1/sample) first`)

// checkReadOnly lets through exactly one statement that DuckDB's own
// parser serializes as a SELECT (json_serialize_sql refuses anything else),
// or one SUMMARIZE/DESCRIBE/SHOW. The sample database is also locked (no
// file or network access, configuration locked), so even a statement that
// slipped through could touch nothing but the sample.
func checkReadOnly(ctx context.Context, db *sql.DB, q string) error {
	q = strings.TrimSpace(q)
	if q == "" {
		return errors.New("empty query")
	}
	var js string
	if err := db.QueryRowContext(ctx, `SELECT json_serialize_sql(?::VARCHAR)::VARCHAR`, q).Scan(&js); err != nil {
		return fmt.Errorf("check query: %w", err)
	}
	var parsed struct {
		Error        bool             `json:"error"`
		ErrorMessage string           `json:"error_message"`
		Statements   []jsontext.Value `json:"statements"`
	}
	if err := json.Unmarshal([]byte(js), &parsed, json.RejectUnknownMembers(false)); err != nil {
		return fmt.Errorf("check query: %w", err)
	}
	if !parsed.Error && len(parsed.Statements) == 1 {
		return nil
	}
	low := strings.ToLower(strings.TrimSuffix(q, ";"))
	for _, p := range []string{"summarize ", "describe ", "show "} {
		if strings.HasPrefix(low, p) && !strings.Contains(low, ";") {
			return nil
		}
	}
	if parsed.Error && strings.Contains(strings.ToLower(parsed.ErrorMessage), "syntax") {
		return errors.New(parsed.ErrorMessage)
	}
	return ErrNotReadOnly
}

// Query runs one read-only statement against the sample, within the
// configured time and row limits.
func (c *Console) Query(ctx context.Context, q string) (*QueryResult, error) {
	db := c.db.Load()
	if db == nil {
		return nil, ErrNoSample
	}
	if err := checkReadOnly(ctx, db, q); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	defer cancel()
	start := time.Now()
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("query stopped after console.query_timeout (%s)", c.cfg.QueryTimeout)
		}
		return nil, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	ctypes, _ := rows.ColumnTypes()
	res := &QueryResult{Columns: cols, Rows: [][]any{}}
	var size int64 // about the bytes of the JSON answer
	for _, ct := range ctypes {
		res.Types = append(res.Types, ct.DatabaseTypeName())
	}
	for rows.Next() {
		if len(res.Rows) >= c.cfg.MaxRows {
			res.Truncated = true
			break
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			vals[i] = jsonSafe(v)
			size += valueSize(vals[i])
		}
		if size > c.cfg.MaxResponseBytes {
			return nil, fmt.Errorf("%w: the answer passed console.max_response_bytes (%d bytes) at row %d; add a LIMIT, select fewer or shorter columns, or aggregate", ErrTooLarge, c.cfg.MaxResponseBytes, len(res.Rows)+1)
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("query stopped after console.query_timeout (%s)", c.cfg.QueryTimeout)
		}
		return nil, err
	}
	res.ElapsedMS = float64(time.Since(start).Microseconds()) / 1000
	return res, nil
}

// ErrTooLarge is returned for an answer over console.max_response_bytes.
var ErrTooLarge = errors.New("answer too large")

// valueSize is about the bytes of v in the JSON answer.
func valueSize(v any) int64 {
	switch x := v.(type) {
	case string:
		return int64(len(x)) + 3
	case []byte:
		return int64(len(x))*4/3 + 3
	case nil:
		return 5
	}
	return 24
}

// jsonSafe turns a DuckDB value into something JSON can carry.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case nil, bool, string, int64, int32, int16, int8, uint64, uint32, uint16, uint8, int:
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return x
	case float32:
		return jsonSafe(float64(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return string(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}
