package pipeline

import (
	"bytes"
	"encoding/gob"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// dedupModel is the dedup rule written plainly: a list of (hash, ingest
// second), oldest first.
type dedupModel struct {
	h  []uint64
	at []uint32
}

func (m *dedupModel) seen(id string, at time.Time, window int, horizon time.Duration) bool {
	h := idHash(id)
	if slices.Contains(m.h, h) {
		return true
	}
	now := unixSeconds(at)
	if len(m.at) > 0 {
		now = max(now, m.at[len(m.at)-1])
	}
	for len(m.h) > 0 && (len(m.h) >= window || horizon > 0 && len(m.h) >= 16 && int64(m.at[0])+int64(horizon/time.Second) < int64(now)) {
		m.h, m.at = m.h[1:], m.at[1:]
	}
	m.h, m.at = append(m.h, h), append(m.at, unixSeconds(at))
	return false
}

// The ring (which grows and shrinks) answers as the plain list does, over
// random ids, re-sends, bursts, pauses and out-of-order ingest times.
func TestDedupRingActsAsTheList(t *testing.T) {
	for _, c := range []struct {
		window  int
		horizon time.Duration
	}{{1, 0}, {8, 0}, {256, 0}, {256, 10 * time.Minute}, {64, time.Minute}, {5, time.Hour}} {
		t.Run(strconv.Itoa(c.window)+"/"+c.horizon.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.window), 7))
			var d DeviceState
			var m dedupModel
			at := t0
			maxCap := 0
			for i := 0; i < 20000; i++ {
				switch rng.IntN(10) {
				case 0:
					at = at.Add(time.Duration(rng.IntN(3600)) * time.Second) // a pause
				case 1:
					at = at.Add(-time.Duration(rng.IntN(30)) * time.Second) // another region's clock
				default:
					at = at.Add(time.Duration(rng.IntN(3)) * time.Second)
				}
				id := "m-" + strconv.Itoa(i)
				if rng.IntN(4) == 0 { // a re-send of a recent or an old id
					id = "m-" + strconv.Itoa(max(0, i-1-rng.IntN(min(i+1, 3*c.window+5))))
				}
				if got, want := d.seen(id, at, c.window, c.horizon), m.seen(id, at, c.window, c.horizon); got != want {
					t.Fatalf("reading %d (%s at %s): ring says %v, the list %v", i, id, at, got, want)
				}
				if int(d.IDN) != len(m.h) {
					t.Fatalf("reading %d: ring holds %d ids, the list %d", i, d.IDN, len(m.h))
				}
				maxCap = max(maxCap, len(d.IDHashes))
			}
			if maxCap > max(c.window, 4) {
				t.Errorf("ring grew to %d slots, beyond the window %d", maxCap, c.window)
			}
		})
	}
}

// A device that sends a reading a minute keeps only the horizon's ids,
// and a re-send within the horizon is still caught after the ring shrank.
func TestDedupHorizonBoundsTheRing(t *testing.T) {
	var d DeviceState
	at := t0
	for i := 0; i < 1000; i++ {
		at = at.Add(time.Second) // a burst: the window binds
		d.seen("b-"+strconv.Itoa(i), at, 256, 10*time.Minute)
	}
	if d.IDN != 256 {
		t.Fatalf("after a burst of 1,000 the ring holds %d ids, want the window's 256", d.IDN)
	}
	for i := 0; i < 100; i++ {
		at = at.Add(time.Minute)
		if d.seen("m-"+strconv.Itoa(i), at, 256, 10*time.Minute) {
			t.Fatalf("new id m-%d taken for a duplicate", i)
		}
	}
	if d.IDN != dedupKeep || len(d.IDHashes) > 64 {
		t.Fatalf("one reading a minute for 100 minutes: the ring holds %d ids in %d slots, want the last %d (more than the horizon's 11) in ≤ 64 slots", d.IDN, len(d.IDHashes), dedupKeep)
	}
	if !d.seen("m-95", at.Add(time.Second), 256, 10*time.Minute) {
		t.Fatal("a re-send within the horizon was not caught")
	}
	if !d.seen("m-85", at.Add(time.Second), 256, 10*time.Minute) {
		t.Fatal("one of the last 16 ids, older than the horizon, was forgotten")
	}
	if d.seen("m-80", at.Add(time.Second), 256, 10*time.Minute) {
		t.Fatal("an id 20 minutes old and 20 readings back is still remembered with a 10 minute horizon")
	}
	// back after a day offline: the last readings before the outage are
	// still caught when they are re-sent
	at = at.Add(24 * time.Hour)
	if !d.seen("m-99", at, 256, 10*time.Minute) {
		t.Fatal("after a day offline, the device's last reading re-sent was not caught")
	}
}

// A snapshot written before ingest times were kept (hashes only, a full
// ring with its oldest at IDPos) still catches its ids after the upgrade,
// and then forgets the oldest first.
func TestDedupUpgradesAnOldSnapshot(t *testing.T) {
	type oldDevice struct { // the fields gob wrote before
		LastIngest time.Time
		IDHashes   []uint64
		IDPos      int
	}
	old := oldDevice{LastIngest: t0, IDPos: 3}
	for i := 0; i < 8; i++ { // ids 8..15 written over 0..7 from slot 0: oldest (11) at 3
		old.IDHashes = append(old.IDHashes, 0)
	}
	for i := 0; i < 16; i++ {
		old.IDHashes[i%8] = idHash("m-" + strconv.Itoa(i))
	}
	old.IDPos = 0 // 16 writes into 8 slots: the next to overwrite (the oldest, m-8) is slot 0
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(old); err != nil {
		t.Fatal(err)
	}
	var d DeviceState
	if err := gob.NewDecoder(&buf).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if !d.seen("m-8", t0, 8, time.Hour) || !d.seen("m-15", t0, 8, time.Hour) {
		t.Fatal("ids of the old ring not caught after the upgrade")
	}
	if d.seen("m-16", t0, 8, time.Hour) {
		t.Fatal("a new id taken for a duplicate")
	}
	if d.seen("m-8", t0, 8, time.Hour) {
		t.Fatal("the old ring's oldest id (m-8) not the first forgotten")
	}
	if !d.seen("m-10", t0, 8, time.Hour) {
		t.Fatal("m-10 forgotten before its turn")
	}
}
