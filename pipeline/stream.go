package pipeline

import (
	"cmp"
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/internal/promread"
	"runtime"
	"slices"
	"sync"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Topics are the topics the stream reads and writes.
type Topics struct {
	Raw, Enriched, Alerts, DLQ string
}

// StreamOptions are the stream's dependencies.
type StreamOptions struct {
	Region string
	Topics Topics
	// ClientOpts are the bus's client options (seeds, TLS, SASL, logger).
	ClientOpts []kgo.Opt
	// TransactionalID is the producer's transactional id. Empty means a
	// fresh random id at every start (the embedded broker needs that, see
	// the README), which is also safe with group-fenced transactions.
	TransactionalID string
	// StateDir holds the per-partition state snapshots.
	StateDir   string
	Devices    DeviceLookup
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
	// StopBudget is how long a stopping stream may spend saving its
	// snapshots after its last batch, so the later shutdown phases (the
	// archive's flush, the trainer lease) keep their share of
	// shutdown.budget; the partitions it has no time for replay their
	// tail at the next start. 0: no limit.
	StopBudget time.Duration
	// OnCommitted, when set, is given the enriched records of each
	// committed micro-batch, a run per partition, their offsets set: the
	// archiver in the same process takes them without fetching them back
	// (storage.Archiver.Offer). It must not block, and must not change the
	// records; the stream does not touch them again.
	OnCommitted func([]bus.Committed)
}

// Stream is the consume-enrich-score-produce loop over the raw topic, in a
// consumer group, each micro-batch one Kafka transaction.
type Stream struct {
	o    StreamOptions
	cfg  Config
	log  *zap.Logger
	m    *metrics
	lag  *lagBook // the lag of each partition held (also a gauge)
	proc *Processor
	snap *snapshots

	parts   map[int32]*partition
	coldAll atomic.Bool
	// assigned are the raw topic's partitions the session holds (the
	// group's callbacks keep it; see pendingWarm)
	assignedMu sync.Mutex
	assigned   map[int32]bool
	lastLoop   atomic.Int64 // unix nanos of the last loop iteration
	// parallelMin: a micro-batch of at least this many records is split
	// between two goroutines (see work; tests lower it)
	parallelMin int
	running     atomic.Bool

	txnTimeout time.Duration                        // the transactions' timeout (10 s; tests shorten it)
	warmHook   func(int32)                          // tests: called as a partition starts restoring
	seedWindow int64                                // the dedup read-back's first window (seedWindow; tests shorten it)
	seedHook   func(p int32, window int64, ids int) // tests: called after each read-back window
	batchHook  func()                               // tests: called before each micro-batch begins
	lagEvery   time.Duration                        // how often the raw topic's end offsets are read (lagEvery; tests shorten it)
}

// NewStream builds the stream; Run starts it.
func NewStream(cfg Config, o StreamOptions) (*Stream, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Stream{o: o, cfg: cfg, log: o.Logger, m: m, parts: map[int32]*partition{}, lag: newLagBook(m.lag), parallelMin: parallelMin,
		proc: NewProcessor(cfg, o.Region, o.Devices),
		snap: &snapshots{dir: o.StateDir, group: cfg.Group, topic: o.Topics.Raw}, txnTimeout: 10 * time.Second, seedWindow: seedWindow, lagEvery: lagEvery}
	return s, nil
}

// Processor returns the stream's processor (to swap its scorer).
func (s *Stream) Processor() *Processor { return s.proc }

// Healthy reports whether the loop is running and turned within the last 30 s.
func (s *Stream) Healthy() bool {
	return s.running.Load() && time.Since(time.Unix(0, s.lastLoop.Load())) < 30*time.Second
}

// Run consumes until ctx ends. A failed session (a non-retryable Kafka
// error) is logged and replaced after a backoff; Run returns only when ctx
// is done, after committing the batch in flight.
func (s *Stream) Run(ctx context.Context) error {
	if n, err := s.snap.cleanTemp(); err != nil {
		s.log.Warn("could not remove unfinished state snapshots; they only take disk space", zap.Error(err))
	} else if n > 0 {
		s.log.Info("removed unfinished state snapshots of an interrupted stop", zap.Int("files", n))
	}
	backoff := 500 * time.Millisecond
	for {
		err := s.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Error("stream session failed; starting a new one (state is rebuilt from snapshots)", zap.Error(err), zap.Duration("backoff", backoff))
		s.parts = map[int32]*partition{}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		if backoff < 10*time.Second {
			backoff *= 2
		}
	}
}

func (s *Stream) txnID() string {
	if s.o.TransactionalID != "" {
		return s.o.TransactionalID
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "vigil-stream-" + s.o.Region + "-" + hex.EncodeToString(b[:])
}

func (s *Stream) runSession(ctx context.Context) error {
	s.assignedMu.Lock()
	s.assigned = map[int32]bool{}
	s.assignedMu.Unlock()
	onAssign := func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
		s.assignedMu.Lock()
		defer s.assignedMu.Unlock()
		for _, p := range a[s.o.Topics.Raw] {
			s.assigned[p] = true
			s.lag.assign(p)
		}
	}
	onRevoke := func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
		s.assignedMu.Lock()
		for _, p := range r[s.o.Topics.Raw] {
			delete(s.assigned, p)
			s.lag.drop(p)
		}
		s.assignedMu.Unlock()
		s.coldAll.Store(true)
	}
	sess, err := kgo.NewGroupTransactSession(bus.With(s.o.ClientOpts,
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.o.Topics.Raw),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.TransactionalID(s.txnID()),
		kgo.TransactionTimeout(s.txnTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsAssigned(onAssign),
		kgo.OnPartitionsRevoked(onRevoke),
		kgo.OnPartitionsLost(onRevoke),
		kgo.SessionTimeout(10*time.Second),
		kgo.RebalanceTimeout(30*time.Second),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(1<<20),
	)...)
	if err != nil {
		return fmt.Errorf("stream consumer: %w", err)
	}
	s.running.Store(true)
	defer s.running.Store(false)
	defer sess.Close()
	s.lastLoop.Store(time.Now().UnixNano())
	// the lag is counted from the broker's end offsets while the session
	// lasts (the poller ends before the client closes)
	lctx, lcancel := context.WithCancel(context.WithoutCancel(ctx))
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() { defer lwg.Done(); s.lag.pollEnds(lctx, sess.Client(), s.o.Topics.Raw, s.lagEvery, s.log) }()
	defer func() { lcancel(); lwg.Wait(); s.lag.reset() }()

	b := &batch{s: s, proc: s.proc}
	var w *batch // the second worker of a large batch (see work), its processor a replica
	r := newSnapRound(s.cfg.SnapshotInterval)
	defer s.snapAbandon(r)
	for {
		fetches := s.poll(ctx, sess, r.pollWait())
		s.lastLoop.Store(time.Now().UnixNano())
		if ctx.Err() != nil && fetches.NumRecords() == 0 {
			// stopping while idle: the state of every committed batch goes
			// to the snapshots, so the next start replays nothing
			s.snapshotStop(r)
			return nil
		}
		if s.coldAll.Swap(false) {
			s.snapAbandon(r)
			s.parts = map[int32]*partition{}
		}
		var fatal error
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			if errors.Is(err, kgo.ErrClientClosed) {
				fatal = err
				return
			}
			s.log.Warn("fetch failed; the client retries", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
		})
		if fatal != nil {
			return fatal
		}
		if fetches.NumRecords() == 0 {
			s.snapshotStep(r, true)
			continue
		}
		// partitions new to this session restore their state before the
		// transaction begins: at a million devices that takes longer than
		// the transaction timeout, and inside it the batch never committed
		held := len(s.parts)
		if !s.warmFetched(ctx, fetches, s.pendingWarm(sess.Client())) {
			s.snapshotStop(r)
			return nil
		}
		if len(s.parts) > held && len(r.queue) == 0 {
			// a restore just ended: the round clock starts from it. A
			// restore that outlasted snapshot_interval left a round due
			// at once, and its steps (a partition's save each, 2.5 s at
			// a million devices) held up the backlog a restart finds:
			// after a kill under load the probes waited 20 s behind it
			r.last = time.Now()
		}
		if s.batchHook != nil {
			s.batchHook()
		}
		start := time.Now()
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		// a new model takes over between micro-batches, never inside one
		if s.proc.BeginBatch() {
			w = nil // its replica scores with the old one
			model, shadow := s.proc.ModelNames()
			f := []zap.Field{zap.String("model", model)}
			if shadow != "" {
				f = append(f, zap.String("shadow", shadow))
			}
			s.log.Info("scoring with a new model", f...)
			s.m.swaps.Inc()
		}
		// The context for the work and the commit is detached from ctx: a
		// shutdown lets the batch in flight commit.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		b.begin(wctx, sess)
		var split bool
		if w, split = s.work(b, w, fetches); !split {
			fetches.EachPartition(b.partition)
		}
		commit := kgo.TransactionEndTry(b.e.Err() == nil)
		if b.e.Err() != nil {
			s.log.Warn("producing a batch failed; aborting it to process it again", zap.Error(b.e.Err()))
		}
		committed, err := sess.End(wctx, commit)
		cancel()
		if err != nil {
			return fmt.Errorf("end transaction: %w", err)
		}
		if !committed {
			clear(b.after) // the aborted records and their marker lie between
			s.m.aborts.Inc()
			s.log.Info("micro-batch aborted (rebalance or produce error); it will be processed again", zap.Int("readings", b.stats.readings))
			s.snapAbandon(r) // the state holds the aborted batch's readings
			s.parts = map[int32]*partition{}
			continue
		}
		b.stats.record(s.m, start, time.Now())
		b.handOn()
		if ctx.Err() != nil {
			s.snapshotStop(r)
			return nil
		}
		// the stream keeps up when its batch closed before it was full
		// (nothing more was buffered) and less than a batch is left in all
		// its partitions, as of their last fetches
		s.snapshotStep(r, fetches.NumRecords() < s.cfg.BatchMaxReadings && s.Backlog() < int64(s.cfg.BatchMaxReadings))
	}
}

