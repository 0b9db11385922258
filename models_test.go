package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/eval"
	"github.com/vigil/vigil/internal/testminio"
	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/storage"
)

// leaseClient gives up on a process that does not answer (a stopped one).
var leaseClient = &http.Client{Timeout: 2 * time.Second}

// leaseView is GET /api/v1/lease.
type leaseView struct {
	Lease       ml.LeaseRecord `json:"lease"`
	ThisProcess ml.Status      `json:"this_process"`
}

func (s *server) lease() (leaseView, bool) {
	var v leaseView
	req, _ := http.NewRequest("GET", s.httpURL+"/api/v1/lease", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := leaseClient.Do(req)
	if err != nil {
		return v, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || json.UnmarshalRead(resp.Body, &v, json.RejectUnknownMembers(false)) != nil {
		return v, false
	}
	return v, true
}

// enrichedModels reads s's enriched topic (read_committed, from the start)
// until it is drained and returns, per reading id, the models that scored
// it (one per enriched record), and per partition the models in offset order.
func enrichedModels(t *testing.T, s *server) (map[string][]string, map[int32][]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.kafka), kgo.ConsumeTopics("vigil.enriched"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byID := map[string][]string{}
	byPart := map[int32][]string{}
	for empty := 0; empty < 2; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		if fs.NumRecords() == 0 {
			empty++
			continue
		}
		empty = 0
		fs.EachRecord(func(r *kgo.Record) {
			var e struct {
				ID    string `json:"id"`
				Model string `json:"model"`
			}
			if err := json.Unmarshal(r.Value, &e, json.RejectUnknownMembers(false)); err != nil {
				t.Errorf("enriched record %d/%d: %v", r.Partition, r.Offset, err)
				return
			}
			byID[e.ID] = append(byID[e.ID], e.Model)
			byPart[r.Partition] = append(byPart[r.Partition], e.Model)
		})
	}
	return byID, byPart
}

// TestModelsThreeProcesses runs three Vigil processes (three regions, each
// with its own embedded Kafka) on one shared bucket, the local store and
// a real MinIO:
//   - exactly one holds the trainer lease, and only it trains (on the
//     archive of all three regions) when any of them is asked to;
//   - a model promoted through one process's API reaches all three within
//     10 s, and while readings keep flowing every acknowledged reading is
//     scored exactly once, by the old model and then, from the swap on, by
//     the new one;
//   - SIGKILL the trainer: another takes the lease, with the next epoch,
//     within the lease TTL plus the margin stated below.
func TestModelsThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	for _, backend := range []string{"local", "minio"} {
		t.Run(backend, func(t *testing.T) {
			const ttl = 3 * time.Second
			env := []string{"VIGIL_MODELS_LEASE_TTL=3s", "VIGIL_MODELS_POLL_INTERVAL=500ms", "VIGIL_MODELS_PROMOTE=manual",
				"VIGIL_MODELS_MIN_NEW_ROWS=1000000000", "VIGIL_MODELS_MAX_ROWS=20000", "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_KAFKA_PARTITIONS=2"}
			var st storage.Store
			var err error
			if backend == "local" {
				dir := t.TempDir()
				env = append(env, "VIGIL_STORAGE_DIR="+dir)
				st, err = storage.NewLocal(dir)
			} else {
				m := testminio.Start(t)
				env = append(env, "VIGIL_STORAGE_ENDPOINT=http://"+m.Endpoint, "VIGIL_STORAGE_ACCESS_KEY="+m.AccessKey, "VIGIL_STORAGE_SECRET_KEY="+m.SecretKey, "VIGIL_STORAGE_BUCKET=shared")
				st, err = storage.NewS3(context.Background(), storage.Config{Endpoint: m.Endpoint, Bucket: "shared", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
			}
			if err != nil {
				t.Fatal(err)
			}
			var procs []*server
			for i := 0; i < 3; i++ {
				s := newServer(t, t.TempDir(), append([]string{fmt.Sprintf("VIGIL_REGION=r%d", i), fmt.Sprintf("VIGIL_MODELS_HOLDER=p%d", i)}, env...)...)
				s.startProcess()
				procs = append(procs, s)
			}
			defer func() {
				for _, s := range procs {
					if s.cmd.ProcessState == nil {
						s.stop()
					}
				}
			}()
			leader := func() (*server, int64, int) {
				var who *server
				var epoch int64
				n := 0
				for _, s := range procs {
					if s.cmd.ProcessState != nil {
						continue
					}
					if v, ok := s.lease(); ok && v.ThisProcess.Leading {
						who, epoch = s, v.ThisProcess.Epoch
						n++
					}
				}
				return who, epoch, n
			}
			waitFor(t, 20*time.Second, "one trainer", func() bool { _, _, n := leader(); return n == 1 })
			lead, epoch, _ := leader()
			// stays one across several renewals
			for i := 0; i < 5; i++ {
				time.Sleep(ttl / 3)
				if _, _, n := leader(); n != 1 {
					t.Fatalf("%d processes lead", n)
				}
			}

			// data in every region's archive
			var posters []*poster
			for i, s := range procs {
				posters = append(posters, newPoster(s, gatewayKey(t, s), fmt.Sprintf("p%d-", i), 1, 5*time.Millisecond))
			}
			waitFor(t, 60*time.Second, "archive objects from three regions", func() bool {
				objs, err := st.List(context.Background(), "enriched/")
				if err != nil {
					return false
				}
				seen := map[string]bool{}
				for _, o := range objs {
					for i := 0; i < 3; i++ {
						if strings.Contains(o.Key, fmt.Sprintf("region=r%d/", i)) {
							seen[fmt.Sprint(i)] = true
						}
					}
				}
				return len(seen) == 3
			})
			// ask a process that is not the trainer
			var other *server
			for _, s := range procs {
				if s != lead {
					other = s
					break
				}
			}
			if code, b, _ := other.do("POST", "/api/v1/models/train", other.token, "", nil); code != http.StatusAccepted {
				t.Fatalf("train request: %d %s", code, b)
			}
			var models struct {
				Models []ml.ModelMeta `json:"models"`
			}
			waitFor(t, 90*time.Second, "a trained model", func() bool {
				code, b, _ := other.do("GET", "/api/v1/models", other.token, "", nil)
				return code == 200 && json.Unmarshal(b, &models, json.RejectUnknownMembers(false)) == nil && len(models.Models) > 0
			})
			m := models.Models[0]
			leadView, _ := lead.lease()
			if m.Holder != leadView.ThisProcess.Holder || m.Epoch != epoch || len(m.CV) == 0 || len(m.CV[0].Folds) != 3 {
				t.Fatalf("model %s by %s at epoch %d with %d CV candidates; want the trainer %s at epoch %d, CV recorded", m.Version, m.Holder, m.Epoch, len(m.CV), leadView.ThisProcess.Holder, epoch)
			}
			if strings.Join(m.Data.Regions, ",") != "r0,r1,r2" {
				t.Fatalf("model trained on regions %v, want all three", m.Data.Regions)
			}
			for _, s := range procs {
				n := strings.Count(s.logs.String(), "training started")
				if (s == lead) != (n == 1) {
					t.Fatalf("%s logged %d training starts (trainer: %v)", s.httpURL, n, s == lead)
				}
			}

			// promote through a third process's API; time until all run it
			promoted := time.Now()
			if code, b, _ := procs[2].do("POST", "/api/v1/models/"+m.Version+"/promote", procs[2].token, "", nil); code != 200 {
				t.Fatalf("promote: %d %s", code, b)
			}
			var slowest time.Duration
			for _, s := range procs {
				waitFor(t, 10*time.Second, s.httpURL+" running the promoted model", func() bool {
					v, ok := s.lease()
					return ok && v.ThisProcess.Running == m.Version
				})
				slowest = max(slowest, time.Since(promoted))
			}
			t.Logf("promoted model %s running in all three processes %s after the API call", m.Version, slowest.Round(time.Millisecond))
			// readings keep flowing across the swap; then every acknowledged
			// reading must be scored exactly once, old model before new
			time.Sleep(2 * time.Second)
			for i, s := range procs {
				acked := posters[i].halt()
				byID, byPart := enrichedModels(t, s)
				var lost, dup, byNew int
				for id := range acked {
					switch n := len(byID[id]); {
					case n == 0:
						lost++
					case n > 1:
						dup++
					}
					if ms := byID[id]; len(ms) > 0 && ms[0] == m.Version {
						byNew++
					}
				}
				if lost > 0 || dup > 0 || byNew == 0 {
					t.Fatalf("region r%d: %d acknowledged, %d lost, %d scored twice, %d scored by the new model", i, len(acked), lost, dup, byNew)
				}
				for p, ms := range byPart {
					swapped := false
					for _, name := range ms {
						if name == m.Version {
							swapped = true
						} else if swapped {
							t.Fatalf("region r%d partition %d: a reading scored by %s after the swap to %s", i, p, name, m.Version)
						}
					}
				}
				t.Logf("region r%d: %d acknowledged readings, each scored once; %d by the new model", i, len(acked), byNew)
			}

			// SIGKILL the trainer; another takes over after the TTL. The
			// challenger starts counting when it first sees the last renewal
			// (up to ttl/3 after it) and checks every ttl/3: takeover comes
			// at most ttl + 2*ttl/3 after the kill, plus store latency; the
			// margin allowed is 1 s on top.
			killed := time.Now()
			lead.kill()
			bound := ttl + 2*ttl/3 + time.Second
			waitFor(t, bound, "a new trainer", func() bool { _, _, n := leader(); return n == 1 })
			took := time.Since(killed)
			next, nextEpoch, _ := leader()
			if next == lead || nextEpoch != epoch+1 {
				t.Fatalf("after the kill: leader epoch %d, want %d", nextEpoch, epoch+1)
			}
			// the TTL runs from the last renewal the challenger saw, which came
			// up to ttl/3 before the kill
			if took < ttl-ttl/3-200*time.Millisecond {
				t.Fatalf("took over %s after the kill: less than the TTL (%s) after the last renewal", took, ttl)
			}
			t.Logf("trainer killed; %s took over after %s (TTL %s, bound %s) at epoch %d", next.httpURL, took.Round(time.Millisecond), ttl, bound, nextEpoch)
			waitFor(t, 5*time.Second, "the registry fenced at the new epoch", func() bool {
				cur, _, err := (&ml.Registry{Store: st}).Current(context.Background())
				return err == nil && cur.Fence == nextEpoch
			})

			// SIGSTOP the new trainer (a paused process, not a dead one): the
			// last process takes over; SIGCONT: the paused one finds its
			// renewal refused and steps down, and one trainer remains
			paused := next
			if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, bound+2*time.Second, "a trainer while the old one is paused", func() bool {
				s, e, n := leader()
				return n == 1 && s != paused && e == nextEpoch+1
			})
			if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*ttl, "the resumed old trainer to step down", func() bool {
				return strings.Contains(paused.logs.String(), "no longer the trainer")
			})
			for i := 0; i < 3; i++ {
				time.Sleep(ttl / 3)
				if s, e, n := leader(); n != 1 || s == paused || e != nextEpoch+1 {
					t.Fatalf("after the paused trainer resumed: %d leaders, epoch %d", n, e)
				}
			}
			waitFor(t, 5*time.Second, "the registry fenced at the newest epoch", func() bool {
				cur, _, err := (&ml.Registry{Store: st}).Current(context.Background())
				return err == nil && cur.Fence == nextEpoch+1
			})
			// the epoch-1 model can no longer be promoted, by anyone
			now, _, _ := leader()
			if code, b, _ := now.do("POST", "/api/v1/models/"+m.Version+"/promote", now.token, "", nil); code != http.StatusConflict || !strings.Contains(string(b), "fenced") {
				t.Fatalf("promote of the epoch-%d model after the fence rose to %d: %d %s", m.Epoch, nextEpoch+1, code, b)
			}
			t.Logf("paused trainer replaced at epoch %d; after SIGCONT it stepped down; the epoch-%d model is refused (409)", nextEpoch+1, m.Epoch)
		})
	}
}

