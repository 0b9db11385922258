package pipeline

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// lagBook is the stream's lag: per partition it holds, the raw topic's
// end offset and the next offset the stream will process. The end
// offsets come from the broker (ListOffsets, every lagEvery) and from the
// high watermark of each fetch the stream processes, whichever is later;
// the next offsets from the stream itself (the committed offset while a
// partition restores, then each batch's last record). The lag is their
// difference.
//
// Before, the lag was the high watermark of the fetch a record came in
// minus the next offset. The client buffers fetches (up to a MiB a
// partition), so the high watermark it read was as old as the oldest
// buffered fetch: at a million devices under load it read about 2,000
// while the stream was 200,000 readings behind, and it did not move at
// all while the stream was held up (a restore, a long batch). Ingest's
// backpressure (ingest.max_pipeline_lag) reads this figure.
type lagBook struct {
	gauge *prometheus.GaugeVec
	mu    sync.Mutex
	parts map[int32]*lagPart
}

type lagPart struct {
	end, next int64 // next < 0: not known yet
	label     string
}

func newLagBook(gauge *prometheus.GaugeVec) *lagBook {
	return &lagBook{gauge: gauge, parts: map[int32]*lagPart{}}
}

// assign starts counting p (assigned to the session); its lag is known
// once its next offset is (hold or processed).
func (l *lagBook) assign(p int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.parts[p] == nil {
		l.parts[p] = &lagPart{end: -1, next: -1, label: strconv.Itoa(int(p))}
	}
}

// lag is lp's lag, and whether it is known (its end and next are).
func (lp *lagPart) lag() (int64, bool) {
	return max(0, lp.end-lp.next), lp.next >= 0 && lp.end >= 0
}

// set updates the gauge of lp; called with mu held.
func (l *lagBook) set(lp *lagPart) {
	if n, ok := lp.lag(); ok {
		l.gauge.WithLabelValues(lp.label).Set(float64(n))
	}
}

// hold says p's next record is next (its committed offset, while its
// state restores). A partition not assigned (revoked meanwhile) is not
// counted.
func (l *lagBook) hold(p int32, next int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.parts[p]; lp != nil {
		lp.next = next
		l.set(lp)
	}
}

// processed says the stream processed p up to next (exclusive), with the
// high watermark of the fetch the records came in (0: not known).
func (l *lagBook) processed(p int32, next, hw int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.parts[p]; lp != nil {
		lp.next = next
		lp.end = max(lp.end, hw)
		l.set(lp)
	}
}

// ends records the broker's end offsets of the partitions the book holds
// (an end offset never goes back: a late answer does not undo a later
// fetch's high watermark).
func (l *lagBook) ends(ends map[int32]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, e := range ends {
		if lp := l.parts[p]; lp != nil {
			lp.end = max(lp.end, e)
			l.set(lp)
		}
	}
}

// holding reports whether the book counts any partition.
func (l *lagBook) holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.parts) > 0
}

// drop stops counting p (revoked or lost), its gauge removed; a batch or
// restore still under way for it no longer counts.
func (l *lagBook) drop(p int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.parts[p]; lp != nil {
		l.gauge.DeleteLabelValues(lp.label)
		delete(l.parts, p)
	}
}

// reset stops counting every partition (a session ended).
func (l *lagBook) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, lp := range l.parts {
		l.gauge.DeleteLabelValues(lp.label)
		delete(l.parts, p)
	}
}

// lags are the partitions' lags (those whose end and next are known).
func (l *lagBook) lags() map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int32]int64, len(l.parts))
	for p, lp := range l.parts {
		if n, ok := lp.lag(); ok {
			out[p] = n
		}
	}
	return out
}

// total is the sum of the partitions' lags.
func (l *lagBook) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, lp := range l.parts {
		if m, ok := lp.lag(); ok {
			n += m
		}
	}
	return n
}

// lagEvery is how often the stream asks the broker for the raw topic's
// end offsets.
const lagEvery = time.Second

// pollEnds asks the broker for the raw topic's end offsets every every
// until ctx ends, for the partitions the book holds. A failed request is
// logged once until one succeeds again: the lag then holds the last
// fetches' high watermarks.
func (l *lagBook) pollEnds(ctx context.Context, cl *kgo.Client, topic string, every time.Duration, log *zap.Logger) {
	adm := kadm.NewClient(cl)
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !l.holding() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, every+5*time.Second)
		listed, err := adm.ListEndOffsets(rctx, topic)
		cancel()
		if err == nil {
			err = listed.Error()
		}
		if err != nil {
			if ctx.Err() == nil && !failing {
				log.Warn("could not read the raw topic's end offsets; the pipeline lag (and ingest.max_pipeline_lag) reads the last fetches until it can", zap.String("topic", topic), zap.Error(err))
			}
			failing = true
			continue
		}
		failing = false
		ends := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				ends[o.Partition] = o.Offset
			}
		})
		l.ends(ends)
	}
}
