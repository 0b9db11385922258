package storage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil/vigil/internal/testminio"
	"github.com/vigil/vigil/internal/testutil"
)

// storage.ca_file: a MinIO serving HTTPS with a certificate from a private
// CA is reached with the CA file, and refused (naming the certificate)
// without it.
func TestS3PrivateCA(t *testing.T) {
	if testminio.Binary() == "" {
		t.Skip("no MinIO server binary (scripts/test.sh builds it)")
	}
	ca := testutil.NewCA(t, "private CA")
	cert, key := ca.Issue(t, "minio", 2, true)
	m := testminio.StartTLS(t, cert, key, ca.PEM)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Endpoint: "https://" + m.Endpoint, Bucket: "vigil-tls", AccessKey: m.AccessKey, SecretKey: m.SecretKey}
	if _, err := NewS3(ctx, cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA file: %v, want a certificate error", err)
	}
	cfg.CAFile = caFile
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st, err := NewS3(ctx, cfg)
	if err != nil {
		t.Fatalf("with the CA file: %v", err)
	}
	if _, err := st.Put(ctx, "x/y", bytes.NewReader([]byte("hello")), 5); err != nil {
		t.Fatal(err)
	}
	rc, _, err := st.Get(ctx, "x/y")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(rc)
	if b.String() != "hello" {
		t.Fatalf("read back %q", b.String())
	}
}
