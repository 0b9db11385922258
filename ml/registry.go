package ml

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/storage"
)

// A model's files: contract.ModelKey(version, modelFile) and
// contract.ModelKey(version, metaFile); contract.CurrentModelKey names the
// version every region runs.
const (
	modelFile = "model.bin"
	metaFile  = "meta.json"
)

// ModelMeta describes a saved model.
type ModelMeta struct {
	Version     string      `json:"version"`
	Kind        string      `json:"kind"`
	CreatedAt   time.Time   `json:"created_at"`
	Holder      string      `json:"holder"`
	Epoch       int64       `json:"epoch"`
	Features    Features    `json:"features"`
	FeatureList []string    `json:"feature_names"`
	Params      any         `json:"params"`
	Threshold   float64     `json:"threshold"`
	Calibration string      `json:"calibration"`
	AlertRate   float64     `json:"target_alert_rate,omitzero"`
	CV          []Candidate `json:"cv"`
	Winner      string      `json:"winner"`
	Data        DataStats   `json:"data"`
	ModelBytes  int64       `json:"model_bytes"`
	SHA256      string      `json:"sha256"`
	Nodes       int         `json:"nodes"`
	Trees       int         `json:"trees"`
	TrainSecs   float64     `json:"train_seconds"`
}

// Current is the content of models/current.
type Current struct {
	// Version every process scores with ("" or pipeline.BaselineName: the
	// streaming baseline).
	Version string `json:"version"`
	// Shadow is scored beside Version, and recorded, but raises nothing.
	Shadow      string    `json:"shadow,omitzero"`
	ShadowSince time.Time `json:"shadow_since,omitzero"`
	// Fence is the highest lease epoch that has touched the registry: a
	// model from a lower epoch is never promoted (rollback excepted).
	Fence     int64     `json:"fence"`
	ChangedAt time.Time `json:"changed_at"`
	ChangedBy string    `json:"changed_by"`
	Action    string    `json:"action"`
	// History lists earlier versions, newest first (for rollback).
	History []string `json:"history,omitzero"`
}

// ErrStale means a promotion lost to a newer epoch or a concurrent change.
var ErrStale = errors.New("stale")

// Registry is the model registry in the shared bucket.
type Registry struct {
	Store storage.Store
}

// NewVersion names a model trained at epoch e.
func NewVersion(e int64, now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("m%s-e%d-%s", now.UTC().Format("20060102T150405"), e, hex.EncodeToString(b[:]))
}

