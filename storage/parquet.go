package storage

import (
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// EnrichedRow is one enriched record as the archive stores it, with the
// Kafka position it came from.
type EnrichedRow struct {
	ID          string             `json:"id"`
	DeviceID    string             `json:"device_id"`
	TS          time.Time          `json:"ts"`
	IngestedAt  time.Time          `json:"ingested_at"`
	Region      string             `json:"region"`
	Site        string             `json:"site"`
	DeviceModel string             `json:"device_model"`
	Lat         *float64           `json:"lat"`
	Lon         *float64           `json:"lon"`
	Tags        []string           `json:"tags"`
	DeviceAttrs map[string]string  `json:"device_attrs"`
	Metrics     map[string]float64 `json:"metrics"`
	Attrs       map[string]string  `json:"attrs"`
	Label       string             `json:"label"`
	Derived     map[string]float64 `json:"derived"`
	Score       float64            `json:"score"`
	Threshold   float64            `json:"threshold"`
	Model       string             `json:"model"`

	Partition int32 `json:"-"`
	Offset    int64 `json:"-"`
}

// DecodeEnriched parses an enriched record value. Fields it does not know
// are ignored, so a newer pipeline can add fields before the archive learns
// them.
func DecodeEnriched(b []byte) (EnrichedRow, error) {
	var r EnrichedRow
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("enriched record: %w", err)
	}
	if r.ID == "" || r.DeviceID == "" || r.TS.IsZero() || r.IngestedAt.IsZero() {
		return r, fmt.Errorf("enriched record lacks id, device_id, ts or ingested_at")
	}
	return r, nil
}

// Schema of the archive's Parquet files
//
// The contract fields are typed columns (strings, UTC microsecond
// timestamps, doubles). Every metric is its own nullable DOUBLE column
// "m_<name>" and every derived figure "d_<name>" (characters other than
// letters, digits and '_' become '_'; a name that then collides with
// another gets a short hash suffix). A file's schema is the union of the
// metrics of its rows; a metric first seen later simply appears as a new
// column in later files, and readers merge by name (DuckDB
// union_by_name=true, Spark mergeSchema, Trino's Hive connector by name),
// reading NULL where a file lacks it. Open-ended maps (attrs, device_attrs)
// and tags are JSON text columns. kafka_partition and kafka_offset say
// where each row came from. Pages are zstd-compressed.

type colKind int

const (
	kString colKind = iota
	kOptString
	kTime
	kDouble
	kOptDouble
	kInt32
	kInt64
)

type fixedCol struct {
	name string
	kind colKind
}

var fixedCols = []fixedCol{
	{"id", kString}, {"device_id", kString}, {"ts", kTime}, {"ingested_at", kTime}, {"region", kString},
	{"site", kOptString}, {"device_model", kOptString}, {"lat", kOptDouble}, {"lon", kOptDouble},
	{"tags", kOptString}, {"device_attrs", kOptString}, {"attrs", kOptString}, {"label", kOptString},
	{"score", kDouble}, {"threshold", kDouble}, {"model", kString},
	{"kafka_partition", kInt32}, {"kafka_offset", kInt64},
}

func nodeOf(k colKind) parquet.Node {
	switch k {
	case kString:
		return parquet.String()
	case kOptString:
		return parquet.Optional(parquet.String())
	case kTime:
		return parquet.TimestampAdjusted(parquet.Microsecond, true)
	case kDouble:
		return parquet.Leaf(parquet.DoubleType)
	case kOptDouble:
		return parquet.Optional(parquet.Leaf(parquet.DoubleType))
	case kInt32:
		return parquet.Int(32)
	default:
		return parquet.Int(64)
	}
}

