package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"github.com/vigil/vigil/contract"
)

// scanBody is Decode's fast path: a byte scanner for a body of good
// readings as gateways and devices send them (one object or an array of
// objects; known fields; strings of printable ASCII without escapes; UTC
// RFC 3339 or epoch-millisecond times; JSON whitespace anywhere). On
// anything else, including every reading Decode would refuse, ok is
// false and the token decoder judges the whole body, so refusals and
// their wording are the token decoder's alone. FuzzScanBody holds the two
// to the same readings (ids included) for every body the scanner takes.
func (d *Decoder) scanBody(body []byte, now time.Time) (out []contract.Reading, ok bool) {
	s := contract.NewScanner(body)
	c := &scanCache{}
	s.SkipWS()
	switch {
	case s.Peek() == '{':
		r, ok := d.scanOne(s, c, body, 0, now)
		if !ok {
			return nil, false
		}
		out = []contract.Reading{r}
	case s.Eat('['):
		// the readings and their metrics are sized once, from the body's
		// count of device ids, instead of grown by doubling (copying them
		// as they grew was a third of a 500-reading body's decode time)
		n := min(max(bytes.Count(body, deviceIDKey), 1), d.MaxReadings)
		out = make([]contract.Reading, 0, n)
		// the hashed bytes of a reading without an id start where the
		// token decoder's do: after the '[' or the previous reading (the
		// separator included)
		start := s.Pos()
		for {
			s.SkipWS()
			if len(out) > 0 && !s.Eat(',') {
				return nil, false
			}
			s.SkipWS()
			if len(out) == d.MaxReadings || s.Peek() != '{' {
				return nil, false
			}
			r, ok := d.scanOne(s, c, body, start, now)
			if !ok {
				return nil, false
			}
			out = append(out, r)
			if len(out) == 1 && n > 1 {
				// at most one metric per 8 bytes of body: a body that
				// names device ids in its strings reserves no more
				c.metrics = slices.Grow(c.metrics, min((n-1)*len(r.Metrics), len(body)/8))
			}
			start = s.Pos()
			s.SkipWS()
			if s.Eat(']') {
				break
			}
		}
	default:
		return nil, false
	}
	s.SkipWS()
	return out, s.Pos() == len(body)
}

// scanOne reads one good reading object at s; start is where its hashed
// bytes begin.
func (d *Decoder) scanOne(s *contract.Scanner, c *scanCache, body []byte, start int, now time.Time) (contract.Reading, bool) {
	var r contract.Reading
	const (
		fDevice = 1 << iota
		fID
		fLabel
		fTS
		fMetrics
		fAttrs
	)
	var seen int
	field := func(f int) bool { // a field seen twice is the token decoder's to refuse
		if seen&f != 0 {
			return false
		}
		seen |= f
		return true
	}
	if !scanMembers(s, func(name []byte) bool {
		var ok bool
		switch string(name) {
		case "device_id":
			v, ok := s.Str()
			if !field(fDevice) || !ok || !contract.ValidName(string(v)) {
				return false
			}
			r.DeviceID = string(v)
		case "id":
			v, ok := s.Str()
			if !field(fID) || !ok || len(v) == 0 || len(v) > 128 {
				return false
			}
			r.ID = string(v)
		case "label":
			v, ok := s.Str()
			if !field(fLabel) || !ok || string(v) != "normal" && string(v) != "anomaly" {
				return false
			}
			r.Label = string(v)
		case "ts":
			if !field(fTS) {
				return false
			}
			if s.Peek() == '"' {
				r.TS, ok = s.Time()
			} else {
				var text []byte
				if text, _, ok = s.Num(); ok {
					r.TS, ok = epochMillis(string(text))
				}
			}
			if !ok || d.checkTS(r.TS, now) != nil {
				return false
			}
		case "metrics":
			from := len(c.metrics)
			if !field(fMetrics) || !scanMembers(s, func(name []byte) bool {
				_, v, ok := s.Num()
				if !ok || len(c.metrics)-from == d.MaxMetrics || !contract.ValidName(string(name)) || slices.ContainsFunc(c.metrics[from:], func(m contract.Metric) bool { return m.Name == string(name) }) {
					return false
				}
				c.metrics = append(c.metrics, contract.Metric{Name: c.name(name), Value: v})
				return true
			}) {
				return false
			}
			r.Metrics = c.metrics[from:len(c.metrics):len(c.metrics)]
		case "attrs":
			if !field(fAttrs) || !scanMembers(s, func(name []byte) bool {
				var v []byte
				switch s.Peek() {
				case '"':
					v, ok = s.Str()
				case 't':
					v, ok = []byte("true"), s.Lit("true")
				case 'f':
					v, ok = []byte("false"), s.Lit("false")
				default:
					v, _, ok = s.Num()
				}
				if !ok || len(v) > 1024 || len(r.Attrs) == d.MaxMetrics || !contract.ValidName(string(name)) || slices.ContainsFunc(r.Attrs, func(a contract.Attr) bool { return a.Name == string(name) }) {
					return false
				}
				r.Attrs = append(r.Attrs, contract.Attr{Name: c.name(name), Value: c.name(v)})
				return true
			}) {
				return false
			}
		default:
			return false
		}
		return true
	}) {
		return r, false
	}
	if seen&fDevice == 0 || seen&fTS == 0 || len(r.Metrics) == 0 {
		return r, false
	}
	if r.ID == "" {
		sum := sha256.Sum256(body[start:s.Pos()])
		r.ID = "h-" + hex.EncodeToString(sum[:16])
	}
	return r, true
}

// scanMembers reads an object (whitespace allowed), calling member for
// each member's name with s at its value.
func scanMembers(s *contract.Scanner, member func(name []byte) bool) bool {
	if !s.Eat('{') {
		return false
	}
	for n := 0; ; n++ {
		s.SkipWS()
		if s.Eat('}') {
			return true
		}
		if n > 0 {
			if !s.Eat(',') {
				return false
			}
			s.SkipWS()
		}
		name, ok := s.Str()
		if !ok {
			return false
		}
		s.SkipWS()
		if !s.Eat(':') {
			return false
		}
		s.SkipWS()
		if !member(name) {
			return false
		}
	}
}

// deviceIDKey counts a body's readings before they are read.
var deviceIDKey = []byte(`"device_id"`)

// scanCache is what the readings of one body share: their metrics, in one
// array (each reading's slice capped at its own), and the names and
// values they repeat, made into strings once.
type scanCache struct {
	metrics []contract.Metric
	names   []string
}

func (c *scanCache) name(b []byte) string {
	for _, n := range c.names {
		if n == string(b) {
			return n
		}
	}
	n := string(b)
	if len(c.names) < 32 {
		c.names = append(c.names, n)
	}
	return n
}
