// Package simulate is a device fleet for demos and measurements: devices
// with daily cycles, noise, correlated metrics and a categorical status,
// with injected anomalies of several kinds, posting through the real ingest
// API with real keys. It keeps the ground truth and scores the alerts
// Vigil raised against it.
package simulate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"go.uber.org/zap"
)

// Config is the simulate section of config.yaml.
type Config struct {
	// Devices is the fleet size. Default 1000.
	Devices int `yaml:"devices"`
	// Rate is readings per second per device. Default 1.
	Rate float64 `yaml:"rate"`
	// AnomalyEvery is the mean time between injected anomalies per device. Default 20m.
	AnomalyEvery time.Duration `yaml:"anomaly_every"`
	// Warmup is how many readings of a device pass before its first anomaly. Default 30.
	Warmup int `yaml:"warmup"`
	// Seed makes the fleet and its anomalies repeatable. Default 1.
	Seed int64 `yaml:"seed"`
	// GatewayEvery makes every n-th device a gateway that reports a
	// heavy-tailed request count instead of the pumps' four metrics (see
	// requestsName). 0: none. Default 4: one device in four, so the demo
	// fleet has heavy-tailed counts beside the pumps' gauges.
	GatewayEvery int `yaml:"gateway_every"`
}

// Default is the simulate section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{Devices: 1000, Rate: 1, AnomalyEvery: 20 * time.Minute, Warmup: 30, Seed: 1, GatewayEvery: 4}
}

// Validate checks the simulate section; errors name the key below "simulate.".
func (c Config) Validate() error {
	switch {
	case c.Devices < 1 || c.Devices > 1_000_000:
		return fmt.Errorf("devices: must be between 1 and 1000000, got %d", c.Devices)
	case !(c.Rate > 0 && c.Rate <= 100):
		return fmt.Errorf("rate: must be above 0 and at most 100 readings/s per device, got %g", c.Rate)
	case c.AnomalyEvery < time.Second:
		return fmt.Errorf("anomaly_every: must be at least 1s, got %s", c.AnomalyEvery)
	case c.Warmup < 0:
		return fmt.Errorf("warmup: must not be negative, got %d", c.Warmup)
	case c.GatewayEvery < 0:
		return fmt.Errorf("gateway_every: must not be negative (0: no gateways), got %d", c.GatewayEvery)
	}
	return nil
}

// Options are a fleet's settings and dependencies.
type Options struct {
	// URL is the Vigil server, e.g. http://127.0.0.1:8080.
	URL string
	// AdminToken registers the devices and the gateway.
	AdminToken string
	// Prefix starts every device id. Default "sim-".
	Prefix string
	// MQTTAddr, when set (host:port), sends the readings over MQTT to
	// Vigil's listener (mqtt.addr), one QoS 1 message per device and tick
	// on vigil/ingest/<device_id>, instead of POST /v1/ingest. The devices
	// and the gateway are still registered over HTTP.
	MQTTAddr string
	Logger   *zap.Logger
	Client   *http.Client
}

// Kinds of injected anomalies.
const (
	Spike      = "spike"
	LevelShift = "level_shift"
	Drift      = "drift"
	Stuck      = "stuck"
	Dropout    = "dropout"
	NoiseBurst = "noise_burst"
	// RegimeChange is a lasting shift: the level moves and stays. Its
	// window is its first minute; the device should alert once and take
	// the new level as normal after pipeline.accept_after (any later alert
	// counts as false). The device gets no other anomaly for 2.5 h.
	RegimeChange = "regime_change"
)

// Kinds lists every kind of injected anomaly.
var Kinds = []string{Spike, LevelShift, Drift, Stuck, Dropout, NoiseBurst, RegimeChange}

// Anomaly is one injected anomaly: the ground truth.
type Anomaly struct {
	DeviceID string
	Kind     string
	Metric   string
	Start    time.Time // event time of its first affected reading
	End      time.Time // event time of its last affected reading (dropout: the reading after the gap)
}

type metricSpec struct {
	name             string
	base, load, amp  float64 // base value, load coefficient, daily amplitude
	noise, marginalS float64
}

