package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/storage"
)

// Sentinel errors a caller branches on.
var (
	// ErrNoSink: no sink of that name.
	ErrNoSink = errors.New("no such alert sink")
	// ErrNoDeadLetter: no dead letter of that id in the sink.
	ErrNoDeadLetter = errors.New("no such dead letter")
)

// Options are the notifier's dependencies.
type Options struct {
	Region     string // only alerts this region raised are delivered here
	Topic      string // the alerts topic
	ClientOpts []kgo.Opt
	Store      storage.Store // dead letters live in the shared bucket
	// Open returns the open incidents, re-sent to Alertmanager.
	Open       func() []contract.Alert
	PageURL    string // used when alerts.page_url is empty
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

// DeadLetter is a notification a sink did not take after alerts.max_tries.
type DeadLetter struct {
	ID        string         `json:"id"` // <alert id>.<state>
	Sink      string         `json:"sink"`
	Alert     contract.Alert `json:"alert"`
	Tries     int            `json:"tries"`
	LastError string         `json:"last_error"`
	ParkedAt  time.Time      `json:"parked_at"`
}

// SinkStatus is one sink's health, for the API and the status page.
type SinkStatus struct {
	Name          string       `json:"name"`
	Kind          string       `json:"kind"`
	URL           string       `json:"url"`
	Healthy       bool         `json:"healthy"`
	Delivered     int64        `json:"delivered"`
	FailedTries   int64        `json:"failed_tries"`
	Retrying      string       `json:"retrying,omitzero"` // the notification being retried now
	LastError     string       `json:"last_error,omitzero"`
	LastErrorAt   time.Time    `json:"last_error_at,omitzero"`
	LastDelivered time.Time    `json:"last_delivered,omitzero"`
	DeadLetters   []DeadLetter `json:"dead_letters"`
}

type metrics struct {
	sent, failed, parked *prometheus.CounterVec
	latency              *prometheus.HistogramVec
}

// Notifier delivers the region's alerts to every configured sink.
type Notifier struct {
	cfg   Config
	o     Options
	log   *zap.Logger
	m     metrics
	sinks []*runner
	start time.Time
}

type runner struct {
	n *Notifier
	sender
	mu sync.Mutex
	st SinkStatus
}

// New builds the notifier; Run delivers. With no sinks it does nothing.
func New(cfg Config, o Options) (*Notifier, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	n := &Notifier{cfg: cfg, o: o, log: o.Logger, start: time.Now(), m: metrics{
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_notify_sent_total", Help: "Notifications a sink took."}, []string{"sink"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_notify_failed_tries_total", Help: "Tries a sink refused or did not answer."}, []string{"sink"}),
		parked:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_notify_dead_letters_total", Help: "Notifications parked as dead letters after alerts.max_tries."}, []string{"sink"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vigil_notify_latency_seconds", Help: "From an alert's detection to its sink's acknowledgement.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"sink"}),
	}}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{n.m.sent, n.m.failed, n.m.parked, n.m.latency} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register notify metrics: %w", err)
			}
		}
	}
	page := cfg.PageURL
	if page == "" {
		page = o.PageURL
	}
	for _, s := range cfg.All() {
		r := &runner{n: n, sender: sender{sink: s, client: &http.Client{Timeout: cfg.Timeout}, pageURL: page, resend: cfg.ResendInterval},
			st: SinkStatus{Name: s.Name, Kind: s.Kind, URL: redactURL(s.URL), Healthy: true}}
		n.sinks = append(n.sinks, r)
		// every sink's series exist from the start, at zero
		n.m.sent.WithLabelValues(s.Name)
		n.m.failed.WithLabelValues(s.Name)
		n.m.parked.WithLabelValues(s.Name)
		n.m.latency.WithLabelValues(s.Name)
	}
	return n, nil
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	u.RawQuery = "" // webhook URLs often carry their token in the query
	if u.Path != "" && strings.Contains(u.Host, "hooks.slack.com") {
		u.Path = "/services/…"
	}
	return u.Redacted()
}