// ColumnName turns a metric or derived name into its column name.
func ColumnName(prefix, name string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func shortHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// columnSet assigns column names to metric and derived names.
type columnSet struct {
	metric  map[string]string // metric name -> column
	derived map[string]string
	used    map[string]string // column -> source name
}

func newColumnSet() *columnSet {
	cs := &columnSet{metric: map[string]string{}, derived: map[string]string{}, used: map[string]string{}}
	for _, c := range fixedCols {
		cs.used[c.name] = c.name
	}
	return cs
}

func (cs *columnSet) col(m map[string]string, prefix, name string) string {
	if c, ok := m[name]; ok {
		return c
	}
	c := ColumnName(prefix, name)
	if src, taken := cs.used[c]; taken && src != prefix+name {
		c += "_" + shortHash(name)
	}
	cs.used[c] = prefix + name
	m[name] = c
	return c
}

// WriteParquet writes rows as one Parquet file to w and returns the number
// of bytes written.
func WriteParquet(w io.Writer, rows []EnrichedRow) (int64, error) {
	cs := newColumnSet()
	for i := range rows {
		for k := range rows[i].Metrics {
			cs.col(cs.metric, "m_", k)
		}
		for k := range rows[i].Derived {
			cs.col(cs.derived, "d_", k)
		}
	}
	group := parquet.Group{}
	for _, c := range fixedCols {
		group[c.name] = nodeOf(c.kind)
	}
	for _, c := range cs.metric {
		group[c] = nodeOf(kOptDouble)
	}
	for _, c := range cs.derived {
		group[c] = nodeOf(kOptDouble)
	}
	schema := parquet.NewSchema("enriched", group)
	index := map[string]int{}
	for i, path := range schema.Columns() {
		index[path[0]] = i
	}
	ncols := len(schema.Columns())
	cw := &countWriter{w: w}
	pw := parquet.NewWriter(cw, schema, parquet.Compression(&zstd.Codec{Level: zstd.SpeedDefault}), parquet.MaxRowsPerRowGroup(256_000))
	// metric and derived columns of a row, by index, reused across rows
	dyn := make([]float64, ncols)
	has := make([]bool, ncols)
	batch := make([]parquet.Row, 0, 1024)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if _, err := pw.WriteRows(batch); err != nil {
			return fmt.Errorf("write parquet rows: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	for i := range rows {
		r := &rows[i]
		for j := range has {
			has[j] = false
		}
		for k, v := range r.Metrics {
			j := index[cs.metric[k]]
			dyn[j], has[j] = v, true
		}
		for k, v := range r.Derived {
			j := index[cs.derived[k]]
			dyn[j], has[j] = v, true
		}
		row := make(parquet.Row, ncols)
		for j, path := range schema.Columns() {
			row[j] = fixedValue(r, path[0], j, dyn[j], has[j])
		}
		batch = append(batch, row)
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return cw.n, err
			}
		}
	}
	if err := flush(); err != nil {
		return cw.n, err
	}
	if err := pw.Close(); err != nil {
		return cw.n, fmt.Errorf("close parquet writer: %w", err)
	}
	return cw.n, nil
}

func optString(s string, j int) parquet.Value {
	if s == "" {
		return parquet.NullValue().Level(0, 0, j)
	}
	return parquet.ByteArrayValue([]byte(s)).Level(0, 1, j)
}

func jsonText(v any, empty bool, j int) parquet.Value {
	if empty {
		return parquet.NullValue().Level(0, 0, j)
	}
	b, err := json.Marshal(v, json.Deterministic(true))
	if err != nil {
		return parquet.NullValue().Level(0, 0, j)
	}
	return parquet.ByteArrayValue(b).Level(0, 1, j)
}

func optDouble(p *float64, j int) parquet.Value {
	if p == nil {
		return parquet.NullValue().Level(0, 0, j)
	}
	return parquet.DoubleValue(*p).Level(0, 1, j)
}

func fixedValue(r *EnrichedRow, col string, j int, dyn float64, has bool) parquet.Value {
	switch col {
	case "id":
		return parquet.ByteArrayValue([]byte(r.ID)).Level(0, 0, j)
	case "device_id":
		return parquet.ByteArrayValue([]byte(r.DeviceID)).Level(0, 0, j)
	case "ts":
		return parquet.Int64Value(r.TS.UnixMicro()).Level(0, 0, j)
	case "ingested_at":
		return parquet.Int64Value(r.IngestedAt.UnixMicro()).Level(0, 0, j)
	case "region":
		return parquet.ByteArrayValue([]byte(r.Region)).Level(0, 0, j)
	case "site":
		return optString(r.Site, j)
	case "device_model":
		return optString(r.DeviceModel, j)
	case "lat":
		return optDouble(r.Lat, j)
	case "lon":
		return optDouble(r.Lon, j)
	case "tags":
		return jsonText(r.Tags, len(r.Tags) == 0, j)
	case "device_attrs":
		return jsonText(r.DeviceAttrs, len(r.DeviceAttrs) == 0, j)
	case "attrs":
		return jsonText(r.Attrs, len(r.Attrs) == 0, j)
	case "label":
		return optString(r.Label, j)
	case "score":
		return parquet.DoubleValue(r.Score).Level(0, 0, j)
	case "threshold":
		return parquet.DoubleValue(r.Threshold).Level(0, 0, j)
	case "model":
		return parquet.ByteArrayValue([]byte(r.Model)).Level(0, 0, j)
	case "kafka_partition":
		return parquet.Int32Value(r.Partition).Level(0, 0, j)
	case "kafka_offset":
		return parquet.Int64Value(r.Offset).Level(0, 0, j)
	}
	if has {
		return parquet.DoubleValue(dyn).Level(0, 1, j)
	}
	return parquet.NullValue().Level(0, 0, j)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
