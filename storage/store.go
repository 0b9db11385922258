package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors a caller branches on.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("object not found")
	// ErrPrecondition: a conditional write lost (the object exists for a
	// create-only put, or its ETag differs for a put-if-match).
	ErrPrecondition = errors.New("precondition failed")
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time
}

// Store is an object store: the bucket every region shares. Keys are
// slash-separated paths. Every write is atomic: a reader sees the whole
// old object or the whole new one, never a part.
type Store interface {
	// Put writes the object, replacing any existing one; it returns the new ETag.
	Put(ctx context.Context, key string, r io.Reader, size int64) (string, error)
	// PutIfAbsent writes only if no object exists under key (If-None-Match: *);
	// otherwise it returns ErrPrecondition.
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (string, error)
	// PutIfMatch replaces the object only if its ETag is etag (If-Match);
	// otherwise (or when it does not exist) it returns ErrPrecondition.
	PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (string, error)
	// Get opens the object for reading; ErrNotFound if absent.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// Stat describes the object; ErrNotFound if absent.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns the objects whose key starts with prefix, in key order.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for logs ("local /data/objects", "s3 host/bucket").
	String() string
}
