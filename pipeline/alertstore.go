package pipeline

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"

	"context"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// AlertStore keeps the most recent alerts for the API. It is rebuilt from
// the alerts topic at start (read committed, so aborted batches never show)
// and follows it, so it also holds alerts raised by other processes of the
// group. Closing updates replace the alert they close.
type AlertStore struct {
	topic string
	size  int
	opts  []kgo.Opt
	log   *zap.Logger

	mu     sync.RWMutex
	byID   map[string]*contract.Alert
	order  []*contract.Alert // by detected_at, oldest first
	loaded chan struct{}
	subs   map[chan struct{}]struct{}
}

// AlertStoreOptions are the alert store's dependencies.
type AlertStoreOptions struct {
	Topic      string    // the alerts topic
	ClientOpts []kgo.Opt // the bus's client options
	Logger     *zap.Logger
}

// NewAlertStore builds a store of the last cfg.AlertStoreSize alerts.
func NewAlertStore(cfg Config, o AlertStoreOptions) *AlertStore {
	topic, size, opts, log := o.Topic, cfg.AlertStoreSize, o.ClientOpts, o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &AlertStore{topic: topic, size: size, opts: opts, log: log, byID: map[string]*contract.Alert{}, loaded: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
}

// Loaded is closed once the store has read the topic's recent history.
func (s *AlertStore) Loaded() <-chan struct{} { return s.loaded }

// Run follows the alerts topic until ctx ends, from its recent history
// (the last 2×size records of each partition).
func (s *AlertStore) Run(ctx context.Context) error {
	span := bus.Span{Topic: s.topic, From: func(_ int32, _, end int64) int64 { return end - int64(2*s.size) }}
	return bus.Follow(ctx, s.opts, span, func() {
		close(s.loaded)
		s.log.Info("alert store loaded", zap.Int("alerts", s.Len()))
	}, func(rec *kgo.Record) {
		a, err := contract.DecodeAlert(rec.Value)
		if err != nil {
			s.log.Warn("alert store: skipping a record that is not an alert", zap.Int64("offset", rec.Offset), zap.Error(err))
			return
		}
		s.Add(&a)
	})
}

// Add inserts or updates an alert.
func (s *AlertStore) Add(a *contract.Alert) {
	s.mu.Lock()
	if old, ok := s.byID[a.AlertID]; ok {
		*old = *a
		s.mu.Unlock()
		s.notify()
		return
	}
	s.byID[a.AlertID] = a
	i := sort.Search(len(s.order), func(i int) bool { return s.order[i].DetectedAt.After(a.DetectedAt) })
	s.order = append(s.order, nil)
	copy(s.order[i+1:], s.order[i:])
	s.order[i] = a
	if len(s.order) > s.size {
		drop := len(s.order) - s.size
		for _, x := range s.order[:drop] {
			delete(s.byID, x.AlertID)
		}
		s.order = append(s.order[:0], s.order[drop:]...)
	}
	s.mu.Unlock()
	s.notify()
}

func (s *AlertStore) notify() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel that receives a signal after each change, and
// a function to stop the subscription.
func (s *AlertStore) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}
}

// Get returns one alert by id.
func (s *AlertStore) Get(id string) (contract.Alert, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.byID[id]
	if !ok {
		return contract.Alert{}, false
	}
	return *a, true
}

// Len is the number of alerts held.
func (s *AlertStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.order)
}

// Query returns up to limit alerts, newest detected_at first, of one device
// (when device is set) detected at or after since (when not zero).
func (s *AlertStore) Query(limit int, device string, since time.Time) []contract.Alert {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]contract.Alert, 0, min(limit, len(s.order)))
	for i := len(s.order) - 1; i >= 0 && len(out) < limit; i-- {
		a := s.order[i]
		if !since.IsZero() && a.DetectedAt.Before(since) {
			break
		}
		if device != "" && a.DeviceID != device {
			continue
		}
		out = append(out, *a)
	}
	return out
}
