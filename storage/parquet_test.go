package storage

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	_ "github.com/duckdb/duckdb-go/v2" // DuckDB reads the archive back
)

func sampleRows(n int, start int64, metrics ...string) []contract.Enriched {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	lat := 52.1
	rows := make([]contract.Enriched, n)
	for i := range rows {
		var m []contract.Field
		for k, name := range metrics {
			m = append(m, contract.Field{Name: name, Value: float64(i*10 + k)})
		}
		rows[i] = contract.Enriched{ID: fmt.Sprintf("r%d", start+int64(i)), DeviceID: fmt.Sprintf("d%d", i%3), TS: t0.Add(time.Duration(i) * time.Second),
			IngestedAt: t0.Add(time.Duration(i) * time.Second), Region: "eu", Site: "s1", Lat: &lat, Lon: &lat,
			Tags: []byte(`["a"]`), Attrs: []byte(`{"mode":"auto"}`), Metrics: m, Derived: []contract.Field{{Name: "temp.z", Value: 1.5}},
			Score: 0.1, Threshold: 0.8, Model: "baseline-v1", Partition: 0, Offset: start + int64(i)}
	}
	return rows
}

func duck(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Files with different metric sets read as one Hive-partitioned table in
// DuckDB, with NULL where a file lacks a metric.
func TestParquetReadByDuckDB(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, rows []contract.Enriched) {
		var buf bytes.Buffer
		if _, err := WriteParquet(&buf, rows); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, rel)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("enriched/region=eu/dt=2026-11-25/hr=12/vigil.enriched-0-0-99.parquet", sampleRows(100, 0, "temp", "rpm"))
	write("enriched/region=eu/dt=2026-11-25/hr=13/vigil.enriched-0-100-149.parquet", sampleRows(50, 100, "temp", "new.metric"))
	db := duck(t)
	var n, ids, nullRPM, newm int64
	var region, dt string
	var hr int64
	q := fmt.Sprintf(`SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE m_rpm IS NULL), count(m_new_metric), min(region), min(dt)::VARCHAR, max(hr)
		FROM read_parquet('%s/enriched/**/*.parquet', hive_partitioning = true, union_by_name = true)`, dir)
	if err := db.QueryRowContext(context.Background(), q).Scan(&n, &ids, &nullRPM, &newm, &region, &dt, &hr); err != nil {
		t.Fatal(err)
	}
	if n != 150 || ids != 150 || nullRPM != 50 || newm != 50 || region != "eu" || dt != "2026-11-25" || hr != 13 {
		t.Fatalf("duckdb read %d rows, %d ids, %d null rpm, %d new.metric, region %s dt %s hr %d", n, ids, nullRPM, newm, region, dt, hr)
	}
	var ts time.Time
	var z float64
	var attrs string
	if err := db.QueryRow(fmt.Sprintf(`SELECT ts, d_temp_z, attrs FROM read_parquet('%s/enriched/**/*.parquet', hive_partitioning = true, union_by_name = true) WHERE id = 'r1'`, dir)).Scan(&ts, &z, &attrs); err != nil {
		t.Fatal(err)
	}
	if !ts.Equal(time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)) || z != 1.5 || attrs != `{"mode":"auto"}` {
		t.Fatalf("row r1: ts %s z %g attrs %s", ts, z, attrs)
	}
}

func TestColumnNames(t *testing.T) {
	cs := newColumnSet()
	a := cs.col(cs.metric, "m_", "temp.c")
	b := cs.col(cs.metric, "m_", "temp_c")
	c := cs.col(cs.metric, "m_", "temp.c")
	if a != "m_temp_c" || b == a || c != a {
		t.Fatalf("column names: %q %q %q", a, b, c)
	}
	if got := cs.col(cs.metric, "m_", "id"); got != "m_id" {
		t.Fatalf("metric id: %q", got)
	}
}

