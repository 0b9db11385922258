package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil/vigil/bench/internal/benchutil"

	"github.com/eclipse/paho.golang/paho"
)

// devicePayload is n readings of one device, as JSON array (HTTP) or NDJSON
// (MQTT): an MQTT message holds one device's readings.
func devicePayload(rng *rand.Rand, dev int, n int, seq *atomic.Int64, evt time.Time, ndjson bool) []byte {
	var b bytes.Buffer
	if !ndjson {
		b.WriteByte('[')
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			if ndjson {
				b.WriteByte('\n')
			} else {
				b.WriteByte(',')
			}
		}
		s := seq.Add(1)
		fmt.Fprintf(&b, `{"device_id":"b-%d","id":"i%d","ts":%d,"metrics":{"temp_c":%.3f,"current_a":%.3f,"vibration":%.5f,"pressure_bar":%.4f},"attrs":{"status":"auto"}}`,
			dev, s, evt.UnixMilli()+s, 60+rng.NormFloat64(), 5+0.1*rng.NormFloat64(), 0.03+0.002*rng.NormFloat64(), 3+0.03*rng.NormFloat64())
	}
	if !ndjson {
		b.WriteByte(']')
	}
	return b.Bytes()
}

// ingestRates measures readings/s acknowledged by ingest (HTTP 202, MQTT
// PUBACK; both after the Kafka ack), the two transports one after the
// other with the same clients, the same payloads and the same key.
func ingestRates(base, mqttAddr, key string, seconds, clients, n int, evt time.Time, seq *atomic.Int64) (httpRate, mqttRate float64, err error) {
	measure := func(send func(c int, rng *rand.Rand) (func() bool, func())) float64 {
		var acked atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(time.Duration(seconds) * time.Second)
		start := time.Now()
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), 9))
				one, closeFn := send(c, rng)
				defer closeFn()
				for time.Now().Before(stop) {
					if one() {
						acked.Add(int64(n))
					}
				}
			}()
		}
		wg.Wait()
		return float64(acked.Load()) / time.Since(start).Seconds()
	}
	httpRate = measure(func(c int, rng *rand.Rand) (func() bool, func()) {
		client := &http.Client{Timeout: 30 * time.Second}
		k := 0
		return func() bool {
			k++
			code, err := benchutil.Post(client, base+"/v1/ingest", key, devicePayload(rng, (c*7919+k)%1000, n, seq, evt, false))
			return err == nil && code == 202
		}, client.CloseIdleConnections
	})
	var connErr atomic.Value
	mqttRate = measure(func(c int, rng *rand.Rand) (func() bool, func()) {
		conn, err := net.Dial("tcp", mqttAddr)
		if err != nil {
			connErr.Store(err)
			return func() bool { time.Sleep(time.Second); return false }, func() {}
		}
		id := fmt.Sprintf("bench-%d-%d", c, time.Now().UnixNano())
		pc := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pc.Connect(ctx, &paho.Connect{KeepAlive: 30, ClientID: id, CleanStart: true, Username: "bench", UsernameFlag: true, Password: []byte(key), PasswordFlag: true}); err != nil {
			connErr.Store(err)
			return func() bool { time.Sleep(time.Second); return false }, func() { conn.Close() }
		}
		k := 0
		return func() bool {
				k++
				dev := (c*7919 + k) % 1000
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				pr, err := pc.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("vigil/ingest/b-%d", dev), QoS: 1, Payload: devicePayload(rng, dev, n, seq, evt, true)})
				return err == nil && pr != nil && pr.ReasonCode < 0x80
			}, func() {
				_ = pc.Disconnect(&paho.Disconnect{})
			}
	})
	if e, ok := connErr.Load().(error); ok {
		return 0, 0, fmt.Errorf("MQTT: %w", e)
	}
	return httpRate, mqttRate, nil
}
