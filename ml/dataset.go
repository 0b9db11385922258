package ml

import (
	"github.com/vigil/vigil/contract"

	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/parquet-go/parquet-go"
	"go.uber.org/zap"

	"github.com/vigil/vigil/storage"
)

// Dataset is the feature matrix the trainer reads from the archive.
type Dataset struct {
	Features Features
	X        [][]float64
	// Label per row: -1 unknown, 0 normal, 1 anomaly (from the readings'
	// label field, overridden by operator feedback under labels/).
	Label []int8
	TS    []time.Time
	Stats DataStats
}

// DataStats describes what a training run read.
type DataStats struct {
	Objects     int       `json:"objects"`
	Bytes       int64     `json:"bytes"`
	RowsRead    int64     `json:"rows_read"`
	Rows        int       `json:"rows_used"`
	Labelled    int       `json:"labelled"`
	Anomalies   int       `json:"anomalies"`
	Feedback    int       `json:"feedback_labels"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	Regions     []string  `json:"regions"`
	LastOffsets string    `json:"-"`
}

// LoadOptions say how much of the archive to read.
type LoadOptions struct {
	// Fraction of the archive's objects to read (by a hash of the key), 0..1.
	Fraction float64
	// MaxRows keeps a uniform sample of at most this many rows.
	MaxRows int
	// MaxMetrics keeps the most frequent metrics (columns) only.
	MaxMetrics int
	// Buckets is the width of the attrs one-hot (0 when no row has attrs).
	Buckets int
	// Progress is how often progress is logged.
	Progress time.Duration
	Log      *zap.Logger
	Seed     uint64
}

// rawRow is a row before the metric set is chosen.
type rawRow struct {
	ts    time.Time
	label int8
	id    string
	vals  map[int][perMetric]float64 // by metric index
	dt    [2]float64
	attrs []string // "name=value"
}

// LoadArchive reads the enriched archive of every region from the store:
// each object is streamed to a temporary file (Parquet needs random
// access) and read row group by row group, then deleted. Progress (objects,
// megabytes, rows per second) is logged every opt.Progress.
func LoadArchive(ctx context.Context, st storage.Store, opt LoadOptions) (*Dataset, error) {
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	objs, err := st.List(ctx, contract.ArchivePrefix)
	if err != nil {
		return nil, fmt.Errorf("list the archive (%s%s): %w", st, contract.ArchivePrefix, err)
	}
	var picked []storage.ObjectInfo
	var total int64
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, ".parquet") {
			continue
		}
		if opt.Fraction < 1 {
			h := fnv.New64a()
			_, _ = h.Write([]byte(o.Key))
			if float64(h.Sum64()%10000)/10000 >= opt.Fraction {
				continue
			}
		}
		picked = append(picked, o)
		total += o.Size
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("the archive %s%s holds no Parquet objects to train on (%d objects listed); wait for the archiver to flush (archive.flush_interval)", st, contract.ArchivePrefix, len(objs))
	}
	feedback, nfb, err := loadFeedback(ctx, st)
	if err != nil {
		return nil, err
	}
	l := &loader{opt: opt, metricIdx: map[string]int{}, rng: rand.New(rand.NewPCG(opt.Seed, 7)), feedback: feedback, regions: map[string]bool{}}
	start, lastLog := time.Now(), time.Now()
	var read int64
	for i, o := range picked {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.object(ctx, st, o); err != nil {
			return nil, err
		}
		read += o.Size
		if opt.Progress > 0 && time.Since(lastLog) >= opt.Progress || i == len(picked)-1 {
			lastLog = time.Now()
			el := time.Since(start).Seconds()
			log.Info("training data read",
				zap.Int("objects", i+1), zap.Int("of_objects", len(picked)),
				zap.Float64("mb", float64(read)/1e6), zap.Float64("of_mb", float64(total)/1e6),
				zap.Int64("rows", l.seen), zap.Float64("rows_per_s", float64(l.seen)/max(el, 1e-3)))
		}
	}
	ds := l.finish()
	ds.Stats.Objects, ds.Stats.Bytes, ds.Stats.Feedback = len(picked), read, nfb
	if len(ds.X) == 0 {
		return nil, errors.New("the archive's objects hold no rows")
	}
	return ds, nil
}

// loadFeedback reads operators' verdicts (labels/<region>/<alert>.json):
// message id -> 0 normal / 1 anomaly.
func loadFeedback(ctx context.Context, st storage.Store) (map[string]int8, int, error) {
	objs, err := st.List(ctx, contract.LabelsPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("list operator labels ("+contract.LabelsPrefix+"): %w", err)
	}
	out := map[string]int8{}
	for _, o := range objs {
		rc, _, err := st.Get(ctx, o.Key)
		if err != nil {
			continue // deleted since listed
		}
		b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
		rc.Close()
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", o.Key, err)
		}
		var fb contract.Verdict
		if json.Unmarshal(b, &fb, json.RejectUnknownMembers(false)) != nil || fb.MessageID == "" {
			continue
		}
		switch fb.Label {
		case contract.VerdictAnomaly:
			out[fb.MessageID] = 1
		case contract.VerdictNormal:
			out[fb.MessageID] = 0
		}
	}
	return out, len(out), nil
}

type loader struct {
	opt       LoadOptions
	metricIdx map[string]int
	metricN   []int
	rows      []rawRow
	seen      int64
	rng       *rand.Rand
	feedback  map[string]int8
	anyAttrs  bool
	regions   map[string]bool
	from, to  time.Time
}

// What an archive column feeds.
type colKind int

const (
	colSkip colKind = iota
	colMetric
	colDerived
	colDtS
	colDtZ
	colTS
	colLabel
	colID
	colAttrs
	colRegion
)

// colRole says what an archive column feeds.
type colRole struct {
	kind   colKind
	metric int
	off    int // the feature's place in the metric's block: featureSuffixes
}

// featureSuffixes are the per-metric features, in vector order: the value
// ("") and three of the pipeline's derived figures (contract.MetricSuffixes).
var featureSuffixes = [perMetric]string{"", contract.SuffixDelta, contract.SuffixZ, contract.SuffixVol}

func (l *loader) metric(col string) int {
	i, ok := l.metricIdx[col]
	if !ok {
		i = len(l.metricN)
		l.metricIdx[col] = i
		l.metricN = append(l.metricN, 0)
	}
	return i
}

// roles maps the file's leaf columns to what they feed. Derived columns
// are d_<metric>_delta/_z/_vol; their metric is the m_ column of the same
// file whose name they extend.
func (l *loader) roles(schema *parquet.Schema) []colRole {
	cols := schema.Columns()
	// the archive's column of each figure the vectors use
	byName := map[string]colRole{
		"ts": {kind: colTS}, "label": {kind: colLabel}, "id": {kind: colID}, "attrs": {kind: colAttrs}, "region": {kind: colRegion},
		storage.ColumnName("d_", contract.DtS): {kind: colDtS},
		storage.ColumnName("d_", contract.DtZ): {kind: colDtZ},
	}
	for _, c := range cols {
		if len(c) != 1 || !strings.HasPrefix(c[0], "m_") {
			continue
		}
		mcol := c[0]
		byName[mcol] = colRole{kind: colMetric, metric: l.metric(mcol)}
		for off, suf := range featureSuffixes[1:] {
			// mcol[2:] is already a column-safe name: ColumnName of it plus
			// the suffix is the derived figure's column
			byName[storage.ColumnName("d_", mcol[2:]+suf)] = colRole{kind: colDerived, metric: l.metric(mcol), off: off + 1}
		}
	}
	out := make([]colRole, len(cols))
	for i, c := range cols {
		if len(c) == 1 {
			out[i] = byName[c[0]]
		}
	}
	return out
}

func (l *loader) object(ctx context.Context, st storage.Store, o storage.ObjectInfo) error {
	rc, _, err := st.Get(ctx, o.Key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // removed since listed
	}
	if err != nil {
		return fmt.Errorf("read archive object %s: %w", o.Key, err)
	}
	tmp, err := os.CreateTemp("", "vigil-train-*.parquet")
	if err != nil {
		rc.Close()
		return fmt.Errorf("make a temporary file for %s: %w", o.Key, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("download archive object %s: %w", o.Key, err)
	}
	f, err := parquet.OpenFile(tmp, n)
	if err != nil {
		return fmt.Errorf("archive object %s is not readable Parquet: %w", o.Key, err)
	}
	roles := l.roles(f.Schema())
	buf := make([]parquet.Row, 256)
	for _, rg := range f.RowGroups() {
		rows := rg.Rows()
		for {
			k, err := rows.ReadRows(buf)
			for _, row := range buf[:k] {
				l.add(row, roles)
			}
			if errors.Is(err, io.EOF) || k == 0 && err == nil {
				break
			}
			if err != nil {
				rows.Close()
				return fmt.Errorf("read rows of %s: %w", o.Key, err)
			}
		}
		rows.Close()
	}
	return nil
}

func (l *loader) add(row parquet.Row, roles []colRole) {
	r := rawRow{label: -1, vals: map[int][perMetric]float64{}}
	for _, v := range row {
		c := v.Column()
		if c < 0 || c >= len(roles) || v.IsNull() {
			continue
		}
		role := roles[c]
		switch role.kind {
		case colMetric, colDerived:
			a := r.vals[role.metric]
			a[role.off] = v.Double()
			r.vals[role.metric] = a
		case colDtS:
			r.dt[0] = v.Double()
		case colDtZ:
			r.dt[1] = v.Double()
		case colTS:
			r.ts = time.UnixMicro(v.Int64()).UTC()
		case colLabel:
			switch string(v.ByteArray()) {
			case contract.VerdictAnomaly:
				r.label = 1
			case contract.VerdictNormal:
				r.label = 0
			}
		case colID:
			r.id = string(v.ByteArray())
		case colAttrs:
			var m map[string]string
			if json.Unmarshal(v.ByteArray(), &m) == nil {
				for k, val := range m {
					r.attrs = append(r.attrs, k+"="+val)
				}
			}
		case colRegion:
			l.regions[string(v.ByteArray())] = true
		}
	}
	if fb, ok := l.feedback[r.id]; ok {
		r.label = fb
	}
	r.id = ""
	if len(r.attrs) > 0 {
		l.anyAttrs = true
	}
	if l.from.IsZero() || r.ts.Before(l.from) {
		l.from = r.ts
	}
	if r.ts.After(l.to) {
		l.to = r.ts
	}
	l.seen++
	for m := range r.vals {
		l.metricN[m]++
	}
	// reservoir sample of MaxRows rows
	if l.opt.MaxRows <= 0 || len(l.rows) < l.opt.MaxRows {
		l.rows = append(l.rows, r)
	} else if j := l.rng.Int64N(l.seen); j < int64(l.opt.MaxRows) {
		l.rows[j] = r
	}
}

// finish picks the metrics and builds the matrix, in event-time order.
func (l *loader) finish() *Dataset {
	type mc struct {
		name string
		idx  int
		n    int
	}
	var ms []mc
	for name, i := range l.metricIdx {
		ms = append(ms, mc{name, i, l.metricN[i]})
	}
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].n != ms[j].n {
			return ms[i].n > ms[j].n
		}
		return ms[i].name < ms[j].name
	})
	if l.opt.MaxMetrics > 0 && len(ms) > l.opt.MaxMetrics {
		ms = ms[:l.opt.MaxMetrics]
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	f := Features{}
	for _, m := range ms {
		f.Metrics = append(f.Metrics, m.name)
	}
	if l.anyAttrs {
		f.Buckets = l.opt.Buckets
	}
	sort.SliceStable(l.rows, func(i, j int) bool { return l.rows[i].ts.Before(l.rows[j].ts) })
	ds := &Dataset{Features: f, X: make([][]float64, len(l.rows)), Label: make([]int8, len(l.rows)), TS: make([]time.Time, len(l.rows))}
	w := f.Width()
	flat := make([]float64, w*len(l.rows))
	for i, r := range l.rows {
		x := flat[i*w : (i+1)*w : (i+1)*w]
		for j, m := range ms {
			if v, ok := r.vals[m.idx]; ok {
				copy(x[j*perMetric:], v[:])
			}
		}
		b := len(ms) * perMetric
		x[b], x[b+1] = r.dt[0], r.dt[1]
		if f.Buckets > 0 {
			for _, a := range r.attrs {
				k := strings.IndexByte(a, '=')
				x[b+2+attrSlot(a[:k], a[k+1:], f.Buckets)] = 1
			}
		}
		ds.X[i], ds.Label[i], ds.TS[i] = x, r.label, r.ts
		if r.label >= 0 {
			ds.Stats.Labelled++
			if r.label == 1 {
				ds.Stats.Anomalies++
			}
		}
	}
	ds.Stats.RowsRead, ds.Stats.Rows, ds.Stats.From, ds.Stats.To = l.seen, len(ds.X), l.from, l.to
	for r := range l.regions {
		ds.Stats.Regions = append(ds.Stats.Regions, r)
	}
	sort.Strings(ds.Stats.Regions)
	return ds
}
