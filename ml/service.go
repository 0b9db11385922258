package ml

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/storage"
)

// Config is the models section of config.yaml.
type Config struct {
	// Train makes this process a candidate for the trainer lease. Default true.
	Train bool `yaml:"train"`
	// Holder names this process in the lease. Default "" (host-pid-random).
	Holder string `yaml:"holder"`
	// LeaseTTL: a challenger takes over after seeing no renewal this long. Default 30s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// PollInterval is how often models/current is checked (by ETag). Default 2s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// TrainInterval is the schedule: train when the newest model is older
	// than this... Default 6h.
	TrainInterval time.Duration `yaml:"train_interval"`
	// MinNewRows: ...and at least this many rows were archived since it was
	// trained. Default 100000.
	MinNewRows int64 `yaml:"min_new_rows"`
	// SampleFraction of the archive's objects to read. Default 1.
	SampleFraction float64 `yaml:"sample_fraction"`
	// MaxRows caps the rows kept (a uniform sample). Default 50000.
	MaxRows int `yaml:"max_rows"`
	// MaxMetrics caps the metrics (the most frequent). Default 32.
	MaxMetrics int `yaml:"max_metrics"`
	// SupervisedRows caps the labelled rows of the random forest and MLP. Default 4000.
	SupervisedRows int `yaml:"supervised_rows"`
	// MinLabelled is how many rows of each class they need. Default 50.
	MinLabelled int `yaml:"min_labelled"`
	// Folds of the cross-validation. Default 3.
	Folds int `yaml:"folds"`
	// AlertRate calibrates the threshold when there are no labels. Default 0.002.
	AlertRate float64 `yaml:"alert_rate"`
	// Promote: "auto" (promote at once), "shadow" (run in shadow for
	// ShadowFor, then promote) or "manual" (wait for the API). Default "shadow".
	Promote string `yaml:"promote"`
	// ShadowFor is how long a new model runs in shadow. Default 30m.
	ShadowFor time.Duration `yaml:"shadow_for"`
}

// Default is the models section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{Train: true, LeaseTTL: 30 * time.Second, PollInterval: 2 * time.Second, TrainInterval: 6 * time.Hour, MinNewRows: 100_000,
		SampleFraction: 1, MaxRows: 50_000, MaxMetrics: 32, SupervisedRows: 4000, MinLabelled: 50, Folds: 3, AlertRate: 0.002,
		Promote: "shadow", ShadowFor: 30 * time.Minute}
}

// Validate checks the section; errors name the key below "models.".
func (c Config) Validate() error {
	switch {
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("lease_ttl: must be at least 1s, got %s", c.LeaseTTL)
	case c.PollInterval <= 0:
		return fmt.Errorf("poll_interval: must be positive, got %s", c.PollInterval)
	case c.TrainInterval <= 0:
		return fmt.Errorf("train_interval: must be positive, got %s", c.TrainInterval)
	case c.MinNewRows < 0:
		return fmt.Errorf("min_new_rows: must not be negative, got %d", c.MinNewRows)
	case c.SampleFraction <= 0 || c.SampleFraction > 1:
		return fmt.Errorf("sample_fraction: must be in (0, 1], got %g", c.SampleFraction)
	case c.MaxRows < 100:
		return fmt.Errorf("max_rows: must be at least 100, got %d", c.MaxRows)
	case c.MaxMetrics < 1:
		return fmt.Errorf("max_metrics: must be at least 1, got %d", c.MaxMetrics)
	case c.SupervisedRows < 100:
		return fmt.Errorf("supervised_rows: must be at least 100, got %d", c.SupervisedRows)
	case c.MinLabelled < 1:
		return fmt.Errorf("min_labelled: must be at least 1, got %d", c.MinLabelled)
	case c.Folds < 2 || c.Folds > 20:
		return fmt.Errorf("folds: must be between 2 and 20, got %d", c.Folds)
	case c.AlertRate <= 0 || c.AlertRate >= 0.5:
		return fmt.Errorf("alert_rate: must be in (0, 0.5), got %g", c.AlertRate)
	case c.Promote != "auto" && c.Promote != "shadow" && c.Promote != "manual":
		return fmt.Errorf("promote: must be auto, shadow or manual, got %q", c.Promote)
	case c.ShadowFor < 0:
		return fmt.Errorf("shadow_for: must not be negative, got %s", c.ShadowFor)
	}
	return nil
}

