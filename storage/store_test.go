package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil/vigil/internal/testminio"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testminio.LeakOptions()...)
}

// stores returns both implementations: the local directory store and S3
// on a real MinIO.
func stores(t *testing.T) map[string]Store {
	t.Helper()
	local, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := testminio.Start(t)
	s3, err := NewS3(context.Background(), Config{Endpoint: m.Endpoint, Bucket: "vigil-test", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Store{"local": local, "minio": s3}
}

func put(t *testing.T, s Store, key, body string) string {
	t.Helper()
	etag, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	return etag
}

func get(t *testing.T, s Store, key string) string {
	t.Helper()
	rc, _, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// The same suite for both stores: put, create-only put, put-if-match, get,
// stat, list by prefix, delete, and a race of create-only puts.
func TestStoreSuite(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			e1 := put(t, s, "a/b/one", "hello")
			if got := get(t, s, "a/b/one"); got != "hello" {
				t.Fatalf("get: %q", got)
			}
			st, err := s.Stat(ctx, "a/b/one")
			if err != nil || st.Size != 5 || st.ETag != e1 {
				t.Fatalf("stat: %+v %v (etag from put %q)", st, err, e1)
			}
			if _, err := s.Stat(ctx, "a/b/none"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("stat missing: %v", err)
			}
			if _, _, err := s.Get(ctx, "a/b/none"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get missing: %v", err)
			}
			// create-only
			if _, err := s.PutIfAbsent(ctx, "a/b/one", strings.NewReader("x"), 1); !errors.Is(err, ErrPrecondition) {
				t.Fatalf("create-only over an existing object: %v", err)
			}
			if got := get(t, s, "a/b/one"); got != "hello" {
				t.Fatalf("create-only changed the object: %q", got)
			}
			if _, err := s.PutIfAbsent(ctx, "a/c/two", strings.NewReader("2"), 1); err != nil {
				t.Fatalf("create-only new: %v", err)
			}
			// if-match
			e2, err := s.PutIfMatch(ctx, "a/b/one", strings.NewReader("world"), 5, e1)
			if err != nil || e2 == e1 {
				t.Fatalf("if-match with the right etag: %v (etag %q→%q)", err, e1, e2)
			}
			if _, err := s.PutIfMatch(ctx, "a/b/one", strings.NewReader("late"), 4, e1); !errors.Is(err, ErrPrecondition) {
				t.Fatalf("if-match with a stale etag: %v", err)
			}
			if _, err := s.PutIfMatch(ctx, "a/b/none", strings.NewReader("x"), 1, e1); !errors.Is(err, ErrPrecondition) {
				t.Fatalf("if-match on a missing object: %v", err)
			}
			if got := get(t, s, "a/b/one"); got != "world" {
				t.Fatalf("after if-match: %q", got)
			}
			// list
			put(t, s, "a/bz", "3")
			put(t, s, "b/x", "4")
			ls, err := s.List(ctx, "a/b")
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range ls {
				keys = append(keys, o.Key)
			}
			if strings.Join(keys, ",") != "a/b/one,a/bz" {
				t.Fatalf("list a/b: %v", keys)
			}
			if ls, _ := s.List(ctx, "zzz/"); len(ls) != 0 {
				t.Fatalf("list of an empty prefix: %v", ls)
			}
			// delete
			if err := s.Delete(ctx, "a/bz"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "a/bz"); err != nil {
				t.Fatalf("delete of a missing object: %v", err)
			}
			if _, err := s.Stat(ctx, "a/bz"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("deleted object still there: %v", err)
			}
			// a race of create-only writers: exactly one wins
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := 0
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					body := bytes.Repeat([]byte{byte('a' + i)}, 1000)
					if _, err := s.PutIfAbsent(ctx, "race/key", bytes.NewReader(body), int64(len(body))); err == nil {
						mu.Lock()
						wins++
						mu.Unlock()
					} else if !errors.Is(err, ErrPrecondition) {
						t.Errorf("create-only race: %v", err)
					}
				}(i)
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("%d create-only writers won, want 1", wins)
			}
		})
	}
}

func TestLocalRefusesBadKeys(t *testing.T) {
	l, _ := NewLocal(t.TempDir())
	for _, k := range []string{"", "/abs", "a/../b", "a//b", "a/", ".tmp-x", "a/./b"} {
		if _, err := l.Put(context.Background(), k, strings.NewReader("x"), 1); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
}

// A full disk under the local store: a clear error, and neither a partial
// object nor a temporary file left behind.
func TestLocalFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 256 KiB tmpfs (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	small := bytes.Repeat([]byte("a"), 100<<10)
	if _, err := l.Put(ctx, "x/small", bytes.NewReader(small), int64(len(small))); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("b"), 300<<10)
	for _, put := range []func() error{
		func() error { _, err := l.Put(ctx, "x/big", bytes.NewReader(big), int64(len(big))); return err },
		func() error { _, err := l.PutIfAbsent(ctx, "x/big", bytes.NewReader(big), int64(len(big))); return err },
	} {
		err := put()
		if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("want a disk-full error naming the problem, got %v", err)
		}
	}
	if _, err := l.Stat(ctx, "x/big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a partial object is visible: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "x"))
	if len(entries) != 1 || entries[0].Name() != "small" {
		t.Fatalf("left behind: %v", entries)
	}
	if got := get(t, l, "x/small"); got != string(small) {
		t.Fatal("the existing object was damaged")
	}
}
