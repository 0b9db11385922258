package benchutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The load phases of the benchmark programs (bench/backbone, bench/fleet).

// WaitReady waits up to 60 s for /readyz.
func WaitReady(base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("vigil not ready after 60s")
}

// Payload builds a batch of n readings of the simulator's shape.
func Payload(rng *rand.Rand, devices int, n int, seq *atomic.Int64, evt time.Time) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		s := seq.Add(1)
		d := int(s) % devices
		fmt.Fprintf(&b, `{"device_id":"b-%d","id":"m%d","ts":%d,"metrics":{"temp_c":%.3f,"current_a":%.3f,"vibration":%.5f,"pressure_bar":%.4f},"attrs":{"status":"auto"}}`,
			d, s, evt.UnixMilli()+s/int64(devices), 60+rng.NormFloat64(), 5+0.1*rng.NormFloat64(), 0.03+0.002*rng.NormFloat64(), 3+0.03*rng.NormFloat64())
	}
	b.WriteByte(']')
	return b.Bytes()
}

// Throughput posts readings of `devices` devices as fast as the posters
// go for `seconds`, then waits for the pipeline to commit everything,
// timed from the first POST.
func Throughput(base, kafka, key string, devices, seconds, posters, batch int) (float64, error) {
	var (
		seq      atomic.Int64
		accepted atomic.Int64
		wg       sync.WaitGroup
	)
	evt := time.Now().Add(-48 * time.Hour)
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			for time.Now().Before(stop) {
				body := Payload(rng, devices, batch, &seq, evt)
				code, err := Post(client, base+"/v1/ingest", key, body)
				if err == nil && code == 202 {
					accepted.Add(int64(batch))
				} else if code == 429 || code == 503 {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}(p)
	}
	wg.Wait()
	posted := time.Since(start)
	want := accepted.Load()
	fmt.Printf("          posted %d readings in %s (%.0f/s acknowledged by ingest)\n", want, posted.Round(time.Millisecond), float64(want)/posted.Seconds())
	done, err := WaitEnriched(base, want, 120*time.Second)
	if err != nil {
		return 0, err
	}
	return float64(want) / done.Sub(start).Seconds(), nil
}