// Run delivers until ctx ends. Each sink reads the alerts topic with its
// own consumer group, vigil-notify-<region>-<sink>.
func (n *Notifier) Run(ctx context.Context) error {
	if len(n.sinks) == 0 {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(n.sinks))
	for _, r := range n.sinks {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- r.consume(ctx) }()
		if r.sink.Kind == KindAlertmanager {
			wg.Add(1)
			go func() { defer wg.Done(); r.resendLoop(ctx) }()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) group() string { return "vigil-notify-" + r.n.o.Region + "-" + r.sink.Name }

func (r *runner) consume(ctx context.Context) error {
	n := r.n
	// A sink's first start takes the alerts from a minute before the
	// notifier started on; after that, its committed offset.
	cl, err := kgo.NewClient(bus.With(n.o.ClientOpts,
		kgo.ConsumerGroup(r.group()), kgo.ConsumeTopics(n.o.Topic), kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(n.start.Add(-time.Minute).UnixMilli())),
	)...)
	if err != nil {
		return fmt.Errorf("alert sink %s: consumer: %w", r.sink.Name, err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollRecords(ctx, 64)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			n.log.Warn("alert sink: reading the alerts topic failed; retrying", zap.String("sink", r.sink.Name), zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
		})
		var done []*kgo.Record
		for _, rec := range fetches.Records() {
			a, err := contract.DecodeAlert(rec.Value)
			if err != nil {
				n.log.Warn("alert sink: an alerts-topic record does not decode; skipped", zap.String("sink", r.sink.Name), zap.Int64("offset", rec.Offset), zap.Error(err))
			} else if a.Region == n.o.Region && r.sink.wants(&a) {
				if !r.deliver(ctx, a) {
					return nil // stopping: not committed, sent again at the next start
				}
			}
			done = append(done, rec)
			if err := cl.CommitRecords(ctx, done...); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				n.log.Warn("alert sink: committing the offset failed; the notification may be sent again after a restart (receivers dedupe by Idempotency-Key)", zap.String("sink", r.sink.Name), zap.Error(err))
			}
			done = done[:0]
		}
	}
}

// deliver sends one notification with retries, and parks it after
// alerts.max_tries. It returns false only when ctx ended first.
func (r *runner) deliver(ctx context.Context, a contract.Alert) bool {
	n := r.n
	wait := n.cfg.BackoffInitial
	key := IdempotencyKey(&a)
	var err error
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
		err = r.send(cctx, []contract.Alert{a})
		cancel()
		if err == nil {
			n.m.sent.WithLabelValues(r.sink.Name).Inc()
			if !a.DetectedAt.IsZero() && a.State == "open" {
				n.m.latency.WithLabelValues(r.sink.Name).Observe(time.Since(a.DetectedAt).Seconds())
			}
			r.mu.Lock()
			r.st.Delivered++
			r.st.LastDelivered, r.st.Healthy, r.st.Retrying = time.Now(), true, ""
			r.mu.Unlock()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		n.m.failed.WithLabelValues(r.sink.Name).Inc()
		r.mu.Lock()
		r.st.FailedTries++
		r.st.LastError, r.st.LastErrorAt, r.st.Healthy, r.st.Retrying = err.Error(), time.Now(), false, key
		r.mu.Unlock()
		if try >= n.cfg.MaxTries {
			return r.park(ctx, a, try, err)
		}
		n.log.Warn("alert sink did not take a notification; retrying", zap.String("sink", r.sink.Name), zap.String("notification", key), zap.Int("try", try), zap.Error(err))
		// equal jitter: half the backoff, plus up to half again at random
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, n.cfg.BackoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	}
}

