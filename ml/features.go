package ml

import (
	"github.com/vigil/vigil/contract"

	"hash/fnv"
	"strconv"

	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/storage"
)

// Features is the feature vector of the trained models, built the same way
// from an archived row (training) and from a live observation (scoring).
// Per metric: its value, its delta from the previous reading, its z-score
// against the device's baseline and its volatility z; then the gap to the
// previous reading and its z; then attrs one-hot encoded by hashing
// "name=value" into Buckets slots. Metrics are named by their archive
// column ("m_<name>", see storage.ColumnName), which is what the trainer
// sees; a metric missing from a reading contributes zeros.
type Features struct {
	Metrics []string `json:"metrics"` // archive column names m_<name>, in vector order
	Buckets int      `json:"attr_buckets"`
}

// perMetric is the number of features of each metric.
const perMetric = 4

// Width is the length of the vector.
func (f Features) Width() int { return len(f.Metrics)*perMetric + 2 + f.Buckets }

// Names lists the feature names, in vector order.
func (f Features) Names() []string {
	out := make([]string, 0, f.Width())
	for _, m := range f.Metrics {
		n := m[2:]
		for _, suf := range featureSuffixes {
			out = append(out, n+suf)
		}
	}
	out = append(out, contract.DtS, contract.DtZ)
	for i := 0; i < f.Buckets; i++ {
		out = append(out, "attr_hash_"+strconv.Itoa(i))
	}
	return out
}

// attrSlot is the bucket of attr name=value.
func attrSlot(name, value string, buckets int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	_, _ = h.Write([]byte{'='})
	_, _ = h.Write([]byte(value))
	return int(h.Sum32() % uint32(buckets))
}

// vectorizer fills vectors from live observations; it caches the slot of
// each raw metric name, so scoring allocates nothing once warm.
type vectorizer struct {
	f    Features
	slot map[string]int // raw metric name -> index in f.Metrics, or -1
}

func newVectorizer(f Features) *vectorizer {
	return &vectorizer{f: f, slot: map[string]int{}}
}

// vector writes o's features into dst (len Width) and returns it.
func (v *vectorizer) vector(o *pipeline.Observation, dst []float64) []float64 {
	dst = dst[:v.f.Width()]
	clear(dst)
	for i := range o.Metrics {
		m := &o.Metrics[i]
		s, ok := v.slot[m.Name]
		if !ok {
			s = -1
			col := storage.ColumnName("m_", m.Name)
			for j, name := range v.f.Metrics {
				if name == col {
					s = j
					break
				}
			}
			if len(v.slot) < 4096 {
				v.slot[m.Name] = s
			}
		}
		if s < 0 {
			continue
		}
		b := s * perMetric
		dst[b] = m.Value
		if m.HasPrev {
			dst[b+1] = m.Delta
		}
		if m.Warm {
			dst[b+2], dst[b+3] = m.Z, m.VolZ
		}
	}
	b := len(v.f.Metrics) * perMetric
	if o.HasDt {
		dst[b], dst[b+1] = o.DtS, o.DtZ
	}
	if v.f.Buckets > 0 {
		for _, a := range o.Attrs {
			dst[b+2+attrSlot(a.Name, a.Value, v.f.Buckets)] = 1
		}
	}
	return dst
}