// TestTrainOnSKAB replays the whole SKAB set, with its labels in the
// readings' label field, through the ingest API into the archive, asks for
// training, and checks the model's metadata: the CV folds and metrics of
// every candidate (isolation forest, random forest, MLP), calibrated for
// the best F1 on the labels.
func TestTrainOnSKAB(t *testing.T) {
	if testing.Short() {
		t.Skip("replays 37,000 readings")
	}
	series, err := eval.LoadSKAB(filepath.Join("..", "shared", "data", "skab"))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range series {
		total += len(s.Rows)
	}
	s := newServer(t, t.TempDir(), "VIGIL_ARCHIVE_FLUSH_INTERVAL=1s", "VIGIL_MODELS_PROMOTE=manual", "VIGIL_MODELS_MIN_NEW_ROWS=1000000000",
		"VIGIL_MODELS_LEASE_TTL=2s", "VIGIL_MODELS_SUPERVISED_ROWS=1200", "VIGIL_MODELS_MAX_ROWS=12000")
	s.startInProcess()
	defer s.stop()
	if _, err := eval.Run(context.Background(), eval.Options{URL: s.httpURL, AdminToken: s.token, Kafka: []string{s.kafka}, Warmup: 400, SendLabels: true}, series); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the replay archived", func() bool { return s.metric("vigil_archive_rows_total") >= float64(total) })
	if code, b, _ := s.do("POST", "/api/v1/models/train", s.token, "", nil); code != http.StatusAccepted {
		t.Fatalf("train: %d %s", code, b)
	}
	var models struct {
		Models []ml.ModelMeta `json:"models"`
	}
	waitFor(t, 300*time.Second, "a model trained on SKAB", func() bool {
		code, b, _ := s.do("GET", "/api/v1/models", s.token, "", nil)
		return code == 200 && json.Unmarshal(b, &models, json.RejectUnknownMembers(false)) == nil && len(models.Models) > 0
	})
	m := models.Models[0]
	if m.Data.RowsRead != int64(total) || m.Data.Labelled == 0 || m.Data.Anomalies == 0 || m.Calibration != "best_f1" {
		t.Fatalf("trained on %d rows (want %d), %d labelled, %d anomalies, calibration %s", m.Data.RowsRead, total, m.Data.Labelled, m.Data.Anomalies, m.Calibration)
	}
	seen := map[string]bool{}
	for _, c := range m.CV {
		seen[c.Model] = true
		if len(c.Folds) != 3 {
			t.Fatalf("%s: %d folds recorded", c.Model, len(c.Folds))
		}
		for _, f := range c.Folds {
			if f.TestRows == 0 || f.TrainRows == 0 {
				t.Fatalf("%s fold %+v is empty", c.Model, f)
			}
		}
		t.Logf("%-12s %v: held-out F1 per fold %.3f %.3f %.3f, mean %.3f (%.1f s)", c.Model, c.Params, c.Folds[0].F1, c.Folds[1].F1, c.Folds[2].F1, c.MeanF1, c.Seconds)
	}
	if !seen["iforest"] || !seen["randomforest"] || !seen["mlp"] {
		t.Fatalf("CV covered %v; want iforest, randomforest and mlp", seen)
	}
	t.Logf("winner %s %v, threshold %.4f, %d rows (%d labelled, %d anomalies), %d trees, %d nodes, %d bytes, %.1f s",
		m.Winner, m.Params, m.Threshold, m.Data.Rows, m.Data.Labelled, m.Data.Anomalies, m.Trees, m.Nodes, m.ModelBytes, m.TrainSecs)
}

