// Package benchutil is what the benchmark programs share: the admin token
// they start Vigil with, and the HTTP calls they make to it.
package benchutil

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
)

// Token is the admin token the benchmarks start Vigil with.
const Token = "bench-token-0123456789abcdef012345"

// FreeAddr is a loopback address free a moment ago.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Post sends one ingest body with a device or gateway key; it returns the status.
func Post(client *http.Client, url, key string, body []byte) (int, error) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Gateway registers a gateway for the ids under prefix and returns its key.
func Gateway(base, id, prefix string) (string, error) {
	req, _ := http.NewRequest("POST", base+"/api/v1/gateways", strings.NewReader(`{"gateway_id":"`+id+`","device_prefixes":["`+prefix+`"]}`))
	req.Header.Set("Authorization", "Bearer "+Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Key string `json:"key"`
	}
	if err := json.UnmarshalRead(resp.Body, &out); err != nil || resp.StatusCode != 201 {
		return "", fmt.Errorf("register gateway: %d %w", resp.StatusCode, err)
	}
	return out.Key, nil
}

// AdminGet is a GET with the admin token (the profiler, say).
func AdminGet(url string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+Token)
	return http.DefaultClient.Do(req)
}

// Metric reads one metric from /metrics: its value, or the sum of its
// labelled series; 0 when absent or unreachable.
func Metric(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// Profile fetches Vigil's CPU profile over the next seconds into path.
func Profile(base, path string, seconds int) <-chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := AdminGet(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}
