// Package testminio starts a real MinIO server on loopback for tests: four
// drives in one temporary folder (erasure-coded, MINIO_CI_CD=1 since the
// drives share a disk). The binary is $VIGIL_MINIO_BIN, `minio` on PATH, or
// ~/.cache/vigil/bin/minio (where scripts/test.sh builds it).
package testminio

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakOptions are the goleak options of packages whose tests use MinIO:
// the HTTP client's idle keep-alive connections outlive a test by design.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait")}
}

// Server is a running MinIO.
type Server struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Dir       string   // parent of the drives
	Drives    []string // the four drive folders

	bin      string
	addr     string
	certsDir string // set: MinIO serves HTTPS with public.crt/private.key from it
	roots    *x509.CertPool
	mu       sync.Mutex
	cmd      *exec.Cmd
	logs     *os.File
}

// Binary finds the MinIO server binary, or "".
func Binary() string {
	if p := os.Getenv("VIGIL_MINIO_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "vigil", "bin", "minio")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Start starts MinIO and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "", nil)
}

func start(t testing.TB, certsDir string, roots *x509.CertPool) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		t.Fatal("the MinIO server binary is needed: run ./scripts/test.sh (it builds it into ~/.cache/vigil/bin) or set VIGIL_MINIO_BIN")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Endpoint: addr, AccessKey: "vigiltest", SecretKey: "vigiltest-secret", Dir: dir, bin: bin, addr: addr, certsDir: certsDir, roots: roots}
	for i := 1; i <= 4; i++ {
		s.Drives = append(s.Drives, filepath.Join(dir, fmt.Sprintf("d%d", i)))
	}
	s.logs, err = os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.Start(t)
	t.Cleanup(func() { s.Stop(); s.logs.Close() })
	return s
}

// StartTLS starts MinIO serving HTTPS with the given certificate and key
// (PEM), signed by the CA caPEM; its Endpoint is still host:port.
func StartTLS(t testing.TB, certPEM, keyPEM, caPEM []byte) *Server {
	t.Helper()
	certs := t.TempDir()
	if err := os.WriteFile(filepath.Join(certs, "public.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "private.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return start(t, certs, pool)
}

// Start (re)starts the server process and waits until it serves writes.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	args := []string{"server", "--quiet", "--address", s.addr, "--console-address", "127.0.0.1:0"}
	scheme, client := "http://", http.DefaultClient
	if s.certsDir != "" {
		args = append(args, "--certs-dir", s.certsDir)
		scheme = "https://"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}}}
	}
	cmd := exec.Command(s.bin, append(args, filepath.Join(s.Dir, "d{1...4}"))...)
	cmd.Env = append(os.Environ(), "MINIO_CI_CD=1", "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start minio: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(scheme + s.addr + "/minio/health/cluster")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s.logs.Name())
			t.Fatalf("minio not ready after 60s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server process (SIGTERM, then SIGKILL after 10 s).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}
