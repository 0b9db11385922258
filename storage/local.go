package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Local is the embedded object store: each object is a file at
// <dir>/<key>, written atomically (temporary file, fsync, rename or link).
// Conditional writes are serialized by a lock file, so several processes
// sharing the directory see the same create-only and if-match semantics
// as S3.
type Local struct {
	dir string
	mu  sync.Mutex
}

// NewLocal opens (creating if needed) a local store rooted at dir.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &Local{dir: abs}, nil
}

func (l *Local) String() string { return "local " + l.dir }

func (l *Local) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") || strings.HasSuffix(key, "/") {
		return "", fmt.Errorf("invalid object key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".tmp-") {
			return "", fmt.Errorf("invalid object key %q", key)
		}
	}
	return filepath.Join(l.dir, filepath.FromSlash(key)), nil
}

// etag of a local object: its size and modification time. Every write
// makes a new file, so a write always changes it.
func etagOf(fi os.FileInfo) string {
	return strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16)
}

// writeTemp writes r into a temporary file beside path and fsyncs it. On
// any error (a full disk included) the temporary file is removed.
func (l *Local) writeTemp(path string, r io.Reader, size int64) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return "", err
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		if errors.Is(err, syscall.ENOSPC) {
			return "", fmt.Errorf("disk full under %s: free space or move data.dir; nothing was stored: %w", l.dir, err)
		}
		return "", err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		return fail(err)
	}
	if size >= 0 && n != size {
		return fail(fmt.Errorf("short object: read %d of %d bytes", n, size))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func (l *Local) finish(path string) (string, error) {
	syncDir(filepath.Dir(path))
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return etagOf(fi), nil
}

// stage checks key and writes r into a temporary file beside the object's
// path; the caller renames or links it into place, or removes it.
func (l *Local) stage(key string, r io.Reader, size int64) (path, tmp string, err error) {
	if path, err = l.path(key); err != nil {
		return "", "", err
	}
	if tmp, err = l.writeTemp(path, r, size); err != nil {
		return "", "", fmt.Errorf("put %s: %w", key, err)
	}
	return path, tmp, nil
}

// Put implements Store.
func (l *Local) Put(_ context.Context, key string, r io.Reader, size int64) (string, error) {
	path, tmp, err := l.stage(key, r, size)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	return l.finish(path)
}

// PutIfAbsent implements Store: the temporary file is hard-linked to the
// key, which fails atomically when the key exists.
func (l *Local) PutIfAbsent(_ context.Context, key string, r io.Reader, size int64) (string, error) {
	path, tmp, err := l.stage(key, r, size)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("put %s: %w", key, ErrPrecondition)
		}
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	return l.finish(path)
}

// PutIfMatch implements Store, under an exclusive lock on <dir>/.lock.
func (l *Local) PutIfMatch(_ context.Context, key string, r io.Reader, size int64, etag string) (string, error) {
	path, tmp, err := l.stage(key, r, size)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	unlock, err := l.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && etagOf(fi) != etag) {
		return "", fmt.Errorf("put %s: %w", key, ErrPrecondition)
	}
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("put %s: %w", key, err)
	}
	return l.finish(path)
}

func (l *Local) lock() (func(), error) {
	l.mu.Lock()
	f, err := os.OpenFile(filepath.Join(l.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		l.mu.Unlock()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		l.mu.Unlock()
	}, nil
}

// Get implements Store.
func (l *Local) Get(_ context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	path, err := l.path(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, ObjectInfo{}, err
	}
	return f, ObjectInfo{Key: key, Size: fi.Size(), ETag: etagOf(fi), Modified: fi.ModTime()}, nil
}

// Stat implements Store.
func (l *Local) Stat(_ context.Context, key string) (ObjectInfo, error) {
	path, err := l.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && fi.IsDir()) {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ETag: etagOf(fi), Modified: fi.ModTime()}, nil
}

// List implements Store.
func (l *Local) List(_ context.Context, prefix string) ([]ObjectInfo, error) {
	// Walk only the deepest directory the prefix names.
	root := l.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		root = filepath.Join(l.dir, filepath.FromSlash(prefix[:i]))
	}
	var out []ObjectInfo
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		name := d.Name()
		if d.IsDir() || strings.HasPrefix(name, ".tmp-") || name == ".lock" {
			return nil
		}
		rel, _ := filepath.Rel(l.dir, p)
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, ObjectInfo{Key: key, Size: fi.Size(), ETag: etagOf(fi), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store.
func (l *Local) Delete(_ context.Context, key string) error {
	path, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}
