package pipeline

import (
	"bytes"
	"encoding/gob"
	"testing"
	"time"
)

// A stamp keeps event times to the microsecond through the snapshot
// encoding, and a snapshot written when the fields were time.Time decodes
// into the same instants.
func TestStampSnapshots(t *testing.T) {
	times := []time.Time{t0, t0.Add(1500 * time.Microsecond), time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Unix(0, 0)}
	for _, ts := range times {
		type old struct {
			N        int64
			FirstTS  time.Time
			RunStart time.Time
		}
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(old{N: 7, FirstTS: ts, RunStart: ts.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var u UVState
		if err := gob.NewDecoder(&buf).Decode(&u); err != nil {
			t.Fatalf("%s: an old snapshot does not decode: %v", ts, err)
		}
		if u.N != 7 || u.FirstTS.since(ts) != 0 || u.RunStart.since(ts.Add(time.Hour)) != 0 {
			t.Fatalf("%s: old snapshot decoded to N %d, FirstTS off by %s, RunStart off by %s", ts, u.N, u.FirstTS.since(ts), u.RunStart.since(ts.Add(time.Hour)))
		}
		buf.Reset()
		if err := gob.NewEncoder(&buf).Encode(&u); err != nil {
			t.Fatal(err)
		}
		var back UVState
		if err := gob.NewDecoder(&buf).Decode(&back); err != nil {
			t.Fatal(err)
		}
		if back.FirstTS != u.FirstTS || back.RunStart != u.RunStart {
			t.Fatalf("%s: round trip %d,%d → %d,%d", ts, u.FirstTS, u.RunStart, back.FirstTS, back.RunStart)
		}
	}
	var s stamp
	for _, bad := range [][]byte{{}, {0x80}, {0x02, 0x02}, {0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}} {
		if err := s.GobDecode(bad); err == nil {
			t.Errorf("%x decoded as a stamp", bad)
		}
	}
}