var metricSpecs = []metricSpec{
	{"temp_c", 60, 1.0, 3, 0.3, 1.05},
	{"current_a", 5, 0.8, 0.3, 0.1, 0.82},
	{"vibration", 0.03, 0.004, 0.002, 0.002, 0.0045},
	{"pressure_bar", 3, 0.1, 0.05, 0.03, 0.105},
}

// requestsName is the heavy-tailed count that a gateway (every
// GatewayEvery-th device) reports instead of the pumps' four metrics: requests served
// since its previous reading, Poisson around a rate that follows the
// device's load and the daily cycle, with a burst in one reading of 100
// of Pareto size (index 2.5, from half the rate), as request counts of
// real gateways and services have. Its values come from a second random
// stream of the device.
const (
	requestsName  = "requests"
	requestsBase  = 40.0
	requestsScale = 12.0 // the anomalies' unit (their sizes are in marginal deviations)
)

// quantum is each metric's resolution: pressure_bar is read to 0.01 bar,
// so it repeats its values as real pressure sensors do.
var quantum = []float64{1e-5, 1e-5, 1e-5, 0.01}

type device struct {
	id     string
	rng    *rand.Rand
	offset []float64 // per-metric base offset of this unit
	phase  float64
	load   float64
	status string
	next   time.Time
	n      int
	cool   int // readings until another anomaly may start

	anom     *Anomaly
	anomIdx  int // metric index
	anomLeft int
	anomN    int // readings into the anomaly
	mag      float64
	frozen   float64
	shift    []float64 // lasting shifts of past regime changes, per metric

	// a gateway (rng2 set) reports requests alone; anomIdx is -1 while
	// an anomaly is on them
	rng2     *rand.Rand
	reqShift float64
}

// Fleet is a running simulation.
type Fleet struct {
	cfg Config
	o   Options
	log *zap.Logger

	mu        sync.Mutex
	anomalies []Anomaly
	active    map[string]Anomaly // in progress, by device
	started   time.Time
	posted    int
	refused   int
	retried   int
	lastEvent time.Time
}

// New builds a fleet.
func New(cfg Config, o Options) *Fleet {
	if o.Prefix == "" {
		o.Prefix = "sim-"
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Fleet{cfg: cfg, o: o, log: o.Logger, active: map[string]Anomaly{}}
}

// devices makes the fleet's devices, their first reading due after start.
func (f *Fleet) devices(start time.Time) []*device {
	root := rand.New(rand.NewPCG(uint64(f.cfg.Seed), 0x5eed))
	devs := make([]*device, f.cfg.Devices)
	for i := range devs {
		id := fmt.Sprintf("%s%04d", f.o.Prefix, i)
		d := &device{id: id, rng: rand.New(rand.NewPCG(root.Uint64(), uint64(i))), phase: root.Float64() * 2 * math.Pi, status: "auto",
			shift: make([]float64, len(metricSpecs))}
		for _, m := range metricSpecs {
			d.offset = append(d.offset, root.NormFloat64()*m.marginalS*3)
		}
		d.next = start.Add(time.Duration(root.Float64() * float64(time.Second) / f.cfg.Rate))
		d.cool = f.cfg.Warmup + d.rng.IntN(f.cfg.Warmup+1)
		if n := f.cfg.GatewayEvery; n > 0 && i%n == n-1 {
			d.rng2 = rand.New(rand.NewPCG(uint64(f.cfg.Seed)^0x7e9, uint64(i)))
		}
		devs[i] = d
	}
	return devs
}

// Replay generates the fleet's readings for span of event time from start
// without a server, in event-time order (within 100 ms), passing each to
// emit; the readings and anomalies are those Run would post. Afterwards
// Anomalies and ReportFrom score alerts against the ground truth, as for a
// live run. Measuring tools use it to score detection in seconds.
func (f *Fleet) Replay(start time.Time, span time.Duration, emit func(r map[string]any)) {
	devs := f.devices(start)
	f.mu.Lock()
	f.started, f.lastEvent = start, start
	f.mu.Unlock()
	interval := time.Duration(float64(time.Second) / f.cfg.Rate)
	pAnom := 1 / (f.cfg.AnomalyEvery.Seconds() * f.cfg.Rate)
	for now := start; !now.After(start.Add(span)); now = now.Add(100 * time.Millisecond) {
		for _, d := range devs {
			for !d.next.After(now) {
				if r := f.step(d, d.next, pAnom); r != nil {
					emit(r)
				}
				d.next = d.next.Add(d.gap(interval))
			}
		}
		f.mu.Lock()
		f.lastEvent = now
		f.mu.Unlock()
	}
}

// Run registers the fleet (devices and one gateway) and posts readings until
// ctx ends. It fails when the server refuses the registration.
func (f *Fleet) Run(ctx context.Context) error {
	devs, gwID, key, err := f.register(ctx)
	if err != nil {
		return err
	}
	send := func(batch []map[string]any) { f.post(ctx, key, batch) }
	if f.o.MQTTAddr != "" {
		m := &mqttSender{f: f, addr: f.o.MQTTAddr, user: gwID, key: key}
		defer m.close()
		send = func(batch []map[string]any) { m.send(ctx, batch) }
	}
	f.mu.Lock()
	f.started = time.Now()
	f.mu.Unlock()
	f.log.Info("simulated fleet posting", zap.Int("devices", len(devs)), zap.Float64("readings_per_s", f.cfg.Rate*float64(len(devs))))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	interval := time.Duration(float64(time.Second) / f.cfg.Rate)
	pAnom := 1 / (f.cfg.AnomalyEvery.Seconds() * f.cfg.Rate)
	var batch []map[string]any
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			batch = batch[:0]
			for _, d := range devs {
				for !d.next.After(now) {
					if r := f.step(d, d.next, pAnom); r != nil {
						batch = append(batch, r)
					}
					d.next = d.next.Add(d.gap(interval))
				}
			}
			for len(batch) > 0 {
				n := min(len(batch), 5000)
				send(batch[:n])
				batch = batch[n:]
			}
			f.mu.Lock()
			f.lastEvent = now
			f.mu.Unlock()
		}
	}
}

