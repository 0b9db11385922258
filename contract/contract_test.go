package contract

import (
	"errors"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 250e6, time.UTC)

// The enriched record read back by the one decoder is what the one encoder
// wrote.
func TestEnrichedRoundTrip(t *testing.T) {
	lat, lon := 48.1, 11.5
	r := Reading{ID: "m-1", DeviceID: "pump-17", TS: t0, IngestedAt: t0.Add(time.Second), Region: "",
		Metrics: []Metric{{Name: "temp_c", Value: 71.25}, {Name: "rpm", Value: 1200}},
		Attrs:   []Attr{{Name: "mode", Value: "auto \"quoted\""}}, Label: "anomaly"}
	s := Scored{Region: "eu-west", Device: &Device{DeviceID: "pump-17", Site: "plant-a", Model: "P7", Lat: &lat, Lon: &lon, Tags: []string{"north"}, Attrs: map[string]string{"line": "3"}},
		Derived: []Derived{{Metric: DtS, Value: 1}, {Metric: "temp_c", Suffix: SuffixZ, Value: -2.5}, {Metric: Multivariate, Value: 0.125}},
		Score:   0.97, Threshold: 0.8, Model: "baseline-v1", ShadowModel: "v7", ShadowScore: 0.5, Incident: "a-1"}
	b := AppendEnriched(nil, &r, &s)
	e, err := DecodeEnriched(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v (record %s)", name, got, want, b)
		}
	}
	check("id", e.ID, r.ID)
	check("device_id", e.DeviceID, r.DeviceID)
	check("ts", e.TS, r.TS)
	check("ingested_at", e.IngestedAt, r.IngestedAt)
	check("region (the scorer's, as the reading has none)", e.Region, "eu-west")
	check("site", e.Site, "plant-a")
	check("device_model", e.DeviceModel, "P7")
	check("lat", *e.Lat, lat)
	check("lon", *e.Lon, lon)
	check("tags", string(e.Tags), `["north"]`)
	check("device_attrs", string(e.DeviceAttrs), `{"line":"3"}`)
	check("attrs", string(e.Attrs), `{"mode":"auto \"quoted\""}`)
	check("label", e.Label, "anomaly")
	check("metrics", len(e.Metrics), 2)
	check("metric 0", e.Metrics[0], Field{Name: "temp_c", Value: 71.25})
	check("metric 1", e.Metrics[1], Field{Name: "rpm", Value: 1200})
	check("derived", len(e.Derived), 3)
	check("derived 1", e.Derived[1], Field{Name: "temp_c.z", Value: -2.5})
	check("derived 2", e.Derived[2], Field{Name: "multivariate", Value: 0.125})
	check("score", e.Score, 0.97)
	check("threshold", e.Threshold, 0.8)
	check("model", e.Model, "baseline-v1")
	check("shadow_model", e.ShadowModel, "v7")
	check("shadow_score", *e.ShadowScore, 0.5)
	check("incident", e.Incident, "a-1")

	// no shadow, no device: the fields are absent
	b = AppendEnriched(b[:0], &r, &Scored{Region: "eu", Model: "m"})
	if e, err = DecodeEnriched(b); err != nil || e.ShadowScore != nil || e.Site != "" || e.Lat != nil || e.Region != "eu" {
		t.Errorf("minimal record %s decoded to %+v, %v", b, e, err)
	}
}

