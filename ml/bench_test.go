package ml

import "testing"

// Compiled scoring against golearn's own Predict, same model, same rows, in
// one run: go test -bench Score -run ^$ ./ml/
// ns/row is what one reading costs the pipeline.

func benchRows() ([][]float64, []bool, []string) { return synth(3000, 8, 9) }

func BenchmarkScoreIsolationGolearn(b *testing.B) {
	x, _, names := benchRows()
	gf, _, err := trainIsolation(x[:2000], allCols(8), names, 100, 256)
	if err != nil {
		b.Fatal(err)
	}
	g := grid(x[2000:], allCols(8), names, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		gf.Predict(g)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/row")
}

func BenchmarkScoreIsolationCompiled(b *testing.B) {
	x, _, names := benchRows()
	_, cf, err := trainIsolation(x[:2000], allCols(8), names, 100, 256)
	if err != nil {
		b.Fatal(err)
	}
	benchCompiled(b, cf, x[2000:])
}

func BenchmarkScoreRandomForestGolearn(b *testing.B) {
	x, y, names := benchRows()
	rf, _, err := trainRandom(x[:2000], y[:2000], allCols(8), names, 31, 4)
	if err != nil {
		b.Fatal(err)
	}
	g := grid(x[2000:], allCols(8), names, y[2000:])
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := rf.Predict(g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/row")
}

func BenchmarkScoreRandomForestCompiled(b *testing.B) {
	x, y, names := benchRows()
	_, cf, err := trainRandom(x[:2000], y[:2000], allCols(8), names, 31, 4)
	if err != nil {
		b.Fatal(err)
	}
	benchCompiled(b, cf, x[2000:])
}

// benchCompiled times cf over the rows, reporting ns per row.
func benchCompiled(b *testing.B, cf *Forest, rows [][]float64) {
	b.ResetTimer()
	var sink float64
	for i := 0; i < b.N; i++ {
		for _, r := range rows {
			sink += cf.Score(r)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
	_ = sink
}