func (f *Fleet) register(ctx context.Context) ([]*device, string, string, error) {
	devs := f.devices(time.Now())
	// Devices are registered with attributes (their own keys are made and
	// discarded: the fleet posts through one gateway, as a site gateway would).
	sem := make(chan struct{}, 8)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i, d := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			body := map[string]any{"device_id": d.id, "attrs": map[string]any{
				"site": "site-" + strconv.Itoa(i%10), "model": []string{"P-100", "P-200", "C-7"}[i%3],
				"lat": 40 + float64(i%10), "lon": -3 + float64(i%10), "tags": []string{"simulated"}}}
			status, err := f.admin(ctx, "/api/v1/devices", body, nil)
			if err == nil && status != http.StatusCreated && status != http.StatusConflict {
				err = fmt.Errorf("register device %s: HTTP %d", d.id, status)
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, "", "", firstErr
	}
	var gw struct {
		Key string `json:"key"`
	}
	gwID := fmt.Sprintf("%sgateway-%d", f.o.Prefix, time.Now().UnixNano())
	status, err := f.admin(ctx, "/api/v1/gateways", map[string]any{"gateway_id": gwID, "device_prefixes": []string{f.o.Prefix}}, &gw)
	if err != nil {
		return nil, "", "", err
	}
	if status != http.StatusCreated {
		return nil, "", "", fmt.Errorf("register gateway: HTTP %d", status)
	}
	f.log.Info("simulated fleet registered", zap.Int("devices", len(devs)), zap.String("gateway", gwID))
	return devs, gwID, gw.Key, nil
}

func (f *Fleet) admin(ctx context.Context, path string, body, out any) (int, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.o.URL+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+f.o.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	for attempt := 0; ; attempt++ {
		resp, err := f.o.Client.Do(req)
		if err != nil {
			if attempt < 20 && ctx.Err() == nil {
				time.Sleep(250 * time.Millisecond)
				req.Body = io.NopCloser(bytes.NewReader(b))
				continue
			}
			return 0, fmt.Errorf("POST %s: %w", path, err)
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && attempt < 40 {
			time.Sleep(250 * time.Millisecond)
			req.Body = io.NopCloser(bytes.NewReader(b))
			continue
		}
		if out != nil && resp.StatusCode < 300 {
			if err := json.Unmarshal(rb, out); err != nil {
				return resp.StatusCode, fmt.Errorf("POST %s: %w", path, err)
			}
		}
		return resp.StatusCode, nil
	}
}

// post sends one batch, retrying 429/503 with the same ids.
func (f *Fleet) post(ctx context.Context, key string, batch []map[string]any) {
	b, _ := json.Marshal(batch)
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.o.URL+"/v1/ingest", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := f.o.Client.Do(req)
		if err != nil {
			f.count(0, 0, 1)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			f.count(len(batch), 0, 0)
			return
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			f.count(0, 0, 1)
			time.Sleep(500 * time.Millisecond)
		default:
			f.count(0, len(batch), 0)
			f.log.Error("ingest refused a simulated batch", zap.Int("status", resp.StatusCode), zap.ByteString("answer", rb))
			return
		}
	}
}

