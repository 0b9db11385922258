package pipeline

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// The lag book counts only the partitions assigned to the session: a
// partition revoked while its batch or restore was under way does not
// come back (its frozen next offset would count every later reading as
// lag, and ingest would refuse readings for a backlog that is not ours).
func TestLagBook(t *testing.T) {
	type op func(l *lagBook)
	for _, tc := range []struct {
		name  string
		ops   []op
		total int64
		lags  map[int32]int64
	}{
		{"assigned, nothing known yet", []op{func(l *lagBook) { l.assign(0) }}, 0, map[int32]int64{}},
		{"restoring: behind by the broker's end", []op{
			func(l *lagBook) { l.assign(0); l.hold(0, 100) },
			func(l *lagBook) { l.ends(map[int32]int64{0: 250, 1: 900}) },
		}, 150, map[int32]int64{0: 150}},
		{"a fetch's high watermark and the broker's end: the later", []op{
			func(l *lagBook) { l.assign(0); l.assign(1) },
			func(l *lagBook) { l.processed(0, 10, 40); l.processed(1, 5, 5) },
			func(l *lagBook) { l.ends(map[int32]int64{0: 30, 1: 20}) }, // a late answer below the fetch's
		}, 45, map[int32]int64{0: 30, 1: 15}},
		{"revoked during its batch: not counted again", []op{
			func(l *lagBook) { l.assign(0); l.assign(1); l.processed(0, 10, 20); l.processed(1, 10, 20) },
			func(l *lagBook) { l.drop(1) },
			func(l *lagBook) { l.processed(1, 12, 20); l.hold(1, 12); l.ends(map[int32]int64{1: 5000}) },
		}, 10, map[int32]int64{0: 10}},
		{"a session's end forgets every partition", []op{
			func(l *lagBook) { l.assign(0); l.processed(0, 10, 20) },
			func(l *lagBook) { l.reset() },
			func(l *lagBook) { l.processed(0, 12, 900) },
		}, 0, map[int32]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag"}, []string{"partition"})
			l := newLagBook(g)
			for _, o := range tc.ops {
				o(l)
			}
			if got := l.total(); got != tc.total {
				t.Errorf("total %d, want %d", got, tc.total)
			}
			got := l.lags()
			if len(got) != len(tc.lags) {
				t.Errorf("lags %v, want %v", got, tc.lags)
			}
			for p, want := range tc.lags {
				if got[p] != want {
					t.Errorf("partition %d: lag %d, want %d", p, got[p], want)
				}
			}
			if n := promtest.CollectAndCount(g); n != len(tc.lags) {
				t.Errorf("%d gauge series, want %d (one per partition whose lag is known)", n, len(tc.lags))
			}
		})
	}
}
