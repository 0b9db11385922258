package ingest

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/vigil/vigil/contract"
)

// limits are what one key or one device may do, shared by every
// transport: the metric and attr names each device has used
// (ingest.max_metrics_per_device), the device ids each gateway has posted
// for (ingest.max_devices_per_gateway), and each key's token bucket
// (ingest.rate_per_key, ingest.burst_per_key). Names and ids are kept as
// 64-bit hashes. The sets start empty at each start of the process.
type limits struct {
	cfg  Config
	seed maphash.Seed
	now  func() time.Time

	mu       sync.Mutex
	devices  map[string]*deviceNames        // device id -> names used
	gateways map[string]map[uint64]struct{} // gateway id -> device ids posted for (a map: a gateway may serve a million)
	buckets  map[string]*tokenBucket        // principal -> bucket of readings
	bytes    map[string]*tokenBucket        // principal -> bucket of request bytes
}

type hashSet struct{ h []uint64 } // sorted

func (s *hashSet) has(x uint64) bool { _, ok := slices.BinarySearch(s.h, x); return ok }
func (s *hashSet) add(x uint64) {
	if i, ok := slices.BinarySearch(s.h, x); !ok {
		s.h = slices.Insert(s.h, i, x)
	}
}

type deviceNames struct{ metrics, attrs hashSet }

type tokenBucket struct {
	tokens float64
	at     time.Time
}

func newLimits(cfg Config, now func() time.Time) *limits {
	return &limits{cfg: cfg, seed: maphash.MakeSeed(), now: now, devices: map[string]*deviceNames{}, gateways: map[string]map[uint64]struct{}{},
		buckets: map[string]*tokenBucket{}, bytes: map[string]*tokenBucket{}}
}

func (l *limits) hash(s string) uint64 { return maphash.String(l.seed, s) }

// admit checks a request of who: its rate, the new device ids of a
// gateway, the new names of each device. It answers the refusal (nil:
// admitted) and, for an admitted request, commit, to call once Kafka
// acknowledged it (a refused or failed request teaches nothing).
func (l *limits) admit(who *Principal, readings []contract.Reading) (*RequestError, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.take(who.Name(), len(readings)); e != nil {
		return e, nil
	}
	var details []Detail
	refuse := func(i int, format string, args ...any) {
		if len(details) < maxDetails {
			details = append(details, Detail{Index: i, Reason: fmt.Sprintf(format, args...)})
		}
	}
	// gateways: distinct device ids
	var newDevices map[uint64]struct{}
	var gw map[uint64]struct{}
	if who.Gateway != nil && l.cfg.MaxDevicesPerGateway > 0 {
		gw = l.gateways[who.Gateway.GatewayID]
		if gw == nil {
			gw = map[uint64]struct{}{}
		}
		for i := range readings {
			h := l.hash(readings[i].DeviceID)
			if _, ok := gw[h]; ok {
				continue
			}
			if _, ok := newDevices[h]; ok {
				continue
			}
			if len(gw)+len(newDevices) >= l.cfg.MaxDevicesPerGateway {
				refuse(i, "gateway %s already posted for %d device ids, the limit (ingest.max_devices_per_gateway); device %q is one more", who.Gateway.GatewayID, l.cfg.MaxDevicesPerGateway, readings[i].DeviceID)
				continue
			}
			if newDevices == nil {
				newDevices = map[uint64]struct{}{}
			}
			newDevices[h] = struct{}{}
		}
		if len(details) > 0 {
			return &RequestError{Status: http.StatusForbidden, Message: "a device id beyond the gateway's limit; nothing was accepted", Details: details}, nil
		}
	}
	// devices: distinct metric and attr names
	type added struct {
		dev            string
		metrics, attrs []uint64
	}
	var adds []added
	var addOf map[string]int // device id -> index in adds, made at the first new name
	find := func(dev string) *added {
		if k, ok := addOf[dev]; ok {
			return &adds[k]
		}
		if addOf == nil {
			addOf = map[string]int{}
		}
		addOf[dev] = len(adds)
		adds = append(adds, added{dev: dev})
		return &adds[len(adds)-1]
	}
	max := l.cfg.MaxMetricsPerDevice
	for i := range readings {
		r := &readings[i]
		known := l.devices[r.DeviceID]
		if known == nil {
			known = &deviceNames{}
		}
		var a *added // the device's new names (most readings have none)
		// newNames adds the names new to the device to the device's added
		// names (of), refusing those beyond the limit
		newNames := func(kind string, known *hashSet, of func(*added) *[]uint64, name func(int) string, n int) {
			for k := 0; k < n; k++ {
				h := l.hash(name(k))
				if known.has(h) {
					continue
				}
				if a == nil {
					a = find(r.DeviceID)
				}
				added := of(a)
				if slices.Contains(*added, h) {
					continue
				}
				if len(known.h)+len(*added) >= max {
					refuse(i, "device %q already has %d %s names, the limit (ingest.max_metrics_per_device); %q would be one more", r.DeviceID, max, kind, name(k))
					continue
				}
				*added = append(*added, h)
			}
		}
		newNames("metric", &known.metrics, func(a *added) *[]uint64 { return &a.metrics }, func(k int) string { return r.Metrics[k].Name }, len(r.Metrics))
		newNames("attr", &known.attrs, func(a *added) *[]uint64 { return &a.attrs }, func(k int) string { return r.Attrs[k].Name }, len(r.Attrs))
	}
	if len(details) > 0 {
		return &RequestError{Status: http.StatusBadRequest, Message: "a reading would give its device more metric or attr names than ingest.max_metrics_per_device allows; nothing was accepted", Details: details}, nil
	}
	commit := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if gw != nil && len(newDevices) > 0 {
			l.gateways[who.Gateway.GatewayID] = gw
			for h := range newDevices {
				if len(gw) < l.cfg.MaxDevicesPerGateway {
					gw[h] = struct{}{}
				}
			}
		}
		for _, a := range adds {
			if len(a.metrics) == 0 && len(a.attrs) == 0 {
				continue
			}
			d := l.devices[a.dev]
			if d == nil {
				d = &deviceNames{}
				l.devices[a.dev] = d
			}
			for _, h := range a.metrics {
				if len(d.metrics.h) < max {
					d.metrics.add(h)
				}
			}
			for _, h := range a.attrs {
				if len(d.attrs.h) < max {
					d.attrs.add(h)
				}
			}
		}
	}
	return nil, commit
}

