// Package storage owns the object store: the S3 (minio-go) and local
// directory implementations of Store, the archive's Parquet writer, and
// the archiver that moves the enriched topic into the bucket.
package storage

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Config is the storage section of config.yaml.
type Config struct {
	// Endpoint is the S3 endpoint (host:port or URL). Empty (the default)
	// means the local directory store under data.dir/objects.
	Endpoint string `yaml:"endpoint"`
	// Bucket is the bucket shared by every region. Default "vigil".
	Bucket string `yaml:"bucket"`
	// AccessKey and SecretKey are the S3 credentials.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// UseSSL selects https for a host:port endpoint. Default false.
	UseSSL bool `yaml:"use_ssl"`
	// Region is the S3 region name. Default "" (the store's default).
	Region string `yaml:"region"`
	// Dir is the local directory store (no endpoint); "" means
	// data.dir/objects. Processes on one machine may share it.
	Dir string `yaml:"dir"`
	// CAFile holds the CAs (PEM) that sign an https endpoint's certificate,
	// beside the system's (a private MinIO or ECS). Default "".
	CAFile string `yaml:"ca_file"`
}

// Default is the storage section's built-in configuration (config.yaml
// mirrors it): the local directory store, bucket "vigil".
func Default() Config { return Config{Bucket: "vigil"} }

// Validate checks the storage section; errors name the key below "storage.".
func (c Config) Validate() error {
	if c.Bucket == "" || len(c.Bucket) < 3 || len(c.Bucket) > 63 || strings.ToLower(c.Bucket) != c.Bucket || strings.ContainsAny(c.Bucket, " _/") {
		return fmt.Errorf("bucket: %q is not a valid bucket name (3-63 lower-case letters, digits, dots and hyphens)", c.Bucket)
	}
	if c.Endpoint != "" {
		if strings.Contains(c.Endpoint, "://") {
			if _, err := url.Parse(c.Endpoint); err != nil {
				return fmt.Errorf("endpoint: %q: %w", c.Endpoint, err)
			}
		}
		if c.AccessKey == "" || c.SecretKey == "" {
			return fmt.Errorf("access_key: access_key and secret_key are required with an endpoint")
		}
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
	}
	return nil
}
