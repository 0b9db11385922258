package pipeline

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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
	if err := gob.NewEncoder(w).Encode(part); err != nil {
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
	part := newPartition()
	if err := gob.NewDecoder(bufio.NewReader(f)).Decode(part); err != nil {
		return nil, fmt.Errorf("decode %s: %w", f.Name(), err)
	}
	for _, d := range part.Devices {
		if d.MV != nil && len(d.MV.Names) > 0 {
			d.MV.Names = sharedNames(d.MV.Names)
		}
	}
	return part, nil
}
