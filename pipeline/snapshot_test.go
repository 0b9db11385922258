package pipeline

import (
	"bytes"
	"encoding/gob"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapPartition is a partition of n four-metric devices, each 40
// readings in.
func snapPartition(n int) *partition {
	pr := NewProcessor(Default(), "eu", nil)
	rng := rand.New(rand.NewPCG(5, 5))
	part := newPartition()
	var res StepResult
	for i := 0; i < n*40; i++ {
		r := ingest1(i, n, rng)
		pr.Step(part, &r, false, nil, &res)
	}
	part.Next, part.Steps, part.Evicted, part.EvictAt = 4242, int64(n*40), 7, 9000
	return part
}

func gobBytes(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// samePartition fails unless got holds want's devices, each with the same
// encoded state, and its offsets and clocks.
func samePartition(t *testing.T, got, want *partition) {
	t.Helper()
	if got.Next != want.Next || !got.MaxIngest.Equal(want.MaxIngest) || got.Steps != want.Steps || got.Evicted != want.Evicted || got.EvictAt != want.EvictAt {
		t.Fatalf("partition fields: got next %d ingest %s steps %d evicted %d evict-at %d, want %d %s %d %d %d",
			got.Next, got.MaxIngest, got.Steps, got.Evicted, got.EvictAt, want.Next, want.MaxIngest, want.Steps, want.Evicted, want.EvictAt)
	}
	if len(got.Devices) != len(want.Devices) {
		t.Fatalf("%d devices restored, want %d", len(got.Devices), len(want.Devices))
	}
	for id, d := range want.Devices {
		g := got.Devices[id]
		if g == nil {
			t.Fatalf("device %s missing", id)
		}
		if !bytes.Equal(gobBytes(t, g), gobBytes(t, d)) {
			t.Fatalf("device %s restored with a different state", id)
		}
	}
}

// A snapshot of more devices than a chunk restores every device exactly;
// so does one written in the format before chunks (one gob value); a
// process of that format cannot read a new one as a partition without
// devices; a truncated one is an error, not part of a partition.
func TestSnapshotChunks(t *testing.T) {
	part := snapPartition(2*snapChunk + 77)
	snap := &snapshots{dir: t.TempDir(), group: "g", topic: "raw"}
	if err := snap.save(3, part); err != nil {
		t.Fatal(err)
	}
	got, err := snap.load(3)
	if err != nil {
		t.Fatal(err)
	}
	samePartition(t, got, part)

	raw, err := os.ReadFile(snap.path(3))
	if err != nil {
		t.Fatal(err)
	}
	var old partition
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&old); err == nil {
		t.Fatalf("the old format's decoder read a chunked snapshot as a partition of %d devices at offset %d", len(old.Devices), old.Next)
	}
	for _, cut := range []int{len(raw) / 3, len(raw) - 10} {
		if err := os.WriteFile(snap.path(3), raw[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		if p, err := snap.load(3); err == nil {
			t.Fatalf("a snapshot cut at %d of %d bytes loaded as %d devices", cut, len(raw), len(p.Devices))
		} else if !strings.Contains(err.Error(), "decode") {
			t.Fatalf("cut at %d: the error does not say what failed: %v", cut, err)
		}
	}

	if err := os.WriteFile(snap.path(3), gobBytes(t, part), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = snap.load(3)
	if err != nil {
		t.Fatalf("a snapshot of the format before chunks: %v", err)
	}
	samePartition(t, got, part)

	empty := newPartition()
	empty.Next = 5
	if err := snap.save(4, empty); err != nil {
		t.Fatal(err)
	}
	if got, err := snap.load(4); err != nil || got.Next != 5 || len(got.Devices) != 0 {
		t.Fatalf("an empty partition: %v, %+v", err, got)
	}
}

// The temporary file of a snapshot interrupted mid-write is removed at the
// next start; the complete snapshot beside it is kept.
func TestSnapshotCleanTemp(t *testing.T) {
	snap := &snapshots{dir: t.TempDir(), group: "g", topic: "raw"}
	part := snapPartition(3)
	if err := snap.save(0, part); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap.dir, "g", ".snap-123"), []byte("half a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := snap.cleanTemp(); n != 1 || err != nil {
		t.Fatalf("cleanTemp: %d removed, %v; want 1", n, err)
	}
	left, _ := filepath.Glob(filepath.Join(snap.dir, "g", "*"))
	if len(left) != 1 || left[0] != snap.path(0) {
		t.Fatalf("left behind: %v, want only %s", left, snap.path(0))
	}
	if n, err := snap.cleanTemp(); n != 0 || err != nil {
		t.Fatalf("a second cleanTemp: %d, %v", n, err)
	}
}
