package console

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vigil/vigil/contract"
)

// historyCacheBytes bounds the archive objects kept on disk for device
// history (they never change, so a kept copy is always right).
const historyCacheBytes = 512 << 20

var historyMu sync.Mutex // one history query at a time: each opens a DuckDB

// DeviceHistory reads one device's archived readings with event time in
// [from, to) straight from the archive objects of those hours, through an
// embedded DuckDB, oldest first. Each row is shaped as the enriched topic's
// JSON: metrics and derived figures as objects (archive column names:
// characters other than letters, digits and _ read as _). It reads at most
// console.max_load_objects objects and max_load_bytes, newest first, and
// says so in capped.
func (c *Console) DeviceHistory(ctx context.Context, device string, from, to time.Time) (rows []map[string]any, capped string, err error) {
	if !contract.ValidName(device) {
		return nil, "", fmt.Errorf("device id %q is not valid", device)
	}
	objs, err := c.store.List(ctx, contract.ArchivePrefix)
	if err != nil {
		return nil, "", fmt.Errorf("list the archive in %s: %w", c.store, err)
	}
	// the hour of an object is its rows' ingested_at: take an hour of slack
	// each side for devices that post late or buffer
	var keys []string
	var total int64
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key > objs[j].Key })
	for _, o := range objs {
		k, err := contract.ParseArchiveKey(o.Key)
		if err != nil || k.Hour.Add(2*time.Hour).Before(from) || k.Hour.After(to.Add(time.Hour)) {
			continue
		}
		if len(keys) >= c.cfg.MaxLoadObjects || total+o.Size > c.cfg.MaxLoadBytes {
			capped = fmt.Sprintf("read the newest %d archive objects (%d bytes; console.max_load_objects, max_load_bytes); narrow the range for older data", len(keys), total)
			break
		}
		keys = append(keys, o.Key)
		total += o.Size
	}
	if len(keys) == 0 {
		return []map[string]any{}, capped, nil
	}
	historyMu.Lock()
	defer historyMu.Unlock()
	files, err := c.cached(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, "", err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{fmt.Sprintf(`SET memory_limit = '%dB'`, c.cfg.MemoryLimit), fmt.Sprintf(`SET threads = %d`, c.cfg.Threads)} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, "", fmt.Errorf("configure DuckDB (%s): %w", q, err)
		}
	}
	list := make([]string, len(files))
	for i, f := range files {
		list[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	q := fmt.Sprintf(`SELECT * FROM read_parquet([%s], union_by_name = true) WHERE device_id = ? AND ts >= ? AND ts < ? ORDER BY ts`, strings.Join(list, ","))
	res, err := db.QueryContext(ctx, q, device, from.UTC(), to.UTC())
	if err != nil {
		return nil, "", fmt.Errorf("query the archive: %w", err)
	}
	defer res.Close()
	cols, err := res.Columns()
	if err != nil {
		return nil, "", err
	}
	rows = []map[string]any{}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for res.Next() {
		if err := res.Scan(ptrs...); err != nil {
			return nil, "", err
		}
		row := map[string]any{}
		metrics, derived := map[string]any{}, map[string]any{}
		for i, col := range cols {
			v := jsonSafe(vals[i])
			if v == nil {
				continue
			}
			if t, ok := v.(time.Time); ok {
				v = t.UTC().Format(time.RFC3339Nano)
			}
			switch {
			case strings.HasPrefix(col, "m_"):
				metrics[col[2:]] = v
			case strings.HasPrefix(col, "d_"):
				derived[col[2:]] = v
			default:
				row[col] = v
			}
		}
		row["metrics"], row["derived"] = metrics, derived
		rows = append(rows, row)
	}
	return rows, capped, res.Err()
}

// cached returns local copies of the archive objects, downloading those
// not kept yet, and trims the cache to historyCacheBytes, oldest first.
func (c *Console) cached(ctx context.Context, keys []string) ([]string, error) {
	dir := filepath.Join(c.dir, "archive-cache")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	var files []string
	for _, k := range keys {
		sum := sha256.Sum256([]byte(k))
		p := filepath.Join(dir, hex.EncodeToString(sum[:12])+".parquet")
		keep[p] = true
		files = append(files, p)
		if _, err := os.Stat(p); err == nil {
			now := time.Now()
			_ = os.Chtimes(p, now, now)
			continue
		}
		tmp := p + ".part"
		if _, err := c.download(ctx, k, tmp); err != nil {
			os.Remove(tmp)
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
	}
	ents, _ := os.ReadDir(dir)
	type f struct {
		p    string
		size int64
		mod  time.Time
	}
	var all []f
	var total int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			all = append(all, f{filepath.Join(dir, e.Name()), info.Size(), info.ModTime()})
			total += info.Size()
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod.Before(all[j].mod) })
	for _, x := range all {
		if total <= historyCacheBytes {
			break
		}
		if !keep[x.p] {
			os.Remove(x.p)
			total -= x.size
		}
	}
	return files, nil
}
