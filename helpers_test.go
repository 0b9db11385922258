package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"go.uber.org/goleak"

	"github.com/vigil/vigil/internal/testminio"
	"github.com/vigil/vigil/internal/testutil"
)

var vigilBin string // built once by TestMain for the tests that run vigil as a process

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vigilBin = filepath.Join(dir, "vigil")
	if out, err := exec.Command("go", "build", "-o", vigilBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build vigil: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(testminio.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var waitFor = testutil.WaitFor

var freeAddr = testutil.FreeAddr

// server is a Vigil under test: in process (run) or as a child process.
type server struct {
	t       testing.TB
	dir     string
	httpURL string
	kafka   string
	token   string
	env     []string
	client  *http.Client // nil: http.DefaultClient (the TLS tests set one)
	config  string       // a config file for --config, when set

	cancel context.CancelFunc
	done   chan error
	cmd    *exec.Cmd
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newServer(t testing.TB, dir string, extraEnv ...string) *server {
	s := &server{t: t, dir: dir, token: "test-admin-token-0123456789abcdef", logs: &syncBuffer{}}
	httpAddr, kafkaAddr := freeAddr(t), freeAddr(t)
	s.httpURL, s.kafka = "http://"+httpAddr, kafkaAddr
	s.env = append([]string{
		"VIGIL_DATA_DIR=" + dir, "VIGIL_HTTP_ADDR=" + httpAddr, "VIGIL_KAFKA_EMBEDDED_ADDR=" + kafkaAddr,
		"VIGIL_ADMIN_TOKEN=" + s.token, "VIGIL_KAFKA_PARTITIONS=4", "VIGIL_LOG_LEVEL=info",
		// the trainer trains only when a test asks (POST /api/v1/models/train)
		"VIGIL_MODELS_MIN_NEW_ROWS=1000000000",
	}, extraEnv...)
	return s
}

// startInProcess runs `vigil serve` in this process and waits until ready.
func (s *server) startInProcess() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- run(ctx, s.serveArgs(), s.env, io.Discard, s.logs) }()
	s.waitReady(30 * time.Second)
}

// startProcess runs the vigil binary and waits until ready.
func (s *server) startProcess() {
	s.t.Helper()
	s.cmd = exec.Command(vigilBin, s.serveArgs()...)
	s.cmd.Env = append(os.Environ(), s.env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	s.waitReady(60 * time.Second)
}

func (s *server) serveArgs() []string {
	if s.config != "" {
		return []string{"serve", "--config", s.config}
	}
	return []string{"serve"}
}

func (s *server) httpClient() *http.Client {
	if s.client != nil {
		return s.client
	}
	return http.DefaultClient
}

func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := s.httpClient().Get(s.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-s.done:
			s.t.Fatalf("vigil exited before it was ready: %v\n%s", err, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("vigil not ready after %s\n%s", timeout, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the server gracefully (cancel or SIGTERM) and waits.
func (s *server) stop() {
	s.t.Helper()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a test that failed may have left it stopped
		_ = s.cmd.Process.Signal(os.Interrupt)
	} else if s.cancel != nil {
		s.cancel()
	}
	select {
	case err := <-s.done:
		if err != nil && s.cmd == nil {
			s.t.Errorf("vigil stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		if s.cmd != nil {
			_ = s.cmd.Process.Kill() // not left behind the test
		}
		s.t.Fatalf("vigil did not stop within 60s\n%s", s.logs.String())
	}
}

func (s *server) kill() {
	s.t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.done
}

func (s *server) do(method, path, token, contentType string, body []byte) (int, []byte, http.Header) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.httpURL+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// registerDevice registers a device and returns its key.
func (s *server) registerDevice(id string, attrs map[string]any) string {
	s.t.Helper()
	body, _ := json.Marshal(map[string]any{"device_id": id, "attrs": attrs})
	code, b, _ := s.do("POST", "/api/v1/devices", s.token, "application/json", body)
	if code != http.StatusCreated {
		s.t.Fatalf("register %s: %d %s", id, code, b)
	}
	var out struct{ Key string }
	if err := json.Unmarshal(b, &out, json.MatchCaseInsensitiveNames(true)); err != nil || !strings.HasPrefix(out.Key, "vgl_") {
		s.t.Fatalf("register %s: bad answer %s (%v)", id, b, err)
	}
	return out.Key
}
