package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"github.com/vigil/vigil/internal/testutil"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPSAndDeviceCertificates: with http.tls_* Vigil serves HTTPS
// (ingest and API); with http.client_ca_file a device authenticates by
// its client certificate, which cannot post for another device; a
// certificate from another CA is refused; a renewed server certificate is
// served without a restart.
func TestHTTPSAndDeviceCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := testutil.NewCA(t, "vigil test CA"), testutil.NewCA(t, "another CA")
	srvCert, srvKey := ca.Issue(t, "vigil", 100, true)
	certFile, keyFile, caFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	writeFile(t, certFile, srvCert)
	writeFile(t, keyFile, srvKey)
	writeFile(t, caFile, ca.PEM)
	s := newServer(t, filepath.Join(dir, "data"), "VIGIL_HTTP_TLS_CERT_FILE="+certFile, "VIGIL_HTTP_TLS_KEY_FILE="+keyFile, "VIGIL_HTTP_CLIENT_CA_FILE="+caFile)
	s.httpURL = strings.Replace(s.httpURL, "http://", "https://", 1)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	clientFor := func(certPEM, keyPEM []byte) *http.Client {
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if certPEM != nil {
			c, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	}
	s.client = clientFor(nil, nil)
	s.startInProcess()
	defer s.stop()

	keyA := s.registerDevice("tls-dev-a", nil) // the admin API over HTTPS
	s.registerDevice("tls-dev-b", nil)
	reading := func(dev string) []byte {
		return []byte(`{"device_id":"` + dev + `","ts":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano) + `","metrics":{"t":1}}`)
	}
	post := func(cl *http.Client, key, dev string) (int, string) {
		req, _ := http.NewRequest("POST", s.httpURL+"/v1/ingest", bytes.NewReader(reading(dev)))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, b := post(s.client, keyA, "tls-dev-a"); code != 202 {
		t.Fatalf("HTTPS ingest with a key: %d %s", code, b)
	}
	certA, privA := ca.Issue(t, "tls-dev-a", 200, false)
	clA := clientFor(certA, privA)
	if code, b := post(clA, "", "tls-dev-a"); code != 202 {
		t.Fatalf("device A by its certificate: %d %s", code, b)
	}
	if code, b := post(clA, "", "tls-dev-b"); code != 403 || !strings.Contains(b, "tls-dev-b") {
		t.Fatalf("device A's certificate posting for device B: %d %s", code, b)
	}
	unknown, privU := ca.Issue(t, "nobody", 201, false)
	if code, b := post(clientFor(unknown, privU), "", "tls-dev-a"); code != 401 || !strings.Contains(b, "names no registered device") {
		t.Fatalf("a certificate naming no device: %d %s", code, b)
	}
	// a certificate from another CA, sent even though the server does not
	// ask for that CA: the handshake fails
	foreign, privF := other.Issue(t, "tls-dev-a", 300, false)
	fc, _ := tls.X509KeyPair(foreign, privF)
	forced := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &fc, nil }}}}
	if code, b := post(forced, "", "tls-dev-a"); code != 0 {
		t.Fatalf("a certificate from another CA got an answer: %d %s", code, b)
	}
	if code, _ := post(clientFor(nil, nil), "", "tls-dev-a"); code != 401 {
		t.Fatalf("neither key nor certificate: %d", code)
	}

	// reload: a renewed certificate is served to new connections
	serial := func() int64 {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(s.httpURL, "https://"), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
		if err != nil {
			return -1
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("served certificate serial %d, want 100", got)
	}
	newCert, newKey := ca.Issue(t, "vigil", 101, true)
	writeFile(t, keyFile+".new", newKey)
	writeFile(t, certFile+".new", newCert)
	if err := os.Rename(keyFile+".new", keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".new", certFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the renewed certificate to be served", func() bool { return serial() == 101 })
}
