package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
)

func TestMemoryLimit(t *testing.T) {
	v2 := fstest.MapFS{
		"proc/self/cgroup":                              {Data: []byte("0::/kubepods/pod1/ctr\n")},
		"sys/fs/cgroup/kubepods/memory.max":             {Data: []byte("max\n")},
		"sys/fs/cgroup/kubepods/pod1/memory.max":        {Data: []byte("8589934592\n")},
		"sys/fs/cgroup/kubepods/pod1/ctr/memory.max":    {Data: []byte("max\n")},
		"sys/fs/cgroup/memory.max":                      {Data: []byte("max\n")},
		"sys/fs/cgroup/kubepods/pod1/ctr/memory.events": {Data: []byte("oom 0\n")},
	}
	v1 := fstest.MapFS{
		"proc/self/cgroup": {Data: []byte("12:pids:/\n4:memory:/docker/abc\n0::/\n")},
		"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": {Data: []byte("6442450944\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes":            {Data: []byte("9223372036854771712\n")},
	}
	none := fstest.MapFS{
		"proc/self/cgroup": {Data: []byte("4:memory:/x\n0::/\n")},
		"sys/fs/cgroup/memory/x/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
	}
	for _, c := range []struct {
		name, setting string
		env           []string
		root          fstest.MapFS
		want          int64
		from          string
	}{
		{"size", "6GiB", nil, v2, 6 << 30, "memory.limit"},
		{"bytes", "1073741824", nil, none, 1 << 30, "memory.limit"},
		{"off", "off", []string{"GOMEMLIMIT=1GiB"}, v2, math.MaxInt64, "off"},
		{"auto: GOMEMLIMIT first", "auto", []string{"GOMEMLIMIT=3GiB"}, v2, -1, "GOMEMLIMIT=3GiB"},
		{"auto: cgroup v2, the smallest up the tree", "auto", nil, v2, 8 << 30 / 10 * 9, "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		{"auto: cgroup v1", "auto", nil, v1, 6 << 30 / 10 * 9, "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
		{"auto: no limit", "auto", nil, none, -1, "none"},
		{"auto: no cgroup files", "auto", nil, fstest.MapFS{}, -1, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, from, err := memoryLimit(c.setting, c.env, c.root)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want || !strings.Contains(from, c.from) {
				t.Fatalf("got %d from %q, want %d from %q", got, from, c.want, c.from)
			}
		})
	}
	for _, bad := range []string{"", "lots", "-1GiB", "1MiB", "0"} {
		if _, _, err := memoryLimit(bad, nil, v2); err == nil || !strings.Contains(err.Error(), "at least 64MiB") {
			t.Errorf("memory.limit %q: got %v, want a refusal naming the accepted forms", bad, err)
		}
	}
}

// serve sets the limit for its run and puts the previous one back.
func TestServeSetsTheMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	s := newServer(t, t.TempDir(), "VIGIL_MEMORY_LIMIT=3GiB")
	s.startInProcess()
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Fatalf("while serving, the soft limit is %d, want 3 GiB", got)
	}
	if !strings.Contains(s.logs.String(), "Go heap soft limit set") {
		t.Errorf("the limit is not in the log:\n%s", s.logs.String())
	}
	s.stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("after serving, the soft limit is %d, want the previous %d back", got, before)
	}
}
