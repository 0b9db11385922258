package pipeline

import (
	"encoding/binary"
	"fmt"
	"time"
)

// stamp is an event time in Unix microseconds, for the detectors' state:
// 8 bytes where a time.Time takes 24 (a million devices of four metrics
// keep twelve of them). It covers ±292,000 years; event times are
// compared to the microsecond. The snapshot encoding is a varint, and a
// snapshot written when these fields were time.Time still decodes.
type stamp int64

func stampOf(t time.Time) stamp { return stamp(t.UnixMicro()) }

// since is the time from s to t.
func (s stamp) since(t time.Time) time.Duration {
	return time.Duration(t.UnixMicro()-int64(s)) * time.Microsecond
}

func (s stamp) GobEncode() ([]byte, error) { return binary.AppendVarint(nil, int64(s)), nil }

func (s *stamp) GobDecode(b []byte) error {
	if len(b) >= 15 && (b[0] == 1 || b[0] == 2) { // a time.Time's encoding (a varint is at most 10 bytes)
		var t time.Time
		if err := t.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("event time: %w", err)
		}
		*s = stampOf(t)
		return nil
	}
	v, n := binary.Varint(b)
	if n <= 0 || n != len(b) {
		return fmt.Errorf("event time: %d bytes are not a varint", len(b))
	}
	*s = stamp(v)
	return nil
}