// Target is what the service hands scorers to: the stream's processor.
type Target interface {
	SetModels(model, shadow pipeline.Model)
}

// ServiceOptions wire a Service.
type ServiceOptions struct {
	// Holder names this process in the trainer lease (unique per process).
	Holder    string
	Store     storage.Store
	Target    Target
	Threshold float64 // the pipeline's alert threshold
	Buckets   int     // pipeline.attr_buckets
	Logger    *zap.Logger
}

// Service runs the models of one process: it polls models/current and
// hands the processor the model (and shadow) it names, and, while this
// process holds the trainer lease, trains on schedule and on request.
type Service struct {
	cfg   Config
	o     ServiceOptions
	reg   *Registry
	lease *Lease
	log   *zap.Logger
	kick  chan struct{}

	mu       sync.Mutex
	st       Status
	loaded   map[string]*ModelScorer
	lastEtag string
	peeked   LeaseRecord // the lease as read by a process that does not run for it
	listedAt time.Time   // last archive listing for the schedule (lead goroutine only)
}

// Status is this process's view of models and the lease, for the API.
type Status struct {
	Holder            string    `json:"holder"`
	Candidate         bool      `json:"candidate"`
	Leading           bool      `json:"leading"`
	Epoch             int64     `json:"epoch"`
	LeaseError        string    `json:"lease_error,omitzero"`
	Current           Current   `json:"current"`
	Running           string    `json:"running"`
	RunningShadow     string    `json:"running_shadow,omitzero"`
	SwapError         string    `json:"swap_error,omitzero"`
	Training          bool      `json:"training"`
	LastTrainedAt     time.Time `json:"last_trained_at,omitzero"`
	LastTrainedModel  string    `json:"last_trained_model,omitzero"`
	LastTrainingError string    `json:"last_training_error,omitzero"`
}

// NewService builds the models service; holder names this process.
func NewService(cfg Config, o ServiceOptions) *Service {
	holder := o.Holder
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Service{cfg: cfg, o: o, reg: &Registry{Store: o.Store}, log: o.Logger, kick: make(chan struct{}, 1), loaded: map[string]*ModelScorer{}}
	s.lease = NewLease(o.Store, holder, cfg.LeaseTTL)
	s.st.Holder, s.st.Candidate, s.st.Running = holder, cfg.Train, pipeline.BaselineName
	s.st.Current.Version = pipeline.BaselineName
	return s
}

// Registry is the model registry the service uses.
func (s *Service) Registry() *Registry { return s.reg }

// Status returns this process's view.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Leading, st.Epoch = s.lease.Leading()
	return st
}

// Lease returns the lease record as last read.
func (s *Service) Lease() LeaseRecord {
	if !s.cfg.Train {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.peeked
	}
	return s.lease.Record()
}

// peekLease reads the lease without taking part (models.train: false), so
// this process can still say who trains.
func (s *Service) peekLease(ctx context.Context) {
	rc, _, err := s.o.Store.Get(ctx, LeaseKey)
	if err != nil {
		return
	}
	defer rc.Close()
	var rec LeaseRecord
	if json.UnmarshalRead(rc, &rec) == nil {
		s.mu.Lock()
		s.peeked = rec
		s.mu.Unlock()
	}
}

// Run polls the registry and, when this process is a candidate, runs for
// the trainer lease, until ctx ends; then it releases the lease.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { s.watch(ctx); return nil })
	if s.cfg.Train {
		g.Go(func() error { s.lead(ctx); return nil })
	}
	return g.Wait()
}

// Models lists the models in the registry and the current choice.
func (s *Service) Models(ctx context.Context) ([]ModelMeta, Current, error) {
	models, err := s.reg.List(ctx)
	if err != nil {
		return nil, Current{}, fmt.Errorf("list the models: %w", err)
	}
	cur, _, err := s.reg.Current(ctx)
	if err != nil {
		return nil, Current{}, fmt.Errorf("read %s: %w", contract.CurrentModelKey, err)
	}
	return models, cur, nil
}

// Model describes one model version.
func (s *Service) Model(ctx context.Context, version string) (ModelMeta, error) {
	return s.reg.Meta(ctx, version)
}

