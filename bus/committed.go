package bus

import "github.com/twmb/franz-go/pkg/kgo"

// Committed is what one transaction of a transactional producer wrote to
// one partition and committed: the records in the order they were
// produced, their offsets set by the broker's answers. A consumer of the
// topic in the same process (the archiver of the enriched topic) can take
// them instead of fetching them back, when it can prove they continue what
// it has read with nothing between (see Follows).
type Committed struct {
	Topic     string
	Partition int32
	// After is the offset of the last record the same producer wrote to
	// this partition in its previous committed transaction, when no other
	// transaction of the producer wrote here since (one that aborted
	// clears it); -1 when not known. The offset after it is then that
	// transaction's commit marker: Kafka writes a transaction's markers
	// before the producer's next transaction may add the partition.
	After   int64
	Records []*kgo.Record
}

// Follows reports whether c's records are the partition's next committed
// records after a consumer that has read up to (not including) offset
// next: the first one is at next, or at next+1 when next is the commit
// marker of the producer's previous transaction here (After+1), and the
// offsets run on without a hole (a hole is another producer's record or
// marker, which only a fetch can tell). Records before next, which the
// consumer already has, are left out of the answer: rest is what it
// still needs. A negative next (nothing read yet) follows nothing.
func (c *Committed) Follows(next int64) (rest []*kgo.Record, ok bool) {
	if next < 0 || len(c.Records) == 0 {
		return nil, false
	}
	recs := c.Records
	skipped := false
	for len(recs) > 0 && recs[0].Offset < next {
		recs, skipped = recs[1:], true
	}
	if len(recs) == 0 {
		return nil, true
	}
	first := recs[0].Offset
	if first != next && (skipped || c.After < 0 || next != c.After+1 || first != c.After+2) {
		return nil, false
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Offset != recs[i-1].Offset+1 {
			return nil, false
		}
	}
	return recs, true
}
