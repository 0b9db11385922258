package pipeline

import (
	"bufio"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tinylib/msgp/msgp"
)

// snapshots stores per-partition state under dir/<group>/<topic>-<p>.snap
// (<topic>-<p>.gob before the MessagePack format: still read when there is
// no .snap, and removed once a .snap replaces it).
//
// Why snapshots and not a changelog topic: a changelog written in every
// transaction would add one record per touched device per batch to the hot
// path (thousands per second), while a snapshot every 30 s plus a replay of
// the raw topic from the snapshot's offset rebuilds exactly the same state,
// because the processor is deterministic. A snapshot's slices are written
// only between committed batches, so no device in it runs ahead of the
// committed offsets; a
// process that takes over a partition without the snapshot (another
// machine) replays the last pipeline.restore_lookback records instead.
type snapshots struct {
	dir, group, topic string
	saved             map[int32]int64
}

func (s *snapshots) path(p int32) string {
	return filepath.Join(s.dir, s.group, s.topic+"-"+strconv.Itoa(int(p))+".snap")
}

// gobPath is where a snapshot of the gob formats was written.
func (s *snapshots) gobPath(p int32) string {
	return filepath.Join(s.dir, s.group, s.topic+"-"+strconv.Itoa(int(p))+".gob")
}

func (s *snapshots) dirty(p int32, next int64) bool {
	return s.saved == nil || s.saved[p] != next
}

func (s *snapshots) save(p int32, part *partition) error {
	if err := s.write(p, part); err != nil {
		return err
	}
	s.mark(p, part.Next)
	return nil
}

// mark records that partition p's snapshot is at offset next.
func (s *snapshots) mark(p int32, next int64) {
	if s.saved == nil {
		s.saved = map[int32]int64{}
	}
	s.saved[p] = next
}

// write writes partition p's snapshot whole. It touches only p's files,
// so partitions may be written at the same time (mark them afterwards,
// from one goroutine).
func (s *snapshots) write(p int32, part *partition) error {
	w, err := s.begin(p, part)
	if err != nil || w == nil {
		return err
	}
	if _, err := w.write(0, 0); err != nil {
		w.abort()
		return err
	}
	if err := w.end(); err != nil {
		w.abort()
		return err
	}
	return w.commit()
}

// snapWriter writes a partition's snapshot a slice at a time, so the
// stream can write it between micro-batches (see Stream.snapshotStep)
// rather than stop for the whole partition (2.5 s at a million devices):
// a snapEncoder into a temporary file, put in place by commit.
type snapWriter struct {
	snapEncoder
	s   *snapshots
	p   int32
	tmp *os.File
	buf *bufio.Writer
}

// snapEncoder encodes a partition's snapshot to w a slice at a time. The
// head is the partition's as the encoder begins (its offset, Next, is the
// snapshot's); each device is encoded as it is when its slice comes, so
// it may hold readings past that offset: each state says how far it
// holds (DeviceState.Through), and the replay skips what it holds
// (StepAt). The devices are those of the partition at the start (a
// device new since then has only later readings, all replayed); one
// evicted meanwhile is left out.
type snapEncoder struct {
	w    io.Writer
	part *partition
	next int64 // the partition's offset at the start: the snapshot's
	ids  []string
	i    int // the next of ids to write
	b    []byte
	n    int // devices in b
}

// newSnapEncoder writes part's head to w, the devices to come.
func newSnapEncoder(w io.Writer, part *partition) (*snapEncoder, error) {
	e := &snapEncoder{w: w, part: part, next: part.Next, ids: make([]string, 0, len(part.Devices)), b: make([]byte, 0, 64<<10)}
	for id := range part.Devices {
		e.ids = append(e.ids, id)
	}
	return e, writeSnapHead(w, part, snapFormat)
}

// encodeSnapshot writes part's snapshot to w whole.
func encodeSnapshot(w io.Writer, part *partition) error {
	e, err := newSnapEncoder(w, part)
	if err == nil {
		_, err = e.write(0, 0)
	}
	if err == nil {
		err = e.end()
	}
	return err
}