// Stats are the stream's figures for the status page.
type Stats struct {
	Readings       float64          // enriched, scored and committed
	Batches        float64          // micro-batches committed
	DLQ            float64          // raw records sent to the dead-letter topic
	BatchMeanMS    float64          // mean time to process and commit a batch
	PostToCommitMS float64          // mean time from ingest to the enriched record's commit
	LagByPartition map[string]int64 // raw records not yet processed, per partition
}

// Backlog is the raw records not yet processed in the partitions the
// stream holds: the raw topic's end offsets (read from the broker every
// second, and each fetch's high watermark) less the next offset of each.
func (s *Stream) Backlog() int64 { return s.lag.total() }

// Stats reads the stream's figures.
func (s *Stream) Stats() Stats {
	st := Stats{Readings: promread.Value(s.m.readings), Batches: promread.Value(s.m.batches), DLQ: promread.Value(s.m.dlq),
		BatchMeanMS: 1000 * promread.Mean(s.m.batchTime), PostToCommitMS: 1000 * promread.Mean(s.m.postToDone), LagByPartition: map[string]int64{}}
	for p, l := range s.lag.lags() {
		st.LagByPartition[strconv.Itoa(int(p))] = l
	}
	return st
}

// batch is one micro-batch in its transaction: each partition's readings
// go through the processor, and their enriched records, alerts and dead
// letters are produced into the transaction. One batch value is reused.
type batch struct {
	s     *Stream
	proc  *Processor // the stream's, or a replica's for a second worker
	ctx   context.Context
	sess  *kgo.GroupTransactSession
	e     *kgo.FirstErrPromise
	buf   []byte
	hdrs  []kgo.RecordHeader // the enriched records' headers
	res   StepResult
	stats batchStats
	// enriched are the batch's enriched records, for OnCommitted; given
	// says they were handed on, with buf and hdrs, which the next batch
	// then does not reuse
	enriched []*kgo.Record
	given    bool
	// after is, per enriched partition, the offset of the last record of
	// the session's last committed batch that wrote there (see
	// bus.Committed.After); cleared by an abort
	after map[int32]int64
	runs  map[int32]int
}

