package main

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	phaseLine    = regexp.MustCompile(`shutdown phase done\s+\{.*"phase": "(\w+)", "took": ([0-9.e+-]+)\}`)
	finishedLine = regexp.MustCompile(`shutdown finished\s+\{.*"took": ([0-9.e+-]+), "budget"`)
)

// checkShutdownPhases: the log of a graceful stop shows every phase, in
// order, each with its duration, and the whole within budget.
func checkShutdownPhases(t *testing.T, logs string, budget time.Duration) {
	t.Helper()
	var got []string
	for _, m := range phaseLine.FindAllStringSubmatch(logs, -1) {
		if _, err := time.ParseDuration(m[2] + "s"); err != nil {
			t.Errorf("phase %s: duration %q: %v", m[1], m[2], err)
		}
		got = append(got, m[1])
	}
	want := []string{"http", "ingest", "stream", "archive", "models", "readers", "broker"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("shutdown phases logged: %v, want %v in order\n%s", got, want, logs)
	}
	m := finishedLine.FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no \"shutdown finished\" line\n%s", logs)
	}
	took, err := time.ParseDuration(m[1] + "s")
	if err != nil || took > budget {
		t.Fatalf("shutdown took %s (%v), budget %s", m[1], err, budget)
	}
	t.Logf("shutdown phases %v in %s", got, took)
}

// TestSecondSignalForcesExit: a request held open keeps the HTTP phase of
// the shutdown waiting; a second SIGTERM then exits at once, with code 2
// and a line that says what it skipped.
func TestSecondSignalForcesExit(t *testing.T) {
	if testing.Short() {
		t.Skip("process test skipped in -short mode")
	}
	s := newServer(t, t.TempDir(), "VIGIL_HTTP_SHUTDOWN_TIMEOUT=60s", "VIGIL_HTTP_READ_TIMEOUT=90s")
	s.startProcess()
	// a request whose body never ends: HTTP's graceful stop waits for it
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
	time.Sleep(200 * time.Millisecond) // the request reaches the handler; nothing to poll for from outside
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the shutdown to start", func() bool { return strings.Contains(s.logs.String(), "stopping in order") })
	time.Sleep(300 * time.Millisecond) // inside the HTTP phase, which waits for the open request
	select {
	case err := <-s.done:
		t.Fatalf("vigil stopped before the second signal (%v); the held request did not hold the HTTP phase\n%s", err, s.logs.String())
	default:
	}
	sent := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("second SIGTERM: exit %v, want code 2\n%s", err, s.logs.String())
		}
		t.Logf("exited %s after the second signal", time.Since(sent).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatalf("vigil did not exit within 5s of a second SIGTERM\n%s", s.logs.String())
	}
	if !strings.Contains(s.logs.String(), "second signal") {
		t.Fatalf("no line about the forced exit\n%s", s.logs.String())
	}
	if strings.Contains(s.logs.String(), "shutdown finished") {
		t.Fatalf("the shutdown finished although it was held\n%s", s.logs.String())
	}
}
