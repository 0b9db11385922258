package contract

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The derived figures of the enriched record ("derived": {...}). Per
// metric m, the pipeline writes m+suffix for each of MetricSuffixes (the
// first four once the metric has a previous reading, the last three once it
// is warm); per device, DtS and DtZ once it has a previous reading, and
// Multivariate once its multivariate model is fitted. The archive gives a
// file a column for each, so rows of warming-up and warm devices share
// them, and the trainer's features are read from them.
const (
	SuffixDelta = ".delta"
	SuffixRate  = ".rate"
	SuffixMean  = ".mean"
	SuffixStd   = ".std"
	SuffixZ     = ".z"
	SuffixVol   = ".vol"
	SuffixStuck = ".stuck"

	DtS          = "dt_s"
	DtZ          = "dt.z"
	Multivariate = "multivariate"
)

// BaselineModel is the "model" of a record or alert scored by the
// streaming detectors alone (no trained model in charge).
const BaselineModel = "baseline-v1"

// MetricSuffixes are the derived figures of every metric, in record order.
var MetricSuffixes = []string{SuffixDelta, SuffixRate, SuffixMean, SuffixStd, SuffixZ, SuffixVol, SuffixStuck}

// Derived is one derived figure as the pipeline writes it: its name is
// Metric+Suffix (written without building the string).
type Derived struct {
	Metric, Suffix string
	Value          float64
}

// Scored is what the pipeline adds to a reading to make its enriched
// record.
type Scored struct {
	Region    string  // the region that scored it, used when the reading carries none
	Device    *Device // the registry's view of the device, nil if not registered
	Derived   []Derived
	Score     float64
	Threshold float64
	Model     string
	// ShadowModel is set while a candidate model runs in shadow; ShadowScore
	// is that model's own score of the reading.
	ShadowModel string
	ShadowScore float64
	Incident    string // the alert id of the incident the reading belongs to
}

func appendStr(b []byte, s string) []byte {
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// AppendEnriched appends the enriched record of r scored as s: the one
// encoder of the enriched topic. Enriched and EnrichedDecoder read it back.
func AppendEnriched(b []byte, r *Reading, s *Scored) []byte {
	b = append(b, `{"id":`...)
	b = appendStr(b, r.ID)
	b = append(b, `,"device_id":`...)
	b = appendStr(b, r.DeviceID)
	b = append(b, `,"ts":`...)
	b = appendTime(b, r.TS)
	b = append(b, `,"ingested_at":`...)
	b = appendTime(b, r.IngestedAt)
	b = append(b, `,"region":`...)
	src := r.Region
	if src == "" {
		src = s.Region
	}
	b = appendStr(b, src)
	if d := s.Device; d != nil {
		if d.Site != "" {
			b = append(b, `,"site":`...)
			b = appendStr(b, d.Site)
		}
		if d.Model != "" {
			b = append(b, `,"device_model":`...)
			b = appendStr(b, d.Model)
		}
		if d.Lat != nil && d.Lon != nil {
			b = append(b, `,"lat":`...)
			b = AppendFloat(b, *d.Lat)
			b = append(b, `,"lon":`...)
			b = AppendFloat(b, *d.Lon)
		}
		if len(d.Tags) > 0 {
			b = append(b, `,"tags":[`...)
			for i, t := range d.Tags {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendStr(b, t)
			}
			b = append(b, ']')
		}
		if len(d.Attrs) > 0 {
			b = append(b, `,"device_attrs":{`...)
			first := true
			for k, v := range d.Attrs {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendStr(b, k)
				b = append(b, ':')
				b = appendStr(b, v)
			}
			b = append(b, '}')
		}
	}
	b = r.appendBody(b)
	b = append(b, `,"derived":{`...)
	for i, d := range s.Derived {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, d.Metric...) // names are validated to [A-Za-z0-9._:-]
		b = append(b, d.Suffix...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, d.Value, 'g', 9, 64)
	}
	b = append(b, `},"score":`...)
	b = AppendFloat(b, s.Score)
	b = append(b, `,"threshold":`...)
	b = AppendFloat(b, s.Threshold)
	b = append(b, `,"model":`...)
	b = appendStr(b, s.Model)
	if s.Incident != "" {
		b = append(b, `,"incident":`...)
		b = appendStr(b, s.Incident)
	}
	if s.ShadowModel != "" {
		b = append(b, `,"shadow_model":`...)
		b = appendStr(b, s.ShadowModel)
		b = append(b, `,"shadow_score":`...)
		b = AppendFloat(b, s.ShadowScore)
	}
	return append(b, '}')
}

// Field is one named number of a row (a metric or a derived figure).
type Field struct {
	Name  string
	Value float64
}