// The operator's actions on models/current: each is a conditional write
// by the operator (by, e.g. "api@eu-west"), not fenced by a trainer's
// lease epoch, and this process picks the change up at once; the other
// processes within models.poll_interval.

// Promote makes version the model every region runs.
func (s *Service) Promote(ctx context.Context, version, by string) (Current, error) {
	return s.refreshAfter(ctx)(s.reg.Promote(ctx, version, by, 0))
}

// SetShadow runs version in shadow beside the current model.
func (s *Service) SetShadow(ctx context.Context, version, by string) (Current, error) {
	return s.refreshAfter(ctx)(s.reg.SetShadow(ctx, version, by, 0))
}

// Rollback returns to version, or to the previous model when version is "".
func (s *Service) Rollback(ctx context.Context, version, by string) (Current, error) {
	return s.refreshAfter(ctx)(s.reg.Rollback(ctx, version, by))
}

func (s *Service) refreshAfter(ctx context.Context) func(Current, error) (Current, error) {
	return func(c Current, err error) (Current, error) {
		if err == nil {
			s.Refresh(ctx)
		}
		return c, err
	}
}

// Refresh checks models/current now (the API calls it after a change).
func (s *Service) Refresh(ctx context.Context) { s.poll(ctx) }

func (s *Service) watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		s.poll(ctx)
		if !s.cfg.Train {
			s.peekLease(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll reads models/current when its ETag changed and hands the processor
// the scorers it names. A model that fails to load keeps the old scorer
// running and is retried at the next poll.
func (s *Service) poll(ctx context.Context) {
	info, err := s.o.Store.Stat(ctx, contract.CurrentModelKey)
	etag := info.ETag
	if errors.Is(err, storage.ErrNotFound) {
		etag = "-"
	} else if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot check models/current; keeping the current model", zap.Error(err))
		}
		return
	}
	s.mu.Lock()
	same := etag == s.lastEtag
	s.mu.Unlock()
	if same {
		return
	}
	cur, _, err := s.reg.Current(ctx)
	if err != nil {
		s.setSwapError(fmt.Errorf("read models/current: %w", err))
		return
	}
	primary, err := s.scorer(ctx, cur.Version)
	if err != nil {
		s.setSwapError(err)
		return
	}
	var shadow pipeline.Model
	if cur.Shadow != "" && cur.Shadow != cur.Version {
		if shadow, err = s.scorer(ctx, cur.Shadow); err != nil {
			s.setSwapError(err)
			return
		}
	}
	s.o.Target.SetModels(primary, shadow)
	s.mu.Lock()
	prev := s.st.Running
	s.lastEtag, s.st.Current, s.st.SwapError = etag, cur, ""
	s.st.Running, s.st.RunningShadow = modelName(primary), ""
	if shadow != nil {
		s.st.RunningShadow = shadow.Name()
	}
	s.mu.Unlock()
	if prev != modelName(primary) || shadow != nil {
		s.log.Info("model handed to the pipeline", zap.String("model", modelName(primary)), zap.String("shadow", cur.Shadow), zap.String("action", cur.Action), zap.String("by", cur.ChangedBy))
	}
}

// modelName is the name of m, or the streaming detectors' for nil.
func modelName(m pipeline.Model) string {
	if m == nil {
		return pipeline.BaselineName
	}
	return m.Name()
}

func (s *Service) setSwapError(err error) {
	s.log.Error("cannot load the model named by models/current; the pipeline keeps its current model. Check the model's files in the bucket, or roll back (POST /api/v1/models/rollback)", zap.Error(err))
	s.mu.Lock()
	s.st.SwapError = err.Error()
	s.mu.Unlock()
}

func (s *Service) scorer(ctx context.Context, version string) (pipeline.Model, error) {
	if version == "" || version == pipeline.BaselineName {
		return nil, nil // the streaming detectors alone
	}
	s.mu.Lock()
	sc := s.loaded[version]
	s.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	sc, _, err := s.reg.Load(ctx, version, s.o.Threshold)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.loaded) > 8 {
		clear(s.loaded)
	}
	s.loaded[version] = sc
	s.mu.Unlock()
	return sc, nil
}