// begin starts the batch's work on ctx (the transaction has begun).
func (b *batch) begin(ctx context.Context, sess *kgo.GroupTransactSession) {
	b.ctx, b.sess, b.e = ctx, sess, kgo.AbortingFirstErrPromise(sess.Client())
	if b.given {
		b.buf, b.hdrs = make([]byte, 0, cap(b.buf)), make([]kgo.RecordHeader, 0, cap(b.hdrs))
		b.given = false
	}
	b.buf, b.hdrs, b.enriched = b.buf[:0], b.hdrs[:0], b.enriched[:0]
	b.stats.reset()
}

// partition processes the records of one partition of the fetch.
func (b *batch) partition(fp kgo.FetchTopicPartition) {
	s := b.s
	if len(fp.Records) == 0 {
		return
	}
	part := s.parts[fp.Partition] // warmFetched restored it
	for _, rec := range fp.Records {
		r, err := contract.DecodeRaw(rec.Value)
		if err != nil {
			b.stats.dlq++
			b.sess.Produce(b.ctx, dlqRecord(s.o.Topics.DLQ, rec, err), b.e.Promise())
			part.Next = rec.Offset + 1
			continue
		}
		off := len(b.buf)
		b.buf = b.proc.StepAt(part, rec.Offset, &r, true, b.buf, &b.res)
		part.Next = rec.Offset + 1
		if b.res.Duplicate || b.res.Held {
			b.stats.duplicates++
			continue
		}
		b.stats.readings++
		if b.res.Repeat {
			b.stats.repeats++
		}
		b.stats.ingestTimes = append(b.stats.ingestTimes, r.IngestedAt)
		value := b.buf[off:len(b.buf):len(b.buf)]
		// the raw offset, for the dedup read-back after a restart (see
		// seedDedup); digits and header kept in the batch's own buffers
		hoff := len(b.buf)
		b.buf = strconv.AppendInt(b.buf, rec.Offset, 10)
		b.hdrs = append(b.hdrs, kgo.RecordHeader{Key: contract.EnrichedRawOffsetHeader, Value: b.buf[hoff:len(b.buf):len(b.buf)]})
		er := &kgo.Record{Topic: s.o.Topics.Enriched, Key: rec.Key, Value: value, Headers: b.hdrs[len(b.hdrs)-1 : len(b.hdrs) : len(b.hdrs)]}
		if s.o.OnCommitted != nil {
			b.enriched = append(b.enriched, er)
		}
		b.sess.Produce(b.ctx, er, b.e.Promise())
		for i := range b.res.Alerts {
			a := &b.res.Alerts[i]
			v, err := contract.EncodeAlert(a)
			if err != nil {
				continue
			}
			if a.State == "open" {
				b.stats.alertsOpen++
				b.stats.alertIngest = append(b.stats.alertIngest, a.IngestedAt)
			} else {
				b.stats.alertsClosed++
			}
			b.sess.Produce(b.ctx, &kgo.Record{Topic: s.o.Topics.Alerts, Key: rec.Key, Value: v}, b.e.Promise())
		}
	}
	s.lag.processed(fp.Partition, part.Next, fp.HighWatermark)
}

// handOn gives OnCommitted the committed batch's enriched records, a run
// per partition in the order they were written.
func (b *batch) handOn() {
	if b.s.o.OnCommitted == nil || len(b.enriched) == 0 {
		return
	}
	if b.after == nil {
		b.after, b.runs = map[int32]int64{}, map[int32]int{}
	}
	clear(b.runs)
	var runs []bus.Committed
	sorted := true
	for _, r := range b.enriched {
		i, ok := b.runs[r.Partition]
		if !ok {
			after, known := b.after[r.Partition]
			if !known {
				after = -1
			}
			i = len(runs)
			b.runs[r.Partition] = i
			runs = append(runs, bus.Committed{Topic: r.Topic, Partition: r.Partition, After: after})
		}
		if recs := runs[i].Records; len(recs) > 0 && recs[len(recs)-1].Offset > r.Offset {
			sorted = false // two workers wrote to one partition
		}
		runs[i].Records = append(runs[i].Records, r)
	}
	for i := range runs {
		recs := runs[i].Records
		if !sorted {
			slices.SortFunc(recs, func(x, y *kgo.Record) int { return cmp.Compare(x.Offset, y.Offset) })
		}
		b.after[runs[i].Partition] = recs[len(recs)-1].Offset
	}
	b.given = true
	b.enriched = make([]*kgo.Record, 0, len(b.enriched))
	b.s.o.OnCommitted(runs)
}

