// Package ml owns the trained models: training, cross-validation, the model
// registry in the bucket, and the leader lease that makes exactly one
// process (across every region sharing the bucket) the trainer.
package ml

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/storage"
)

// LeaseKey is where the trainer lease lives in the bucket.
var LeaseKey = contract.LeaseKey("trainer")

// LeaseRecord is the lease object's content.
type LeaseRecord struct {
	Holder string `json:"holder"`
	// Epoch is the fencing token: it grows by one at every change of
	// holder, and a model from a lower epoch is never promoted.
	Epoch int64 `json:"epoch"`
	// TTLMillis is how long the holder may go without renewing.
	TTLMillis int64 `json:"ttl_ms"`
	// RenewedAt is the holder's own clock, for people only: no process
	// compares it with its clock.
	RenewedAt time.Time `json:"renewed_at"`
}

// ErrNoConditionalWrites is returned when the store does not honour
// create-only or if-match writes, so a lease on it could have two holders.
var ErrNoConditionalWrites = errors.New("the object store does not honour conditional writes (If-None-Match / If-Match); refusing to lead")

// Lease is one process's view of the trainer lease. A challenger takes
// the lease only after it has watched the lease object stay unchanged
// (same ETag) for a whole TTL on its own clock: clocks are never compared
// across machines. Every write is conditional on the ETag last read, so of
// two challengers at most one wins, and a holder that was taken over
// learns it at its next renewal (its write fails) and stops leading.
type Lease struct {
	store  storage.Store
	holder string
	ttl    time.Duration
	now    func() time.Time

	mu       sync.Mutex
	etag     string      // of the lease object as last read or written
	seen     time.Time   // local time the current etag was first seen
	rec      LeaseRecord // as last read or written
	leading  bool
	verified bool
}

// NewLease builds a lease for holder (a name unique to this process).
func NewLease(store storage.Store, holder string, ttl time.Duration) *Lease {
	return &Lease{store: store, holder: holder, ttl: ttl, now: time.Now}
}

// CheckConditionalWrites proves on a scratch object that the store refuses
// a second create-only write and an if-match write with a stale ETag.
func CheckConditionalWrites(ctx context.Context, s storage.Store) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := contract.LeaseKey(".probe-" + hex.EncodeToString(b[:]))
	defer func() { _ = s.Delete(context.WithoutCancel(ctx), key) }()
	etag, err := s.PutIfAbsent(ctx, key, bytes.NewReader([]byte("1")), 1)
	if err != nil {
		return fmt.Errorf("probe conditional writes on %s: %w", s, err)
	}
	if _, err := s.PutIfAbsent(ctx, key, bytes.NewReader([]byte("2")), 1); !errors.Is(err, storage.ErrPrecondition) {
		return fmt.Errorf("%w: a second create-only write of %s answered %w", ErrNoConditionalWrites, key, errOrOK(err))
	}
	if _, err := s.PutIfMatch(ctx, key, bytes.NewReader([]byte("3")), 1, etag+"x"); !errors.Is(err, storage.ErrPrecondition) {
		return fmt.Errorf("%w: an if-match write with a wrong ETag answered %w", ErrNoConditionalWrites, errOrOK(err))
	}
	if _, err := s.PutIfMatch(ctx, key, bytes.NewReader([]byte("4")), 1, etag); err != nil {
		return fmt.Errorf("%w: an if-match write with the right ETag failed: %w", ErrNoConditionalWrites, err)
	}
	return nil
}

// errOrOK names a nil error "success" in messages.
func errOrOK(err error) error {
	if err == nil {
		return errors.New("success")
	}
	return err
}

// Leading reports whether this process held the lease at its last Tick,
// and the epoch it holds.
func (l *Lease) Leading() (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading, l.rec.Epoch
}

// Record returns the lease as last seen.
func (l *Lease) Record() LeaseRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// Tick reads the lease and acts: it creates it when absent, renews it when
// held, and takes it over when it has not changed for a TTL of local time.
// Call it every TTL/3 or so. It returns whether this process leads now.
func (l *Lease) Tick(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.verified {
		if err := CheckConditionalWrites(ctx, l.store); err != nil {
			l.leading = false
			return false, err
		}
		l.verified = true
	}
	rc, info, err := l.store.Get(ctx, LeaseKey)
	if errors.Is(err, storage.ErrNotFound) {
		return l.write(ctx, "", LeaseRecord{Holder: l.holder, Epoch: 1, TTLMillis: l.ttl.Milliseconds()})
	}
	if err != nil {
		// unknown: a leader that cannot see its lease stops leading
		l.leading = false
		return false, fmt.Errorf("read the trainer lease: %w", err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		l.leading = false
		return false, err
	}
	var rec LeaseRecord
	if err := json.Unmarshal(body, &rec); err != nil {
		return false, fmt.Errorf("the trainer lease at %s is not a lease: %w", LeaseKey, err)
	}
	now := l.now()
	if info.ETag != l.etag {
		l.etag, l.seen, l.rec = info.ETag, now, rec
	}
	if rec.Holder == l.holder {
		// renew, keeping the epoch
		rec.RenewedAt = now.UTC()
		rec.TTLMillis = l.ttl.Milliseconds()
		return l.write(ctx, info.ETag, rec)
	}
	l.leading = false
	if rec.Holder == "" {
		// released at a graceful stop: no need to wait
		return l.write(ctx, info.ETag, LeaseRecord{Holder: l.holder, Epoch: rec.Epoch + 1, TTLMillis: l.ttl.Milliseconds()})
	}
	ttl := time.Duration(rec.TTLMillis) * time.Millisecond
	if ttl <= 0 {
		ttl = l.ttl
	}
	if now.Sub(l.seen) < ttl {
		return false, nil // the holder may still be alive
	}
	return l.write(ctx, info.ETag, LeaseRecord{Holder: l.holder, Epoch: rec.Epoch + 1, TTLMillis: l.ttl.Milliseconds()})
}

// write stores rec conditionally (create-only when etag is empty) and
// records the outcome; losing the race is not an error.
func (l *Lease) write(ctx context.Context, etag string, rec LeaseRecord) (bool, error) {
	rec.RenewedAt = l.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("encode the trainer lease: %w", err)
	}
	var tag string
	if etag == "" {
		tag, err = l.store.PutIfAbsent(ctx, LeaseKey, bytes.NewReader(b), int64(len(b)))
	} else {
		tag, err = l.store.PutIfMatch(ctx, LeaseKey, bytes.NewReader(b), int64(len(b)), etag)
	}
	if errors.Is(err, storage.ErrPrecondition) {
		l.leading = false // someone else wrote first; read again next tick
		return false, nil
	}
	if err != nil {
		l.leading = false
		return false, fmt.Errorf("write the trainer lease: %w", err)
	}
	l.etag, l.seen, l.rec, l.leading = tag, l.now(), rec, true
	return true, nil
}

// Release gives the lease up at a graceful stop, so a successor need not
// wait a TTL: it rewrites the lease with an expired TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leading {
		return nil
	}
	rec := l.rec
	rec.Holder = ""
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = l.store.PutIfMatch(ctx, LeaseKey, bytes.NewReader(b), int64(len(b)), l.etag)
	l.leading = false
	if errors.Is(err, storage.ErrPrecondition) {
		return nil
	}
	return err
}