// RequestTraining asks the trainer (in whichever process or region holds
// the lease) to train now, through an object in the bucket.
func (s *Service) RequestTraining(ctx context.Context, by string) error {
	b, _ := json.Marshal(map[string]any{"requested_at": time.Now().UTC(), "by": by})
	if _, err := s.o.Store.Put(ctx, contract.TrainRequestKey, bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("store the training request (%s): %w", contract.TrainRequestKey, err)
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

func (s *Service) lead(ctx context.Context) {
	interval := s.cfg.LeaseTTL / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		wasLeading bool
		epoch      int64
		stopTrain  = func() {}
		done       chan struct{}
		lastModel  time.Time
		refused    time.Time
	)
	defer func() {
		stopTrain()
		if done != nil {
			<-done
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.lease.Release(rctx); err != nil {
			s.log.Warn("could not release the trainer lease; another process takes over after lease_ttl", zap.Error(err))
		}
	}()
	for {
		leading, err := s.lease.Tick(ctx)
		s.mu.Lock()
		s.st.LeaseError = ""
		if err != nil {
			s.st.LeaseError = err.Error()
		}
		s.mu.Unlock()
		switch {
		case errors.Is(err, ErrNoConditionalWrites):
			if time.Since(refused) > 10*time.Minute {
				refused = time.Now()
				s.log.Error("not taking part in the trainer election: use an object store that honours If-None-Match and If-Match (MinIO, AWS S3, or the local store)", zap.Error(err))
			}
		case err != nil && ctx.Err() == nil:
			s.log.Warn("trainer lease check failed; retrying", zap.Error(err))
		}
		if leading && !wasLeading {
			_, epoch = s.lease.Leading()
			s.log.Info("this process is now the trainer", zap.String("holder", s.st.Holder), zap.Int64("epoch", epoch))
			if _, err := s.reg.RaiseFence(ctx, epoch, s.st.Holder); err != nil {
				s.log.Error("could not raise the registry fence to this trainer's epoch; not training", zap.Error(err))
				leading = false
			}
			if models, err := s.reg.List(ctx); err == nil {
				for _, m := range models {
					if m.CreatedAt.After(lastModel) {
						lastModel = m.CreatedAt
					}
				}
			}
		}
		if !leading && wasLeading {
			s.log.Warn("this process is no longer the trainer; stopping any training", zap.Int64("epoch", epoch))
			stopTrain()
		}
		wasLeading = leading
		if done != nil {
			select {
			case <-done:
				done = nil
				s.mu.Lock()
				if !s.st.LastTrainedAt.IsZero() {
					lastModel = s.st.LastTrainedAt
				}
				s.mu.Unlock()
			default:
			}
		}
		if leading && done == nil {
			s.promoteShadow(ctx, epoch)
			if why := s.due(ctx, lastModel); why != "" {
				trainCtx, cancel := context.WithCancel(ctx)
				stopTrain = func() { cancel() }
				done = make(chan struct{})
				go func(ctx context.Context, epoch int64, done chan struct{}) {
					defer close(done)
					s.train(ctx, epoch, why)
				}(trainCtx, epoch, done)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// due says why training should start now ("" = not due).
func (s *Service) due(ctx context.Context, lastModel time.Time) string {
	if _, err := s.o.Store.Stat(ctx, contract.TrainRequestKey); err == nil {
		return "requested"
	}
	if time.Since(lastModel) < s.cfg.TrainInterval || time.Since(s.listedAt) < time.Minute {
		return ""
	}
	// listing the archive grows with it: at most once a minute, not every tick
	s.listedAt = time.Now()
	objs, err := s.o.Store.List(ctx, contract.ArchivePrefix)
	if err != nil {
		return ""
	}
	var rows int64
	for _, o := range objs {
		if o.Modified.After(lastModel) {
			if k, err := contract.ParseArchiveKey(o.Key); err == nil {
				rows += k.Rows()
			}
		}
	}
	if rows >= max(s.cfg.MinNewRows, 1) {
		return "schedule (" + strconv.FormatInt(rows, 10) + " new rows)"
	}
	return ""
}

// promoteShadow promotes this epoch's shadow model once it has run for
// shadow_for (promote: shadow).
func (s *Service) promoteShadow(ctx context.Context, epoch int64) {
	if s.cfg.Promote != "shadow" {
		return
	}
	cur, _, err := s.reg.Current(ctx)
	if err != nil || cur.Shadow == "" || time.Since(cur.ShadowSince) < s.cfg.ShadowFor {
		return
	}
	if _, err := s.reg.Promote(ctx, cur.Shadow, s.st.Holder, epoch); err != nil {
		s.log.Warn("could not promote the shadow model", zap.String("model", cur.Shadow), zap.Error(err))
		return
	}
	s.log.Info("shadow model promoted after its shadow period", zap.String("model", cur.Shadow), zap.Duration("shadow_for", s.cfg.ShadowFor))
	s.Refresh(ctx)
}

// Train runs one training at epoch now (used by the trainer loop and by tests).
func (s *Service) train(ctx context.Context, epoch int64, why string) {
	_ = s.o.Store.Delete(ctx, contract.TrainRequestKey)
	s.mu.Lock()
	s.st.Training = true
	s.mu.Unlock()
	s.log.Info("training started", zap.String("why", why), zap.Int64("epoch", epoch))
	meta, err := s.TrainOnce(ctx, epoch)
	s.mu.Lock()
	s.st.Training = false
	s.st.LastTrainedAt = time.Now()
	if err != nil {
		s.st.LastTrainingError = err.Error()
	} else {
		s.st.LastTrainingError, s.st.LastTrainedModel = "", meta.Version
	}
	s.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			s.log.Warn("training stopped: this process lost the trainer lease or is stopping", zap.Error(err))
		} else {
			s.log.Error("training failed; the current model stays in place and training is retried at the next schedule", zap.Error(err))
		}
		return
	}
	s.Refresh(ctx)
}

// TrainOnce reads the archive, trains, saves the model stamped with epoch
// and applies the promotion policy. The promotion is fenced: it fails if
// a trainer of a newer epoch has touched the registry.
func (s *Service) TrainOnce(ctx context.Context, epoch int64) (ModelMeta, error) {
	c := s.cfg
	start := time.Now()
	ds, err := LoadArchive(ctx, s.o.Store, LoadOptions{Fraction: c.SampleFraction, MaxRows: c.MaxRows, MaxMetrics: c.MaxMetrics,
		Buckets: s.o.Buckets, Progress: 5 * time.Second, Log: s.log, Seed: uint64(start.UnixNano())})
	if err != nil {
		return ModelMeta{}, err
	}
	res, err := Train(ctx, ds, TrainOptions{Folds: c.Folds, AlertRate: c.AlertRate, SupervisedRows: c.SupervisedRows, MinLabelled: c.MinLabelled, Log: s.log})
	if err != nil {
		return ModelMeta{}, fmt.Errorf("train on %d rows: %w", len(ds.X), err)
	}
	meta := ModelMeta{Version: NewVersion(epoch, time.Now()), CreatedAt: time.Now().UTC(), Holder: s.st.Holder, Epoch: epoch,
		Features: ds.Features, FeatureList: ds.Features.Names(), Params: res.Winner.Params, Threshold: res.Threshold,
		Calibration: res.Calibration, CV: res.Candidates, Winner: res.Winner.Model, Data: ds.Stats, TrainSecs: time.Since(start).Seconds()}
	if !res.Supervised {
		meta.AlertRate = c.AlertRate
	}
	if meta, err = s.reg.Save(ctx, meta, res.Forest); err != nil {
		return meta, err
	}
	s.log.Info("model trained and saved", zap.String("version", meta.Version), zap.String("winner", meta.Winner),
		zap.Any("params", meta.Params), zap.Int("rows", ds.Stats.Rows), zap.Int("labelled", ds.Stats.Labelled),
		zap.Float64("threshold", meta.Threshold), zap.Int64("bytes", meta.ModelBytes), zap.Float64("seconds", meta.TrainSecs))
	switch c.Promote {
	case "auto":
		_, err = s.reg.Promote(ctx, meta.Version, s.st.Holder, epoch)
	case "shadow":
		_, err = s.reg.SetShadow(ctx, meta.Version, s.st.Holder, epoch)
	}
	if err != nil {
		return meta, fmt.Errorf("model %s saved but not put in service: %w", meta.Version, err)
	}
	return meta, nil
}
