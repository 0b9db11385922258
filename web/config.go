// Package web owns Vigil's HTTP surface: the chi router that serves the
// ingest endpoint, the REST admin API (devices, gateways, alerts), health
// and readiness, Prometheus metrics, the OpenAPI document and the status page.
package web

import (
	"fmt"
	"net"
	"os"
	"time"
)

// Config is the http section of config.yaml.
type Config struct {
	// Addr is where the HTTP server listens. Default "127.0.0.1:8080" (this
	// machine only; a wider address logs a warning, as HTTP carries keys
	// and tokens in clear).
	Addr string `yaml:"addr"`
	// ReadTimeout bounds reading a whole request, body included. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// ReadHeaderTimeout bounds reading request headers. Default 5s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// WriteTimeout bounds writing a response. Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is how long a graceful stop waits for requests in flight. Default 15s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLSCertFile and TLSKeyFile make Vigil serve HTTPS (TLS 1.2+); the
	// pair is re-read when either file changes. Default "" (plain HTTP).
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// ClientCAFile enables device mTLS: a client certificate signed by one
	// of these CAs, whose CN or a URI SAN names a registered device or
	// gateway, authenticates it without a key. Needs TLS. Default "".
	ClientCAFile string `yaml:"client_ca_file"`
}

// TLS reports whether HTTPS is configured.
func (c Config) TLS() bool { return c.TLSCertFile != "" }

// Default is the http section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{Addr: "127.0.0.1:8080", ReadTimeout: 30 * time.Second, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 120 * time.Second, ShutdownTimeout: 15 * time.Second}
}

// Validate checks the http section; errors name the key below "http.".
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr: %q is not [host]:port: %w", c.Addr, err)
	}
	for name, d := range map[string]time.Duration{"read_timeout": c.ReadTimeout, "read_header_timeout": c.ReadHeaderTimeout,
		"write_timeout": c.WriteTimeout, "idle_timeout": c.IdleTimeout, "shutdown_timeout": c.ShutdownTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", name, d)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("tls_cert_file and tls_key_file: set both or neither")
	}
	if c.ClientCAFile != "" && !c.TLS() {
		return fmt.Errorf("client_ca_file: device certificates need HTTPS; set tls_cert_file and tls_key_file too")
	}
	for name, f := range map[string]string{"tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile, "client_ca_file": c.ClientCAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}