// WaitEnriched polls the pipeline's committed-readings counter until it
// reaches want, and returns when it did.
func WaitEnriched(base string, want int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n := Metric(base, "vigil_pipeline_readings_total"); n >= float64(want) {
			return time.Now(), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("pipeline committed %v of %d readings in %s", Metric(base, "vigil_pipeline_readings_total"), want, timeout)
}

// Latency runs a paced background load at rate readings/s and measures
// post-to-alert for outliers to probe devices, each warmed up first: 100
// a second of the phase (at least 400), so that the p99 of a 10-second
// phase is the tenth slowest of about 1,000 alerts, not the third of
// about 300 as before session 18 (its runs then spread from 64 to 246 ms
// at 50,000 readings/s).
func Latency(base, kafka, key string, seconds int, rate float64, batch int) (p50, p99 time.Duration, n int, actual float64, err error) {
	probes := max(400, 100*seconds)
	client := &http.Client{Timeout: 30 * time.Second}
	// warm the probe devices: 30 normal readings each, event time in the past
	evt := time.Now().Add(-2 * time.Hour)
	rng := rand.New(rand.NewPCG(42, 42))
	for w := 0; w < 30; w++ {
		var b bytes.Buffer
		b.WriteByte('[')
		for d := 0; d < probes; d++ {
			if d > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"device_id":"b-probe-%d","id":"w%d-%d","ts":%d,"metrics":{"temp_c":%.3f}}`, d, w, d, evt.Add(time.Duration(w)*time.Second).UnixMilli(), 60+rng.NormFloat64())
		}
		b.WriteByte(']')
		if code, answer, err := PostAnswer(client, base+"/v1/ingest", key, b.Bytes()); err != nil {
			return 0, 0, 0, 0, fmt.Errorf("warm probes: %w", err)
		} else if code != 202 {
			return 0, 0, 0, 0, fmt.Errorf("warm probes: HTTP %d, want 202: %s", code, answer)
		}
	}
	// follow the alerts topic from its end
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("vigil.alerts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer cl.Close()
	var (
		mu     sync.Mutex
		sent   = map[string]time.Time{}
		lats   []time.Duration
		cctx   context.Context
		cancel context.CancelFunc
	)
	cctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	// make sure the consumer has its position before the outliers go out
	pctx, pcancel := context.WithTimeout(cctx, 300*time.Millisecond)
	cl.PollFetches(pctx)
	pcancel()
	go func() {
		for cctx.Err() == nil {
			fs := cl.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				var a struct {
					MessageID string `json:"message_id"`
					State     string `json:"state"`
				}
				if json.Unmarshal(r.Value, &a, json.RejectUnknownMembers(false)) != nil || a.State != "open" {
					return
				}
				mu.Lock()
				if t, ok := sent[a.MessageID]; ok {
					lats = append(lats, now.Sub(t))
					delete(sent, a.MessageID)
				}
				mu.Unlock()
			})
		}
	}()
	// background load, paced
	var (
		seq      atomic.Int64
		accepted atomic.Int64
		wg       sync.WaitGroup
	)
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	perPoster := rate / 4 / float64(batch) // requests per second per poster
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			r := rand.New(rand.NewPCG(uint64(p), 9))
			interval := time.Duration(float64(time.Second) / perPoster)
			next := time.Now()
			for time.Now().Before(stop) {
				body := Payload(r, 1000, batch, &seq, evt.Add(-time.Hour))
				if code, err := Post(c, base+"/v1/ingest", key, body); err == nil && code == 202 {
					accepted.Add(int64(batch))
				}
				next = next.Add(interval)
				time.Sleep(time.Until(next))
			}
		}(p)
	}
	// outliers: one per probe device, on a fixed schedule over the phase
	// (each posted on its own, so that a slow answer does not delay the
	// next and thin the sample)
	gap := time.Duration(seconds) * time.Second / time.Duration(probes)
	var (
		owg     sync.WaitGroup
		postErr error // the first outlier's post that failed (under mu)
	)
	for d := 0; d < probes && time.Now().Before(stop); d++ {
		time.Sleep(time.Until(start.Add(time.Duration(d) * gap)))
		id := fmt.Sprintf("outlier-%d", d)
		body := []byte(fmt.Sprintf(`{"device_id":"b-probe-%d","id":%q,"ts":%d,"metrics":{"temp_c":95}}`, d, id, evt.Add(31*time.Second).UnixMilli()))
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		owg.Add(1)
		go func() {
			defer owg.Done()
			code, answer, err := PostAnswer(client, base+"/v1/ingest", key, body)
			if err == nil && code != 202 {
				err = fmt.Errorf("HTTP %d, want 202: %s", code, answer)
			}
			if err != nil {
				mu.Lock()
				if postErr == nil {
					postErr = fmt.Errorf("outlier post: %w", err)
				}
				mu.Unlock()
			}
		}()
	}
	owg.Wait()
	wg.Wait()
	mu.Lock()
	err = postErr
	mu.Unlock()
	if err != nil {
		return 0, 0, 0, 0, err
	}
	actual = float64(accepted.Load()) / time.Since(start).Seconds()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) > 0 {
		return 0, 0, 0, 0, fmt.Errorf("%d outliers raised no alert within 10s", len(sent))
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(f float64) time.Duration { return lats[int(f*float64(len(lats)-1))] }
	return q(0.5), q(0.99), len(lats), actual, nil
}

// Baseline is the bare franz-go loop through the same broker: a producer
// writes 300-byte records to bench.a as fast as it can for `seconds`; a
// group consumer reads them and produces each to bench.b; a consumer of
// bench.b counts. Records/s from the first produce to the last record read.
func Baseline(kafka string, seconds int) (float64, error) {
	admin, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	ctx := context.Background()
	if _, err := kadm.NewClient(admin).CreateTopics(ctx, 8, -1, nil, "bench.a", "bench.b"); err != nil {
		return 0, err
	}
	value := make([]byte, 300)
	for i := range value {
		value[i] = 'x'
	}
	var produced, relayed, read atomic.Int64
	prod, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ProducerLinger(0))
	if err != nil {
		return 0, err
	}
	defer prod.Close()
	relay, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumerGroup("bench-relay"), kgo.ConsumeTopics("bench.a"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ProducerLinger(0))
	if err != nil {
		return 0, err
	}
	defer relay.Close()
	sink, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("bench.b"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			fs := relay.PollFetches(rctx)
			fs.EachRecord(func(r *kgo.Record) {
				relay.Produce(rctx, &kgo.Record{Topic: "bench.b", Key: r.Key, Value: r.Value}, func(*kgo.Record, error) { relayed.Add(1) })
			})
		}
	}()
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			fs := sink.PollFetches(rctx)
			read.Add(int64(fs.NumRecords()))
		}
	}()
	start := time.Now()
	stop := start.Add(time.Duration(seconds) * time.Second)
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("dev-%d", i))
	}
	for i := 0; time.Now().Before(stop); i++ {
		prod.Produce(ctx, &kgo.Record{Topic: "bench.a", Key: keys[i%len(keys)], Value: value}, func(_ *kgo.Record, err error) {
			if err == nil {
				produced.Add(1)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		return 0, err
	}
	want := produced.Load()
	deadline := time.Now().Add(120 * time.Second)
	for read.Load() < want && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	if read.Load() < want {
		return 0, fmt.Errorf("only %d of %d records came through", read.Load(), want)
	}
	return float64(want) / elapsed.Seconds(), nil
}
