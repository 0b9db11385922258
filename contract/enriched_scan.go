package contract

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// The enriched record's byte scanner: the archiver and the console read
// every record of the enriched topic, and a token decoder spends most of
// its time on checks these records do not need. The scanner takes only
// what AppendEnriched writes: one compact object (no whitespace) of the
// known members, strings of printable ASCII without escapes (names,
// ids, times), JSON numbers, and the raw members (tags, device_attrs,
// attrs) as arrays or objects, which it checks with jsontext. On
// anything else it gives up, and Decode hands the record to the token
// decoder, so every input is judged by that decoder's rules.

// escan is a position in a record.
type escan struct {
	b []byte
	i int
}

func (s *escan) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plainASCII marks the bytes a scanned string may hold: printable ASCII
// but the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return
}()

// str reads a string of printable ASCII without escapes, unquoted.
func (s *escan) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	// eight bytes at a time while none of them ends the string or is
	// outside plain ASCII, then one at a time
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for s.i+8 <= len(s.b) {
		x := binary.LittleEndian.Uint64(s.b[s.i:])
		q, bs := x^(ones*'"'), x^(ones*'\\')
		if ((x-ones*0x20)&^x|(x|(x+ones))|(q-ones)&^q|(bs-ones)&^bs)&highs != 0 {
			break
		}
		s.i += 8
	}
	for s.i < len(s.b) && plainASCII[s.b[s.i]] {
		s.i++
	}
	if !s.eat('"') {
		return nil, false
	}
	return s.b[start : s.i-1], true
}

// num reads a JSON number.
func (s *escan) num() (float64, bool) {
	start := s.i
	s.eat('-')
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	switch {
	case s.eat('0'):
	case digits() == 0:
		return 0, false
	}
	if s.eat('.') && digits() == 0 {
		return 0, false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if digits() == 0 {
			return 0, false
		}
	}
	v, err := ParseNumber(unsafeString(s.b[start:s.i]))
	return v, err == nil
}

// raw reads an array or object, checked by jsontext as the token
// decoder would, and returns a copy.
func (s *escan) raw() ([]byte, bool) {
	start, depth := s.i, 0
	if s.i >= len(s.b) || s.b[s.i] != '{' && s.b[s.i] != '[' {
		return nil, false
	}
	for ; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				s.i++
				v := jsontext.Value(s.b[start:s.i])
				if !v.IsValid(trusted...) {
					return nil, false
				}
				return bytes.Clone(v), true
			}
		case '"':
			for s.i++; s.i < len(s.b) && s.b[s.i] != '"'; s.i++ {
				if s.b[s.i] == '\\' {
					s.i++
				}
			}
		}
	}
	return nil, false
}

// tm reads a time written as UTC RFC 3339 with up to nine fractional
// digits ("2026-11-25T12:00:00.25Z").
func (s *escan) tm() (time.Time, bool) {
	v, ok := s.str()
	if !ok || len(v) < 20 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' || v[len(v)-1] != 'Z' {
		return time.Time{}, false
	}
	n := func(from, to int) int {
		x := 0
		for _, c := range v[from:to] {
			if c < '0' || c > '9' {
				return -1
			}
			x = x*10 + int(c-'0')
		}
		return x
	}
	year, month, day, hour, min, sec := n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19)
	nsec := 0
	switch frac := v[19 : len(v)-1]; {
	case len(frac) == 0:
	case frac[0] != '.' || len(frac) < 2 || len(frac) > 10:
		return time.Time{}, false
	default:
		if nsec = n(20, len(v)-1); nsec < 0 {
			return time.Time{}, false
		}
		for k := len(frac) - 1; k < 9; k++ {
			nsec *= 10
		}
	}
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, min, sec, nsec, time.UTC)
	if t.Day() != day { // the 31st of a 30-day month
		return time.Time{}, false
	}
	return t, true
}

// scanName reads a string and interns it.
func (d *EnrichedDecoder) scanName(s *escan) (string, bool) {
	v, ok := s.str()
	if !ok {
		return "", false
	}
	return d.intern(v), true
}

