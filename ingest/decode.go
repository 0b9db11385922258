package ingest

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Detail names one bad reading of a refused request.
type Detail struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// RequestError is a refusal: the HTTP status, a message naming the problem
// and, for 400, the index and reason of each bad reading.
type RequestError struct {
	Status  int      `json:"-"`
	Message string   `json:"error"`
	Details []Detail `json:"details,omitempty"`
	// retryAfter, when longer than ingest.retry_after, is the Retry-After
	// of a 429 (the time a key's bucket needs).
	retryAfter time.Duration
}

func (e *RequestError) Error() string { return e.Message }

// maxDetails bounds the details of one refusal, so a huge bad request gets a
// small answer.
const maxDetails = 100

// Decoder turns request bodies into readings. It is safe for concurrent use.
type Decoder struct {
	// MaxReadings is the most readings one request may hold.
	MaxReadings int
	// FutureMargin is how far past the server's clock an event time may be.
	FutureMargin time.Duration
	// MaxMetrics is the most metrics (and, separately, attrs) one reading may hold.
	MaxMetrics int
}

// Decode parses a whole request body: one JSON object, a JSON array of
// objects, or (ndjson) one object per line. It returns every reading, or
// a RequestError naming every bad reading; never a mix.
func (d *Decoder) Decode(body []byte, ndjson bool, now time.Time) ([]contract.Reading, *RequestError) {
	if !ndjson {
		if out, ok := d.scanBody(body, now); ok {
			return out, nil
		}
	}
	return d.decodeStrict(body, ndjson, now)
}

// decodeStrict is Decode by the token decoder, which judges any body and
// words each refusal.
func (d *Decoder) decodeStrict(body []byte, ndjson bool, now time.Time) ([]contract.Reading, *RequestError) {
	var (
		out     []contract.Reading
		details []Detail
		extra   int
	)
	bad := func(i int, err error) {
		if len(details) < maxDetails {
			details = append(details, Detail{Index: i, Reason: err.Error()})
		} else {
			extra++
		}
	}
	tooMany := func() *RequestError {
		return &RequestError{Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf("request holds more than %d readings (ingest.max_readings); split it", d.MaxReadings)}
	}
	if ndjson {
		idx := 0
		for len(body) > 0 {
			line := body
			if i := bytes.IndexByte(body, '\n'); i >= 0 {
				line, body = body[:i], body[i+1:]
			} else {
				body = nil
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if idx >= d.MaxReadings {
				return nil, tooMany()
			}
			dec := jsontext.NewDecoder(bytes.NewReader(line))
			r, err := d.readOne(dec, line, now)
			if err == nil {
				if _, err2 := dec.ReadToken(); !errors.Is(err2, io.EOF) {
					err = errors.New("more than one JSON value on the line")
				}
			}
			if err != nil {
				bad(idx, err)
			} else {
				out = append(out, r)
			}
			idx++
		}
	} else {
		dec := jsontext.NewDecoder(bytes.NewReader(body))
		switch dec.PeekKind() {
		case '{':
			r, err := d.readOne(dec, body, now)
			if err != nil {
				bad(0, err)
			} else {
				out = append(out, r)
			}
		case '[':
			if _, err := dec.ReadToken(); err != nil {
				return nil, syntaxError(err)
			}
			for idx := 0; dec.PeekKind() != ']'; idx++ {
				if dec.PeekKind() == 0 {
					_, err := dec.ReadToken()
					bad(idx, fmt.Errorf("invalid JSON: %v", cleanErr(err)))
					break
				}
				if idx >= d.MaxReadings {
					return nil, tooMany()
				}
				r, err := d.readOne(dec, body, now)
				if err != nil {
					bad(idx, err)
					var se *jsontext.SyntacticError
					if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
						break
					}
					continue
				}
				out = append(out, r)
			}
			if len(details) == 0 {
				if _, err := dec.ReadToken(); err != nil {
					return nil, syntaxError(err)
				}
			}
		case 0:
			_, err := dec.ReadToken()
			if errors.Is(err, io.EOF) {
				return nil, &RequestError{Status: http.StatusBadRequest, Message: "empty body: send a reading object, an array of readings, or NDJSON"}
			}
			return nil, syntaxError(err)
		default:
			return nil, &RequestError{Status: http.StatusBadRequest, Message: "body must be a JSON object (one reading) or an array of readings"}
		}
		if len(details) == 0 {
			if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
				return nil, &RequestError{Status: http.StatusBadRequest, Message: "unexpected data after the JSON value; send one object, one array, or NDJSON with Content-Type application/x-ndjson"}
			}
		}
	}
	if len(details) > 0 {
		msg := fmt.Sprintf("%d bad reading(s); nothing was accepted", len(details)+extra)
		if extra > 0 {
			msg += fmt.Sprintf(" (first %d listed)", len(details))
		}
		return nil, &RequestError{Status: http.StatusBadRequest, Message: msg, Details: details}
	}
	if len(out) == 0 {
		return nil, &RequestError{Status: http.StatusBadRequest, Message: "no readings in the request"}
	}
	return out, nil
}