// parallelMin is the smallest micro-batch that work splits between two
// workers: below it a second goroutine costs more than it saves.
const parallelMin = 1000

// work processes a large micro-batch of several partitions on two
// goroutines, and answers the second worker to keep for the next batch
// and whether it split this one (not on one core, for a small batch or
// one partition, or when a model cannot be replicated). The stream's
// loop is otherwise one goroutine that scores a batch and then waits for
// its commit, while the machine has another core. Partitions are
// independent (a device's state lives in its partition's), so each goes
// whole to one worker: the loop's own batch b and a second one with a
// replica of the processor (w, kept from the last batch unless a model
// was swapped in since). The records a partition produces keep their
// order; what the second worker made is merged into b.
func (s *Stream) work(b, w *batch, fetches kgo.Fetches) (*batch, bool) {
	if fetches.NumRecords() < s.parallelMin || runtime.GOMAXPROCS(0) < 2 {
		return w, false
	}
	// a partition may come in several fetches of the batch (poll appends
	// them): all of a partition's go to one worker, in order
	type unit struct {
		fps []kgo.FetchTopicPartition
		n   int
	}
	var units []*unit
	index := map[int32]*unit{}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		u := index[fp.Partition]
		if u == nil {
			u = &unit{}
			index[fp.Partition] = u
			units = append(units, u)
		}
		u.fps, u.n = append(u.fps, fp), u.n+len(fp.Records)
	})
	if len(units) < 2 {
		return w, false
	}
	if w == nil {
		pr := s.proc.replica()
		if pr == nil {
			return nil, false
		}
		w = &batch{s: s, proc: pr}
	}
	w.begin(b.ctx, b.sess)
	w.e = b.e // one promise: any failed record aborts the transaction
	// the largest partitions first, each to the worker with fewer records
	slices.SortStableFunc(units, func(x, y *unit) int { return cmp.Compare(y.n, x.n) })
	var mine, theirs []kgo.FetchTopicPartition
	nm, nt := 0, 0
	for _, u := range units {
		if nm <= nt {
			mine, nm = append(mine, u.fps...), nm+u.n
		} else {
			theirs, nt = append(theirs, u.fps...), nt+u.n
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, fp := range theirs {
			w.partition(fp)
		}
	}()
	for _, fp := range mine {
		b.partition(fp)
	}
	<-done
	s.m.split.Inc()
	b.stats.merge(&w.stats)
	b.enriched = append(b.enriched, w.enriched...)
	if s.o.OnCommitted != nil {
		w.given = true // its records' values go on with b's
	}
	return w, true
}

// batchStats are the figures of one micro-batch, recorded once it
// committed.
type batchStats struct {
	readings, duplicates, dlq int
	alertsOpen, alertsClosed  int
	repeats                   int
	ingestTimes, alertIngest  []time.Time // of the readings, of the alerts opened
}

// merge adds o's figures to st's.
func (st *batchStats) merge(o *batchStats) {
	st.readings += o.readings
	st.duplicates += o.duplicates
	st.dlq += o.dlq
	st.alertsOpen += o.alertsOpen
	st.alertsClosed += o.alertsClosed
	st.repeats += o.repeats
	st.ingestTimes = append(st.ingestTimes, o.ingestTimes...)
	st.alertIngest = append(st.alertIngest, o.alertIngest...)
}

func (st *batchStats) reset() {
	*st = batchStats{ingestTimes: st.ingestTimes[:0], alertIngest: st.alertIngest[:0]}
}

// record puts the figures of a batch that began at start and committed at
// done into the metrics.
func (st *batchStats) record(m *metrics, start, done time.Time) {
	m.batches.Inc()
	m.batchSize.Observe(float64(st.readings + st.duplicates + st.dlq))
	m.batchTime.Observe(done.Sub(start).Seconds())
	m.readings.Add(float64(st.readings))
	m.duplicates.Add(float64(st.duplicates))
	m.dlq.Add(float64(st.dlq))
	m.alerts.WithLabelValues("open").Add(float64(st.alertsOpen))
	m.alerts.WithLabelValues("closed").Add(float64(st.alertsClosed))
	m.repeats.Add(float64(st.repeats))
	for _, t := range st.ingestTimes {
		m.postToDone.Observe(done.Sub(t).Seconds())
	}
	for _, t := range st.alertIngest {
		m.postToAlert.Observe(done.Sub(t).Seconds())
	}
}

// poll waits for records, then keeps polling until the micro-batch holds
// BatchMaxReadings or BatchMaxWait has passed since its first record.
func (s *Stream) poll(ctx context.Context, sess *kgo.GroupTransactSession, wait time.Duration) kgo.Fetches {
	wctx, cancel := context.WithTimeout(ctx, wait)
	fetches := sess.PollRecords(wctx, s.cfg.BatchMaxReadings)
	cancel()
	n := fetches.NumRecords()
	if n == 0 || n >= s.cfg.BatchMaxReadings || s.cfg.BatchMaxWait == 0 {
		return fetches
	}
	deadline := time.Now().Add(s.cfg.BatchMaxWait)
	for n < s.cfg.BatchMaxReadings && ctx.Err() == nil {
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		more := sess.PollRecords(pctx, s.cfg.BatchMaxReadings-n)
		cancel()
		if more.NumRecords() == 0 {
			break
		}
		fetches = append(fetches, more...)
		n += more.NumRecords()
	}
	return fetches
}

