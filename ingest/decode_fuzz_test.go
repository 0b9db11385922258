package ingest

import (
	"github.com/vigil/vigil/contract"

	"math"
	"net/http"
	"slices"
	"testing"
	"time"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	`{"device_id":"pump-17","ts":"2026-11-25T12:00:00.250Z","metrics":{"temp_c":71.2,"vibration":0.031},"attrs":{"firmware":"1.4.2","mode":"auto"},"id":"m1","label":"normal"}`,
	`[{"device_id":"a","ts":1700000000000,"metrics":{"x":1}},{"device_id":"b","ts":"2026-01-01T00:00:00Z","metrics":{"y":-1e-300}}]`,
	"{\"device_id\":\"a\",\"ts\":1,\"metrics\":{\"x\":1}}\n{\"device_id\":\"b\",\"ts\":2,\"metrics\":{\"x\":2}}\n",
	`{"device_id":"a","ts":1,"metrics":{"x":1e999}}`,
	`[{"device_id":"a","ts":1,"metrics":{"x":{"y":[1,2,{"z":null}]}}},{]`,
	`{"device_id":"a","device_id":"b"}`,
	"[\"\xff\"]",
	`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	`{"device_id":"a","ts":253402300800000,"metrics":{"x":1}}`,
	``, `[]`, `null`, `"x"`, `{"metrics":{}}`,
}

// FuzzDecode: no input panics the decoder; every answer is a 400 or 413
// with a message, or readings that all satisfy the ingest contract.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	d := &Decoder{MaxReadings: 50, FutureMargin: 5 * time.Minute, MaxMetrics: 16}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		rs, err := d.Decode(body, ndjson, now)
		if err != nil {
			if err.Status != http.StatusBadRequest && err.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d for a bad body", err.Status)
			}
			if err.Message == "" {
				t.Fatal("refusal without a message")
			}
			if rs != nil {
				t.Fatal("readings returned with an error")
			}
			return
		}
		if len(rs) == 0 || len(rs) > d.MaxReadings {
			t.Fatalf("%d readings accepted", len(rs))
		}
		for _, r := range rs {
			if !contract.ValidName(r.DeviceID) || r.ID == "" || !utf8.ValidString(r.ID) || r.TS.IsZero() || r.TS.After(now.Add(d.FutureMargin)) {
				t.Fatalf("invalid reading accepted: %+v", r)
			}
			if len(r.Metrics) == 0 || len(r.Metrics) > d.MaxMetrics {
				t.Fatalf("metrics count %d accepted", len(r.Metrics))
			}
			for _, m := range r.Metrics {
				if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) || !contract.ValidName(m.Name) {
					t.Fatalf("bad metric accepted: %+v", m)
				}
			}
			for _, a := range r.Attrs {
				if !contract.ValidName(a.Name) || !utf8.ValidString(a.Value) {
					t.Fatalf("bad attr accepted: %+v", a)
				}
			}
			// what ingest writes, the pipeline reads back identically
			back, err := contract.DecodeRaw(r.AppendJSON(nil))
			if err != nil {
				t.Fatalf("raw encoding of an accepted reading does not decode: %v", err)
			}
			if back.ID != r.ID || back.DeviceID != r.DeviceID || !back.TS.Equal(r.TS) || len(back.Metrics) != len(r.Metrics) {
				t.Fatalf("raw round trip changed the reading: %+v vs %+v", back, r)
			}
			for i := range r.Metrics {
				if back.Metrics[i] != r.Metrics[i] {
					t.Fatalf("metric changed in the raw round trip: %+v vs %+v", back.Metrics[i], r.Metrics[i])
				}
			}
		}
	})
}

// FuzzDecodeRaw: a hand-made record on the raw topic never panics the
// pipeline's decoder.
func FuzzDecodeRaw(f *testing.F) {
	f.Add([]byte(`{"id":"x","device_id":"a","ts":"2026-11-25T12:00:00Z","metrics":{"t":1},"region":"r","ingested_at":"2026-11-25T12:00:00Z"}`))
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte(`garbage`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := contract.DecodeRaw(b)
		if err == nil && (r.ID == "" || !contract.ValidName(r.DeviceID) || len(r.Metrics) == 0) {
			t.Fatalf("invalid raw record accepted: %+v", r)
		}
	})
}

// scanSeeds are bodies the scanner takes, and near misses it must leave
// to the token decoder.
var scanSeeds = []string{
	`[{"device_id":"pump-1","id":"m1","ts":"2026-11-25T12:00:00.250Z","metrics":{"temp_c":71.2,"current_a":5.1},"attrs":{"status":"auto","fw":1.50,"on":true}}]`,
	" [ {\"device_id\" : \"a\", \"ts\" : 1700000000000.5 , \"metrics\" : { \"x\" : -0.0 } } ,\n {\"device_id\":\"b\",\"ts\":\"2026-01-01T00:00:00Z\",\"metrics\":{\"y\":1e3},\"label\":\"anomaly\"} ] ",
	` {"device_id":"a","ts":"2026-11-25T12:00:00Z","metrics":{"x":1}}`,
	`{"device_id":"a","ts":"2026-11-25T12:00:00+01:00","metrics":{"x":1}}`,
	`{"device_id":"a","ts":"2026-11-25T13:00:00Z","metrics":{"x":1}}`,
	`{"device_id":"a","ts":"2026-02-30T12:00:00Z","metrics":{"x":1}}`,
	`{"device_id":"a","ts":1,"metrics":{"x":1,"x":2}}`,
	`{"device_id":"a","ts":1,"metrics":{"x":1},"attrs":{"s":"\u00e9"}}`,
	`{"device_id":"a","ts":1,"metrics":{"x":1},"ts":2}`,
	`{"device_id":"a","ts":1,"metrics":{"x":1},"id":""}`,
	`[{"device_id":"a","ts":1,"metrics":{"x":1}},]`,
	`{"device_id":"a","ts":-1,"metrics":{"x":1}}`,
	`{"device_id":"a","ts":1,"metrics":{"x":1},"attrs":{"s":null}}`,
}

// FuzzScanBody holds Decode's byte scanner to the token decoder: whatever
// body the scanner takes, the token decoder takes too, with the same
// readings, ids included.
func FuzzScanBody(f *testing.F) {
	for _, s := range append(scanSeeds, fuzzSeeds...) {
		f.Add([]byte(s))
	}
	d := &Decoder{MaxReadings: 50, FutureMargin: 5 * time.Minute, MaxMetrics: 16}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := d.scanBody(body, now)
		if !ok {
			return
		}
		strict, err := d.decodeStrict(body, false, now)
		if err != nil {
			t.Fatalf("the scanner took a body the token decoder refuses (%s): %q", err.Message, body)
		}
		if len(fast) != len(strict) {
			t.Fatalf("%d readings scanned, %d decoded", len(fast), len(strict))
		}
		for i := range fast {
			a, b := fast[i], strict[i]
			if a.ID != b.ID || a.DeviceID != b.DeviceID || a.Label != b.Label || !a.TS.Equal(b.TS) || a.TS.Location() != b.TS.Location() ||
				!slices.Equal(a.Metrics, b.Metrics) || !slices.Equal(a.Attrs, b.Attrs) {
				t.Fatalf("reading %d: scanned %+v, decoded %+v", i, a, b)
			}
		}
	})
}

// TestScanBodyTakesTheCommonBodies: the fast path is taken for the bodies
// gateways and devices send (the fuzzer checks it agrees; this checks it
// is used).
func TestScanBodyTakesTheCommonBodies(t *testing.T) {
	d := &Decoder{MaxReadings: 50, FutureMargin: 5 * time.Minute, MaxMetrics: 16}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i, s := range scanSeeds[:3] {
		if _, ok := d.scanBody([]byte(s), now); !ok {
			t.Errorf("seed %d not scanned: %s", i, s)
		}
	}
	for i, s := range scanSeeds[3:] {
		if _, ok := d.scanBody([]byte(s), now); ok {
			t.Errorf("near miss %d scanned: %s", i+3, s)
		}
	}
	d.MaxReadings = 500
	if _, ok := d.scanBody(benchBody(500), now); !ok {
		t.Error("the benchmark's body is not scanned")
	}
}
