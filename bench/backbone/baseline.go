package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func runtimeNumCPU() int { return runtime.NumCPU() }

// baseline is the bare franz-go loop through the same broker: a producer
// writes 300-byte records to bench.a as fast as it can for `seconds`; a
// group consumer reads them and produces each to bench.b; a consumer of
// bench.b counts. Records/s from the first produce to the last record read.
func baseline(kafka string, seconds int) (float64, error) {
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