func dlqRecord(topic string, rec *kgo.Record, reason error) *kgo.Record {
	return &kgo.Record{
		Topic: topic, Key: rec.Key, Value: rec.Value,
		Headers: []kgo.RecordHeader{
			{Key: "reason", Value: []byte(reason.Error())},
			{Key: "source", Value: []byte(rec.Topic + "/" + strconv.Itoa(int(rec.Partition)) + "/" + strconv.FormatInt(rec.Offset, 10))},
		},
	}
}

// warmFetched restores the state of every partition of the fetch that is
// not in memory yet (the session's first records of it), and with them
// the pending ones (the session's other partitions without state, up to
// their committed offsets; see pendingWarm): their snapshots load on
// every core at once, then each replays its tail, on every core when the
// models can be replicated, then they read back their recent enriched ids
// (seedDedup), on every core. It answers
// false, restoring nothing more, when ctx ends meanwhile (the stream is
// stopping; a partition cut short is not kept, so no snapshot is written
// of a partial state).
func (s *Stream) warmFetched(ctx context.Context, fetches kgo.Fetches, pending map[int32]int64) bool {
	type job struct {
		p      int32
		upTo   int64
		part   *partition
		err    error
		snapAt int64 // the offset of the snapshot it was restored from, or -1
		ok     bool
	}
	// A fetch can hold a partition twice (poll appends the fetches of a
	// micro-batch): its state is restored up to its first record of all,
	// or the replay would take in the batch's own readings, and the batch
	// then drop them as duplicates, unscored.
	var jobs []*job
	byPart := map[int32]*job{}
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 || s.parts[fp.Partition] != nil {
			return
		}
		if j := byPart[fp.Partition]; j != nil {
			j.upTo = min(j.upTo, fp.Records[0].Offset)
			return
		}
		j := &job{p: fp.Partition, upTo: fp.Records[0].Offset}
		byPart[fp.Partition] = j
		jobs = append(jobs, j)
	})
	if len(jobs) == 0 {
		return true
	}
	// the session's other partitions still without state restore now
	// too, up to their committed offsets (where their records will
	// start): after a restart with a backlog, a micro-batch holds one or
	// two partitions' records, and restoring each at its first batch
	// restored the partitions one batch after another
	for p, upTo := range pending {
		if byPart[p] == nil && s.parts[p] == nil {
			j := &job{p: p, upTo: upTo}
			byPart[p] = j
			jobs = append(jobs, j)
		}
	}
	for _, j := range jobs {
		s.lag.hold(j.p, j.upTo) // restoring: behind by all that came after
	}
	t0 := time.Now()
	onEveryCore(len(jobs), func(i int) { jobs[i].part, jobs[i].err = s.snap.load(jobs[i].p) })
	loaded := time.Since(t0)
	// the replays on every core, each through its own processor (a
	// processor's scratch, and a model's, serve one goroutine); one at a
	// time through the stream's when a model cannot be replicated
	var procs []*Processor
	if len(jobs) > 1 {
		procs = make([]*Processor, len(jobs))
		for i := range procs {
			if procs[i] = s.proc.replica(); procs[i] == nil {
				procs = nil
				break
			}
		}
	}
	warm := func(i int) {
		j, pr := jobs[i], s.proc
		if procs != nil {
			pr = procs[i]
		}
		j.part, j.snapAt, j.ok = s.warm(ctx, pr, j.p, j.upTo, j.part, j.err)
		s.lastLoop.Store(time.Now().UnixNano())
	}
	if procs != nil {
		onEveryCore(len(jobs), warm)
	} else {
		for i := range jobs {
			if warm(i); !jobs[i].ok {
				break
			}
		}
	}
	for _, j := range jobs {
		if !j.ok {
			return false
		}
		if j.snapAt >= 0 {
			s.snap.mark(j.p, j.snapAt) // what is on disk: a partition with nothing to replay is not saved again
		}
	}
	// the dedup read-backs each touch their own partition's devices
	// (usually one window of seedWindow records; the whole
	// restore_lookback after an older Vigil): on every core at once
	onEveryCore(len(jobs), func(i int) {
		j := jobs[i]
		if n, err := s.seedDedup(ctx, j.p, j.upTo, j.part); ctx.Err() != nil {
			return
		} else if err != nil {
			s.log.Warn("could not read back recent enriched ids; a reading committed just before a crash could be enriched twice", zap.Int32("partition", j.p), zap.Error(err))
		} else if n > 0 {
			s.log.Debug("dedup seeded from the enriched topic", zap.Int32("partition", j.p), zap.Int("ids", n))
		}
	})
	if ctx.Err() != nil {
		return false
	}
	devices := 0
	for _, j := range jobs {
		s.parts[j.p] = j.part
		devices += len(j.part.Devices)
	}
	s.lastLoop.Store(time.Now().UnixNano())
	if devices > 0 || time.Since(t0) > time.Second {
		s.log.Info("partitions' state restored", zap.Int("partitions", len(jobs)), zap.Int("devices", devices),
			zap.Duration("snapshots_loaded_in", loaded.Round(time.Millisecond)), zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
	}
	return true
}

