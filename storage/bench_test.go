package storage

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/vigil/vigil/internal/testminio"
)

// BenchmarkArchive compares, in one run against one real MinIO:
//   - archive: what the archiver does per file: decode 100,000 enriched
//     records from their Kafka JSON, encode them to Parquet and store the
//     file create-only through the Store;
//   - raw-put: minio-go PutObject of the same Parquet bytes (the baseline).
//
// Both report rows/s and MB/s of Parquet stored.
func BenchmarkArchive(b *testing.B) {
	m := testminio.Start(b)
	ctx := context.Background()
	s3, err := NewS3(ctx, Config{Endpoint: m.Endpoint, Bucket: "bench", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	rows := sampleRows(n, 0, "temp_c", "current_a", "vibration", "pressure_bar")
	rng := rand.New(rand.NewPCG(1, 2))
	values := make([][]byte, n) // the enriched records as they sit on Kafka
	for i := range rows {
		rows[i].Derived = nil
		for k := range rows[i].Metrics {
			f := &rows[i].Metrics[k]
			f.Value = 50 + rng.NormFloat64()
			// the pipeline's seven derived figures per metric
			for _, d := range []string{".delta", ".rate", ".mean", ".std", ".z", ".vol", ".stuck"} {
				rows[i].Derived = append(rows[i].Derived, contract.Field{Name: f.Name + d, Value: rng.NormFloat64()})
			}
		}
		rows[i].Derived = append(rows[i].Derived, contract.Field{Name: "dt_s", Value: 1}, contract.Field{Name: "dt.z", Value: rng.NormFloat64()})
		rows[i].Score = rng.Float64() * 0.2
		values[i] = enrichedJSON(rows[i])
	}
	var enc bytes.Buffer
	size, err := WriteParquet(&enc, rows)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("archive", func(b *testing.B) {
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			decoded := make([]contract.Enriched, n)
			var dec contract.EnrichedDecoder
			for j, v := range values {
				r, err := dec.Decode(v)
				if err != nil {
					b.Fatal(err)
				}
				decoded[j] = r
			}
			var buf bytes.Buffer
			sz, err := WriteParquet(&buf, decoded)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s3.PutIfAbsent(ctx, fmt.Sprintf("a/%d.parquet", i), &buf, sz); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
	})
	cl, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("raw-put", func(b *testing.B) {
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			if _, err := cl.PutObject(ctx, "bench", fmt.Sprintf("r/%d.parquet", i), bytes.NewReader(enc.Bytes()), size, minio.PutObjectOptions{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Logf("one file: %d rows, %d bytes of Parquet (%.1f bytes/row)", n, size, float64(size)/n)
}
