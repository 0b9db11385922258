package pipeline

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/tinylib/msgp/msgp"

	"github.com/vigil/vigil/contract"
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
// state, and its offsets and clocks. States compare field by field: times
// by instant (a snapshot gives them back in UTC), NaN equal to NaN, and a
// nil slice or map equal to an empty one (gob gives back neither
// distinction, and the step treats both alike).
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
		if bytes.Equal(gobBytes(t, g), gobBytes(t, d)) {
			continue // the same (the fast check)
		}
		if diff := cmp.Diff(d, g, cmpopts.EquateEmpty(), cmpopts.EquateNaNs(), cmp.AllowUnexported(lazyBins[float32]{}, lazyBins[uint8]{}, uvHist{})); diff != "" {
			t.Fatalf("device %s restored with a different state (-saved +restored):\n%s", id, diff)
		}
	}
}

// encodeGobSnapshot writes a snapshot of format 2 (gob: a snapHead, then
// chunks of snapDevice), as Vigil did before the MessagePack format.
func encodeGobSnapshot(w io.Writer, part *partition) error {
	enc := gob.NewEncoder(w)
	if err := enc.Encode(snapHead{SnapFormat: snapGobFormat, NextOffset: part.Next, LastIngest: part.MaxIngest,
		StepCount: part.Steps, EvictCount: part.Evicted, NextEvictAt: part.EvictAt, DeviceCount: len(part.Devices)}); err != nil {
		return err
	}
	chunk := make([]snapDevice, 0, snapChunk)
	for id, d := range part.Devices {
		chunk = append(chunk, snapDevice{id, d})
		if len(chunk) == snapChunk {
			if err := enc.Encode(chunk); err != nil {
				return err
			}
			chunk = chunk[:0]
		}
	}
	if len(chunk) > 0 {
		return enc.Encode(chunk)
	}
	return nil
}

