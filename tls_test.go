package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate: a server one for 127.0.0.1, or a client
// one with the CN cn.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

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
	ca, other := newTestCA(t, "vigil test CA"), newTestCA(t, "another CA")
	srvCert, srvKey := ca.issue(t, "vigil", 100, true)
	certFile, keyFile, caFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	writeFile(t, certFile, srvCert)
	writeFile(t, keyFile, srvKey)
	writeFile(t, caFile, ca.pem)
	s := newServer(t, filepath.Join(dir, "data"), "VIGIL_HTTP_TLS_CERT_FILE="+certFile, "VIGIL_HTTP_TLS_KEY_FILE="+keyFile, "VIGIL_HTTP_CLIENT_CA_FILE="+caFile)
	s.httpURL = strings.Replace(s.httpURL, "http://", "https://", 1)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
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
	certA, privA := ca.issue(t, "tls-dev-a", 200, false)
	clA := clientFor(certA, privA)
	if code, b := post(clA, "", "tls-dev-a"); code != 202 {
		t.Fatalf("device A by its certificate: %d %s", code, b)
	}
	if code, b := post(clA, "", "tls-dev-b"); code != 403 || !strings.Contains(b, "tls-dev-b") {
		t.Fatalf("device A's certificate posting for device B: %d %s", code, b)
	}
	unknown, privU := ca.issue(t, "nobody", 201, false)
	if code, b := post(clientFor(unknown, privU), "", "tls-dev-a"); code != 401 || !strings.Contains(b, "names no registered device") {
		t.Fatalf("a certificate naming no device: %d %s", code, b)
	}
	// a certificate from another CA, sent even though the server does not
	// ask for that CA: the handshake fails
	foreign, privF := other.issue(t, "tls-dev-a", 300, false)
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
	newCert, newKey := ca.issue(t, "vigil", 101, true)
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