// park stores a dead letter in the bucket; it keeps trying while the
// bucket is down, and returns false only when ctx ended first.
func (r *runner) park(ctx context.Context, a contract.Alert, tries int, cause error) bool {
	n := r.n
	dl := DeadLetter{ID: IdempotencyKey(&a), Sink: r.sink.Name, Alert: a, Tries: tries, LastError: cause.Error(), ParkedAt: time.Now().UTC()}
	b, _ := json.Marshal(dl)
	key := contract.DeadLetterKey(n.o.Region, r.sink.Name, a.AlertID, a.State)
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		_, err := n.o.Store.Put(ctx, key, bytes.NewReader(b), int64(len(b)))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		n.log.Error("alert sink: parking a dead letter in the bucket failed; retrying (the alert stays uncommitted meanwhile)", zap.String("sink", r.sink.Name), zap.String("key", key), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
	n.m.parked.WithLabelValues(r.sink.Name).Inc()
	r.mu.Lock()
	r.st.Retrying = ""
	r.mu.Unlock()
	n.log.Error("alert sink did not take a notification after alerts.max_tries; parked as a dead letter (retry it from the status page or POST /api/v1/sinks/"+r.sink.Name+"/dead-letters/"+dl.ID+"/retry)",
		zap.String("sink", r.sink.Name), zap.String("notification", dl.ID), zap.Int("tries", tries), zap.Error(cause))
	return true
}

// resendLoop sends the open incidents to Alertmanager every
// alerts.resend_interval, so they stay firing while open.
func (r *runner) resendLoop(ctx context.Context) {
	n := r.n
	tk := time.NewTicker(n.cfg.ResendInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if n.o.Open == nil {
			continue
		}
		var open []contract.Alert
		for _, a := range n.o.Open() {
			if a.State == "open" && a.Region == n.o.Region && r.sink.wants(&a) {
				open = append(open, a)
			}
		}
		for len(open) > 0 {
			chunk := open[:min(len(open), 100)]
			open = open[len(chunk):]
			cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
			err := r.send(cctx, chunk)
			cancel()
			if err != nil && ctx.Err() == nil {
				n.m.failed.WithLabelValues(r.sink.Name).Inc()
				n.log.Warn("re-sending open incidents to Alertmanager failed; next try in alerts.resend_interval", zap.String("sink", r.sink.Name), zap.Int("alerts", len(chunk)), zap.Error(err))
				break
			}
		}
	}
}

func (n *Notifier) runner(name string) (*runner, error) {
	for _, r := range n.sinks {
		if r.sink.Name == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSink, name)
}

// Sinks is every sink's health with its dead letters (at most 100 each).
func (n *Notifier) Sinks(ctx context.Context) ([]SinkStatus, error) {
	out := make([]SinkStatus, 0, len(n.sinks))
	for _, r := range n.sinks {
		r.mu.Lock()
		st := r.st
		r.mu.Unlock()
		dls, err := n.DeadLetters(ctx, r.sink.Name, 100)
		if err != nil {
			return nil, err
		}
		st.DeadLetters = dls
		if len(dls) > 0 {
			st.Healthy = false
		}
		out = append(out, st)
	}
	return out, nil
}

// DeadLetters lists a sink's dead letters, oldest first.
func (n *Notifier) DeadLetters(ctx context.Context, sink string, limit int) ([]DeadLetter, error) {
	if _, err := n.runner(sink); err != nil {
		return nil, err
	}
	objs, err := n.o.Store.List(ctx, contract.DeadLettersPrefix+n.o.Region+"/"+sink+"/")
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	out := []DeadLetter{}
	for _, o := range objs {
		if len(out) >= limit {
			break
		}
		dl, err := n.readDeadLetter(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		out = append(out, dl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ParkedAt.Before(out[j].ParkedAt) })
	return out, nil
}

func (n *Notifier) readDeadLetter(ctx context.Context, key string) (DeadLetter, error) {
	rc, _, err := n.o.Store.Get(ctx, key)
	if err != nil {
		return DeadLetter{}, err
	}
	defer rc.Close()
	var dl DeadLetter
	if err := json.UnmarshalRead(rc, &dl); err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", key, err)
	}
	return dl, nil
}

// Retry sends a dead letter once more; on success it is removed.
func (n *Notifier) Retry(ctx context.Context, sink, id string) error {
	r, err := n.runner(sink)
	if err != nil {
		return err
	}
	alertID, state, ok := strings.Cut(id, ".")
	if !ok || !contract.ValidName(alertID) || (state != "open" && state != "closed") {
		return fmt.Errorf("%w: %q", ErrNoDeadLetter, id)
	}
	key := contract.DeadLetterKey(n.o.Region, sink, alertID, state)
	dl, err := n.readDeadLetter(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrNoDeadLetter, id)
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	err = r.send(cctx, []contract.Alert{dl.Alert})
	cancel()
	if err != nil {
		return fmt.Errorf("sink %s still refuses it: %w", sink, err)
	}
	n.m.sent.WithLabelValues(sink).Inc()
	r.mu.Lock()
	r.st.Delivered++
	r.st.LastDelivered = time.Now()
	r.mu.Unlock()
	return n.o.Store.Delete(ctx, key)
}
