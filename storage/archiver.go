package storage

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/internal/promread"
	"slices"

	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// ArchiverOptions are the archiver's dependencies.
type ArchiverOptions struct {
	Topic      string // the enriched topic
	ClientOpts []kgo.Opt
	Store      Store
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
}

// Archiver is the Flume role: a consumer group on the enriched topic that
// writes large Parquet objects to the store, named by the Kafka offsets
// they hold and written create-only, and commits offsets only after the
// object is stored. See the README for the recovery argument.
type Archiver struct {
	o   ArchiverOptions
	cfg ArchiveConfig
	log *zap.Logger
	m   *archiveMetrics

	mu    sync.Mutex // held while a partition's file is written; the revoke callback takes it
	parts map[int32]*archPart
	cl    *kgo.Client
	up    bool
	dec   contract.EnrichedDecoder
	row   contract.Enriched // the record being added (its arrays reused)

	trimEvery time.Duration // how often archived records are dropped from the broker

	// inbox holds what this process's stream committed to the enriched
	// topic (see Offer); wake ends the poll in progress when some arrives
	inbox  chan []bus.Committed
	wakeMu sync.Mutex
	wake   context.CancelFunc
	// handoffIdle is how long a fed partition goes without a handoff
	// before its fetch resumes
	handoffIdle time.Duration
}

// handoffIdle is how long a partition taken from the stream's handoffs
// (archPart.fed) waits for the next one before fetching again: another
// process's stream may write to it now.
const handoffIdle = 2 * time.Second

// file is one Parquet file of a partition: open (rows are encoded into
// buf as they arrive) or closed and waiting for the store.
type file struct {
	buf         *chunkBuf
	fw          *FileWriter
	encodeErr   error
	rows        int
	region      string
	bucket      time.Time
	first       int64
	last        int64
	maxIngest   time.Time
	leaderEpoch int32
}

// maxFileMetrics bounds the metrics (8 columns each) a file's schema holds.
const maxFileMetrics = 256

// newFile opens a file whose schema has a column for each metric of
// metrics (the partition's recent union, see archPart.schema) and for
// each figure the pipeline may derive from them.
func newFile(row *contract.Enriched, metrics []string, bucket time.Time, offset int64, epoch int32) *file {
	derived := []string{contract.DtS, contract.DtZ, contract.Multivariate}
	for _, m := range metrics {
		for _, suf := range contract.MetricSuffixes {
			derived = append(derived, m+suf)
		}
	}
	for _, d := range row.Derived {
		derived = append(derived, d.Name)
	}
	buf := &chunkBuf{}
	return &file{buf: buf, fw: NewFileWriter(buf, slices.Clone(metrics), dedupe(derived)), region: row.Region, bucket: bucket, first: offset, leaderEpoch: epoch}
}