func syntaxError(err error) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Message: "invalid JSON: " + cleanErr(err)}
}

func cleanErr(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "unexpected end of input"
	}
	return err.Error()
}

// fieldError is a semantic problem with one field: the decoder skips the
// rest of the reading and goes on to the next one.
type fieldError struct{ msg string }

func (e *fieldError) Error() string { return e.msg }

func fieldErrf(format string, a ...any) error { return &fieldError{fmt.Sprintf(format, a...)} }

// readOne reads one reading object from dec. body is the buffer dec reads,
// used to hash the reading's bytes into an id when the client sent none.
// A syntax error is returned as is (the caller stops); a field error after
// the object has been fully consumed.
func (d *Decoder) readOne(dec *jsontext.Decoder, body []byte, now time.Time) (contract.Reading, error) {
	start := dec.InputOffset()
	if k := dec.PeekKind(); k != '{' {
		if err := dec.SkipValue(); err != nil {
			return contract.Reading{}, err
		}
		return contract.Reading{}, fieldErrf("a reading must be a JSON object, got %s", contract.KindName(k))
	}
	var (
		r      contract.Reading
		first  error
		hasDev bool
		hasTS  bool
		hasMet bool
	)
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	err := contract.ReadObject(dec, func(name string) error {
		switch name {
		case "device_id":
			s, err := readString(dec, name)
			if err != nil {
				return err
			}
			hasDev = true
			if s == nil {
				fail(fieldErrf("device_id must be a string"))
			} else if !contract.ValidName(*s) {
				fail(fieldErrf("device_id %q must be 1-128 letters, digits or ._:-", truncate(*s)))
			} else {
				r.DeviceID = *s
			}
		case "id":
			s, err := readString(dec, name)
			if err != nil {
				return err
			}
			if s == nil {
				fail(fieldErrf("id must be a string"))
			} else if !validMessageID(*s) {
				fail(fieldErrf("id must be 1-128 printable characters"))
			} else {
				r.ID = *s
			}
		case "label":
			s, err := readString(dec, name)
			if err != nil {
				return err
			}
			if s == nil || (*s != "normal" && *s != "anomaly") {
				fail(fieldErrf(`label must be "normal" or "anomaly"`))
			} else {
				r.Label = *s
			}
		case "ts":
			hasTS = true
			ts, err := d.readTS(dec, now)
			var fe *fieldError
			if errors.As(err, &fe) {
				fail(err)
			} else if err != nil {
				return err
			}
			r.TS = ts
		case "metrics":
			hasMet = true
			if k := dec.PeekKind(); k != '{' {
				fail(fieldErrf("metrics must be an object of numbers, got %s", contract.KindName(k)))
				return dec.SkipValue()
			}
			return contract.ReadObject(dec, func(m string) error {
				tok, err := dec.ReadToken()
				if err != nil {
					return err
				}
				if tok.Kind() == '{' || tok.Kind() == '[' {
					fail(fieldErrf("metrics.%s must be a number, got %s", truncate(m), contract.KindName(tok.Kind())))
					return skipRest(dec, tok.Kind())
				}
				if !contract.ValidName(m) {
					fail(fieldErrf("metric name %q must be 1-128 letters, digits or ._:-", truncate(m)))
					return nil
				}
				if tok.Kind() != '0' {
					fail(fieldErrf("metrics.%s must be a finite number, got %s", m, contract.KindName(tok.Kind())))
					return nil
				}
				v, perr := contract.ParseNumber(tok.String())
				if perr != nil || math.IsInf(v, 0) || math.IsNaN(v) {
					fail(fieldErrf("metrics.%s is out of the range of a 64-bit float", m))
					return nil
				}
				if len(r.Metrics) >= d.MaxMetrics {
					fail(fieldErrf("more than %d metrics (ingest.max_metrics)", d.MaxMetrics))
					return nil
				}
				r.Metrics = append(r.Metrics, contract.Metric{Name: m, Value: v})
				return nil
			})
		case "attrs":
			if k := dec.PeekKind(); k != '{' {
				fail(fieldErrf("attrs must be an object of strings, got %s", contract.KindName(k)))
				return dec.SkipValue()
			}
			return contract.ReadObject(dec, func(a string) error {
				tok, err := dec.ReadToken()
				if err != nil {
					return err
				}
				var v string
				switch tok.Kind() {
				case '"':
					v = tok.String()
				case '0':
					v = tok.String()
				case 't', 'f':
					v = strconv.FormatBool(tok.Bool())
				case '{', '[':
					fail(fieldErrf("attrs.%s must be a string, number or boolean, got %s", truncate(a), contract.KindName(tok.Kind())))
					return skipRest(dec, tok.Kind())
				default:
					fail(fieldErrf("attrs.%s must be a string, number or boolean, got null", truncate(a)))
					return nil
				}
				if !contract.ValidName(a) {
					fail(fieldErrf("attr name %q must be 1-128 letters, digits or ._:-", truncate(a)))
					return nil
				}
				if len(v) > 1024 {
					fail(fieldErrf("attrs.%s is longer than 1024 bytes", a))
					return nil
				}
				if len(r.Attrs) >= d.MaxMetrics {
					fail(fieldErrf("more than %d attrs (ingest.max_metrics)", d.MaxMetrics))
					return nil
				}
				r.Attrs = append(r.Attrs, contract.Attr{Name: a, Value: v})
				return nil
			})
		default:
			fail(fieldErrf("unknown field %q (allowed: device_id, ts, metrics, attrs, id, label)", truncate(name)))
			return dec.SkipValue()
		}
		return nil
	})
	if err != nil {
		return contract.Reading{}, fmt.Errorf("invalid JSON: %s", cleanErr(err))
	}
	switch {
	case first != nil:
		return contract.Reading{}, first
	case !hasDev:
		return contract.Reading{}, fieldErrf("device_id is required")
	case !hasTS:
		return contract.Reading{}, fieldErrf("ts is required (RFC 3339 string or Unix epoch milliseconds)")
	case !hasMet || len(r.Metrics) == 0:
		return contract.Reading{}, fieldErrf("metrics must hold at least one number")
	}
	if r.ID == "" {
		// A retry of the same bytes gets the same id, so it is stored once.
		sum := sha256.Sum256(body[start:dec.InputOffset()])
		r.ID = "h-" + hex.EncodeToString(sum[:16])
	}
	return r, nil
}

