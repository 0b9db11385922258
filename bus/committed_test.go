package bus

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestCommittedFollows(t *testing.T) {
	recs := func(offs ...int64) []*kgo.Record {
		out := make([]*kgo.Record, len(offs))
		for i, o := range offs {
			out[i] = &kgo.Record{Offset: o}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		after int64
		offs  []int64
		next  int64
		ok    bool
		rest  int64 // first offset of rest (-1: none)
	}{
		{"right after", -1, []int64{10, 11, 12}, 10, true, 10},
		{"after its own marker", 8, []int64{10, 11, 12}, 9, true, 10},
		{"marker of an unknown transaction", -1, []int64{10, 11}, 9, false, -1},
		{"after says elsewhere", 5, []int64{10, 11}, 9, false, -1},
		{"two between", 8, []int64{11, 12}, 9, false, -1},
		{"hole inside", -1, []int64{10, 11, 13}, 10, false, -1},
		{"overlap, rest follows", -1, []int64{8, 9, 10, 11}, 10, true, 10},
		{"overlap, hole after it", -1, []int64{8, 9, 11}, 10, false, -1},
		{"overlap, marker rule does not apply", 8, []int64{8, 10, 11}, 9, false, -1},
		{"all read already", -1, []int64{4, 5}, 10, true, -1},
		{"nothing read yet", -1, []int64{0, 1}, -1, false, -1},
		{"behind", -1, []int64{12}, 10, false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Committed{After: tc.after, Records: recs(tc.offs...)}
			rest, ok := c.Follows(tc.next)
			if ok != tc.ok {
				t.Fatalf("Follows(%d) = %t, want %t", tc.next, ok, tc.ok)
			}
			first := int64(-1)
			if len(rest) > 0 {
				first = rest[0].Offset
			}
			if first != tc.rest || (len(rest) > 0 && rest[len(rest)-1] != c.Records[len(c.Records)-1]) {
				t.Fatalf("rest starts at %d (%d records), want %d through the run's end", first, len(rest), tc.rest)
			}
		})
	}
}