func dedupe(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := names[:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// schema is the metric set of a new file that starts with row: the
// partition's union with row's metrics added, started over from row's
// when it would pass maxFileMetrics.
func (ap *archPart) schema(row *contract.Enriched) []string {
	for _, m := range row.Metrics {
		if !slices.Contains(ap.metrics, m.Name) {
			ap.metrics = append(ap.metrics, m.Name)
		}
	}
	if len(ap.metrics) > maxFileMetrics {
		ap.metrics = ap.metrics[:0]
		for _, m := range row.Metrics {
			ap.metrics = append(ap.metrics, m.Name)
		}
	}
	return ap.metrics
}

// archPart is the archiver's state for one partition.
type archPart struct {
	p        int32
	open     *file
	bytes    int64
	openedAt time.Time
	pending  []*file // closed files waiting for the store, oldest first
	// metrics is the union of the metric names of the partition's recent
	// rows: a new file's schema starts from it, so devices that send
	// different metric sets into one partition roll a file only when a
	// name is new, not at every switch.
	metrics   []string
	needProbe bool
	skipUntil int64
	retryAt   time.Time
	backoff   time.Duration
	paused    bool
	archived  []archivedMark // for deleting archived records from the broker
	// next is the offset after the last record taken (-1 before the
	// first): the fetch and the stream's handoff may both bring a record,
	// and the second is dropped.
	next int64
	// fed: the partition's records come from this process's stream (see
	// Archiver.Offer) and its fetch is paused; fedAt is the last handoff
	fed   bool
	fedAt time.Time
}

type archivedMark struct {
	next      int64
	maxIngest time.Time
}

type archiveMetrics struct {
	files, rows, bytes, failures, skipped prometheus.Counter
	put                                   prometheus.Histogram
	up                                    prometheus.Gauge
	pendingRows                           prometheus.Gauge
	handed, refused                       prometheus.Counter
}

// ArchiveStats are the archiver's figures for the status page.
type ArchiveStats struct {
	Rows    float64 // rows stored in Parquet objects
	Pending float64 // rows held in memory, not yet stored
	StoreUp bool    // the object store accepts writes
}

// Stats reads the archiver's figures.
func (a *Archiver) Stats() ArchiveStats {
	return ArchiveStats{Rows: promread.Value(a.m.rows), Pending: promread.Value(a.m.pendingRows), StoreUp: promread.Value(a.m.up) == 1}
}

// NewArchiver builds an archiver; Run starts it.
func NewArchiver(cfg ArchiveConfig, o ArchiverOptions) (*Archiver, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	m := &archiveMetrics{
		files:       prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_files_total", Help: "Parquet objects stored."}),
		rows:        prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_rows_total", Help: "Rows stored in Parquet objects."}),
		bytes:       prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_bytes_total", Help: "Bytes of Parquet stored."}),
		failures:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_store_failures_total", Help: "Failed object writes (retried with backoff)."}),
		skipped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_already_stored_total", Help: "Files found already in the bucket at recovery and skipped."}),
		put:         prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_archive_put_seconds", Help: "Time to store one object (rows are encoded as they arrive).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		up:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_archive_store_up", Help: "1 while the object store accepts writes, 0 during an outage."}),
		pendingRows: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_archive_pending_rows", Help: "Rows held in memory, not yet stored."}),
		handed: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_handoff_records_total",
			Help: "Enriched records taken from this process's stream as it committed them, without fetching them back."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_archive_handoff_refused_total",
			Help: "Handed-off runs of records that did not continue what the archiver had read (another writer's records between, or a gap); those records are fetched."}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{m.files, m.rows, m.bytes, m.failures, m.skipped, m.put, m.up, m.pendingRows, m.handed, m.refused} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register archive metrics: %w", err)
			}
		}
	}
	m.up.Set(1)
	return &Archiver{o: o, cfg: cfg, log: o.Logger, m: m, parts: map[int32]*archPart{}, up: true, trimEvery: time.Minute,
		inbox: make(chan []bus.Committed, 16), handoffIdle: handoffIdle}, nil
}

func (a *Archiver) revoked(_ context.Context, cl *kgo.Client, m map[string][]int32) {
	a.mu.Lock() // waits for a write in progress: the new owner never races us
	defer a.mu.Unlock()
	var resume []int32
	for _, p := range m[a.o.Topic] {
		if ap := a.parts[p]; ap != nil {
			if n := ap.rowCount(); n > 0 {
				a.log.Info("partition revoked; its unstored rows are left to the new owner", zap.Int32("partition", p), zap.Int("rows", n))
			}
			if ap.paused || ap.fed {
				resume = append(resume, p)
			}
		}
		delete(a.parts, p)
	}
	if len(resume) > 0 {
		// a pause outlives the assignment: given the partition back
		// later, the client would never fetch it
		cl.ResumeFetchPartitions(map[string][]int32{a.o.Topic: resume})
	}
}

func (ap *archPart) rowCount() int {
	n := 0
	if ap.open != nil {
		n += ap.open.rows
	}
	for _, f := range ap.pending {
		n += f.rows
	}
	return n
}