// begin starts partition p's snapshot: its head is written, the devices
// to come. nil (and no error) when snapshots are off.
func (s *snapshots) begin(p int32, part *partition) (*snapWriter, error) {
	if s.dir == "" {
		return nil, nil
	}
	path := s.path(p)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snap-*")
	if err != nil {
		return nil, err
	}
	sw := &snapWriter{s: s, p: p, tmp: tmp, buf: bufio.NewWriterSize(tmp, 1<<20)}
	e, err := newSnapEncoder(sw.buf, part)
	if err != nil {
		sw.abort()
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	sw.snapEncoder = *e
	return sw, nil
}

// write writes devices until all are written (true), or until budget has
// passed or most were written in this call (0: no bound), so between two
// calls the stream steps the partition on.
func (e *snapEncoder) write(budget time.Duration, most int) (bool, error) {
	t0 := time.Now()
	for k := 0; e.i < len(e.ids); k++ {
		if most > 0 && k == most || budget > 0 && k%64 == 63 && time.Since(t0) >= budget {
			return false, nil
		}
		id := e.ids[e.i]
		e.i++
		d := e.part.Devices[id]
		if d == nil {
			continue // evicted since the start
		}
		var err error
		e.b = msgp.AppendString(e.b, id)
		if e.b, err = d.MarshalMsg(e.b); err != nil {
			return false, fmt.Errorf("encode snapshot: device %q: %w", id, err)
		}
		if e.n++; e.n == snapChunk {
			if err := e.flushFrame(); err != nil {
				return false, err
			}
		}
	}
	return true, e.flushFrame()
}

func (e *snapEncoder) flushFrame() error {
	if e.n == 0 {
		return nil
	}
	err := writeSnapFrame(e.w, msgp.AppendArrayHeader(make([]byte, 0, 5), uint32(2*e.n)), e.b)
	e.b, e.n = e.b[:0], 0
	return err
}

// end writes the last devices' frame and the end frame.
func (e *snapEncoder) end() error {
	if err := e.flushFrame(); err != nil {
		return err
	}
	return writeSnapEnd(e.w)
}

// end ends the encoding and writes the buffer out: the file is complete
// but not yet durable (commit makes it so, and may run on another
// goroutine).
func (sw *snapWriter) end() error {
	if err := sw.snapEncoder.end(); err != nil {
		return err
	}
	return sw.buf.Flush()
}

// commit syncs the file and puts it in place of the partition's last
// snapshot; on an error the last one is left as it was.
func (sw *snapWriter) commit() error {
	defer os.Remove(sw.tmp.Name())
	if err := sw.tmp.Sync(); err != nil {
		sw.tmp.Close()
		return err
	}
	if err := sw.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(sw.tmp.Name(), sw.s.path(sw.p)); err != nil {
		return err
	}
	// the gob snapshot this one replaces (a process of the gob format
	// finds none and replays pipeline.restore_lookback)
	if err := os.Remove(sw.s.gobPath(sw.p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// abort drops the snapshot being written; the last one stays.
func (sw *snapWriter) abort() {
	sw.tmp.Close()
	os.Remove(sw.tmp.Name())
}

// cleanTemp removes the temporary files of snapshots that were being
// written when a process died or ran out of shutdown.budget (a snapshot
// is written to a temporary file and renamed over the last one when
// complete, so the last complete one is never touched). It returns how
// many it removed.
func (s *snapshots) cleanTemp() (int, error) {
	if s.dir == "" {
		return 0, nil
	}
	tmps, err := filepath.Glob(filepath.Join(s.dir, s.group, ".snap-*"))
	if err != nil {
		return 0, err
	}
	for _, f := range tmps {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	return len(tmps), nil
}

// load returns the partition's snapshot, or nil when there is none.
func (s *snapshots) load(p int32) (*partition, error) {
	if s.dir == "" {
		return nil, nil
	}
	f, err := os.Open(s.path(p))
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.Open(s.gobPath(p))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	part, err := decodeSnapshot(bufio.NewReaderSize(f, 1<<20))
	if errors.Is(err, errOldSnapshot) {
		// written before the chunked format: one gob value, the partition
		if _, err = f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		part = newPartition()
		err = gob.NewDecoder(bufio.NewReader(f)).Decode(part)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", f.Name(), err)
	}
	for _, d := range part.Devices {
		if d.MV != nil {
			if len(d.MV.Names) > 0 {
				d.MV.Names = sharedNames(d.MV.Names)
			}
			if !d.MV.valid() {
				// damaged, or a gob snapshot of the layout before session
				// 18 (its arrays do not decode into this one): the
				// detector starts over, as for a new device
				d.MV = nil
			}
		}
		d.upgrade()
	}
	return part, nil
}

// The snapshot format (4): snapMagic, then frames, each
//
//	length  uint32, little-endian: the payload's bytes
//	crc     uint32, little-endian: CRC-32C of the payload
//	payload MessagePack
//
// The first frame's payload is the head, a map of snapHead's fields; each
// later one an array of alternating device ids and states, up to
// snapChunk devices; the last an empty array, the end. A snapshot written
// a slice at a time (snapWriter) holds each device as it was when written,
// possibly past the head's offset (DeviceState.Through says how far), and
// the head's DeviceCount is the devices at its start: some may have been
// evicted before their slice came. Format 3 had no end frame and exactly
// DeviceCount devices, each as of the head's offset; it is still read.
//
// The states are the generated MessagePack encoding of DeviceState (see
// msgp.go): maps keyed by field name, so a state type may gain or lose
// fields without invalidating snapshots, as with gob, and coded without
// reflection (BenchmarkSnapshot: save and load in about half the gob
// format's time; the file is about a third larger, for the field names).
// Frames bound the memory a save or a load needs to a few MB whatever the
// partition's size, and the checksums turn a damaged file into an error
// (the partition then replays the raw topic) rather than a wrong state.
//
// Formats 1 and 2 were gob: one value, the partition (1); a gob snapHead,
// then chunks of snapDevice (2). Both are still read.
type snapHead struct {
	SnapFormat  int
	NextOffset  int64
	LastIngest  time.Time
	StepCount   int64
	EvictCount  int64
	NextEvictAt int64
	DeviceCount int
}

type snapDevice struct {
	ID    string
	State *DeviceState
}

const (
	snapFormat      = 4 // frames until an end frame; devices may hold readings past the head's offset
	snapCountFormat = 3 // DeviceCount devices, no end frame
	snapGobFormat   = 2
	snapChunk       = 512
	snapMagic       = "vigil.snapshot\x00"
	// snapMaxFrame bounds a frame's length: snapChunk states of the
	// largest devices (64 metrics late in a long warm-up) fit with room
	snapMaxFrame = 1 << 30
)

var (
	errOldSnapshot = errors.New("a snapshot of the format before chunks")
	snapCRC        = crc32.MakeTable(crc32.Castagnoli)
)

// writeSnapHead writes the magic and the head frame of part's snapshot in
// format (snapFormat; the tests write snapCountFormat too).
func writeSnapHead(w io.Writer, part *partition, format int) error {
	if _, err := io.WriteString(w, snapMagic); err != nil {
		return err
	}
	b := make([]byte, 0, 256)
	b = msgp.AppendMapHeader(b, 7)
	b = msgp.AppendInt(msgp.AppendString(b, "SnapFormat"), format)
	b = msgp.AppendInt64(msgp.AppendString(b, "NextOffset"), part.Next)
	b = msgp.AppendTime(msgp.AppendString(b, "LastIngest"), part.MaxIngest)
	b = msgp.AppendInt64(msgp.AppendString(b, "StepCount"), part.Steps)
	b = msgp.AppendInt64(msgp.AppendString(b, "EvictCount"), part.Evicted)
	b = msgp.AppendInt64(msgp.AppendString(b, "NextEvictAt"), part.EvictAt)
	b = msgp.AppendInt(msgp.AppendString(b, "DeviceCount"), len(part.Devices))
	return writeSnapFrame(w, nil, b)
}

// writeSnapEnd writes the end frame: an empty array.
func writeSnapEnd(w io.Writer) error {
	return writeSnapFrame(w, nil, msgp.AppendArrayHeader(nil, 0))
}

// writeSnapFrame writes a frame of the payload head then body.
func writeSnapFrame(w io.Writer, head, body []byte) error {
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(head)+len(body)))
	binary.LittleEndian.PutUint32(hdr[4:], crc32.Update(crc32.Checksum(head, snapCRC), snapCRC, body))
	for _, b := range [][]byte{hdr[:], head, body} {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// readSnapFrame reads a frame's payload into buf (grown as needed).
func readSnapFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, noEOF(err)
	}
	size, crc := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[4:])
	if size == 0 || size > snapMaxFrame {
		return buf, fmt.Errorf("a frame of %d bytes", size)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, noEOF(err)
	}
	if crc32.Checksum(buf, snapCRC) != crc {
		return buf, errors.New("a frame's checksum does not match (a damaged file)")
	}
	return buf, nil
}

func decodeSnapshot(r *bufio.Reader) (*partition, error) {
	if m, err := r.Peek(len(snapMagic)); err != nil || string(m) != snapMagic {
		return decodeGobSnapshot(r)
	}
	if _, err := r.Discard(len(snapMagic)); err != nil {
		return nil, err
	}
	buf, err := readSnapFrame(r, nil)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	h, err := readSnapHead(buf)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	if h.SnapFormat != snapFormat && h.SnapFormat != snapCountFormat {
		return nil, fmt.Errorf("snapshot format %d, this version reads %d and %d", h.SnapFormat, snapCountFormat, snapFormat)
	}
	if h.DeviceCount < 0 {
		return nil, fmt.Errorf("head: %d devices", h.DeviceCount)
	}
	part := &partition{Devices: make(map[string]*DeviceState, min(h.DeviceCount, 1<<20)), Next: h.NextOffset, MaxIngest: h.LastIngest,
		Steps: h.StepCount, Evicted: h.EvictCount, EvictAt: h.NextEvictAt}
	for h.SnapFormat == snapFormat || len(part.Devices) < h.DeviceCount {
		if buf, err = readSnapFrame(r, buf); err == nil {
			if h.SnapFormat == snapFormat && len(buf) == 1 && buf[0] == 0x90 {
				return part, nil // the end frame (an empty array)
			}
			err = decodeSnapDevices(buf, part)
		}
		if err != nil {
			return nil, fmt.Errorf("after %d of %d devices: %w", len(part.Devices), h.DeviceCount, err)
		}
	}
	return part, nil
}

// decodeSnapDevices adds a frame's devices to part.
func decodeSnapDevices(buf []byte, part *partition) error {
	n, rest, err := msgp.ReadArrayHeaderBytes(buf)
	if err != nil {
		return err
	}
	if n == 0 || n%2 != 0 {
		return fmt.Errorf("a frame of %d elements, not id and state pairs", n)
	}
	for i := uint32(0); i < n; i += 2 {
		var id string
		if id, rest, err = msgp.ReadStringBytes(rest); err != nil {
			return err
		}
		d := &DeviceState{}
		if rest, err = d.UnmarshalMsg(rest); err != nil {
			return fmt.Errorf("device %q: %w", id, err)
		}
		part.Devices[id] = d
	}
	if len(rest) > 0 {
		return fmt.Errorf("%d bytes after the frame's devices", len(rest))
	}
	return nil
}

// noEOF says a snapshot ended early as io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readSnapHead reads the head's map; a key it does not know is skipped.
func readSnapHead(b []byte) (snapHead, error) {
	var h snapHead
	n, b, err := msgp.ReadMapHeaderBytes(b)
	for ; n > 0 && err == nil; n-- {
		var k []byte
		if k, b, err = msgp.ReadMapKeyZC(b); err != nil {
			break
		}
		switch string(k) {
		case "SnapFormat":
			h.SnapFormat, b, err = msgp.ReadIntBytes(b)
		case "NextOffset":
			h.NextOffset, b, err = msgp.ReadInt64Bytes(b)
		case "LastIngest":
			h.LastIngest, b, err = msgp.ReadTimeUTCBytes(b)
		case "StepCount":
			h.StepCount, b, err = msgp.ReadInt64Bytes(b)
		case "EvictCount":
			h.EvictCount, b, err = msgp.ReadInt64Bytes(b)
		case "NextEvictAt":
			h.NextEvictAt, b, err = msgp.ReadInt64Bytes(b)
		case "DeviceCount":
			h.DeviceCount, b, err = msgp.ReadIntBytes(b)
		default:
			b, err = msgp.Skip(b)
		}
	}
	return h, err
}

// decodeGobSnapshot reads a snapshot of format 2 (or says it is of format
// 1, errOldSnapshot).
func decodeGobSnapshot(r io.Reader) (*partition, error) {
	dec := gob.NewDecoder(r)
	var h snapHead
	if err := dec.Decode(&h); err != nil {
		if strings.Contains(err.Error(), "no fields matched") {
			return nil, errOldSnapshot
		}
		return nil, err
	}
	if h.SnapFormat != snapGobFormat {
		return nil, fmt.Errorf("snapshot format %d, this version reads %d and %d", h.SnapFormat, snapGobFormat, snapFormat)
	}
	part := &partition{Devices: make(map[string]*DeviceState, h.DeviceCount), Next: h.NextOffset, MaxIngest: h.LastIngest,
		Steps: h.StepCount, Evicted: h.EvictCount, EvictAt: h.NextEvictAt}
	for len(part.Devices) < h.DeviceCount {
		// a fresh slice each time: gob decodes into what a reused one
		// points to (the devices just stored) and leaves zero fields as
		// they were
		var chunk []snapDevice
		if err := dec.Decode(&chunk); err != nil {
			return nil, fmt.Errorf("after %d of %d devices: %w", len(part.Devices), h.DeviceCount, err)
		}
		if len(chunk) == 0 {
			return nil, fmt.Errorf("an empty chunk after %d of %d devices", len(part.Devices), h.DeviceCount)
		}
		for _, d := range chunk {
			if d.State == nil {
				return nil, fmt.Errorf("device %q without state", d.ID)
			}
			part.Devices[d.ID] = d.State
		}
	}
	return part, nil
}