// skipRest consumes the rest of an object or array whose opening token was
// already read.
func skipRest(dec *jsontext.Decoder, open jsontext.Kind) error {
	closing := jsontext.Kind(']')
	if open == '{' {
		closing = '}'
	}
	for dec.PeekKind() != closing {
		if dec.PeekKind() == 0 {
			_, err := dec.ReadToken()
			return err
		}
		if err := dec.SkipValue(); err != nil {
			return err
		}
	}
	_, err := dec.ReadToken()
	return err
}

// readString reads a string value; it returns nil (and consumes the value)
// when the value is not a string.
func readString(dec *jsontext.Decoder, _ string) (*string, error) {
	if dec.PeekKind() != '"' {
		return nil, dec.SkipValue()
	}
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	s := tok.String()
	return &s, nil
}

var maxTS = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

func (d *Decoder) readTS(dec *jsontext.Decoder, now time.Time) (time.Time, error) {
	var ts time.Time
	switch dec.PeekKind() {
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return ts, err
		}
		t, perr := time.Parse(time.RFC3339Nano, tok.String())
		if perr != nil {
			return ts, fieldErrf("ts %q is not an RFC 3339 time (e.g. 2026-11-25T12:00:00.250Z)", truncate(tok.String()))
		}
		ts = t.UTC()
	case '0':
		tok, err := dec.ReadToken()
		if err != nil {
			return ts, err
		}
		var ok bool
		if ts, ok = epochMillis(tok.String()); !ok {
			return ts, fieldErrf("ts %s is not a Unix epoch time in milliseconds between 1970 and 9999", truncate(tok.String()))
		}
	default:
		k := dec.PeekKind()
		if err := dec.SkipValue(); err != nil {
			return ts, err
		}
		return ts, fieldErrf("ts must be an RFC 3339 string or Unix epoch milliseconds, got %s", contract.KindName(k))
	}
	return ts, d.checkTS(ts, now)
}

// epochMillis reads a ts given as Unix epoch milliseconds (a JSON
// number's text); ok is false outside 1970-9999.
func epochMillis(text string) (time.Time, bool) {
	ms, err := strconv.ParseFloat(text, 64)
	if err != nil || ms < 0 || ms > float64(maxTS.UnixMilli()) {
		return time.Time{}, false
	}
	whole := math.Floor(ms)
	return time.UnixMilli(int64(whole)).Add(time.Duration((ms - whole) * 1e6)).UTC(), true
}

// checkTS refuses an event time outside 1970-9999 or too far in the future.
func (d *Decoder) checkTS(ts, now time.Time) error {
	if ts.Year() < 1970 || ts.After(maxTS) {
		return fieldErrf("ts %s is outside 1970-9999", ts.Format(time.RFC3339))
	}
	if ts.After(now.Add(d.FutureMargin)) {
		return fieldErrf("ts %s is %s in the future (more than ingest.future_margin %s); check the device clock",
			ts.Format(time.RFC3339Nano), ts.Sub(now).Round(time.Millisecond), d.FutureMargin)
	}
	return nil
}

func validMessageID(s string) bool {
	if s == "" || len(s) > 128 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	for i := 64; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}

// LooksNDJSON reports whether a body holds more than one top-level JSON
// value (NDJSON), for transports without a Content-Type (MQTT): one object
// or one array is JSON.
func LooksNDJSON(body []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if err := dec.SkipValue(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return !errors.Is(err, io.EOF)
}
