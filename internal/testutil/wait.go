// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"net"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, or fails t after timeout
// naming what it waited for. Tests wait on conditions, never on time.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreeAddr is a loopback address with a port free at the time of the
// call, and never one it gave before in this process: the kernel can hand
// a port just released to the next bind, so two addresses picked one
// after the other (a server's HTTP, Kafka and MQTT ports) could otherwise
// be the same (TestGrafanaDashboard's MQTT listener once met its own
// broker's port).
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		given.Lock()
		_, dup := given.m[addr]
		given.m[addr] = struct{}{}
		given.Unlock()
		if !dup {
			return addr
		}
	}
	t.Fatal("no loopback port that was not given out before in 100 tries")
	return ""
}

var given = struct {
	sync.Mutex
	m map[string]struct{}
}{m: map[string]struct{}{}}
