package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// With returns base followed by extra in a fresh slice: the one way a
// component derives its client's options from the bus's (appending to the
// caller's slice would let two clients share, and overwrite, one backing
// array).
func With(base []kgo.Opt, extra ...kgo.Opt) []kgo.Opt {
	out := make([]kgo.Opt, 0, len(base)+len(extra))
	out = append(out, base...)
	return append(out, extra...)
}

// Span says which records of a topic a reader reads.
type Span struct {
	Topic string
	// From is each partition's first offset, given the partition's start
	// and end offsets when the read begins; nil reads from the start. A
	// partition whose From is not below its end is not read.
	From func(partition int32, start, end int64) int64
	// To overrides the end of each partition (nil: the end offset listed
	// when the read begins).
	To func(partition int32, start, end int64) int64
	// Settle is how long the reader waits, with no record arriving, for a
	// partition whose last stable offset is still below its end: records
	// of a transaction not yet decided (a producer that died mid-commit,
	// say, that the broker completes or aborts later) are not readable
	// until it is. 0 waits a second and then takes what is left for
	// transaction markers or aborted records.
	Settle time.Duration
}

// ReadToEnd reads span with a read_committed consumer, calling fn for each
// record in offset order per partition, and returns once every partition
// reached its end. Transaction markers take offsets but are not records:
// a partition is at its end when a record at or past the end arrived, or
// when the broker reports, with no record left, that its last stable
// offset reached the end.
func ReadToEnd(ctx context.Context, opts []kgo.Opt, span Span, fn func(*kgo.Record)) error {
	return read(ctx, opts, span, fn, nil)
}

// Follow reads span like ReadToEnd, calls caughtUp once the end is reached
// (at once when there is nothing to read), then goes on with every new
// record until ctx ends; it returns nil then.
func Follow(ctx context.Context, opts []kgo.Opt, span Span, caughtUp func(), fn func(*kgo.Record)) error {
	err := read(ctx, opts, span, fn, caughtUp)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// endOffsets lists the start and end offsets of topic, retrying until the
// broker answers or ctx ends.
func endOffsets(ctx context.Context, opts []kgo.Opt, topic string) (kadm.ListedOffsets, kadm.ListedOffsets, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		starts, err := adm.ListStartOffsets(ctx, topic)
		if err == nil {
			err = starts.Error()
		}
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topic)
		}
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			return starts, ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("list offsets of %s: %w (last error: %w)", topic, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func read(ctx context.Context, opts []kgo.Opt, span Span, fn func(*kgo.Record), caughtUp func()) error {
	starts, ends, err := endOffsets(ctx, opts, span.Topic)
	if err != nil {
		return err
	}
	from := map[int32]kgo.Offset{}
	want := map[int32]int64{} // partition -> end, for the partitions not yet there
	ends.Each(func(o kadm.ListedOffset) {
		start := int64(0)
		if so, ok := starts.Lookup(span.Topic, o.Partition); ok {
			start = so.Offset
		}
		end := o.Offset
		if span.To != nil {
			end = span.To(o.Partition, start, o.Offset)
		}
		f := start
		if span.From != nil {
			f = max(span.From(o.Partition, start, o.Offset), start)
		}
		if f < end {
			want[o.Partition] = end
		}
		if f < end || caughtUp != nil {
			from[o.Partition] = kgo.NewOffset().At(f)
		}
	})
	caught := false
	check := func() {
		if !caught && len(want) == 0 {
			caught = true
			if caughtUp != nil {
				caughtUp()
			}
		}
	}
	check()
	if len(from) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(With(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{span.Topic: from}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("reader of %s: %w", span.Topic, err)
	}
	defer cl.Close()
	idle := time.Now()
	wait := max(span.Settle, time.Second)
	lso := map[int32]int64{} // the last stable offset each partition last reported
	settled := func() bool { // every partition left is decided up to its end
		for p, end := range want {
			if lso[p] < end {
				return false
			}
		}
		return true
	}
	for {
		if caught && caughtUp == nil {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := cl.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failed := false
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Err != nil {
				if !errors.Is(p.Err, context.DeadlineExceeded) {
					failed = true
				}
				return
			}
			lso[p.Partition] = max(lso[p.Partition], p.LastStableOffset)
			end, reading := want[p.Partition]
			for _, rec := range p.Records {
				if reading && rec.Offset >= end && caughtUp == nil {
					break // past a To bound
				}
				fn(rec)
			}
			if !reading {
				return
			}
			n := len(p.Records)
			switch {
			case n > 0 && p.Records[n-1].Offset+1 >= end:
				delete(want, p.Partition)
			case n == 0 && p.LastStableOffset >= end:
				delete(want, p.Partition) // only markers were left
			}
		})
		if !caught && fs.NumRecords() == 0 && !failed {
			// nothing for a second from a broker that answers every 100 ms
			// (FetchMaxWait): what is left below the ends is transaction
			// markers or aborted records
			if q := time.Since(idle); q >= wait || timedOut && q >= wait-100*time.Millisecond || settled() && q >= 250*time.Millisecond {
				clear(want)
			}
		} else {
			idle = time.Now()
		}
		check()
	}
}
