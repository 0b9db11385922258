package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is the object store on S3, MinIO or any S3-compatible store (ECS),
// through minio-go.
type S3 struct {
	cl     *minio.Client
	bucket string
	name   string
}

// NewS3 connects to the store of cfg and creates the bucket when missing.
func NewS3(ctx context.Context, cfg Config) (*S3, error) {
	endpoint, secure := cfg.Endpoint, cfg.UseSSL
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil {
			return nil, fmt.Errorf("storage.endpoint %q: %w", endpoint, err)
		}
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	tr.ResponseHeaderTimeout = 30 * time.Second
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("storage.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("storage.ca_file: %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cl, err := minio.New(endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    secure,
		Region:    cfg.Region,
		Transport: tr,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", endpoint, err)
	}
	s := &S3{cl: cl, bucket: cfg.Bucket, name: "s3 " + endpoint + "/" + cfg.Bucket}
	exists, err := cl.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 %s: cannot reach the store or check bucket %q: %w; check storage.endpoint and the keys", endpoint, cfg.Bucket, err)
	}
	if !exists {
		if err := cl.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			var er minio.ErrorResponse
			if !errors.As(err, &er) || (er.Code != "BucketAlreadyOwnedByYou" && er.Code != "BucketAlreadyExists") {
				return nil, fmt.Errorf("s3 %s: create bucket %q: %w", endpoint, cfg.Bucket, err)
			}
		}
	}
	return s, nil
}

func (s *S3) String() string { return s.name }

func mapErr(op, key string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed" ||
		resp.StatusCode == http.StatusConflict && resp.Code == "ConditionalRequestConflict":
		return fmt.Errorf("%s %s: %w", op, key, ErrPrecondition)
	case resp.StatusCode == http.StatusNotFound || resp.Code == "NoSuchKey":
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

func (s *S3) put(ctx context.Context, key string, r io.Reader, size int64, opts minio.PutObjectOptions) (string, error) {
	opts.ContentType = "application/octet-stream"
	if size < 0 || size > 64<<20 {
		opts.PartSize = 16 << 20
	}
	info, err := s.cl.PutObject(ctx, s.bucket, key, r, size, opts)
	if err != nil {
		return "", mapErr("put", key, err)
	}
	return info.ETag, nil
}

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) (string, error) {
	return s.put(ctx, key, r, size, minio.PutObjectOptions{})
}

// PutIfAbsent implements Store with If-None-Match: *.
func (s *S3) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (string, error) {
	var o minio.PutObjectOptions
	o.SetMatchETagExcept("*")
	return s.put(ctx, key, r, size, o)
}

// PutIfMatch implements Store with If-Match.
func (s *S3) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (string, error) {
	var o minio.PutObjectOptions
	o.SetMatchETag(etag)
	tag, err := s.put(ctx, key, r, size, o)
	if errors.Is(err, ErrNotFound) { // S3 answers 404 for If-Match on a missing key
		return "", fmt.Errorf("put %s: %w", key, ErrPrecondition)
	}
	return tag, err
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	obj, err := s.cl.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, mapErr("get", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, ObjectInfo{}, mapErr("get", key, err)
	}
	return obj, ObjectInfo{Key: key, Size: st.Size, ETag: st.ETag, Modified: st.LastModified}, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	st, err := s.cl.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, mapErr("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: st.Size, ETag: st.ETag, Modified: st.LastModified}, nil
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	for o := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, mapErr("list", prefix, o.Err)
		}
		out = append(out, ObjectInfo{Key: o.Key, Size: o.Size, ETag: o.ETag, Modified: o.LastModified})
	}
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	return mapErr("delete", key, s.cl.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}))
}

// Open returns the store cfg names: S3 when storage.endpoint is set, else
// the local directory store under dataDir/objects.
func Open(ctx context.Context, cfg Config, dataDir string) (Store, error) {
	if cfg.Endpoint == "" {
		if cfg.Dir != "" {
			return NewLocal(cfg.Dir)
		}
		return NewLocal(dataDir + "/objects")
	}
	return NewS3(ctx, cfg)
}
