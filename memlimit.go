package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
)

// setMemoryLimit sets the Go heap's soft limit from memory.limit for a
// command's run, logs which limit it took and where from, and returns
// the function that puts the previous limit back.
func setMemoryLimit(setting string, environ []string, log *zap.Logger) (restore func()) {
	lim, from, _ := memoryLimit(setting, environ, os.DirFS("/")) // validated with the config
	if lim < 0 {
		log.Info("Go heap soft limit: the runtime's (memory.limit auto)", zap.String("from", from))
		return func() {}
	}
	prev := debug.SetMemoryLimit(lim)
	log.Info("Go heap soft limit set (memory.limit)", zap.String("limit", humanize.IBytes(uint64(lim))), zap.String("from", from))
	return func() { debug.SetMemoryLimit(prev) }
}

// memoryLimit resolves memory.limit to the Go runtime's soft memory limit
// in bytes (-1: leave the runtime's own, GOMEMLIMIT or none) and says
// where it came from:
//   - a size ("6GiB", "6442450944"): that;
//   - "off": none, even if GOMEMLIMIT is set;
//   - "auto": GOMEMLIMIT if it is set, else 90 % of the memory limit of
//     the cgroup Vigil runs in (a container's), else none.
//
// The heap then grows towards the limit rather than to twice the live
// heap (GOGC=100), and the collector works harder as it nears it: a
// container's memory limit is met by collecting, not by an OOM kill. It is
// a soft limit: a live heap above it is not refused, only collected more
// often.
func memoryLimit(setting string, environ []string, root fs.FS) (int64, string, error) {
	switch strings.TrimSpace(setting) {
	case "off":
		return math.MaxInt64, "off", nil
	case "auto":
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, "GOMEMLIMIT="); ok && v != "" {
				return -1, "GOMEMLIMIT=" + v, nil
			}
		}
		if n, where := cgroupMemoryMax(root); n > 0 {
			return n / 10 * 9, "90% of " + humanize.IBytes(uint64(n)) + " (" + where + ")", nil
		}
		return -1, "none (no GOMEMLIMIT, no cgroup memory limit)", nil
	}
	n, err := humanize.ParseBytes(setting)
	if err != nil || n < 64<<20 || n > math.MaxInt64 {
		return 0, "", fmt.Errorf("%q must be auto, off, or a size of at least 64MiB such as 6GiB", setting)
	}
	return int64(n), "memory.limit", nil
}

// cgroupMemoryMax is the smallest memory limit of the cgroup this process
// runs in and its parents (cgroup v2 memory.max, or v1
// memory.limit_in_bytes), read from root (the file system's root), and the
// file it came from; 0 when there is none.
func cgroupMemoryMax(root fs.FS) (int64, string) {
	if root == nil {
		return 0, ""
	}
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0, ""
	}
	best, where := int64(0), ""
	take := func(file string) {
		v, err := fs.ReadFile(root, file)
		if err != nil {
			return
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "no limit"
			return
		}
		if best == 0 || n < best {
			best, where = n, "/"+file
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controllers:path; v2 is "0::/path"
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir, file = "sys/fs/cgroup", "memory.max"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, file = "sys/fs/cgroup/memory", "memory.limit_in_bytes"
		default:
			continue
		}
		for p := path.Clean("/" + parts[2]); ; p = path.Dir(p) {
			take(path.Join(dir, p, file))
			if p == "/" {
				break
			}
		}
	}
	return best, where
}
