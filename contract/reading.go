package contract

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Metric is one named number of a reading. Readings keep their metrics as a
// slice in the order the device sent them: cheaper than a map, and stable.
type Metric struct {
	Name  string
	Value float64
}

// Attr is one named category or word of a reading.
type Attr struct {
	Name  string
	Value string
}

// Reading is one accepted reading, as written to the raw topic.
type Reading struct {
	ID         string
	DeviceID   string
	TS         time.Time // event time, UTC
	Metrics    []Metric
	Attrs      []Attr
	Label      string // "", "normal" or "anomaly"
	Region     string
	IngestedAt time.Time // wall time at the region that accepted it, UTC
}

// Metric returns the value of the named metric.
func (r *Reading) Metric(name string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// AppendJSON appends the raw-topic JSON encoding of r to b.
func (r *Reading) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b, _ = jsontext.AppendQuote(b, r.ID)
	b = append(b, `,"device_id":`...)
	b, _ = jsontext.AppendQuote(b, r.DeviceID)
	b = append(b, `,"ts":"`...)
	b = r.TS.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = r.appendBody(b)
	b = append(b, `,"region":`...)
	b, _ = jsontext.AppendQuote(b, r.Region)
	b = append(b, `,"ingested_at":"`...)
	b = r.IngestedAt.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// appendBody appends the reading's metrics, attrs and label members (the
// part the raw and the enriched records share), each after a comma.
func (r *Reading) appendBody(b []byte) []byte {
	b = append(b, `,"metrics":{`...)
	for i, m := range r.Metrics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, m.Name)
		b = append(b, ':')
		b = AppendFloat(b, m.Value)
	}
	b = append(b, '}')
	if len(r.Attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		for i, a := range r.Attrs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStr(b, a.Name)
			b = append(b, ':')
			b = appendStr(b, a.Value)
		}
		b = append(b, '}')
	}
	if r.Label != "" {
		b = append(b, `,"label":`...)
		b = appendStr(b, r.Label)
	}
	return b
}

// rawReading is the raw-topic form, decoded by the pipeline.
type rawReading struct {
	ID         string         `json:"id"`
	DeviceID   string         `json:"device_id"`
	TS         time.Time      `json:"ts"`
	Metrics    jsontext.Value `json:"metrics"`
	Attrs      jsontext.Value `json:"attrs,omitzero"`
	Label      string         `json:"label,omitzero"`
	Region     string         `json:"region"`
	IngestedAt time.Time      `json:"ingested_at"`
}

// DecodeRaw decodes a raw-topic record value. It is strict: a record that
// was not written by ingest (a hand-made record on the raw topic) is refused
// with the reason, which the pipeline puts in the dead-letter header.
// Records exactly as AppendJSON writes them are read by a byte scanner
// (scanRaw); any other input by the strict decoder, which words every
// refusal (FuzzRawScanner checks that both read the same reading).
func DecodeRaw(value []byte) (Reading, error) {
	if r, ok := scanRaw(value); ok {
		return r, nil
	}
	return decodeRawStrict(value)
}

// decodeRawStrict decodes a raw-topic record value with encoding/json/v2.
func decodeRawStrict(value []byte) (Reading, error) {
	var rr rawReading
	if err := json.Unmarshal(value, &rr, json.RejectUnknownMembers(true)); err != nil {
		return Reading{}, fmt.Errorf("raw record is not a Vigil reading: %w", err)
	}
	r := Reading{ID: rr.ID, DeviceID: rr.DeviceID, TS: rr.TS.UTC(), Label: rr.Label, Region: rr.Region, IngestedAt: rr.IngestedAt.UTC()}
	if r.ID == "" || !ValidName(r.DeviceID) || r.TS.IsZero() {
		return Reading{}, errors.New("raw record is not a Vigil reading: id, device_id or ts missing or invalid")
	}
	dec := jsontext.NewDecoder(bytes.NewReader(rr.Metrics))
	if err := ReadObject(dec, func(name string) error {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if tok.Kind() != '0' {
			return fmt.Errorf("metric %q is not a number", name)
		}
		v, err := ParseNumber(tok.String())
		if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("metric %q is not a finite number", name)
		}
		r.Metrics = append(r.Metrics, Metric{Name: name, Value: v})
		return nil
	}); err != nil {
		return Reading{}, fmt.Errorf("raw record metrics: %w", err)
	}
	if len(r.Metrics) == 0 {
		return Reading{}, errors.New("raw record has no metrics")
	}
	if len(rr.Attrs) > 0 {
		dec := jsontext.NewDecoder(bytes.NewReader(rr.Attrs))
		if err := ReadObject(dec, func(name string) error {
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			if tok.Kind() != '"' {
				return fmt.Errorf("attr %q is not a string", name)
			}
			r.Attrs = append(r.Attrs, Attr{Name: name, Value: tok.String()})
			return nil
		}); err != nil {
			return Reading{}, fmt.Errorf("raw record attrs: %w", err)
		}
	}
	return r, nil
}

// ReadObject reads one JSON object from dec, calling field for each member
// name; field must consume the member's value. The raw-topic decoder and
// ingest's strict decoder share it.
func ReadObject(dec *jsontext.Decoder, field func(name string) error) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '{' {
		return fmt.Errorf("want a JSON object, got %s", KindName(tok.Kind()))
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if err := field(name.String()); err != nil {
			return err
		}
	}
	_, err = dec.ReadToken()
	return err
}

// KindName names a JSON kind for error messages ("a string", "null").
func KindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	default:
		return "invalid JSON"
	}
}

// ValidName reports whether s is 1-128 letters, digits or ._:- (the rule for
// device, gateway, metric and attr names and for ids in bucket keys).
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