// Run archives until ctx ends, then stores what it holds (within 30 s) and commits.
func (a *Archiver) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(bus.With(a.o.ClientOpts,
		kgo.ConsumerGroup(a.cfg.Group),
		kgo.ConsumeTopics(a.o.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(a.revoked),
		kgo.OnPartitionsLost(a.revoked),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("archiver consumer: %w", err)
	}
	a.cl = cl
	defer cl.Close()
	lastTrim := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		a.wakeMu.Lock()
		a.wake = cancel
		if len(a.inbox) > 0 {
			cancel() // a handoff is waiting: take what is buffered and go on
		}
		a.wakeMu.Unlock()
		fetches := cl.PollRecords(pctx, 20000)
		a.wakeMu.Lock()
		a.wake = nil
		a.wakeMu.Unlock()
		cancel()
		if ctx.Err() != nil {
			a.shutdown()
			cl.AllowRebalance() // Close waits for an allowed rebalance to leave the group
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				a.log.Warn("archiver fetch failed; the client retries", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		a.mu.Lock()
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			ap := a.parts[fp.Partition]
			if ap == nil {
				ap = &archPart{p: fp.Partition, needProbe: true, next: -1}
				a.parts[fp.Partition] = ap
			}
			for _, rec := range fp.Records {
				a.add(ctx, ap, rec)
			}
		})
		a.takeHandoffs(ctx)
		now := time.Now()
		pending := 0
		for _, ap := range a.parts {
			if ap.fed && now.Sub(ap.fedAt) >= a.handoffIdle {
				a.unfeed(ap)
			}
			if ap.open != nil && now.Sub(ap.openedAt) >= a.cfg.FlushInterval {
				ap.closeOpen()
			}
			a.storePending(ctx, ap, false)
			pending += ap.rowCount()
		}
		a.m.pendingRows.Set(float64(pending))
		a.mu.Unlock()
		cl.AllowRebalance()
		if time.Since(lastTrim) > a.trimEvery {
			a.trimBroker(ctx)
			lastTrim = time.Now()
		}
	}
}

// add appends one record to its partition's open file, closing files on
// the deterministic boundaries: row count, bytes, ingested_at interval,
// region.
func (a *Archiver) add(ctx context.Context, ap *archPart, rec *kgo.Record) {
	if rec.Offset < ap.next {
		return // taken already, from the other of fetch and handoff
	}
	ap.next = rec.Offset + 1
	if rec.Offset < ap.skipUntil {
		return
	}
	row := &a.row
	if err := a.dec.DecodeInto(rec.Value, row); err != nil {
		a.log.Error("enriched record cannot be archived; skipping it", zap.Int32("partition", rec.Partition), zap.Int64("offset", rec.Offset), zap.Error(err))
		return
	}
	row.Partition, row.Offset = rec.Partition, rec.Offset
	bucket := row.IngestedAt.UTC().Truncate(a.cfg.RollInterval)
	if ap.needProbe && ap.open == nil {
		// Recovery: was a file starting here stored before the offsets were
		// committed (a crash between the two)? Its name says where it ends.
		prefix := contract.ArchiveKey{Region: row.Region, Hour: bucket, Topic: a.o.Topic, Partition: ap.p, First: rec.Offset}.Prefix()
		objs, err := a.listRetry(ctx, prefix)
		if err == nil && len(objs) > 0 {
			if k, err := contract.ParseArchiveKey(objs[0].Key); err == nil && k.Last >= rec.Offset {
				last := k.Last
				a.log.Info("file already in the bucket; resuming after it", zap.String("key", objs[0].Key))
				a.m.skipped.Inc()
				ap.skipUntil = last + 1
				a.commit(ctx, ap.p, last+1, rec.LeaderEpoch)
				return
			}
		}
		ap.needProbe = false
	}
	if f := ap.open; f != nil && (!f.bucket.Equal(bucket) || f.region != row.Region || !f.fw.Fits(row)) {
		ap.closeOpen()
	}
	if ap.open == nil {
		ap.open = newFile(row, ap.schema(row), bucket, rec.Offset, rec.LeaderEpoch)
		ap.bytes = 0
		ap.openedAt = time.Now()
	}
	f := ap.open
	if err := f.fw.Write(row); err != nil && f.encodeErr == nil {
		f.encodeErr = err
	}
	f.rows++
	f.last = rec.Offset
	f.leaderEpoch = rec.LeaderEpoch
	if row.IngestedAt.After(f.maxIngest) {
		f.maxIngest = row.IngestedAt
	}
	ap.bytes += int64(len(rec.Value))
	if f.rows >= a.cfg.MaxRecords || ap.bytes >= a.cfg.MaxBytes {
		ap.closeOpen()
		a.storePending(ctx, ap, false)
	}
}

func (ap *archPart) closeOpen() {
	f := ap.open
	if f == nil {
		return
	}
	if _, err := f.fw.Close(); err != nil && f.encodeErr == nil {
		f.encodeErr = err
	}
	f.fw = nil
	ap.pending = append(ap.pending, f)
	ap.open = nil
}