func TestReadingRoundTrip(t *testing.T) {
	r := Reading{ID: "x", DeviceID: "d-1", TS: t0, IngestedAt: t0, Region: "eu", Metrics: []Metric{{Name: "a", Value: math.Pi}, {Name: "b", Value: -3}}, Attrs: []Attr{{Name: "k", Value: "v"}}}
	got, err := DecodeRaw(r.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != r.ID || got.DeviceID != r.DeviceID || !got.TS.Equal(r.TS) || len(got.Metrics) != 2 || got.Metrics[0] != r.Metrics[0] || got.Metrics[1] != r.Metrics[1] || got.Attrs[0] != r.Attrs[0] {
		t.Errorf("round trip: got %+v, want %+v", got, r)
	}
}

func TestAlertRoundTrip(t *testing.T) {
	a := Alert{AlertID: "a-1", DeviceID: "d", Region: "eu", TS: t0, Score: 0.9, Severity: Severity(0.9), State: "open",
		Reasons: []Reason{{Feature: "temp_c.tail", Value: 5, Detector: "tail", Expected: 60, Low: 55, High: 65, Observed: 80, Text: "expected 55 to 65, got 80"}}}
	b, err := EncodeAlert(&a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAlert(b)
	if err != nil || got.AlertID != a.AlertID || got.Severity != "medium" || len(got.Reasons) != 1 || got.Reasons[0] != a.Reasons[0] {
		t.Errorf("round trip of %s: %+v, %v", b, got, err)
	}
}

func TestArchiveKey(t *testing.T) {
	k := ArchiveKey{Region: "eu-west", Hour: time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC), Topic: "vigil.enriched", Partition: 3, First: 100, Last: 249}
	s := k.Format()
	if want := "enriched/region=eu-west/dt=2026-11-25/hr=07/vigil.enriched-3-100-249.parquet"; s != want {
		t.Fatalf("Format = %s, want %s", s, want)
	}
	got, err := ParseArchiveKey(s)
	if err != nil || got != k {
		t.Fatalf("Parse(%s) = %+v, %v; want %+v", s, got, err, k)
	}
	if p := k.Prefix(); p != "enriched/region=eu-west/dt=2026-11-25/hr=07/vigil.enriched-3-100-" {
		t.Errorf("Prefix = %s", p)
	}
	if k.Rows() != 150 {
		t.Errorf("Rows = %d", k.Rows())
	}
	// a topic with dashes
	k.Topic = "my-enriched-topic"
	if got, err := ParseArchiveKey(k.Format()); err != nil || got != k {
		t.Errorf("dashed topic: %+v, %v", got, err)
	}
	for _, bad := range []string{
		"", "models/current", "enriched/region=eu/dt=2026-11-25/hr=07/x.parquet",
		"enriched/region=eu/dt=2026-13-25/hr=07/t-0-1-2.parquet",
		"enriched/region=eu/dt=2026-11-25/hr=07/t-0-5-2.parquet",
		"enriched/region=eu/dt=2026-11-25/hr=07/t-0-1-2.json",
		"enriched/region=eu/dt=2026-11-25/t-0-1-2.parquet",
	} {
		if _, err := ParseArchiveKey(bad); !errors.Is(err, ErrNotArchiveKey) {
			t.Errorf("ParseArchiveKey(%q) = %v, want ErrNotArchiveKey", bad, err)
		}
	}
}

func TestLayout(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{ModelKey("v3", "meta.json"), "models/v3/meta.json"},
		{LeaseKey("trainer"), "leases/trainer"},
		{LabelKey("eu", "a-1"), "labels/eu/a-1.json"},
		{NotebookKey("fleet"), "notebooks/fleet.json"},
		{SiteStatusKey("eu"), "sites/eu/status.json"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	if id, ok := NotebookID("notebooks/fleet.json"); !ok || id != "fleet" {
		t.Errorf("NotebookID = %s, %v", id, ok)
	}
	if _, ok := NotebookID("notebooks/../x.json"); ok {
		t.Error("NotebookID accepted a path")
	}
	if !IsSiteStatusKey("sites/eu/status.json") || IsSiteStatusKey("sites/eu/other.json") {
		t.Error("IsSiteStatusKey")
	}
}

// FuzzDecodeEnriched: no input crashes the decoder, and what it accepts
// has the required fields.
func FuzzDecodeEnriched(f *testing.F) {
	r := Reading{ID: "m", DeviceID: "d", TS: t0, IngestedAt: t0, Metrics: []Metric{{Name: "a", Value: 1}}}
	f.Add(AppendEnriched(nil, &r, &Scored{Region: "eu", Model: "m", Derived: []Derived{{Metric: "a", Suffix: SuffixZ, Value: 2}}}))
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d EnrichedDecoder
		e, err := d.Decode(b)
		if err == nil && (e.ID == "" || e.DeviceID == "" || e.TS.IsZero()) {
			t.Fatalf("accepted %q without id, device_id or ts", b)
		}
	})
}