// A snapshot of more devices than a chunk restores every device exactly;
// so do snapshots of the two gob formats before it (one gob value; a gob
// head and chunks), which a save then replaces; a process of a gob format
// cannot read a new one as a partition; a truncated or damaged one is an
// error, not part of a partition.
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
		t.Fatalf("format 1's decoder read a snapshot as a partition of %d devices at offset %d", len(old.Devices), old.Next)
	}
	if p, err := decodeGobSnapshot(bytes.NewReader(raw)); err == nil {
		t.Fatalf("format 2's decoder read a snapshot as a partition of %d devices at offset %d", len(p.Devices), p.Next)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"cut in the magic", raw[:5], "decode"},
		{"cut in the head", raw[:len(snapMagic)+12], "head"},
		{"cut at a third", raw[:len(raw)/3], "unexpected EOF"},
		{"cut 10 bytes short", raw[:len(raw)-10], "unexpected EOF"},
		{"a byte flipped", flipByte(raw, len(raw)/2), "checksum"},
		{"a frame's length zeroed", zeroFrameLength(raw), "a frame of 0 bytes"},
	} {
		if err := os.WriteFile(snap.path(3), c.b, 0o600); err != nil {
			t.Fatal(err)
		}
		if p, err := snap.load(3); err == nil {
			t.Fatalf("%s (%d of %d bytes): loaded as %d devices", c.name, len(c.b), len(raw), len(p.Devices))
		} else if !strings.Contains(err.Error(), "decode") || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: the error does not say what failed (want %q): %v", c.name, c.want, err)
		}
	}

	// format 3: DeviceCount devices and no end frame
	if err := os.WriteFile(snap.path(3), countSnapshotBytes(t, part), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err = snap.load(3); err != nil {
		t.Fatalf("a snapshot of format 3: %v", err)
	}
	samePartition(t, got, part)

	// the gob formats, at the gob path: read, then replaced by a save
	for _, c := range []struct {
		name string
		b    []byte
	}{{"format 1", gobBytes(t, part)}, {"format 2", gobSnapshotBytes(t, part)}} {
		if err := os.Remove(snap.path(3)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snap.gobPath(3), c.b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err = snap.load(3)
		if err != nil {
			t.Fatalf("a snapshot of %s: %v", c.name, err)
		}
		samePartition(t, got, part)
		if err := snap.save(3, got); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(snap.gobPath(3)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the %s snapshot is left beside its replacement: %v", c.name, err)
		}
		if got, err = snap.load(3); err != nil {
			t.Fatal(err)
		}
		samePartition(t, got, part)
	}

	empty := newPartition()
	empty.Next = 5
	if err := snap.save(4, empty); err != nil {
		t.Fatal(err)
	}
	if got, err := snap.load(4); err != nil || got.Next != 5 || len(got.Devices) != 0 {
		t.Fatalf("an empty partition: %v, %+v", err, got)
	}
}

// countSnapshotBytes is part's snapshot in format 3, as Vigil wrote it
// before the end frame: a head with the device count, then the devices.
func countSnapshotBytes(t *testing.T, part *partition) []byte {
	t.Helper()
	var w bytes.Buffer
	if err := writeSnapHead(&w, part, snapCountFormat); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for id, d := range part.Devices {
		var err error
		b = msgp.AppendString(b, id)
		if b, err = d.MarshalMsg(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSnapFrame(&w, msgp.AppendArrayHeader(nil, uint32(2*len(part.Devices))), b); err != nil {
		t.Fatal(err)
	}
	return w.Bytes()
}

func gobSnapshotBytes(t *testing.T, part *partition) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := encodeGobSnapshot(&b, part); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func flipByte(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x55
	return c
}

// zeroFrameLength zeroes the length of the first frame after the head's.
func zeroFrameLength(b []byte) []byte {
	c := bytes.Clone(b)
	i := len(snapMagic)
	i += 8 + int(binary.LittleEndian.Uint32(c[i:]))
	binary.LittleEndian.PutUint32(c[i:], 0)
	return c
}

// richPartition is a partition whose devices hold every part of the state:
// warming and fitted multivariate models, open, silent and closed
// incidents, open and closed attrs, repeated values, gaps, and daily and
// weekly profiles.
func richPartition(t testing.TB) *partition {
	pr := NewProcessor(Default(), "eu", nil)
	rng := rand.New(rand.NewPCG(9, 9))
	part := newPartition()
	var res StepResult
	at := t0
	for i := 0; i < 700; i++ {
		for d := 0; d < 12; d++ {
			v := 10 + rng.NormFloat64()
			switch {
			case d%3 == 1 && i >= 500 && i < 520: // a fault that ends
				v += 40
			case d%3 == 2 && i >= 600: // a lasting shift
				v += 25
			case d == 3 && i%50 < 10: // runs of repeated values
				v = 7
			}
			r := contract.Reading{ID: fmt.Sprintf("m-%d-%d", d, i), DeviceID: fmt.Sprintf("dev-%d", d), TS: at, IngestedAt: at,
				Metrics: []contract.Metric{{Name: "a", Value: v}, {Name: "b", Value: 2*v + rng.NormFloat64()}, {Name: "c", Value: rng.ExpFloat64()}},
				Attrs:   []contract.Attr{{Name: "mode", Value: "auto"}, {Name: "job", Value: fmt.Sprintf("j%d", i)}}}
			if d < 6 || i < 300 {
				pr.Step(part, &r, false, nil, &res)
			}
		}
		at = at.Add(time.Hour)
		if i%97 == 0 {
			at = at.Add(30 * time.Hour) // a gap
		}
	}
	return part
}

// The MessagePack encoding gives back every part of a device's state: the
// same state as gob's encoding gives (the reference: it encodes every
// exported field by reflection), for warming and fitted devices, with
// incidents, attrs, gaps and profiles.
func TestSnapshotCodecRoundTrip(t *testing.T) {
	part := richPartition(t)
	var incidents, closed, fitted, warming, attrsClosed int
	for _, d := range part.Devices {
		incidents += len(d.Incidents)
		closed += len(d.Closed)
		if d.MV != nil && d.MV.Fitted {
			fitted++
		} else if d.MV != nil && d.MV.Collect != nil {
			warming++
		}
		for _, a := range d.Attrs {
			if a.Counts == nil {
				attrsClosed++
			}
		}
	}
	if incidents == 0 || closed == 0 || fitted == 0 || warming == 0 || attrsClosed == 0 {
		t.Fatalf("the partition lacks a part of the state: %d incidents, %d closed, %d fitted, %d warming, %d attrs closed", incidents, closed, fitted, warming, attrsClosed)
	}
	var b bytes.Buffer
	if err := encodeSnapshot(&b, part); err != nil {
		t.Fatal(err)
	}
	got, err := decodeSnapshot(bufio.NewReader(&b))
	if err != nil {
		t.Fatal(err)
	}
	samePartition(t, got, part)
}

// The generated MessagePack methods are those of today's state types: a
// field added to a type without regenerating them would be left out of
// every snapshot, and the restored state would silently differ. The
// encoding of a zero value names every field the methods know.
func TestSnapshotCodecFields(t *testing.T) {
	for _, v := range []interface {
		MarshalMsg([]byte) ([]byte, error)
	}{&DeviceState{}, &MetricState{}, &uvStateWire{}, &uvHist{}, &AttrState{}, &AttrCount{}, &Incident{}, &ClosedIncident{},
		&mvWire{}, &MVCollect{}, &MVCol{}, &GapState{}, &contract.Alert{}, &contract.Reason{}} {
		typ := reflect.TypeOf(v).Elem()
		var want []string
		for i := range typ.NumField() {
			if f := typ.Field(i); f.IsExported() {
				want = append(want, f.Name)
			}
		}
		b, err := v.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		n, b, err := msgp.ReadMapHeaderBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for ; n > 0; n-- {
			var k []byte
			if k, b, err = msgp.ReadMapKeyZC(b); err == nil {
				b, err = msgp.Skip(b)
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(k))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: the generated methods encode %v, the type has %v: run go generate ./pipeline/ ./contract/", typ, got, want)
		}
	}
}

// FuzzSnapshotFrame feeds arbitrary frame payloads and heads to the
// decoders (a damaged file past its checksum, or a hostile one): an error
// or devices, never a panic or an allocation beyond the limits.
func FuzzSnapshotFrame(f *testing.F) {
	part := snapPartition(3)
	var b bytes.Buffer
	if err := encodeSnapshot(&b, part); err != nil {
		f.Fatal(err)
	}
	raw := b.Bytes()[len(snapMagic):]
	head := raw[8 : 8+binary.LittleEndian.Uint32(raw)]
	f.Add(head)
	f.Add(raw[16+len(head):])
	f.Add([]byte{0x92, 0xa1, 'x', 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = readSnapHead(data)
		p := newPartition()
		if err := decodeSnapDevices(data, p); err == nil && len(p.Devices) == 0 {
			t.Fatal("a frame decoded without error and without devices")
		}
	})
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

// A snapshot written by a Vigil whose histograms had 72 bins (s up to
// 2^20) loads into today's uvBins: dense bins fold what lay beyond the
// last bin into it, sparse ones move their pairs beyond it there (and
// turn dense when that makes them a quarter full); the mass is kept and
// every bin below is untouched.
func TestSnapshotFoldsOldBins(t *testing.T) {
	const oldBins = 72
	want := richPartition(t)
	old := richPartition(t)
	type hist struct{ want, old *lazyBins[float32] }
	var hists []hist
	// a metric's histograms as its encoding holds them (uvStateWire), the
	// gap histogram as the device does
	type metricWire struct {
		id   string
		i    int
		want uvStateWire
		old  uvStateWire
	}
	var mws []*metricWire
	for id, d := range old.Devices {
		w := want.Devices[id]
		for i := range d.Metrics {
			if u := d.Metrics[i].UV; u != nil {
				mw := &metricWire{id: id, i: i}
				w.Metrics[i].UV.wire(&mw.want)
				u.wire(&mw.old)
				for _, l := range []*lazyBins[float32]{&mw.want.Hist.Bins, &mw.want.RHist.Bins, &mw.old.Hist.Bins, &mw.old.RHist.Bins} {
					l.V = slices.Clone(l.V) // not the state's own
				}
				mws = append(mws, mw)
				hists = append(hists, hist{&mw.want.Hist.Bins, &mw.old.Hist.Bins}, hist{&mw.want.RHist.Bins, &mw.old.RHist.Bins})
			}
		}
		if d.Gap != nil {
			hists = append(hists, hist{&w.Gap.Hist.Bins, &d.Gap.Hist.Bins})
		}
	}
	dense, sparse := 0, 0
	for k, h := range hists {
		extra := float32(k%3 + 1)
		*h.want.ref(uvBins-1, uvPriorHist[:]) += extra
		switch {
		case len(h.old.V) == uvBins: // as the old Vigil held it: 72 bins
			h.old.V = append(h.old.V, make([]float32, oldBins-uvBins)...)
			h.old.V[60] += extra
			dense++
		default:
			h.old.V = append(h.old.V, 60, extra)
			sparse++
		}
	}
	if dense == 0 || sparse == 0 {
		t.Fatalf("the partition has %d dense and %d sparse histograms; the test needs both", dense, sparse)
	}
	check := func(name string, g, w *lazyBins[float32]) {
		t.Helper()
		var tg, tw [uvBins]float32
		gb, wb := g.all(tg[:], uvPriorHist[:]), w.all(tw[:], uvPriorHist[:])
		for b := range gb {
			if gb[b] != wb[b] {
				t.Fatalf("%s: bin %d is %v, want %v", name, b, gb[b], wb[b])
			}
		}
		if len(g.V) != uvBins && len(g.V)/2 > uvBins/4 {
			t.Fatalf("%s: %d values, neither dense nor sparse", name, len(g.V))
		}
	}
	for _, mw := range mws {
		b, err := mw.old.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		var u UVState
		if _, err := u.UnmarshalMsg(b); err != nil {
			t.Fatal(err)
		}
		name := mw.id + " " + old.Devices[mw.id].Metrics[mw.i].Name
		h, r := u.B.view(uvArrHist), u.B.view(uvArrRHist)
		check(name+" hist", &h, &mw.want.Hist.Bins)
		check(name+" regime hist", &r, &mw.want.RHist.Bins)
	}
	snap := &snapshots{dir: t.TempDir(), group: "g", topic: "raw"}
	if err := snap.save(1, old); err != nil {
		t.Fatal(err)
	}
	got, err := snap.load(1)
	if err != nil {
		t.Fatal(err)
	}
	for id, d := range got.Devices {
		if d.Gap != nil {
			check(id+" gap hist", &d.Gap.Hist.Bins, &want.Devices[id].Gap.Hist.Bins)
		}
	}
	t.Logf("%d dense and %d sparse histograms folded", dense, sparse)
}

// A snapshot written a slice at a time while the partition steps on holds
// each device as it was when its slice came, past the snapshot's offset
// for most: the restore, the snapshot then the replay of the raw records
// from its offset, gives back exactly the state of the partition that
// went on, readings the devices already held skipped (StepAt), devices
// evicted meanwhile left out and duplicates dropped. Replayed without the
// offsets, the same snapshot folds readings in twice.
func TestSnapshotWrittenInSlices(t *testing.T) {
	cfg := Default()
	cfg.DeviceIdleTTL = time.Hour
	pr := NewProcessor(cfg, "eu", nil)
	pr.now = func() time.Time { return t0 } // an alert's detection time is the clock's
	const devices = 300
	rng := rand.New(rand.NewPCG(9, 9))
	var raw []contract.Reading // the raw topic: a record's offset is its index
	live := newPartition()
	var res StepResult
	step := func(r contract.Reading) {
		raw = append(raw, r)
		pr.StepAt(live, int64(len(raw)-1), &r, true, nil, &res)
		live.Next = int64(len(raw))
	}
	reading := func(i, dev int) contract.Reading {
		r := ingest1(i, devices, rng)
		r.DeviceID = "dev-" + strconv.Itoa(dev)
		r.IngestedAt = t0.Add(time.Duration(i) * time.Second)
		return r
	}
	i := 0
	for ; i < devices*30; i++ {
		step(reading(i, i%devices))
	}
	snap := &snapshots{dir: t.TempDir(), group: "g", topic: "raw"}
	w, err := snap.begin(0, live)
	if err != nil {
		t.Fatal(err)
	}
	at := live.Next
	for slice := 0; ; slice++ {
		done, err := w.write(0, 7)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
		// between slices: the first 50 devices go silent (evicted an hour
		// later), the others go on, one posts a reading twice
		for k := 0; k < 100; k++ {
			step(reading(i, 50+(i+k*7)%(devices-50)))
			i += 30
		}
		if slice%5 == 0 {
			dup := raw[len(raw)-1]
			step(dup)
		}
	}
	if err := w.end(); err != nil {
		t.Fatal(err)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 500; k++ { // and on after the snapshot
		step(reading(i, 50+k%(devices-50)))
		i += 30
	}
	if live.Evicted < 50 {
		t.Fatalf("%d devices evicted during the save, want the 50 silent ones", live.Evicted)
	}
	restore := func(at bool) *partition {
		part, err := snap.load(0)
		if err != nil || part == nil {
			t.Fatalf("load: %v", err)
		}
		for off := part.Next; off < int64(len(raw)); off++ {
			o := off
			if !at {
				o = -1
			}
			pr.StepAt(part, o, &raw[off], false, nil, &res)
		}
		part.Next = int64(len(raw))
		return part
	}
	got := restore(true)
	if head, _ := snap.load(0); head.Next != at {
		t.Fatalf("the snapshot's offset is %d, want %d (the partition's as the save began)", head.Next, at)
	}
	// the tally of evictions may come out lower: a device evicted and back
	// before its slice came is restored as the one that came back, and
	// the replay has nothing to evict
	if got.Evicted > live.Evicted || got.Evicted < live.Evicted-int64(len(live.Devices)) {
		t.Fatalf("%d evictions after the restore, %d in the partition that went on", got.Evicted, live.Evicted)
	}
	got.Evicted = live.Evicted
	samePartition(t, got, live)

	twice := restore(false)
	n := 0
	for id, d := range live.Devices {
		if g := twice.Devices[id]; g != nil && g.N != d.N {
			n++
		}
	}
	if n == 0 {
		t.Fatal("replayed without offsets, the snapshot gave back every device's reading count: the test does not exercise the skip")
	}
}

// A device's latest event and ingest times are held in 8 bytes each and
// the dedup ring's position and count in 4, which makes a DeviceState 208
// bytes (a size class; it took 256); they encode as before (MessagePack
// times and integers), so a snapshot written with time.Time fields
// restores the same times, to the nanosecond, and the zero time stays
// zero.
func TestDeviceStateTimesCompact(t *testing.T) {
	if sz := unsafe.Sizeof(DeviceState{}); sz > 208 {
		t.Errorf("DeviceState is %d bytes, want at most 208 (a size class)", sz)
	}
	ts := time.Date(2026, 3, 2, 10, 4, 5, 123456789, time.UTC)
	ing := ts.Add(1500 * time.Millisecond)
	// the encoding of a state whose times were time.Time fields
	b := msgp.AppendMapHeader(nil, 5)
	b = msgp.AppendTime(msgp.AppendString(b, "LastTS"), ts)
	b = msgp.AppendTime(msgp.AppendString(b, "LastIngest"), ing)
	b = msgp.AppendInt(msgp.AppendString(b, "N"), 7)
	b = msgp.AppendInt(msgp.AppendString(b, "IDPos"), 3)
	b = msgp.AppendInt(msgp.AppendString(b, "IDN"), 5)
	var d DeviceState
	if _, err := d.UnmarshalMsg(b); err != nil {
		t.Fatal(err)
	}
	if !d.LastTS.time().Equal(ts) || !d.LastIngest.time().Equal(ing) || d.IDPos != 3 || d.IDN != 5 || d.N != 7 {
		t.Fatalf("decoded LastTS %v, LastIngest %v, IDPos %d, IDN %d, N %d", d.LastTS.time(), d.LastIngest.time(), d.IDPos, d.IDN, d.N)
	}
	// and what this version writes decodes as times, as an older one reads them
	enc, err := d.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	n, rest, err := msgp.ReadMapHeaderBytes(enc)
	for ; err == nil && n > 0; n-- {
		var k []byte
		if k, rest, err = msgp.ReadMapKeyZC(rest); err != nil {
			break
		}
		if string(k) == "LastTS" {
			var got time.Time
			if got, _, err = msgp.ReadTimeBytes(rest); err == nil && !got.Equal(ts) {
				t.Errorf("LastTS encoded as %v, want %v", got, ts)
			}
			break
		}
		rest, err = msgp.Skip(rest)
	}
	if err != nil {
		t.Fatal(err)
	}
	var zero DeviceState
	if enc, err = zero.MarshalMsg(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.UnmarshalMsg(enc); err != nil || d.LastTS != 0 || d.LastIngest != 0 || !d.LastIngest.time().IsZero() {
		t.Fatalf("the zero times came back as %d and %d (%v)", d.LastTS, d.LastIngest, err)
	}
}

// The states held in another layout than they encode (UVState, MVState)
// convert every field of theirs: each exported field of the state is one
// of the wire layout's, or is named here with the wire fields it becomes.
// A field added to the state and not to its wire layout would be lost at
// every restart.
func TestStateWireLayoutsCoverTheState(t *testing.T) {
	for _, c := range []struct {
		state, wire any
		becomes     map[string][]string
	}{
		{UVState{}, uvStateWire{}, map[string][]string{"B": {"Hist", "RHist", "Day", "Week"}}},
		{MVState{}, mvWire{}, map[string][]string{"F": {"Ring", "Sum", "Med", "Scale", "Weight", "Noise"}, "PF": {"Pos", "Filled"}, "Smooth": {"Ring"}}},
	} {
		st, wt := reflect.TypeOf(c.state), reflect.TypeOf(c.wire)
		for i := range st.NumField() {
			f := st.Field(i)
			if !f.IsExported() {
				continue
			}
			names, ok := c.becomes[f.Name]
			if !ok {
				names = []string{f.Name}
			}
			for _, n := range names {
				if _, ok := wt.FieldByName(n); !ok {
					t.Errorf("%s.%s: %s has no field %s to carry it", st.Name(), f.Name, wt.Name(), n)
				}
			}
		}
	}
}

// fillScalars sets every exported number and bool of the struct v points
// at, and each element of its arrays and structs (a binSet's lengths
// aside), to a distinct value that is not zero, so that a codec that
// drops one is seen.
func fillScalars(v reflect.Value) {
	k := 0
	var set func(f reflect.Value)
	set = func(f reflect.Value) {
		k++
		switch f.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			f.SetInt(int64(k))
		case reflect.Float32, reflect.Float64:
			f.SetFloat(float64(k) + 0.5)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Array:
			for i := range f.Len() {
				set(f.Index(i))
			}
		case reflect.Struct:
			if f.Type() == reflect.TypeOf(binSet{}) {
				return // its lengths must fit its values
			}
			for i := range f.NumField() {
				if f.Type().Field(i).IsExported() {
					set(f.Field(i))
				}
			}
		}
	}
	for i := range v.NumField() {
		if v.Type().Field(i).IsExported() {
			set(v.Field(i))
		}
	}
}

// Every field of a per-metric detector and of a multivariate state comes
// back from its encoding: each number set to a value of its own, the
// binned arrays in each of their forms.
func TestStateWireRoundTrip(t *testing.T) {
	u := newUVState()
	fillScalars(reflect.ValueOf(u).Elem())
	*u.B.ref(uvArrHist, 3) += 2                  // sparse
	u.B.dense(uvArrRHist)[7] = 5                 // dense
	*u.B.ref(uvArrWeek, 100) = 1.5               // sparse, the profile past the histograms
	u.Rec.V = append([]uint8(nil), uvRecZero...) // dense
	u.Rec.V[9] = 4
	b, err := u.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got UVState
	if _, err := got.UnmarshalMsg(b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u, &got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs(), cmp.AllowUnexported(lazyBins[float32]{}, lazyBins[uint8]{}, binSet{}, uvQ{})); diff != "" {
		t.Errorf("a per-metric detector restored otherwise (-saved +restored):\n%s", diff)
	}
	m := newMVState([]string{"a", "b"}, 3)
	fillScalars(reflect.ValueOf(m).Elem())
	m.Smooth, m.Fitted = 3, true
	m.F = make([]float64, 2*3+2+4*2)
	for i := range m.F {
		m.F[i] = float64(i) + 0.25
	}
	m.PF = []int32{1, 2, 3, 3}
	if b, err = m.MarshalMsg(nil); err != nil {
		t.Fatal(err)
	}
	var gm MVState
	if _, err := gm.UnmarshalMsg(b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, &gm, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("a multivariate state restored otherwise (-saved +restored):\n%s", diff)
	}
}
