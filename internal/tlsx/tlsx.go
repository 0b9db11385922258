// Package tlsx serves TLS from certificate files that may change: the
// certificate and key are re-read when either file's modification time
// changes (checked at most once a second, at handshakes), so a renewed
// certificate is served without a restart.
package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader holds the current certificate of a cert/key file pair.
type Reloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modCert time.Time
	modKey  time.Time
	checked time.Time
	lastErr error
}

// NewReloader loads the pair once; an error names the file at fault.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) load() error {
	ci, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("tls cert file: %w", err)
	}
	ki, err := os.Stat(r.keyFile)
	if err != nil {
		return fmt.Errorf("tls key file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls cert %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.modCert, r.modKey = &cert, ci.ModTime(), ki.ModTime()
	return nil
}

// GetCertificate is tls.Config.GetCertificate: the pair as it is on disk
// now (a pair that fails to load keeps the previous one being served).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		r.checked = time.Now()
		ci, err1 := os.Stat(r.certFile)
		ki, err2 := os.Stat(r.keyFile)
		if err := errors.Join(err1, err2); err == nil && (!ci.ModTime().Equal(r.modCert) || !ki.ModTime().Equal(r.modKey)) {
			r.lastErr = r.load()
		}
	}
	return r.cert, nil
}

// LastError is the error of the last reload that failed (nil: none).
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// ClientCAs reads a PEM bundle of the CAs that sign client certificates.
func ClientCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// ServerConfig is the TLS of Vigil's listeners (HTTP and MQTT): the
// certificate reloaded on change, and, with clientCAFile, client
// certificates verified when given (a key still works without one).
func ServerConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	rl, err := NewReloader(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: rl.GetCertificate}
	if clientCAFile != "" {
		pool, err := ClientCAs(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}