// members reads the members of an object whose '{' was read, through its
// '}': for each, its name (a plain string) and, after the colon, member
// reads the value. n is how many there were.
func (s *escan) members(member func(k int, name []byte) bool) (n int, ok bool) {
	for ; !s.eat('}'); n++ {
		if n > 0 && !s.eat(',') {
			return n, false
		}
		name, ok := s.str()
		if !ok || !s.eat(':') || !member(n, name) {
			return n, false
		}
	}
	return n, true
}

// scanFields reads an object of numbers. Records of one device, and of
// one fleet, name the same fields in the same order: prev, the names of
// the previous record's object, is tried before the intern map, and
// sizes the slice.
func (d *EnrichedDecoder) scanFields(s *escan, dst *[]Field, prev *[]string) bool {
	if !s.eat('{') {
		return false
	}
	if *dst == nil {
		*dst = make([]Field, 0, max(len(*prev), 4))
	}
	names := (*prev)[:0] // written at k after (*prev)[k] was read
	n, ok := s.members(func(k int, v []byte) bool {
		var name string
		if k < len(*prev) && (*prev)[k] == string(v) {
			name = (*prev)[k]
		} else {
			name = d.intern(v)
		}
		names = append(names, name)
		x, ok := s.num()
		*dst = append(*dst, Field{name, x})
		return ok
	})
	if ok && n > 0 {
		*prev = names
	}
	return ok
}

// scan reads b as AppendEnriched writes it; ok is false when b is not in
// that form (the token decoder then judges it).
func (d *EnrichedDecoder) scan(b []byte, reuse *Enriched) (r Enriched, ok bool) {
	if reuse != nil {
		r.Metrics, r.Derived = reuse.Metrics[:0], reuse.Derived[:0]
	}
	s := &escan{b: b}
	if !s.eat('{') || s.eat('}') {
		return r, false
	}
	for {
		key, ok := s.str()
		if !ok || !s.eat(':') {
			return r, false
		}
		switch string(key) {
		case "id":
			var v []byte
			if v, ok = s.str(); ok {
				r.ID = string(v)
			}
		case "device_id":
			r.DeviceID, ok = d.scanName(s)
		case "ts":
			r.TS, ok = s.tm()
		case "ingested_at":
			r.IngestedAt, ok = s.tm()
		case "region":
			r.Region, ok = d.scanName(s)
		case "site":
			r.Site, ok = d.scanName(s)
		case "device_model":
			r.DeviceModel, ok = d.scanName(s)
		case "lat":
			var v float64
			v, ok = s.num()
			r.Lat = &v
		case "lon":
			var v float64
			v, ok = s.num()
			r.Lon = &v
		case "tags":
			r.Tags, ok = s.raw()
		case "device_attrs":
			r.DeviceAttrs, ok = s.raw()
		case "attrs":
			r.Attrs, ok = s.raw()
		case "label":
			r.Label, ok = d.scanName(s)
		case "metrics":
			ok = d.scanFields(s, &r.Metrics, &d.prevMetrics)
		case "derived":
			ok = d.scanFields(s, &r.Derived, &d.prevDerived)
		case "score":
			r.Score, ok = s.num()
		case "threshold":
			r.Threshold, ok = s.num()
		case "model":
			r.Model, ok = d.scanName(s)
		case "incident":
			r.Incident, ok = d.scanName(s)
		case "shadow_model":
			r.ShadowModel, ok = d.scanName(s)
		case "shadow_score":
			var v float64
			v, ok = s.num()
			r.ShadowScore = &v
		default:
			ok = false
		}
		if !ok {
			return r, false
		}
		if s.eat('}') {
			break
		}
		if !s.eat(',') {
			return r, false
		}
	}
	if s.i != len(b) || r.ID == "" || r.DeviceID == "" || r.TS.IsZero() || r.IngestedAt.IsZero() {
		return r, false
	}
	return r, true
}