// pendingWarm are the partitions the session holds that have no state in
// memory yet, each with its committed offset (the next record it will
// fetch). A partition without a committed offset is left to its first
// record.
func (s *Stream) pendingWarm(cl *kgo.Client) map[int32]int64 {
	committed := cl.CommittedOffsets()[s.o.Topics.Raw]
	s.assignedMu.Lock()
	defer s.assignedMu.Unlock()
	var out map[int32]int64
	for p := range s.assigned {
		if o, ok := committed[p]; ok && o.Offset >= 0 && s.parts[p] == nil {
			if out == nil {
				out = map[int32]int64{}
			}
			out[p] = o.Offset
		}
	}
	return out
}

// warm rebuilds the state of a partition whose next record is upTo: from
// its snapshot (part, as loaded, with its error) when one is at hand,
// else from the last RestoreLookback records, by replaying the raw topic
// through pr without output. It returns the state, the offset of the
// snapshot it started from (-1: none; the caller marks it saved), and
// false when ctx ended before the replay did. The dedup read-back
// (seedDedup) comes after it: a replayed reading whose id were already
// seeded would be dropped. Partitions may be warmed at the same time,
// each through its own processor.
func (s *Stream) warm(ctx context.Context, pr *Processor, p int32, upTo int64, part *partition, err error) (*partition, int64, bool) {
	if s.warmHook != nil {
		s.warmHook(p)
	}
	switch {
	case err != nil:
		s.log.Warn("state snapshot unreadable; rebuilding from the raw topic", zap.Int32("partition", p), zap.Error(err))
		part = nil
	case part != nil && part.Next > upTo:
		s.log.Info("state snapshot is ahead of the committed offset; rebuilding from the raw topic", zap.Int32("partition", p), zap.Int64("snapshot", part.Next), zap.Int64("committed", upTo))
		part = nil
	}
	from, snapAt := upTo-s.cfg.RestoreLookback, int64(-1)
	if part != nil {
		from, snapAt = part.Next, part.Next
	} else {
		part = newPartition()
	}
	if from < 0 {
		from = 0
	}
	if from < upTo {
		n, err := s.replay(ctx, pr, p, from, upTo, part)
		s.m.restored.Add(float64(n))
		switch {
		case ctx.Err() != nil:
			return nil, -1, false
		case err != nil:
			s.log.Warn("state restore incomplete; baselines start partly cold", zap.Int32("partition", p), zap.Error(err))
		default:
			s.log.Info("partition state restored", zap.Int32("partition", p), zap.Int64("from", from), zap.Int64("to", upTo), zap.Int("readings", n), zap.Int("devices", len(part.Devices)))
		}
	}
	part.Next = upTo
	return part, snapAt, true
}

// seedSettle is how long the dedup read-back waits for an undecided
// transaction below the enriched topic's end: the stream's transaction
// timeout (10 s) and a margin. After a SIGKILL the embedded broker can
// come back with the dead process's last commit not yet completed; its
// records are not readable until it is, and taking them for aborted let
// a restarted stream enrich those readings a second time (seen once in
// TestArchiveKillNine under the full suite).
const seedSettle = 15 * time.Second

// seedDedup adds to the partition's dedup sets the ids of the committed
// enriched records made from its raw records at or past upTo, the
// partition's committed offset. The processor dedups by id, but after a
// crash the broker may hold a committed batch whose consumed offsets it
// did not keep (the embedded broker persists the transaction markers and
// the group's offsets separately); the batch is then consumed again, and
// only the output itself says it was already written.
//
// Each enriched record names the raw offset it was made from (the
// vigil-raw-offset header), and a partition's enriched records follow its
// raw offsets, so the read-back reads the enriched partition's tail, from
// seedWindow records back and eight times as far each time, until the
// first record read was made from a raw offset below upTo: one
// transaction's records, usually, not restore_lookback of them. Records
// without the header (written by an older Vigil) take the whole
// restore_lookback, as before.
func (s *Stream) seedDedup(ctx context.Context, p int32, upTo int64, part *partition) (int, error) {
	var dec contract.EnrichedDecoder
	cl, err := kgo.NewClient(bus.With(s.o.ClientOpts, kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return 0, err
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, s.o.Topics.Enriched, s.o.Topics.Raw)
	cl.Close()
	if err != nil {
		return 0, err
	}
	// Raw and enriched records are keyed by device id with the same
	// partitioner: with equal partition counts, raw partition p's devices
	// are all in enriched partition p; otherwise read every partition.
	rawParts, enrParts := 0, 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic == s.o.Topics.Raw {
			rawParts++
		} else {
			enrParts++
		}
	})
	same := rawParts == enrParts
	type seen struct {
		device, id string
		at         time.Time
	}
	var ids []seen
	window := s.cfg.RestoreLookback
	if same {
		window = min(s.seedWindow, window)
	}
	for ; ; window = min(window*8, s.cfg.RestoreLookback) {
		ids = ids[:0]
		first, whole := true, !same || window >= s.cfg.RestoreLookback
		span := bus.Span{Topic: s.o.Topics.Enriched, From: func(q int32, start, end int64) int64 {
			if same && q != p {
				return end // another partition's devices
			}
			if end-window <= start {
				whole = true // the window holds the partition
			}
			return end - window
		}, Settle: seedSettle}
		err = bus.ReadToEnd(ctx, s.o.ClientOpts, span, func(rec *kgo.Record) {
			raw, ok := rawOffset(rec)
			if same && ok && raw < upTo {
				if first {
					whole = true // the window reaches back past the records to seed
				}
				first = false
				return // made from a reading the restore replayed
			}
			first = false
			e, err := dec.DecodeKey(rec.Value)
			if err != nil {
				return
			}
			if !same && part.Devices[e.DeviceID] == nil {
				return // another partition's device
			}
			ids = append(ids, seen{e.DeviceID, e.ID, e.IngestedAt})
		})
		if s.seedHook != nil {
			s.seedHook(p, window, len(ids))
		}
		if err != nil || whole || ctx.Err() != nil {
			break
		}
	}
	for _, e := range ids {
		ds := part.Devices[e.device]
		if ds == nil {
			ds = newDeviceState()
			part.Devices[e.device] = ds
		}
		ds.seen(e.id, e.at, s.cfg.DedupWindow, s.cfg.DedupHorizon)
	}
	return len(ids), err
}