func (a *Archiver) listRetry(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	backoff := 200 * time.Millisecond
	for {
		objs, err := a.o.Store.List(ctx, prefix)
		if err == nil || ctx.Err() != nil {
			return objs, err
		}
		a.log.Warn("object store unreachable while checking for stored files; retrying", zap.String("store", a.o.Store.String()), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// storePending writes the partition's closed files in order; on a store
// failure it pauses the partition and retries after a backoff. force
// ignores the backoff (shutdown).
func (a *Archiver) storePending(ctx context.Context, ap *archPart, force bool) {
	for len(ap.pending) > 0 {
		if !force && time.Now().Before(ap.retryAt) {
			return
		}
		f := ap.pending[0]
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		err := a.store(wctx, ap.p, f)
		cancel()
		if err != nil {
			a.m.failures.Inc()
			ap.backoff = min(max(2*ap.backoff, 500*time.Millisecond), a.cfg.MaxBackoff)
			ap.retryAt = time.Now().Add(ap.backoff)
			if !ap.paused {
				a.cl.PauseFetchPartitions(map[string][]int32{a.o.Topic: {ap.p}})
				ap.paused = true
			}
			if ap.fed {
				a.unfeed(ap) // the fetch takes over where the handoffs stopped, once resumed
			}
			if a.up {
				a.up = false
				a.m.up.Set(0)
			}
			a.log.Error("archive write failed; partition paused, offsets not committed, retrying; ingest and alerting go on",
				zap.String("store", a.o.Store.String()), zap.Int32("partition", ap.p), zap.Int("rows", f.rows),
				zap.Duration("retry_in", ap.backoff), zap.Error(err))
			return
		}
		ap.pending = ap.pending[1:]
		f.buf.Release() // the store holds no reference once the write returned
		ap.backoff = 0
		if !a.up {
			a.up = true
			a.m.up.Set(1)
			a.log.Info("object store is back; catching up", zap.String("store", a.o.Store.String()))
		}
		a.commit(ctx, ap.p, f.last+1, f.leaderEpoch)
		ap.archived = append(ap.archived, archivedMark{next: f.last + 1, maxIngest: f.maxIngest})
		if len(ap.archived) > 10000 {
			ap.archived = ap.archived[len(ap.archived)-10000:]
		}
	}
	if ap.paused {
		a.cl.ResumeFetchPartitions(map[string][]int32{a.o.Topic: {ap.p}})
		ap.paused = false
	}
}

// store encodes f and writes it create-only. An object already under the
// name holds exactly these offsets (the name says so), so it counts as stored.
func (a *Archiver) store(ctx context.Context, p int32, f *file) error {
	start := time.Now()
	if f.encodeErr != nil {
		// a bug, not an outage: the offsets stay uncommitted and the log says why
		return fmt.Errorf("encode parquet for offsets %d-%d: %w", f.first, f.last, f.encodeErr)
	}
	n := f.buf.Len()
	key := contract.ArchiveKey{Region: f.region, Hour: f.bucket, Topic: a.o.Topic, Partition: p, First: f.first, Last: f.last}.Format()
	_, err := a.o.Store.PutIfAbsent(ctx, key, f.buf.Reader(), n)
	if errors.Is(err, ErrPrecondition) {
		a.log.Info("object already stored (a retry after an unacknowledged write)", zap.String("key", key))
		err = nil
	}
	if err != nil {
		return err
	}
	a.m.files.Inc()
	a.m.rows.Add(float64(f.rows))
	a.m.bytes.Add(float64(n))
	a.m.put.Observe(time.Since(start).Seconds()) // the store's part: encoding happened as rows arrived
	a.log.Debug("archived", zap.String("key", key), zap.Int("rows", f.rows), zap.Int64("bytes", n))
	return nil
}

func (a *Archiver) commit(ctx context.Context, p int32, next int64, epoch int32) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	offs := map[string]map[int32]kgo.EpochOffset{a.o.Topic: {p: {Epoch: epoch, Offset: next}}}
	var cerr error
	a.cl.CommitOffsetsSync(cctx, offs, func(_ *kgo.Client, _ *kmsgOffsetCommitRequest, resp *kmsgOffsetCommitResponse, err error) {
		cerr = err
		if err == nil {
			cerr = commitErr(resp)
		}
	})
	if cerr != nil {
		// The object is stored; a later owner finds it by name and skips it.
		a.log.Warn("offset commit after an archived file failed; the file is found by name on recovery", zap.Int32("partition", p), zap.Int64("offset", next), zap.Error(cerr))
	}
}

// shutdown closes and stores every open file, then commits.
func (a *Archiver) shutdown() {
	a.mu.Lock()
	defer a.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	a.takeHandoffs(ctx) // the stream's last batches, stopped before the archive
	left := 0
	for _, ap := range a.parts {
		ap.closeOpen()
		for len(ap.pending) > 0 && time.Now().Before(deadline) {
			before := len(ap.pending)
			a.storePending(ctx, ap, true)
			if len(ap.pending) == before {
				time.Sleep(200 * time.Millisecond)
			}
		}
		left += ap.rowCount()
	}
	if left > 0 {
		a.log.Warn("archiver stopped with rows not stored; they stay in Kafka and are archived at the next start", zap.Int("rows", left))
	} else {
		a.log.Info("archiver flushed everything it held")
	}
}

// trimBroker deletes, from the enriched topic, records that were archived
// more than keep_archived ago (by ingested_at). Unarchived records are
// never deleted: the topic itself has no time retention.
func (a *Archiver) trimBroker(ctx context.Context) {
	if a.cfg.KeepArchived <= 0 {
		return
	}
	cutoff := time.Now().Add(-a.cfg.KeepArchived)
	offs := kadm.Offsets{}
	a.mu.Lock()
	for p, ap := range a.parts {
		var upTo int64 = -1
		i := 0
		for ; i < len(ap.archived) && ap.archived[i].maxIngest.Before(cutoff); i++ {
			upTo = ap.archived[i].next
		}
		ap.archived = ap.archived[i:]
		if upTo > 0 {
			offs.Add(kadm.Offset{Topic: a.o.Topic, Partition: p, At: upTo, LeaderEpoch: -1})
		}
	}
	a.mu.Unlock()
	if len(offs) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(a.cl).DeleteRecords(dctx, offs); err != nil {
		a.log.Warn("could not drop archived records from the broker", zap.Error(err))
	}
}

// Offer hands the archiver what this process's stream committed to the
// enriched topic, so that it need not fetch those records back from the
// broker (the fetch, its decompression and the broker's serving of it
// cost about a tenth of the process's CPU). It never blocks: when the
// archiver is behind, the runs are dropped and fetched instead. The
// records' values must not change after the call.
func (a *Archiver) Offer(runs []bus.Committed) {
	select {
	case a.inbox <- runs:
	default:
		return
	}
	a.wakeMu.Lock()
	if a.wake != nil {
		a.wake()
	}
	a.wakeMu.Unlock()
}

// takeHandoffs adds the records of the offered runs that continue, with
// nothing between, what each partition has read (bus.Committed.Follows),
// and pauses the fetch of such a partition; a run that does not continue
// is left to the fetch, which resumes where the partition stopped.
// Partitions the archiver does not hold, or whose store is failing, are
// left to the fetch too.
func (a *Archiver) takeHandoffs(ctx context.Context) {
	for {
		var runs []bus.Committed
		select {
		case runs = <-a.inbox:
		default:
			return
		}
		now := time.Now()
		for i := range runs {
			c := &runs[i]
			ap := a.parts[c.Partition]
			if c.Topic != a.o.Topic || ap == nil || ap.paused {
				continue
			}
			rest, ok := c.Follows(ap.next)
			if !ok {
				a.m.refused.Inc()
				if ap.fed {
					a.unfeed(ap)
				}
				continue
			}
			if !ap.fed {
				a.cl.PauseFetchPartitions(map[string][]int32{a.o.Topic: {ap.p}})
				ap.fed = true
			}
			ap.fedAt = now
			for _, rec := range rest {
				a.add(ctx, ap, rec)
			}
			a.m.handed.Add(float64(len(rest)))
		}
	}
}

// unfeed returns a partition taken from handoffs to its fetch, from the
// offset after the last record taken. Called from the polling goroutine
// before it allows a rebalance, as SetOffsets asks.
func (a *Archiver) unfeed(ap *archPart) {
	ap.fed = false
	a.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{a.o.Topic: {ap.p: {Epoch: -1, Offset: ap.next}}})
	if !ap.paused {
		a.cl.ResumeFetchPartitions(map[string][]int32{a.o.Topic: {ap.p}})
	}
}