// enrichedJSON renders a row as the pipeline writes it on Kafka.
func enrichedJSON(r contract.Enriched) []byte {
	obj := map[string]any{"id": r.ID, "device_id": r.DeviceID, "ts": r.TS, "ingested_at": r.IngestedAt, "region": r.Region,
		"site": r.Site, "score": r.Score, "threshold": r.Threshold, "model": r.Model, "lat": r.Lat, "lon": r.Lon}
	m, d := map[string]float64{}, map[string]float64{}
	for _, f := range r.Metrics {
		m[f.Name] = f.Value
	}
	for _, f := range r.Derived {
		d[f.Name] = f.Value
	}
	obj["metrics"], obj["derived"] = m, d
	if r.Attrs != nil {
		obj["attrs"] = jsontext.Value(r.Attrs)
	}
	if r.Tags != nil {
		obj["tags"] = jsontext.Value(r.Tags)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecodeEnrichedRoundTrip(t *testing.T) {
	for _, r := range sampleRows(3, 7, "temp", "rpm") {
		got, err := contract.DecodeEnriched(enrichedJSON(r))
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != r.ID || !got.TS.Equal(r.TS) || got.Site != "s1" || *got.Lat != *r.Lat || len(got.Metrics) != 2 || string(got.Attrs) != `{"mode":"auto"}` || string(got.Tags) != `["a"]` || got.Derived[0] != (contract.Field{Name: "temp.z", Value: 1.5}) {
			t.Fatalf("round trip: %+v vs %+v", got, r)
		}
	}
	for _, bad := range []string{`[]`, `{"id":"x"}`, `{"id":1}`, `{"id":"x","device_id":"d","ts":"nope","ingested_at":"2026-01-01T00:00:00Z"}`, `{"metrics":{"a":"b"}}`} {
		if _, err := contract.DecodeEnriched([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// A file of several row groups whose rows name their fields in changing
// orders, some missing, reads back value for value in DuckDB: the column
// writer path (rows handed over column by column, the previous row's
// field order tried first) puts every value in its column and row.
func TestParquetRowGroupsAndFieldOrder(t *testing.T) {
	const n = 2*rowGroupRows + 1234
	rows := sampleRows(n, 0, "a", "b", "c")
	for i := range rows {
		switch i % 7 {
		case 3: // another order
			m := rows[i].Metrics
			rows[i].Metrics = []contract.Field{m[2], m[0], m[1]}
		case 5: // a metric missing
			rows[i].Metrics = rows[i].Metrics[:2]
		}
		rows[i].Derived = []contract.Field{{Name: "a.z", Value: float64(i) / 8}, {Name: "b.z", Value: -float64(i)}}
		if i%11 == 0 {
			rows[i].Derived = rows[i].Derived[1:]
		}
	}
	var buf bytes.Buffer
	if _, err := WriteParquet(&buf, rows); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "f.parquet")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	db := duck(t)
	var groups int64
	if err := db.QueryRow(fmt.Sprintf(`SELECT count(DISTINCT row_group_id) FROM parquet_metadata('%s')`, p)).Scan(&groups); err != nil {
		t.Fatal(err)
	}
	if groups != 3 {
		t.Fatalf("%d row groups, want 3 (%d rows of at most %d)", groups, n, rowGroupRows)
	}
	res, err := db.Query(fmt.Sprintf(`SELECT id, kafka_offset, m_a, m_b, m_c, d_a_z, d_b_z FROM read_parquet('%s') ORDER BY kafka_offset`, p))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	i := 0
	for ; res.Next(); i++ {
		var id string
		var off int64
		var a, b, c, az, bz sql.NullFloat64
		if err := res.Scan(&id, &off, &a, &b, &c, &az, &bz); err != nil {
			t.Fatal(err)
		}
		var wantC, wantAZ sql.NullFloat64
		if i%7 != 5 {
			wantC = sql.NullFloat64{Float64: float64(i*10 + 2), Valid: true}
		}
		if i%11 != 0 {
			wantAZ = sql.NullFloat64{Float64: float64(i) / 8, Valid: true}
		}
		if id != fmt.Sprintf("r%d", i) || off != int64(i) || a.Float64 != float64(i*10) || b.Float64 != float64(i*10+1) || c != wantC || az != wantAZ || bz.Float64 != -float64(i) {
			t.Fatalf("row %d: id %s offset %d a %v b %v c %v a.z %v b.z %v", i, id, off, a, b, c, az, bz)
		}
	}
	if err := res.Err(); err != nil || i != n {
		t.Fatalf("read %d rows of %d: %v", i, n, err)
	}
}
