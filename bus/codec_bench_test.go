package bus

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/contract"
)

// enrichedBatch is n enriched records of four-metric pumps as the
// pipeline writes them (contract.AppendEnriched, every derived figure),
// concatenated as a produce batch holds them.
func enrichedBatch(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 1))
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var b []byte
	for i := 0; i < n; i++ {
		r := contract.Reading{ID: "pump-" + strconv.Itoa(i%1000) + "-" + strconv.Itoa(i), DeviceID: "pump-" + strconv.Itoa(i%1000),
			TS: t0.Add(time.Duration(i) * time.Millisecond), IngestedAt: t0.Add(time.Duration(i)*time.Millisecond + 3*time.Millisecond),
			Attrs: []contract.Attr{{Name: "status", Value: "auto"}}}
		s := contract.Scored{Region: "eu", Score: rng.Float64() / 5, Threshold: 0.8, Model: "baseline-v1",
			Derived: []contract.Derived{{Metric: contract.DtS, Value: 1 + rng.NormFloat64()/10}, {Metric: contract.DtZ, Value: rng.NormFloat64()}}}
		for k, m := range []string{"current_a", "pressure_bar", "temp_c", "vibration"} {
			r.Metrics = append(r.Metrics, contract.Metric{Name: m, Value: float64(int((5+10*float64(k)+rng.NormFloat64())*1000)) / 1000})
			for _, suf := range contract.MetricSuffixes {
				s.Derived = append(s.Derived, contract.Derived{Metric: m, Suffix: suf, Value: 10 * rng.NormFloat64()})
			}
		}
		b = contract.AppendEnriched(b, &r, &s)
	}
	return b
}

// BenchmarkCodecs compresses and decompresses a batch of 100 enriched
// records with franz-go's own codecs, as the pipeline's producer and the
// archiver's consumer do: zstd (kafka.compression's default, the
// baseline) beside snappy (kafka.pipeline_compression's) and lz4. It
// reports the CPU a record and the ratio.
func BenchmarkCodecs(b *testing.B) {
	const n = 100
	src := enrichedBatch(n)
	dec := kgo.DefaultDecompressor()
	for _, name := range []string{"zstd", "snappy", "lz4"} {
		codec, err := codecOf(name)
		if err != nil {
			b.Fatal(err)
		}
		comp, err := kgo.DefaultCompressor(codec)
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		out, typ := comp.Compress(&buf, src)
		packed := bytes.Clone(out)
		b.Run(name+"/compress", func(b *testing.B) {
			for b.Loop() {
				buf.Reset()
				comp.Compress(&buf, src)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
			b.ReportMetric(float64(len(src))/float64(len(packed)), "ratio")
		})
		b.Run(name+"/decompress", func(b *testing.B) {
			for b.Loop() {
				if _, err := dec.Decompress(packed, typ); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}