func (f *Fleet) count(posted, refused, retried int) {
	f.mu.Lock()
	f.posted += posted
	f.refused += refused
	f.retried += retried
	f.mu.Unlock()
}

// gap is the time to d's next reading: the nominal interval ±20 %, and
// one reading in 200 lost on the way (twice the interval), as radio links
// and busy gateways do.
func (d *device) gap(interval time.Duration) time.Duration {
	g := time.Duration(float64(interval) * (0.8 + 0.4*d.rng.Float64()))
	if d.rng.Float64() < 0.005 {
		g += interval
	}
	return g
}

// step makes the reading of d at event time t; nil while d is in a dropout.
func (f *Fleet) step(d *device, t time.Time, pAnom float64) map[string]any {
	d.n++
	const phi = 0.995
	d.load = phi*d.load + math.Sqrt(1-phi*phi)*d.rng.NormFloat64()
	if d.rng.Float64() < 0.002 {
		if d.status == "auto" {
			d.status = "eco"
		} else {
			d.status = "auto"
		}
	}
	if d.anom == nil {
		if d.cool > 0 {
			d.cool--
		} else if d.rng.Float64() < pAnom {
			f.start(d, t)
		}
	}
	// a daily cycle, 30 % weaker at the weekend (Unix day 0 was a Thursday)
	daily := math.Sin(2*math.Pi*float64(t.Unix()%86400)/86400 + d.phase)
	if wd := (t.Unix()/86400 + 4) % 7; wd == 0 || wd == 6 {
		daily *= 0.7
	}
	vals := make([]float64, len(metricSpecs))
	for i, m := range metricSpecs {
		vals[i] = m.base + d.offset[i] + d.shift[i] + m.load*d.load + m.amp*daily + m.noise*d.rng.NormFloat64()
	}
	var req float64
	if d.rng2 != nil {
		req = d.requests(daily)
	}
	if a := d.anom; a != nil {
		if i := d.anomIdx; i < 0 {
			req = d.requestsAnomaly(a, req)
		} else {
			s := metricSpecs[i].marginalS
			switch a.Kind {
			case Spike:
				vals[i] += d.mag * s
			case LevelShift:
				vals[i] += d.mag * s
			case Drift:
				vals[i] += d.mag * s * float64(d.anomN+1) / float64(d.anomN+d.anomLeft)
			case Stuck:
				if d.anomN == 0 {
					d.frozen = vals[i]
				}
				vals[i] = d.frozen
			case NoiseBurst:
				vals[i] += d.mag * s * d.rng.NormFloat64()
			case RegimeChange:
				if d.anomN == 0 {
					d.shift[i] += d.mag * s // and it stays
				}
				vals[i] += d.mag * s
			}
		}
		d.anomN++
		d.anomLeft--
		if a.Kind == Dropout {
			if d.anomLeft > 0 {
				return nil
			}
			a.End = t
		}
		if d.anomLeft <= 0 {
			if a.Kind != Dropout {
				a.End = t
			}
			f.mu.Lock()
			f.anomalies = append(f.anomalies, *a)
			delete(f.active, a.DeviceID)
			f.mu.Unlock()
			if a.Kind == RegimeChange {
				d.cool = int(2.5 * 3600 * f.cfg.Rate) // until its new level is accepted
			} else {
				d.cool = int(120 * f.cfg.Rate)
			}
			d.anom = nil
		}
	}
	metrics := make(map[string]float64, len(vals)+1)
	for i, m := range metricSpecs {
		metrics[m.name] = math.Round(math.Round(vals[i]/quantum[i])*quantum[i]*1e5) / 1e5
	}
	if d.rng2 != nil {
		metrics = map[string]float64{requestsName: math.Max(0, math.Round(req))}
	}
	return map[string]any{
		"device_id": d.id, "id": d.id + "-" + strconv.Itoa(d.n), "ts": t.UTC().Format(time.RFC3339Nano),
		"metrics": metrics, "attrs": map[string]string{"status": d.status},
	}
}