// EnrichedRawOffsetHeader is the Kafka header of every enriched record
// that names the raw record it was made from: that record's offset, in
// decimal, in the raw topic's partition of the same number. A restart's
// dedup read-back (pipeline) reads back only the records made from raw
// offsets at or past its committed one.
const EnrichedRawOffsetHeader = "vigil-raw-offset"

// Enriched is one enriched record as its readers decode it (the archive,
// the console, the status page), with the Kafka position it came from,
// which the reader sets. Tags and the attribute maps stay JSON text, which
// is how the archive stores them. The pipeline writes the record with
// AppendEnriched, from the reading and what it added (Scored).
type Enriched struct {
	ID          string
	DeviceID    string
	TS          time.Time
	IngestedAt  time.Time
	Region      string
	Site        string
	DeviceModel string
	Lat         *float64
	Lon         *float64
	Tags        []byte // JSON array, or nil
	DeviceAttrs []byte // JSON object, or nil
	Attrs       []byte // JSON object, or nil
	Metrics     []Field
	Derived     []Field
	Label       string
	Score       float64
	Threshold   float64
	Model       string
	// ShadowModel and ShadowScore are set while a candidate model runs in
	// shadow beside Model.
	ShadowModel string
	ShadowScore *float64
	// Incident is the alert id of the incident the reading belongs to.
	Incident string

	Partition int32
	Offset    int64
}

// DecodeEnriched parses one enriched record value; see EnrichedDecoder.
func DecodeEnriched(b []byte) (Enriched, error) {
	var d EnrichedDecoder
	return d.Decode(b)
}

// EnrichedDecoder parses enriched record values in one pass over their
// tokens: no reflection, no maps, field names interned, and (the records
// are Vigil's own output) no duplicate-name or UTF-8 re-validation. Fields
// it does not know are skipped, so a newer pipeline can add fields before
// the archive learns them. Reuse one decoder for many records; it is not
// safe for concurrent use.
type EnrichedDecoder struct {
	dec   *jsontext.Decoder
	rd    bytes.Reader
	names map[string]string
	// the scanner's names of the previous record's metrics and derived
	prevMetrics, prevDerived []string
}

var trusted = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

// name reads a string token without allocating for names seen before.
func (d *EnrichedDecoder) name() (string, error) {
	v, err := d.dec.ReadValue()
	if err != nil {
		return "", err
	}
	if v.Kind() != '"' {
		return "", fmt.Errorf("want a string, got %s", v.Kind())
	}
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	}
	return d.intern(raw), nil
}

// intern returns the string of b, the same string for the same bytes
// (up to 4,096 distinct names are kept).
func (d *EnrichedDecoder) intern(b []byte) string {
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.names) < 4096 {
		d.names[s] = s
	}
	return s
}

// Decode parses one record value. Records as AppendEnriched writes them
// (compact, ASCII names, the known members) are read by a byte scanner
// (scan); anything else by the token decoder, which also words every
// error. Both give the same record for what the scanner takes
// (FuzzEnrichedScanner checks it).
func (d *EnrichedDecoder) Decode(b []byte) (Enriched, error) {
	var r Enriched
	err := d.DecodeInto(b, &r)
	return r, err
}

// DecodeInto is Decode into r, whose Metrics and Derived arrays it
// reuses: for a reader that is done with the previous record when it
// reads the next (the archiver, whose rows go into Parquet columns at
// once). On an error r is left as it was.
func (d *EnrichedDecoder) DecodeInto(b []byte, r *Enriched) error {
	if d.names == nil {
		d.names = map[string]string{}
	}
	if e, ok := d.scan(b, r); ok {
		*r = e
		return nil
	}
	e, err := d.decodeTokens(b)
	if err == nil {
		*r = e
	}
	return err
}

// EnrichedKey is what identifies an enriched record: its reading's id and
// device, and when the reading was ingested.
type EnrichedKey struct {
	ID, DeviceID string
	IngestedAt   time.Time
}

