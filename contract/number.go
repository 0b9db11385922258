package contract

import (
	"math"
	"strconv"
)

// The numbers of the topics' records are written and read on every hop
// (a four-metric enriched record carries about 35), so the common cases
// take fast paths here. Each is byte-for-byte what strconv writes, or the
// exact value strconv reads, and gives up to strconv for everything else:
// FuzzNumbers and TestNumbersMatchStrconv hold them to that.

// pow10 are the powers of ten a float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// AppendFloat appends the shortest JSON number for a finite v.
func AppendFloat(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	// a decimal of at most 6 places: the fewest places k at which the
	// integer m = v·10^k, divided back, is v again (m and 10^k exact, the
	// division correctly rounded: what parsing the decimal gives) is the
	// shortest form, which strconv writes without an exponent from 1e-4
	// to 1e6
	if a := math.Abs(v); a >= 1e-4 && a < 1e6 {
		for k := 1; k <= 6; k++ {
			m := math.Round(v * pow10[k])
			if m/pow10[k] == v {
				return appendDecimal(b, int64(m), k)
			}
		}
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendDecimal appends m·10^-k without trailing zeros after the point
// (k >= 0; "0.05", not ".05").
func appendDecimal(b []byte, m int64, k int) []byte {
	if m < 0 {
		b = append(b, '-')
		m = -m
	}
	for k > 0 && m%10 == 0 {
		m /= 10
		k--
	}
	var d [24]byte
	digits := strconv.AppendInt(d[:0], m, 10)
	switch n := len(digits); {
	case k == 0:
		return append(b, digits...)
	case n > k:
		b = append(b, digits[:n-k]...)
		b = append(b, '.')
		return append(b, digits[n-k:]...)
	default:
		b = append(b, "0.000000000000"[:2+k-n]...)
		return append(b, digits...)
	}
}

// parseSimple reads a plain JSON decimal without an exponent ("-12.5")
// of at most 15 significant digits, exactly as strconv.ParseFloat does
// (an integer below 2^53 divided by an exact power of ten is correctly
// rounded); ok is false for anything else.
func parseSimple(s string) (float64, bool) {
	if len(s) == 0 || len(s) > 17 {
		return 0, false
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	var m int64
	digits, whole, frac, dot := 0, 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			m = m*10 + int64(c-'0')
			if m > 0 {
				digits++
			}
			if dot {
				frac++
			} else {
				whole++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits > 15 || whole == 0 || dot && frac == 0 {
		return 0, false
	}
	v := float64(m) / pow10[frac]
	if neg {
		v = -v
	}
	return v, true
}

// ParseNumber reads a JSON number token's text as a float64, as
// strconv.ParseFloat does, taking the fast path when it can.
func ParseNumber(s string) (float64, error) {
	if v, ok := parseSimple(s); ok {
		return v, nil
	}
	return strconv.ParseFloat(s, 64)
}