// The models API refuses what it cannot do, naming the problem.
func TestModelsAPIErrors(t *testing.T) {
	s := newServer(t, t.TempDir())
	s.startInProcess()
	defer s.stop()
	for _, c := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", "/api/v1/models/no-such-model/promote", "", 404, "no such model"},
		{"POST", "/api/v1/models/bad%2Fname/promote", "", 400, "not a model version"},
		{"POST", "/api/v1/models/no-such-model/shadow", "", 404, "no such model"},
		{"POST", "/api/v1/models/rollback", "", 400, "nothing to roll back to"},
		{"POST", "/api/v1/models/rollback", `{"version":"gone"}`, 404, "no such model"},
		{"POST", "/api/v1/models/rollback", `{"version":`, 400, ""},
		{"GET", "/api/v1/models/no-such-model", "", 404, "no such model"},
	} {
		ct := ""
		if c.body != "" {
			ct = "application/json"
		}
		code, b, _ := s.do(c.method, c.path, s.token, ct, []byte(c.body))
		if code != c.code || !strings.Contains(string(b), c.msg) || !strings.Contains(string(b), `"error"`) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", c.method, c.path, c.body, code, b, c.code, c.msg)
		}
	}
	code, b, _ := s.do("GET", "/api/v1/models", s.token, "", nil)
	if code != 200 || !strings.Contains(string(b), `"models":[]`) || !strings.Contains(string(b), `"version":"baseline-v1"`) {
		t.Fatalf("empty registry: %d %s", code, b)
	}
	v, ok := s.lease()
	waitFor(t, 10*time.Second, "this process to lead", func() bool { v, ok = s.lease(); return ok && v.ThisProcess.Leading })
	if v.Lease.Epoch != 1 || v.ThisProcess.LeaseError != "" {
		t.Fatalf("lease %+v", v)
	}
}
