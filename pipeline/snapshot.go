package pipeline

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// snapshots stores per-partition state under dir/<group>/<topic>-<p>.gob.
//
// Why snapshots and not a changelog topic: a changelog written in every
// transaction would add one record per touched device per batch to the hot
// path (thousands per second), while a snapshot every 30 s plus a replay of
// the raw topic from the snapshot's offset rebuilds exactly the same state,
// because the processor is deterministic. A snapshot is written only after
// its batch committed, so it never runs ahead of the committed offsets; a
// process that takes over a partition without the snapshot (another
// machine) replays the last pipeline.restore_lookback records instead.
type snapshots struct {
	dir, group, topic string
	saved             map[int32]int64
}

func (s *snapshots) path(p int32) string {
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

// write writes partition p's snapshot. It touches only p's files, so
// partitions may be written at the same time (mark them afterwards, from
// one goroutine).
func (s *snapshots) write(p int32, part *partition) error {
	if s.dir == "" {
		return nil
	}
	path := s.path(p)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snap-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := encodeSnapshot(w, part); err != nil {
		tmp.Close()
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
		if d.MV != nil && len(d.MV.Names) > 0 {
			d.MV.Names = sharedNames(d.MV.Names)
		}
	}
	return part, nil
}

// The snapshot format: a snapHead, then the devices in chunks of
// snapChunk, each chunk one gob value. One gob value for the whole
// partition (the format before) made the encoder build the partition's
// whole encoding in memory before writing it, and the decoder read it
// whole: hundreds of MB a partition at a million devices, transient heap
// that pushed a process near its memory limit into back-to-back GCs just
// as it saved everything on a graceful stop. Chunks bound that to a few
// MB. The head's field names differ from the partition's, so a process
// of the old format fails to decode a new snapshot (and replays the raw
// topic) instead of reading it as a partition without devices, and an
// old snapshot fails to decode as a head (errOldSnapshot) and is read the
// old way.
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
	snapFormat = 2
	snapChunk  = 512
)

var errOldSnapshot = errors.New("a snapshot of the format before chunks")

func encodeSnapshot(w io.Writer, part *partition) error {
	enc := gob.NewEncoder(w)
	if err := enc.Encode(snapHead{SnapFormat: snapFormat, NextOffset: part.Next, LastIngest: part.MaxIngest,
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

func decodeSnapshot(r io.Reader) (*partition, error) {
	dec := gob.NewDecoder(r)
	var h snapHead
	if err := dec.Decode(&h); err != nil {
		if strings.Contains(err.Error(), "no fields matched") {
			return nil, errOldSnapshot
		}
		return nil, err
	}
	if h.SnapFormat != snapFormat {
		return nil, fmt.Errorf("snapshot format %d, this version reads %d", h.SnapFormat, snapFormat)
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
