package contract

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// sampleEnriched is an enriched record as the pipeline writes it for a
// registered device of four metrics and an attr, warm.
func sampleEnriched(rng *rand.Rand, i int) []byte {
	lat, lon := 48.137154, 11.576124
	r := Reading{ID: "msg-" + itoa(i) + "-0123456789", DeviceID: "pump-" + itoa(i%1000), TS: t0.Add(time.Duration(i) * 997 * time.Millisecond), IngestedAt: t0.Add(time.Duration(i)*time.Second + 3*time.Millisecond),
		Metrics: []Metric{{Name: "temp_c", Value: 60 + rng.NormFloat64()}, {Name: "current_a", Value: 5 + rng.NormFloat64()}, {Name: "vibration", Value: 0.03 + 0.001*rng.NormFloat64()}, {Name: "pressure_bar", Value: 3.12}},
		Attrs:   []Attr{{Name: "status", Value: "auto"}}}
	s := Scored{Region: "eu-west", Device: &Device{DeviceID: r.DeviceID, Site: "plant-a", Model: "P7", Lat: &lat, Lon: &lon, Tags: []string{"north", "line-3"}},
		Score: rng.Float64() * 0.2, Threshold: 0.8, Model: BaselineModel}
	for _, m := range r.Metrics {
		for _, suf := range MetricSuffixes {
			s.Derived = append(s.Derived, Derived{Metric: m.Name, Suffix: suf, Value: rng.NormFloat64()})
		}
	}
	s.Derived = append(s.Derived, Derived{Metric: DtS, Value: 0.997}, Derived{Metric: DtZ, Value: rng.NormFloat64()}, Derived{Metric: Multivariate, Value: rng.Float64()})
	return AppendEnriched(nil, &r, &s)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[n:])
		}
	}
}

// BenchmarkEnrichedDecode decodes enriched records as the console does
// ("scanner") and as the archiver does ("into"); "tokens" is the jsontext token decoder alone (the
// baseline, and the fallback for records the scanner does not take).
func BenchmarkEnrichedDecode(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	recs := make([][]byte, 1024)
	size := 0
	for i := range recs {
		recs[i] = sampleEnriched(rng, i)
		size += len(recs[i])
	}
	for _, c := range []struct {
		name string
		dec  func(d *EnrichedDecoder, b []byte) (Enriched, error)
	}{
		{"scanner", (*EnrichedDecoder).Decode},
		{"into", func() func(d *EnrichedDecoder, b []byte) (Enriched, error) { // the archiver's, one row reused
			var row Enriched
			return func(d *EnrichedDecoder, b []byte) (Enriched, error) { return row, d.DecodeInto(b, &row) }
		}()},
		{"tokens", (*EnrichedDecoder).decodeTokens},
		{"key", func(d *EnrichedDecoder, b []byte) (Enriched, error) { // the dedup read-back's
			k, err := d.DecodeKey(b)
			return Enriched{ID: k.ID, DeviceID: k.DeviceID, IngestedAt: k.IngestedAt}, err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var d EnrichedDecoder
			b.SetBytes(int64(size / len(recs)))
			benchRecords(b, recs, func(v []byte) error { _, err := c.dec(&d, v); return err })
		})
	}
}

// benchRecords decodes recs in turn with dec, reporting allocations and
// records/s.
func benchRecords(b *testing.B, recs [][]byte, dec func([]byte) error) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := dec(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// FuzzEnrichedScanner: whatever the byte scanner takes, the token decoder
// takes too and reads the same record (so Decode judges every input by
// the token decoder's rules, and is faster on the pipeline's own records).
func FuzzEnrichedScanner(f *testing.F) {
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range 4 {
		f.Add(sampleEnriched(rng, i))
	}
	r := Reading{ID: "m-1", DeviceID: "d", TS: t0, IngestedAt: t0.Add(time.Second), Metrics: []Metric{{Name: "a", Value: -1.5e-7}},
		Attrs: []Attr{{Name: "mode", Value: "auto \"q\" \u00e9"}}, Label: "anomaly"}
	f.Add(AppendEnriched(nil, &r, &Scored{Region: "eu", Model: "m", Incident: "a-1", ShadowModel: "v2", ShadowScore: 0.25}))
	f.Add([]byte(`{"id":"x","device_id":"d","ts":"2026-02-30T00:00:00Z","ingested_at":"2026-01-01T00:00:00.123456789Z"}`))
	f.Add([]byte(`{"id":"x","device_id":"d","ts":"2026-01-01T24:00:00Z","ingested_at":"2026-01-01T00:00:00Z","metrics":{"a":01}}`))
	f.Add([]byte(`{"id":"x","device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:00Z","tags":["a\"]"],"metrics":{"a":1,"a":2}}x`))
	seed := sampleEnriched(rng, 7)
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow EnrichedDecoder
		fast.names, slow.names = map[string]string{}, map[string]string{}
		got, ok := fast.scan(b, nil)
		want, err := slow.decodeTokens(b)
		// DecodeInto, over a record that held more metrics, reads what
		// Decode reads
		var plain, reusing EnrichedDecoder
		into, _ := reusing.Decode(seed)
		want2, err2 := plain.Decode(b)
		if err3 := reusing.DecodeInto(b, &into); (err2 == nil) != (err3 == nil) {
			t.Fatalf("%q: Decode says %v, DecodeInto %v", b, err2, err3)
		} else if d := diffEnriched(into, want2); err2 == nil && d != "" {
			t.Fatalf("%q: Decode and DecodeInto over an earlier record differ in %s", b, d)
		}
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("the scanner took %q, the token decoder refused it: %v", b, err)
		}
		if d := diffEnriched(got, want); d != "" {
			t.Fatalf("%q: scanner and token decoder differ in %s", b, d)
		}
	})
}

