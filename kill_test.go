package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
)

// TestKillNineLosesNothing kills the server with SIGKILL while readings are
// posted (five times; the pipeline commits a transaction every few
// milliseconds under this load, so kills land mid-transaction), then stops
// it once with SIGTERM, restarting it each time on the same data dir. It
// reads the enriched topic from offset 0 with a read_committed consumer:
// every reading that got a 202 is there exactly once, and no reading is
// there twice.
func TestKillNineLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test skipped in -short mode")
	}
	s := newServer(t, t.TempDir(), "VIGIL_PIPELINE_SNAPSHOT_INTERVAL=1s")
	s.startProcess()
	var gwKey string
	{
		code, b, _ := s.do("POST", "/api/v1/gateways", s.token, "application/json", []byte(`{"gateway_id":"gw-1","device_prefixes":["dev-"]}`))
		if code != http.StatusCreated {
			t.Fatalf("gateway: %d %s", code, b)
		}
		var out struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		gwKey = out.Key
	}
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		seq   atomic.Int64
	)
	rng := rand.New(rand.NewPCG(7, 7))
	const rounds = 6 // five SIGKILLs, then one graceful SIGTERM
	for round := 0; round < rounds; round++ {
		if round > 0 {
			s.startProcess()
		}
		before := s.metric("vigil_pipeline_readings_total")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					var b strings.Builder
					ids := make([]string, 50)
					b.WriteByte('[')
					for i := range ids {
						n := seq.Add(1)
						ids[i] = fmt.Sprintf("r%d", n)
						if i > 0 {
							b.WriteByte(',')
						}
						fmt.Fprintf(&b, `{"device_id":"dev-%d","id":%q,"ts":%d,"metrics":{"v":%d}}`, n%20, ids[i], time.Now().Add(-time.Hour).UnixMilli()+n, n%97)
					}
					b.WriteByte(']')
					req, _ := http.NewRequest("POST", s.httpURL+"/v1/ingest", strings.NewReader(b.String()))
					req.Header.Set("Authorization", "Bearer "+gwKey)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted {
						mu.Lock()
						for _, id := range ids {
							acked[id] = true
						}
						mu.Unlock()
					}
				}
			}()
		}
		// Let the pipeline get busy, then kill at a random moment.
		waitFor(t, 20*time.Second, "the pipeline to process readings this round", func() bool {
			return s.metric("vigil_pipeline_readings_total") > before+500
		})
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond) // a random kill moment, not a wait for a condition
		if round < rounds-1 {
			s.kill()
		} else {
			// graceful: stop taking requests, commit the batch in flight, exit 0
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-s.done:
				if err != nil {
					t.Fatalf("SIGTERM: vigil exited with %v\n%s", err, s.logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("SIGTERM: vigil did not stop within 30s")
			}
			if !strings.Contains(s.logs.String(), "Vigil stopped") {
				t.Fatal("SIGTERM: no orderly stop in the log")
			}
			checkShutdownPhases(t, s.logs.String(), 60*time.Second)
		}
		close(stop)
		wg.Wait()
	}
	s.startProcess()
	defer s.stop()
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	if want < 1000 {
		t.Fatalf("only %d readings acknowledged; the test did not load the server", want)
	}

	count := readingIDs(t, s.kafka, func(c enrichedCounts) bool { return allIn(acked, c.IDs) }, 90*time.Second).IDs
	lost, dup := 0, 0
	var lostEx, dupEx []string
	for id := range acked {
		if count[id] == 0 {
			lost++
			if len(lostEx) < 5 {
				lostEx = append(lostEx, id)
			}
		}
	}
	for id, n := range count {
		if n > 1 {
			dup++
			if len(dupEx) < 5 {
				dupEx = append(dupEx, fmt.Sprintf("%s×%d", id, n))
			}
		}
	}
	t.Logf("%d stops (SIGKILL, then SIGTERM last); %d readings acknowledged, %d distinct readings enriched, %d lost, %d duplicated", rounds, want, len(count), lost, dup)
	if lost > 0 || dup > 0 {
		t.Fatalf("lost %d acknowledged readings (e.g. %v), %d duplicated (e.g. %v)", lost, lostEx, dup, dupEx)
	}
}