func (f *Fleet) start(d *device, t time.Time) {
	kind := Kinds[d.rng.IntN(len(Kinds))]
	d.anomIdx = d.rng.IntN(len(metricSpecs))
	metric := metricSpecs[d.anomIdx].name
	if d.rng2 != nil {
		d.anomIdx, metric = -1, requestsName
	}
	d.anomN = 0
	perSec := f.cfg.Rate
	switch kind {
	case Spike:
		d.anomLeft, d.mag = 1, 8+4*d.rng.Float64()
		if d.rng.IntN(2) == 0 {
			d.mag = -d.mag
		}
	case LevelShift:
		d.anomLeft, d.mag = int(60*perSec), 7+3*d.rng.Float64()
	case Drift:
		d.anomLeft, d.mag = int(120*perSec), 12+3*d.rng.Float64()
	case Stuck:
		d.anomLeft = int(40 * perSec)
	case Dropout:
		d.anomLeft = int(60 * perSec)
	case NoiseBurst:
		d.anomLeft, d.mag = int(40*perSec), 6+2*d.rng.Float64()
	case RegimeChange:
		d.anomLeft, d.mag = int(60*perSec), 7+3*d.rng.Float64()
		if d.rng.IntN(2) == 0 {
			d.mag = -d.mag
		}
	}
	if d.anomLeft < 1 {
		d.anomLeft = 1
	}
	d.anom = &Anomaly{DeviceID: d.id, Kind: kind, Metric: metric, Start: t}
	f.mu.Lock()
	f.active[d.id] = *d.anom
	f.mu.Unlock()
}

// requests is the device's request count for one reading: Poisson
// around a rate that follows its load and the daily cycle, and in one
// reading of 100 a burst of Pareto size (index 2.5, from half the rate).
func (d *device) requests(daily float64) float64 {
	rate := requestsBase * math.Exp(0.25*d.load+0.3*daily) * math.Exp(d.reqShift)
	n := poisson(d.rng2, rate)
	if d.rng2.Float64() < 0.01 {
		n += rate / 2 * math.Pow(1-d.rng2.Float64(), -1/2.5)
	}
	return n
}

// requestsAnomaly is the request count while anomaly a is on it: the
// kinds of the physical metrics, in a count's terms (a flood, a rate that
// triples or drifts up, a frozen counter, a rate that swings, a rate that
// changes for good).
func (d *device) requestsAnomaly(a *Anomaly, n float64) float64 {
	switch a.Kind {
	case Spike:
		if d.anomN == 0 {
			d.mag = 25 + 15*d.rng2.Float64()
		}
		return n + d.mag*requestsBase
	case LevelShift:
		if d.anomN == 0 {
			d.mag = 3 + d.rng2.Float64()
		}
		return n * d.mag
	case Drift:
		return n * (1 + 4*float64(d.anomN+1)/float64(d.anomN+d.anomLeft))
	case Stuck:
		if d.anomN == 0 {
			d.frozen = n
		}
		return d.frozen
	case NoiseBurst:
		return n * math.Exp(1.5*d.rng2.NormFloat64())
	case RegimeChange:
		if d.anomN == 0 {
			g := math.Log(2.5 + d.rng2.Float64())
			if d.rng2.IntN(2) == 0 {
				g = -g
			}
			d.reqShift += g // and it stays
			return n * math.Exp(g)
		}
	}
	return n
}

// poisson draws a Poisson count of mean lambda (Knuth's method below 30,
// a rounded normal above: a few hundred draws a second per device).
func poisson(rng *rand.Rand, lambda float64) float64 {
	if lambda >= 30 {
		return math.Max(0, math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64()))
	}
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// Anomalies returns the injected anomalies that have ended.
func (f *Fleet) Anomalies() []Anomaly {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Anomaly(nil), f.anomalies...)
}

// ErrNotStarted is returned by Report before the fleet posted anything.
var ErrNotStarted = errors.New("the simulated fleet has not started")