func diffEnriched(a, b Enriched) string {
	ptr := func(x, y *float64) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	fields := func(x, y []Field) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	switch {
	case a.ID != b.ID || a.DeviceID != b.DeviceID || a.Region != b.Region || a.Site != b.Site || a.DeviceModel != b.DeviceModel:
		return "ids or names"
	case a.TS != b.TS || a.IngestedAt != b.IngestedAt:
		return fmt.Sprintf("times %v %v vs %v %v", a.TS, a.IngestedAt, b.TS, b.IngestedAt)
	case !ptr(a.Lat, b.Lat) || !ptr(a.Lon, b.Lon) || !ptr(a.ShadowScore, b.ShadowScore):
		return "lat, lon or shadow_score"
	case !bytes.Equal(a.Tags, b.Tags) || !bytes.Equal(a.DeviceAttrs, b.DeviceAttrs) || !bytes.Equal(a.Attrs, b.Attrs):
		return "raw members"
	case !fields(a.Metrics, b.Metrics) || !fields(a.Derived, b.Derived):
		return "metrics or derived"
	case a.Label != b.Label || a.Score != b.Score || a.Threshold != b.Threshold || a.Model != b.Model || a.ShadowModel != b.ShadowModel || a.Incident != b.Incident:
		return "label, score, model or incident"
	}
	return ""
}

// The scanner takes the records the pipeline writes (else Decode would
// be the token decoder with an extra pass).
func TestScannerTakesPipelineRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	var d EnrichedDecoder
	d.names = map[string]string{}
	for i := range 100 {
		b := sampleEnriched(rng, i)
		if _, ok := d.scan(b, nil); !ok {
			t.Fatalf("the scanner gave up on %s", b)
		}
	}
	r := Reading{ID: "m-1", DeviceID: "d", TS: t0, IngestedAt: t0, Metrics: []Metric{{Name: "a", Value: 1}}}
	if _, ok := d.scan(AppendEnriched(nil, &r, &Scored{Region: "eu", Model: "m", Incident: "a-1", ShadowModel: "v2", ShadowScore: 0.25}), nil); !ok {
		t.Fatal("the scanner gave up on a record with an incident and a shadow score")
	}
	for i := range 100 {
		if b := sampleRaw(rng, i); !func() bool { _, ok := scanRaw(b); return ok }() {
			t.Fatalf("the raw scanner gave up on %s", b)
		}
	}
	r.Label, r.Attrs = "anomaly", []Attr{{Name: "mode", Value: "auto"}}
	if _, ok := scanRaw(r.AppendJSON(nil)); !ok {
		t.Fatal("the raw scanner gave up on a labelled reading with an attr")
	}
}

func sampleRaw(rng *rand.Rand, i int) []byte {
	r := Reading{ID: "msg-" + itoa(i) + "-0123456789", DeviceID: "pump-" + itoa(i%1000), TS: t0.Add(time.Duration(i) * 997 * time.Millisecond), IngestedAt: t0.Add(time.Duration(i)*time.Second + 3*time.Millisecond),
		Metrics: []Metric{{Name: "temp_c", Value: 60 + rng.NormFloat64()}, {Name: "current_a", Value: 5 + rng.NormFloat64()}, {Name: "vibration", Value: 0.03 + 0.001*rng.NormFloat64()}, {Name: "pressure_bar", Value: 3.12}},
		Attrs:   []Attr{{Name: "status", Value: "auto"}}, Region: "eu-west"}
	return r.AppendJSON(nil)
}