// DecodeKey reads an enriched record's key. The records AppendEnriched
// writes begin with these fields (id, device_id, ts, ingested_at), so it
// reads those and stops: a restarting stream reads back hundreds of
// thousands of its recent records for their ids alone. A record laid out
// otherwise (another writer's) goes through Decode, with its errors.
func (d *EnrichedDecoder) DecodeKey(b []byte) (EnrichedKey, error) {
	if d.names == nil {
		d.names = map[string]string{}
	}
	s := &escan{b: b}
	if s.eat('{') && s.lit(`"id"`) && s.eat(':') {
		if id, ok := s.str(); ok && len(id) > 0 && s.eat(',') && s.lit(`"device_id"`) && s.eat(':') {
			if dev, ok := d.scanName(s); ok && dev != "" && s.eat(',') && s.lit(`"ts"`) && s.eat(':') {
				if ts, ok := s.tm(); ok && !ts.IsZero() && s.eat(',') && s.lit(`"ingested_at"`) && s.eat(':') {
					if at, ok := s.tm(); ok && !at.IsZero() && (s.eat(',') || s.eat('}')) {
						return EnrichedKey{ID: string(id), DeviceID: dev, IngestedAt: at}, nil
					}
				}
			}
		}
	}
	e, err := d.Decode(b)
	if err != nil {
		return EnrichedKey{}, err
	}
	return EnrichedKey{ID: e.ID, DeviceID: e.DeviceID, IngestedAt: e.IngestedAt}, nil
}

// decodeTokens parses one record value with the jsontext token decoder.
func (d *EnrichedDecoder) decodeTokens(b []byte) (Enriched, error) {
	var r Enriched
	d.rd.Reset(b)
	if d.names == nil {
		d.names = map[string]string{}
	}
	if d.dec == nil {
		d.dec = jsontext.NewDecoder(&d.rd, trusted...)
	} else {
		d.dec.Reset(&d.rd, trusted...)
	}
	dec := d.dec
	str := func() (string, error) {
		tok, err := dec.ReadToken()
		if err != nil {
			return "", err
		}
		if tok.Kind() != '"' {
			return "", fmt.Errorf("want a string, got %s", tok.Kind())
		}
		return tok.String(), nil
	}
	num := func() (float64, error) {
		v, err := dec.ReadValue()
		if err != nil {
			return 0, err
		}
		if v.Kind() != '0' {
			return 0, fmt.Errorf("want a number, got %s", v.Kind())
		}
		return ParseNumber(unsafeString(v))
	}
	tm := func() (time.Time, error) {
		v, err := dec.ReadValue()
		if err != nil {
			return time.Time{}, err
		}
		if v.Kind() != '"' {
			return time.Time{}, fmt.Errorf("want a time string, got %s", v.Kind())
		}
		return time.Parse(time.RFC3339Nano, unsafeString(v[1:len(v)-1]))
	}
	raw := func() ([]byte, error) {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		return bytes.Clone(v), nil
	}
	fields := func(dst *[]Field) error {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if tok.Kind() != '{' {
			return fmt.Errorf("want an object, got %s", tok.Kind())
		}
		for dec.PeekKind() != '}' {
			name, err := d.name()
			if err != nil {
				return err
			}
			v, err := num()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			*dst = append(*dst, Field{name, v})
		}
		_, err = dec.ReadToken()
		return err
	}
	tok, err := dec.ReadToken()
	if err != nil || tok.Kind() != '{' {
		return r, fmt.Errorf("enriched record is not a JSON object")
	}
	for dec.PeekKind() != '}' {
		name, err := d.name()
		if err != nil {
			return r, fmt.Errorf("enriched record: %w", err)
		}
		switch name {
		case "id":
			r.ID, err = str()
		case "device_id":
			r.DeviceID, err = d.name()
		case "ts":
			r.TS, err = tm()
		case "ingested_at":
			r.IngestedAt, err = tm()
		case "region":
			r.Region, err = d.name()
		case "site":
			r.Site, err = d.name()
		case "device_model":
			r.DeviceModel, err = d.name()
		case "lat", "lon":
			var v float64
			v, err = num()
			if name == "lat" {
				r.Lat = &v
			} else {
				r.Lon = &v
			}
		case "tags":
			r.Tags, err = raw()
		case "device_attrs":
			r.DeviceAttrs, err = raw()
		case "attrs":
			r.Attrs, err = raw()
		case "label":
			r.Label, err = d.name()
		case "metrics":
			err = fields(&r.Metrics)
		case "derived":
			err = fields(&r.Derived)
		case "score":
			r.Score, err = num()
		case "threshold":
			r.Threshold, err = num()
		case "model":
			r.Model, err = d.name()
		case "incident":
			r.Incident, err = d.name()
		case "shadow_model":
			r.ShadowModel, err = d.name()
		case "shadow_score":
			var v float64
			v, err = num()
			r.ShadowScore = &v
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return r, fmt.Errorf("enriched record field %s: %w", name, err)
		}
	}
	if r.ID == "" || r.DeviceID == "" || r.TS.IsZero() || r.IngestedAt.IsZero() {
		return r, fmt.Errorf("enriched record lacks id, device_id, ts or ingested_at")
	}
	r.TS, r.IngestedAt = r.TS.UTC(), r.IngestedAt.UTC()
	return r, nil
}

func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