// takeBytes charges n request bytes to the key before its body is read
// (n < 0: a body of unknown length, which needs a bucket not in debt and
// is charged once read, by chargeBytes); it answers 429 with how long
// until they are there.
func (l *limits) takeBytes(key string, n int64) *RequestError {
	rate := float64(l.cfg.BytesPerKey)
	if rate <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	burst := float64(2 * l.cfg.MaxBodyBytes)
	now := l.now()
	b := l.bytes[key]
	if b == nil {
		b = &tokenBucket{tokens: burst, at: now}
		l.bytes[key] = b
	}
	b.tokens = math.Min(burst, b.tokens+rate*now.Sub(b.at).Seconds())
	b.at = now
	need := math.Max(float64(n), 0)
	if b.tokens < need || n < 0 && b.tokens < 0 {
		wait := time.Duration((need - b.tokens) / rate * float64(time.Second))
		return &RequestError{Status: http.StatusTooManyRequests, retryAfter: wait,
			Message: fmt.Sprintf("%s is over its byte rate (ingest.bytes_per_key %d bytes/s); retry after %s", key, l.cfg.BytesPerKey, wait.Round(time.Millisecond))}
	}
	b.tokens -= need
	return nil
}

// chargeBytes charges a body read without a Content-Length.
func (l *limits) chargeBytes(key string, n int64) {
	if l.cfg.BytesPerKey <= 0 {
		return
	}
	l.mu.Lock()
	if b := l.bytes[key]; b != nil {
		b.tokens -= float64(n)
	}
	l.mu.Unlock()
}

// take takes n readings from the key's bucket, or answers 429 with how
// long until they are there.
func (l *limits) take(key string, n int) *RequestError {
	rate, burst := l.cfg.RatePerKey, float64(l.cfg.BurstPerKey)
	if rate <= 0 {
		return nil
	}
	now := l.now()
	b := l.buckets[key]
	if b == nil {
		b = &tokenBucket{tokens: burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(burst, b.tokens+rate*now.Sub(b.at).Seconds())
	b.at = now
	if float64(n) > b.tokens {
		wait := time.Duration((float64(n) - b.tokens) / rate * float64(time.Second))
		if float64(n) > burst {
			return &RequestError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("%d readings in one request are more than the key's burst (ingest.burst_per_key %d); split the request", n, l.cfg.BurstPerKey)}
		}
		return &RequestError{Status: http.StatusTooManyRequests, retryAfter: wait,
			Message: fmt.Sprintf("%s is over its rate (ingest.rate_per_key %g readings/s, burst %d); retry after %s", key, rate, l.cfg.BurstPerKey, wait.Round(time.Millisecond))}
	}
	b.tokens -= float64(n)
	return nil
}