// BenchmarkDecodeRaw decodes raw-topic records as the stream does:
// "scanner" is DecodeRaw, "strict" the encoding/json/v2 decoder alone
// (the baseline, and the fallback).
func BenchmarkDecodeRaw(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	recs := make([][]byte, 1024)
	for i := range recs {
		recs[i] = sampleRaw(rng, i)
	}
	for _, c := range []struct {
		name string
		dec  func([]byte) (Reading, error)
	}{{"scanner", DecodeRaw}, {"strict", decodeRawStrict}} {
		b.Run(c.name, func(b *testing.B) {
			benchRecords(b, recs, func(v []byte) error { _, err := c.dec(v); return err })
		})
	}
}

// FuzzRawScanner: whatever the raw scanner takes, the strict decoder
// takes too and reads the same reading.
func FuzzRawScanner(f *testing.F) {
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 3 {
		f.Add(sampleRaw(rng, i))
	}
	r := Reading{ID: "m", DeviceID: "d", TS: t0, IngestedAt: t0, Metrics: []Metric{{Name: "a", Value: 1e300}}, Label: "anomaly"}
	f.Add(r.AppendJSON(nil))
	f.Add([]byte(`{"id":"m","device_id":"d","ts":"2026-01-01T00:00:00Z","metrics":{"a":1,"a":2},"region":"","ingested_at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := scanRaw(b)
		want, err := decodeRawStrict(b)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("the scanner took %q, the strict decoder refused it: %v", b, err)
		}
		sameAttrs := len(got.Attrs) == 0 && len(want.Attrs) == 0 || slices.Equal(got.Attrs, want.Attrs)
		if got.ID != want.ID || got.DeviceID != want.DeviceID || got.TS != want.TS || got.IngestedAt != want.IngestedAt ||
			got.Label != want.Label || got.Region != want.Region || !slices.Equal(got.Metrics, want.Metrics) || !sameAttrs {
			t.Fatalf("%q: scanner %+v, strict %+v", b, got, want)
		}
	})
}

// DecodeKey gives the key Decode gives, from the fields at the head of
// the records AppendEnriched writes, and from any other layout through
// Decode; what Decode refuses at the head, it refuses too.
func TestEnrichedDecodeKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	good := [][]byte{sampleEnriched(rng, 1), sampleEnriched(rng, 2),
		[]byte(`{"device_id":"d","id":"x","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01.5Z"}`),
		[]byte(` {"id":"x", "device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"}`),
		[]byte(`{"id":"x\u00e9","device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"}`)}
	for _, b := range good {
		var d1, d2 EnrichedDecoder
		want, err := d1.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		got, err := d2.DecodeKey(b)
		if err != nil || got.ID != want.ID || got.DeviceID != want.DeviceID || !got.IngestedAt.Equal(want.IngestedAt) {
			t.Fatalf("%s: key %+v, %v; want %s %s %s", b, got, err, want.ID, want.DeviceID, want.IngestedAt)
		}
	}
	for _, b := range []string{``, `{}`, `[]`, `{"id":"","device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"}`,
		`{"id":"x","device_id":"","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"}`,
		`{"id":"x","device_id":"d","ts":"2026-13-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"}`,
		`{"id":"x","device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"yesterday"}`,
		`{"id":"x","device_id":"d","ts":"2026-01-01T00:00:00Z"}`} {
		var d EnrichedDecoder
		if k, err := d.DecodeKey([]byte(b)); err == nil {
			t.Errorf("%q: read as %+v, want an error", b, k)
		}
	}
}

func FuzzEnrichedDecodeKey(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 3 {
		f.Add(sampleEnriched(rng, i))
	}
	f.Add([]byte(`{"device_id":"d","id":"x","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01.5Z"}`))
	f.Add([]byte(`{"id":"x","device_id":"d","ts":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d1, d2 EnrichedDecoder
		want, werr := d1.Decode(b)
		got, err := d2.DecodeKey(b)
		if werr != nil {
			return // the head may still be readable; the record's tail is the archiver's concern
		}
		if err != nil || got.ID != want.ID || got.DeviceID != want.DeviceID || !got.IngestedAt.Equal(want.IngestedAt) {
			t.Fatalf("%q: key %+v, %v; Decode gives %s %s %s", b, got, err, want.ID, want.DeviceID, want.IngestedAt)
		}
	})
}