// lit reads the literal s.
func (s *escan) lit(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// scanRaw reads a raw-topic record exactly as Reading.AppendJSON writes
// it, with plain ASCII strings; ok is false for anything else (the
// strict decoder then judges it).
func scanRaw(b []byte) (r Reading, ok bool) {
	s := &escan{b: b}
	var v []byte
	if !s.lit(`{"id":`) {
		return r, false
	}
	if v, ok = s.str(); !ok || len(v) == 0 {
		return r, false
	}
	r.ID = string(v)
	if !s.lit(`,"device_id":`) {
		return r, false
	}
	if v, ok = s.str(); !ok {
		return r, false
	}
	r.DeviceID = string(v)
	if !ValidName(r.DeviceID) || !s.lit(`,"ts":`) {
		return r, false
	}
	if r.TS, ok = s.tm(); !ok || !s.lit(`,"metrics":{`) {
		return r, false
	}
	r.Metrics = make([]Metric, 0, 4)
	n, ok := s.members(func(_ int, name []byte) bool {
		for _, m := range r.Metrics {
			if m.Name == string(name) {
				return false // a duplicate: the strict decoder words it
			}
		}
		x, ok := s.num()
		r.Metrics = append(r.Metrics, Metric{Name: string(name), Value: x})
		return ok
	})
	if !ok || n == 0 {
		return r, false
	}
	if s.lit(`,"attrs":{`) {
		n, ok := s.members(func(_ int, name []byte) bool {
			for _, a := range r.Attrs {
				if a.Name == string(name) {
					return false
				}
			}
			v, ok := s.str()
			r.Attrs = append(r.Attrs, Attr{Name: string(name), Value: string(v)})
			return ok
		})
		if !ok || n == 0 {
			return r, false
		}
	}
	if s.lit(`,"label":`) {
		if v, ok = s.str(); !ok || len(v) == 0 {
			return r, false
		}
		r.Label = string(v)
	}
	if !s.lit(`,"region":`) {
		return r, false
	}
	if v, ok = s.str(); !ok {
		return r, false
	}
	r.Region = string(v)
	if !s.lit(`,"ingested_at":`) {
		return r, false
	}
	if r.IngestedAt, ok = s.tm(); !ok || !s.eat('}') || s.i != len(b) {
		return r, false
	}
	return r, true
}

// Scanner lends the records' byte scanner to other packages' fast paths
// (ingest reads request bodies with it). Its reads are the scanner's:
// plain ASCII strings without escapes, JSON numbers, UTC RFC 3339 times;
// unlike the records' scanner, it lets JSON whitespace stand between
// tokens (SkipWS).
type Scanner struct{ s escan }

// NewScanner starts at the beginning of b.
func NewScanner(b []byte) *Scanner { return &Scanner{escan{b: b}} }

// Pos is the offset of the next byte.
func (s *Scanner) Pos() int { return s.s.i }

// SkipWS skips JSON whitespace.
func (s *Scanner) SkipWS() {
	for s.s.i < len(s.s.b) {
		switch s.s.b[s.s.i] {
		case ' ', '\t', '\n', '\r':
			s.s.i++
		default:
			return
		}
	}
}

// Peek is the next byte (0 at the end).
func (s *Scanner) Peek() byte {
	if s.s.i < len(s.s.b) {
		return s.s.b[s.s.i]
	}
	return 0
}

// Eat reads c if it is the next byte.
func (s *Scanner) Eat(c byte) bool { return s.s.eat(c) }

// Str reads a string of printable ASCII without escapes, unquoted.
func (s *Scanner) Str() ([]byte, bool) { return s.s.str() }

// Num reads a JSON number: its text and value.
func (s *Scanner) Num() ([]byte, float64, bool) {
	start := s.s.i
	v, ok := s.s.num()
	return s.s.b[start:s.s.i], v, ok
}

// Time reads a string holding a UTC RFC 3339 time ("2026-11-25T12:00:00.25Z").
func (s *Scanner) Time() (time.Time, bool) { return s.s.tm() }

// Lit reads the literal lit.
func (s *Scanner) Lit(lit string) bool { return s.s.lit(lit) }