// seedWindow is the dedup read-back's first window: a few micro-batches
// of a partition (pipeline.batch_max_readings is 1,000 by default).
const seedWindow = 8192

// rawOffset is the raw offset an enriched record names in its
// contract.EnrichedRawOffsetHeader; false when it names none.
func rawOffset(rec *kgo.Record) (int64, bool) {
	for _, h := range rec.Headers {
		if h.Key == contract.EnrichedRawOffsetHeader {
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func (s *Stream) replay(ctx context.Context, pr *Processor, p int32, from, upTo int64, part *partition) (int, error) {
	var (
		res      StepResult
		n        int
		lastProg = time.Now()
	)
	span := bus.Span{Topic: s.o.Topics.Raw,
		From: func(q int32, _, end int64) int64 {
			if q != p {
				return end
			}
			return from
		},
		To: func(q int32, _, end int64) int64 {
			if q != p {
				return end
			}
			return min(upTo, end)
		}}
	err := bus.ReadToEnd(ctx, s.o.ClientOpts, span, func(rec *kgo.Record) {
		if r, err := contract.DecodeRaw(rec.Value); err == nil {
			pr.StepAt(part, rec.Offset, &r, false, nil, &res)
			n++
		}
		if time.Since(lastProg) > 5*time.Second {
			s.log.Info("restoring partition state", zap.Int32("partition", p), zap.Int("readings", n), zap.Int64("remaining", upTo-rec.Offset-1))
			lastProg = time.Now()
		}
	})
	return n, err
}

// snapRound is the snapshot round in progress: the partitions still to
// save, the one being written, and the commits (fsync and rename) that
// run on their own goroutines.
type snapRound struct {
	queue   []int32
	w       *snapWriter   // the partition being written, a slice a step
	start   time.Time     // when the round began
	used    time.Duration // the stream's time the round took so far
	devices int           // devices written this round
	last    time.Time     // when the last round ended
	every   time.Duration // the time between rounds (pipeline.snapshot_interval)
	done    chan snapDone // commits that ended
	pending int           // commits not yet back
}

type snapDone struct {
	p    int32
	next int64
	err  error
}

func newSnapRound(every time.Duration) *snapRound {
	return &snapRound{last: time.Now(), every: every, done: make(chan snapDone, 64)}
}

// snapSlice is the longest a snapshot step holds the stream up: an alert
// behind it waits that long at most (a whole partition took 2.5 s at a
// million devices when it was saved in one go).
const snapSlice = 20 * time.Millisecond

// pollWait is how long the stream's poll may wait for records before the
// round needs a step: while a round is in progress, a step's time; else
// until the next round is due. 0: no bound.
func (r *snapRound) pollWait() time.Duration {
	if r.w != nil || len(r.queue) > 0 || r.pending > 0 {
		return 5 * snapSlice
	}
	return max(time.Until(r.last.Add(r.every)), 5*snapSlice)
}

// snapshotStep writes a slice of the round in progress, or starts a
// round when one is due; the stream calls it between micro-batches. A
// partition's snapshot is written a slice (snapSlice) at a time, so the
// stream waits at most a slice, not for a partition's devices (at 10,000
// devices a whole round took about 350 ms, at a million a partition
// 2.5 s: an alert behind it waited as long). Each device is written as it
// is when its slice comes, and says how far it holds (see snapWriter).
// While the stream is behind (caughtUp false) the round takes at most a
// tenth of the stream's time; when it keeps up, the round goes on at
// every step. The file's sync and rename run on another goroutine. The
// next round comes pipeline.snapshot_interval after this one ended.
func (s *Stream) snapshotStep(r *snapRound, caughtUp bool) {
	s.snapCommitted(r, false)
	if r.w == nil && len(r.queue) == 0 {
		if time.Since(r.last) < r.every {
			return
		}
		for p, part := range s.parts {
			if s.snap.dirty(p, part.Next) {
				r.queue = append(r.queue, p)
			}
		}
		if len(r.queue) == 0 {
			r.last = time.Now()
			return
		}
		slices.Sort(r.queue)
		r.start, r.used, r.devices = time.Now(), 0, 0
	}
	if !caughtUp && r.used > time.Since(r.start)/10 {
		return
	}
	t0 := time.Now()
	for r.w == nil && len(r.queue) > 0 {
		p := r.queue[0]
		r.queue = r.queue[1:]
		part := s.parts[p]
		if part == nil || !s.snap.dirty(p, part.Next) {
			continue
		}
		w, err := s.snap.begin(p, part)
		switch {
		case err != nil:
			s.log.Warn("state snapshot failed; a restart will replay more of the raw topic", zap.Int32("partition", p), zap.Error(err))
		case w == nil:
			s.snap.mark(p, part.Next) // snapshots are off
		default:
			r.w = w
			r.devices += len(part.Devices)
		}
	}
	if r.w != nil {
		done, err := r.w.write(snapSlice, 0)
		if err == nil && done {
			err = r.w.end()
		}
		switch {
		case err != nil:
			s.log.Warn("state snapshot failed; a restart will replay more of the raw topic", zap.Int32("partition", r.w.p), zap.Error(err))
			r.w.abort()
			r.w = nil
		case done:
			w := r.w
			r.w = nil
			r.pending++
			go func() { r.done <- snapDone{w.p, w.next, w.commit()} }()
		}
	}
	r.used += time.Since(t0)
	if r.w != nil || len(r.queue) > 0 {
		return
	}
	s.m.snapTime.Set(r.used.Seconds())
	r.last = time.Now()
	if took := r.last.Sub(r.start); took > r.every {
		s.log.Info("a state snapshot round took longer than snapshot_interval; a restart after a crash replays the readings since the oldest partition's snapshot",
			zap.Duration("took", took.Round(time.Millisecond)), zap.Duration("of_the_stream", r.used.Round(time.Millisecond)), zap.Int("devices", r.devices))
	}
}

// snapCommitted marks the partitions whose snapshot commits came back
// (wait: all of them, waiting for those still running).
func (s *Stream) snapCommitted(r *snapRound, wait bool) {
	for r.pending > 0 {
		var d snapDone
		if wait {
			d = <-r.done
		} else {
			select {
			case d = <-r.done:
			default:
				return
			}
		}
		r.pending--
		if d.err != nil {
			s.log.Warn("state snapshot failed; a restart will replay more of the raw topic", zap.Int32("partition", d.p), zap.Error(d.err))
			continue
		}
		s.snap.mark(d.p, d.next)
	}
}

// snapAbandon drops the round's partition being written and its queue
// (the partitions' state is dropped, or the stream stops), and waits for
// the commits still running.
func (s *Stream) snapAbandon(r *snapRound) {
	if r.w != nil {
		r.w.abort()
		r.w = nil
	}
	r.queue = r.queue[:0]
	s.snapCommitted(r, true)
}

// snapshotStop saves the snapshots as the stream stops, within
// StopBudget, and says what it saved and what the next start replays.
func (s *Stream) snapshotStop(r *snapRound) {
	s.snapAbandon(r)
	var deadline time.Time
	if s.o.StopBudget > 0 {
		deadline = time.Now().Add(s.o.StopBudget)
	}
	t0 := time.Now()
	saved, skipped, tail := s.snapshotAll(deadline)
	if skipped == 0 {
		if saved > 0 {
			s.log.Info("state snapshots saved for the stop", zap.Int("partitions", saved), zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
		}
		return
	}
	s.log.Warn("stopping without some state snapshots, to leave the rest of shutdown.budget to the archive and the other phases; the next start replays their readings from the raw topic (raise shutdown.budget to save them all)",
		zap.Int("saved", saved), zap.Int("skipped", skipped), zap.Int64("readings_to_replay", tail),
		zap.Duration("took", time.Since(t0).Round(time.Millisecond)), zap.Duration("stop_budget", s.o.StopBudget))
}

// snapshotAll saves every partition whose state moved since its last
// snapshot. The partitions are independent, so they are encoded on every
// core at once (BenchmarkSnapshotAll: 1.4-1.6 times faster on two cores).
// With a deadline (not zero) it saves the partitions with the most
// readings since their last snapshot first, and starts none it does not
// expect to finish by then (at the per-device rate of the saves so far):
// at a million devices a full save takes about a minute, which would
// take all of shutdown.budget from the phases after the stream's. It
// returns the partitions saved and skipped, and the readings the skipped
// ones will replay.
func (s *Stream) snapshotAll(deadline time.Time) (saved, skipped int, tail int64) {
	var ps []int32
	for p, part := range s.parts {
		if s.snap.dirty(p, part.Next) {
			ps = append(ps, p)
		}
	}
	since := func(p int32) int64 { return s.parts[p].Next - s.snap.saved[p] }
	slices.SortFunc(ps, func(a, b int32) int { return cmp.Compare(since(b), since(a)) })
	errs := make([]error, len(ps))
	done := make([]bool, len(ps))
	var (
		mu      sync.Mutex
		devices int
		took    time.Duration // saving devices, summed over the workers
	)
	onEveryCore(len(ps), func(i int) {
		p := ps[i]
		if !deadline.IsZero() {
			// started when a core is free: the saves so far set the rate
			mu.Lock()
			var expect time.Duration
			if devices > 0 {
				expect = took / time.Duration(devices) * time.Duration(len(s.parts[p].Devices))
			}
			mu.Unlock()
			if time.Now().Add(expect).After(deadline) {
				return
			}
		}
		t0 := time.Now()
		errs[i] = s.snap.write(p, s.parts[p])
		mu.Lock()
		devices += len(s.parts[p].Devices)
		took += time.Since(t0)
		mu.Unlock()
		done[i] = true
	})
	for i, p := range ps {
		switch {
		case !done[i]:
			skipped++
			tail += since(p)
		case errs[i] != nil:
			s.log.Warn("state snapshot failed; a restart will replay more of the raw topic", zap.Int32("partition", p), zap.Error(errs[i]))
		default:
			s.snap.mark(p, s.parts[p].Next)
			saved++
		}
	}
	return saved, skipped, tail
}

// onEveryCore calls fn(0) ... fn(n-1), as many at once as there are cores,
// and returns when all have.
func onEveryCore(n int, fn func(i int)) {
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}