// validVersion: 1-100 letters, digits, '.', '_' or '-', and not a dot path.
func validVersion(v string) bool {
	if v == "" || len(v) > 100 || v == "." || v == ".." {
		return false
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Save writes the model file (streamed through a pipe: the encoded form is
// never held in memory) and then its metadata; a model is visible once its
// meta.json exists.
func (r *Registry) Save(ctx context.Context, meta ModelMeta, f *Forest) (ModelMeta, error) {
	pr, pw := io.Pipe()
	h := sha256.New()
	var n int64
	go func() {
		var err error
		n, err = f.WriteTo(io.MultiWriter(pw, h))
		pw.CloseWithError(err)
	}()
	key := contract.ModelKey(meta.Version, modelFile)
	// versions are unique, so a plain write (a multipart upload on S3) is safe
	if _, err := r.Store.Put(ctx, key, pr, -1); err != nil {
		pr.CloseWithError(err)
		return meta, fmt.Errorf("save %s: %w", key, err)
	}
	meta.ModelBytes, meta.SHA256, meta.Kind = n, hex.EncodeToString(h.Sum(nil)), f.Kind
	meta.Nodes, meta.Trees = f.Nodes(), len(f.Roots)
	b, err := json.Marshal(meta, json.Deterministic(true))
	if err != nil {
		return meta, err
	}
	mkey := contract.ModelKey(meta.Version, metaFile)
	if _, err := r.Store.PutIfAbsent(ctx, mkey, bytes.NewReader(b), int64(len(b))); err != nil {
		return meta, fmt.Errorf("save %s: %w", mkey, err)
	}
	return meta, nil
}

// Meta reads a model's metadata.
func (r *Registry) Meta(ctx context.Context, version string) (ModelMeta, error) {
	var m ModelMeta
	if !validVersion(version) {
		return m, fmt.Errorf("%q is not a model version (1-100 letters, digits, '.', '_', '-')", version)
	}
	if err := r.getJSON(ctx, contract.ModelKey(version, metaFile), &m, nil); err != nil {
		return m, err
	}
	return m, nil
}

// List returns every saved model, newest first.
func (r *Registry) List(ctx context.Context) ([]ModelMeta, error) {
	objs, err := r.Store.List(ctx, contract.ModelsPrefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", contract.ModelsPrefix, err)
	}
	var out []ModelMeta
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/"+metaFile) {
			continue
		}
		var m ModelMeta
		if err := r.getJSON(ctx, o.Key, &m, nil); err != nil {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// Load reads a model and builds its scorer; the model file is decoded as
// it streams from the store.
func (r *Registry) Load(ctx context.Context, version string, thr float64) (*ModelScorer, ModelMeta, error) {
	meta, err := r.Meta(ctx, version)
	if err != nil {
		return nil, meta, err
	}
	rc, _, err := r.Store.Get(ctx, contract.ModelKey(version, modelFile))
	if err != nil {
		return nil, meta, fmt.Errorf("read model %s: %w", version, err)
	}
	defer rc.Close()
	h := sha256.New()
	f, err := ReadForest(io.TeeReader(rc, h))
	if err != nil {
		return nil, meta, fmt.Errorf("model %s: %w", version, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != meta.SHA256 {
		return nil, meta, fmt.Errorf("model %s: file checksum %s does not match its metadata (%s)", version, got, meta.SHA256)
	}
	if f.NFeat != meta.Features.Width() {
		return nil, meta, fmt.Errorf("model %s reads %d features, its metadata describes %d", version, f.NFeat, meta.Features.Width())
	}
	return NewModelScorer(meta, f, thr), meta, nil
}

// Current reads models/current; a missing object is the baseline with
// fence 0 and an empty ETag.
func (r *Registry) Current(ctx context.Context) (Current, string, error) {
	var c Current
	var info storage.ObjectInfo
	err := r.getJSON(ctx, contract.CurrentModelKey, &c, &info)
	if errors.Is(err, storage.ErrNotFound) {
		return Current{Version: pipeline.BaselineName}, "", nil
	}
	return c, info.ETag, err
}

func (r *Registry) getJSON(ctx context.Context, key string, v any, info *storage.ObjectInfo) error {
	rc, oi, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is not valid: %w", key, err)
	}
	if info != nil {
		*info = oi
	}
	return nil
}

// update changes models/current with a conditional write on the ETag it
// read, retrying when someone else changed it in between.
func (r *Registry) update(ctx context.Context, change func(c *Current) error) (Current, error) {
	for attempt := 0; ; attempt++ {
		c, etag, err := r.Current(ctx)
		if err != nil {
			return c, err
		}
		if err := change(&c); err != nil {
			return c, err
		}
		c.ChangedAt = time.Now().UTC()
		b, _ := json.Marshal(c)
		if etag == "" {
			_, err = r.Store.PutIfAbsent(ctx, contract.CurrentModelKey, bytes.NewReader(b), int64(len(b)))
		} else {
			_, err = r.Store.PutIfMatch(ctx, contract.CurrentModelKey, bytes.NewReader(b), int64(len(b)), etag)
		}
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, storage.ErrPrecondition) || attempt >= 20 {
			return c, fmt.Errorf("write %s: %w", contract.CurrentModelKey, err)
		}
	}
}

// RaiseFence records that epoch now leads: models from lower epochs can no
// longer be promoted. A new trainer calls it before anything else.
func (r *Registry) RaiseFence(ctx context.Context, epoch int64, by string) (Current, error) {
	return r.update(ctx, func(c *Current) error {
		if c.Fence > epoch {
			return fmt.Errorf("%w: the registry is fenced at epoch %d, above this trainer's %d", ErrStale, c.Fence, epoch)
		}
		if c.Fence == epoch {
			return nil
		}
		c.Fence, c.ChangedBy, c.Action = epoch, by, "fence"
		return nil
	})
}

func pushHistory(c *Current) {
	if c.Version == "" {
		return
	}
	c.History = append([]string{c.Version}, c.History...)
	if len(c.History) > 50 {
		c.History = c.History[:50]
	}
}

// Promote makes version current (and ends any shadow of it). It refuses a
// model from an epoch below the fence; epoch > 0 is the caller's lease
// epoch when the trainer promotes, and must not be below the fence either.
func (r *Registry) Promote(ctx context.Context, version, by string, epoch int64) (Current, error) {
	m, err := r.Meta(ctx, version)
	if err != nil {
		return Current{}, fmt.Errorf("promote %s: %w", version, err)
	}
	return r.update(ctx, func(c *Current) error {
		if m.Epoch < c.Fence || epoch > 0 && epoch < c.Fence {
			return fmt.Errorf("%w: model %s is from lease epoch %d, the registry is fenced at epoch %d (a newer trainer leads); roll back explicitly to run an older model", ErrStale, version, m.Epoch, c.Fence)
		}
		if c.Version == version {
			c.Shadow = ""
			return nil
		}
		pushHistory(c)
		c.Version, c.ChangedBy, c.Action = version, by, "promote"
		if c.Shadow == version {
			c.Shadow, c.ShadowSince = "", time.Time{}
		}
		c.Fence = max(c.Fence, m.Epoch, epoch)
		return nil
	})
}

// SetShadow runs version in shadow (scored and recorded beside the current
// model, raising nothing); "" ends the shadow. The fence applies as in Promote.
func (r *Registry) SetShadow(ctx context.Context, version, by string, epoch int64) (Current, error) {
	var m ModelMeta
	if version != "" {
		var err error
		if m, err = r.Meta(ctx, version); err != nil {
			return Current{}, fmt.Errorf("shadow %s: %w", version, err)
		}
	}
	return r.update(ctx, func(c *Current) error {
		if version != "" && (m.Epoch < c.Fence || epoch > 0 && epoch < c.Fence) {
			return fmt.Errorf("%w: model %s is from lease epoch %d, the registry is fenced at epoch %d", ErrStale, version, m.Epoch, c.Fence)
		}
		c.Shadow, c.ChangedBy, c.Action = version, by, "shadow"
		c.ShadowSince = time.Time{}
		if version != "" {
			c.ShadowSince = time.Now().UTC()
		}
		return nil
	})
}

// Rollback makes an earlier version current: version, or when empty the
// newest entry of the history. It is the operator's explicit choice, so it
// may go below the fence (the fence stays where it is). pipeline's
// baseline name rolls back to the streaming baseline.
func (r *Registry) Rollback(ctx context.Context, version, by string) (Current, error) {
	if version != "" && version != pipeline.BaselineName {
		if _, err := r.Meta(ctx, version); err != nil {
			return Current{}, fmt.Errorf("roll back to %s: %w", version, err)
		}
	}
	return r.update(ctx, func(c *Current) error {
		target := version
		if target == "" {
			if len(c.History) == 0 {
				return errors.New("nothing to roll back to: models/current has no history")
			}
			target = c.History[0]
			c.History = c.History[1:]
		} else {
			pushHistory(c)
		}
		c.Version, c.ChangedBy, c.Action = target, by, "rollback"
		return nil
	})
}
