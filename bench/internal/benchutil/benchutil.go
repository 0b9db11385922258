// Package benchutil is what the benchmark programs share: the admin token
// they start Vigil with, and the HTTP calls they make to it.
package benchutil

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
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
	code, _, err := PostAnswer(client, url, key, body)
	return code, err
}

// PostAnswer is Post that also returns the start of the answer's body (a
// refusal names its reason there).
func PostAnswer(client *http.Client, url, key string, body []byte) (int, string, error) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(head), nil
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

// Buckets reads histogram name's cumulative bucket counts from /metrics,
// by upper bound (+Inf included); nil when absent or unreachable.
func Buckets(base, name string) map[float64]float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out map[float64]float64
	prefix := name + `_bucket{le="`
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		le, rest, ok := strings.Cut(line, `"} `)
		if !ok {
			continue
		}
		ub, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err1 == nil && err2 == nil {
			if out == nil {
				out = map[float64]float64{}
			}
			out[ub] = n
		}
	}
	return out
}

// Quantile is the upper bound of the bucket that holds quantile q of the
// observations made between two reads of a histogram's buckets, and how
// many there were: a bound, to the histogram's resolution, not a value.
func Quantile(before, after map[float64]float64, q float64) (float64, float64) {
	ubs := make([]float64, 0, len(after))
	for ub := range after {
		ubs = append(ubs, ub)
	}
	slices.Sort(ubs)
	if len(ubs) == 0 {
		return math.NaN(), 0
	}
	total := after[ubs[len(ubs)-1]] - before[ubs[len(ubs)-1]]
	for _, ub := range ubs {
		if after[ub]-before[ub] >= q*total {
			return ub, total
		}
	}
	return math.Inf(1), total
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
