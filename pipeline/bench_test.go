package pipeline

import (
	"bufio"
	"fmt"
	"github.com/vigil/vigil/contract"
	"go.uber.org/zap"
	"os"
	"path/filepath"
	"runtime"

	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
)

func benchReadings(n, devices int) []contract.Reading {
	rng := rand.New(rand.NewPCG(1, 1))
	rs := make([]contract.Reading, n)
	for i := range rs {
		rs[i] = contract.Reading{ID: "m" + strconv.Itoa(i), DeviceID: "d" + strconv.Itoa(i%devices), TS: t0.Add(time.Duration(i) * time.Millisecond),
			Metrics:    []contract.Metric{{Name: "temp_c", Value: 60 + rng.NormFloat64()}, {Name: "current_a", Value: 5 + rng.NormFloat64()}, {Name: "vibration", Value: 0.03}, {Name: "pressure_bar", Value: 3}},
			Attrs:      []contract.Attr{{Name: "status", Value: "auto"}},
			IngestedAt: t0, Region: "eu"}
	}
	return rs
}

// BenchmarkStep is the per-reading hot path: dedup, enrichment, scoring,
// incident logic and the enriched JSON encoding.
func BenchmarkStep(b *testing.B) {
	rs := benchReadings(100_000, 1000)
	pr := NewProcessor(testCfg(), "eu", nil)
	part := newPartition()
	var res StepResult
	var buf []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := rs[i%len(rs)]
		r.ID = strconv.Itoa(i)
		buf = pr.Step(part, &r, true, buf[:0], &res)
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// warmObservation is the observation of a reading of a warm device, as the
// encoder gets it.
func warmObservation() *Observation {
	rs := benchReadings(100, 10)
	pr := NewProcessor(testCfg(), "eu", nil)
	part := newPartition()
	var res StepResult
	for i := range rs {
		pr.Step(part, &rs[i], false, nil, &res)
	}
	return &pr.obs
}

// BenchmarkEnrichedEncode is the hand-written enriched encoder; its
// baseline is BenchmarkEnrichedEncodeReflect, the same record through the
// reflection-based JSON encoder.
func BenchmarkEnrichedEncode(b *testing.B) {
	o := warmObservation()
	var buf []byte
	var s contract.Scored
	b.ReportAllocs()
	for b.Loop() {
		scoredOf(&s, o, "eu")
		s.Score, s.Threshold, s.Model = 0.1, 0.8, BaselineName
		buf = contract.AppendEnriched(buf[:0], o.Reading, &s)
	}
}

func BenchmarkEnrichedEncodeReflect(b *testing.B) {
	o := warmObservation()
	type rec struct {
		ID, DeviceID     string
		TS, IngestedAt   time.Time
		Region           string
		Metrics          map[string]float64
		Attrs            map[string]string
		Derived          map[string]float64
		Score, Threshold float64
		Model            string
	}
	b.ReportAllocs()
	for b.Loop() {
		r := rec{ID: o.Reading.ID, DeviceID: o.Reading.DeviceID, TS: o.Reading.TS, IngestedAt: o.Reading.IngestedAt, Region: "eu",
			Metrics: map[string]float64{}, Attrs: map[string]string{}, Derived: map[string]float64{}, Score: 0.1, Threshold: 0.8, Model: BaselineName}
		for _, m := range o.Reading.Metrics {
			r.Metrics[m.Name] = m.Value
		}
		for _, m := range o.Metrics {
			r.Derived[m.Name+".z"] = m.Z
			r.Derived[m.Name+".delta"] = m.Delta
			r.Derived[m.Name+".mean"] = m.Mean
			r.Derived[m.Name+".std"] = m.Std
		}
		if _, err := json.Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStepDetectors is the hot path with the built-in detectors on a
// steady fleet (200 devices of four metrics, each past its warm-up), with
// the multivariate detector off (the baseline of this pair) and on.
func BenchmarkStepDetectors(b *testing.B) {
	for _, mv := range []int{0, 400} {
		name := "multivariate-off"
		if mv > 0 {
			name = "multivariate-on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testCfg()
			cfg.MVWarmup = mv
			rs := benchReadings(200*600, 200) // distinct readings: a device whose readings repeat never fits
			pr := NewProcessor(cfg, "eu", nil)
			part := newPartition()
			var res StepResult
			var buf []byte
			step := func(i int) {
				r := rs[i%len(rs)]
				r.ID = strconv.Itoa(i)
				r.TS = t0.Add(time.Duration(i) * time.Millisecond)
				buf = pr.Step(part, &r, true, buf[:0], &res)
			}
			for i := 0; i < 200*500; i++ { // every device warm
				step(i)
			}
			b.ReportAllocs()
			i := 200 * 500
			for b.Loop() {
				step(i)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// BenchmarkStepUnivariate is the hot path on a fleet of single-metric
// devices (the multivariate detector does not apply), without the
// per-metric detector (the baseline of this pair) and with it; it reports
// the detector's state per device and metric.
func BenchmarkStepUnivariate(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "per-metric-off"
		if on {
			name = "per-metric-on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testCfg()
			rng := rand.New(rand.NewPCG(2, 2))
			pr := NewProcessor(cfg, "eu", nil)
			for i := range pr.groups {
				pr.groups[i].p.uv.off = !on
			}
			part := newPartition()
			var res StepResult
			var buf []byte
			ids := make([]string, 200)
			for d := range ids {
				ids[d] = "d" + strconv.Itoa(d)
			}
			step := func(i int) {
				r := contract.Reading{ID: strconv.Itoa(i), DeviceID: ids[i%200], TS: t0.Add(time.Duration(i) * 300 * time.Millisecond),
					Metrics: []contract.Metric{{Name: "requests", Value: 100 + 10*rng.NormFloat64()}}, IngestedAt: t0}
				buf = pr.Step(part, &r, true, buf[:0], &res)
			}
			for i := 0; i < 200*500; i++ { // every device warm, profiles allocated
				step(i)
			}
			b.ReportAllocs()
			i := 200 * 500
			for b.Loop() {
				step(i)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			if on {
				b.ReportMetric(float64(uvStateBytes()), "state-B/metric")
			}
		})
	}
}

// BenchmarkDeviceStateBytes reports the heap per device,
// 2,000 devices of four metrics and an attr:
//   - warming: 25 readings each (the per-metric detectors judge the
//     device while the multivariate model collects its warm-up), and
//     350, late in the warm-up, when the collected values peak;
//   - per-metric: the multivariate model off, 300 readings each (the
//     per-metric detectors judge the device);
//   - multivariate: the defaults, 600 readings each (the model fitted at
//     400 judges the device; the per-metric state is let go).
//
// Each device sends a reading a second (ingested as it is made), so the
// dedup ring holds its window, 256 ids; the "every20s" cases send one
// every 20 seconds, as a million devices do at 50,000 readings/s, and
// their rings hold the 10-minute dedup horizon, 31 ids.
func BenchmarkDeviceStateBytes(b *testing.B) {
	for _, c := range []struct {
		name     string
		mv       int
		readings int
		every    time.Duration
	}{
		{"warming", Default().MVWarmup, 25, time.Second},
		{"warming/350", Default().MVWarmup, 350, time.Second},
		{"per-metric", 0, 300, time.Second},
		{"multivariate", Default().MVWarmup, 600, time.Second},
		{"warming/every20s", Default().MVWarmup, 25, 20 * time.Second},
		{"multivariate/every20s", Default().MVWarmup, 600, 20 * time.Second},
		// half-way through its first refit's collection (mv_refit 3,600
		// readings after the fit; 400 readings in every 4,000)
		{"refitting/every20s", Default().MVWarmup, 4200, 20 * time.Second},
	} {
		b.Run(c.name, func(b *testing.B) {
			devices := 2000
			if c.readings > 1000 {
				devices = 500
			}
			for b.Loop() {
				cfg := Default()
				cfg.MVWarmup = c.mv
				part, before, after := warmFleet(cfg, devices, c.readings, c.every)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(devices), "B/device")
				runtime.KeepAlive(part)
			}
		})
	}
}

// BenchmarkDeviceStateCycle reports the heap per device of 500 fitted
// four-metric devices (a reading every 20 seconds, as in
// BenchmarkDeviceStateBytes) averaged over one whole refit cycle: from
// their 600th reading to their 4,600th, the heap after a collection
// every 200 readings. A refit collects mv_warmup (400) readings in every
// 4,000 (mv_refit 3,600 after the fit), and the device holds more while
// it does: this is the steady state a fleet holds on average, where the
// "multivariate/every20s" case is a device between refits. The
// "between" and "peak" figures are the least and most of the samples.
func BenchmarkDeviceStateCycle(b *testing.B) {
	const devices, from, cycle, every = 500, 600, 4000, 200
	for b.Loop() {
		cfg := Default()
		part, before, after := warmFleet(cfg, devices, from, 20*time.Second)
		pr := NewProcessor(cfg, "eu", nil)
		rng := rand.New(rand.NewPCG(4, 4))
		var res StepResult
		var sum, lo, hi float64
		n := 0
		for k := 0; k < cycle/every; k++ {
			for i := 0; i < devices*every; i++ {
				j := (from+k*every)*devices + i
				r := ingest1(j, devices, rng)
				r.TS = t0.Add(time.Duration(j/devices) * 20 * time.Second)
				r.IngestedAt = r.TS
				pr.Step(part, &r, false, nil, &res)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			v := float64(after.HeapAlloc-before.HeapAlloc) / devices
			if n == 0 || v < lo {
				lo = v
			}
			hi = max(hi, v)
			sum += v
			n++
		}
		b.ReportMetric(sum/float64(n), "B/device")
		b.ReportMetric(lo, "between-B/device")
		b.ReportMetric(hi, "peak-B/device")
		b.ReportMetric(0, "ns/op")
		runtime.KeepAlive(part)
	}
}

// BenchmarkDeviceStateGC measures what a fleet's state costs the
// garbage collector: heap objects per device (each a pointer the mark
// phase follows, with a lookup of its span: at a million devices under
// load the collector took a quarter to a third of Vigil's CPU, most of
// it in that lookup) and the time of a full collection per device, with
// 20,000 four-metric devices held. The objects are the stable figure;
// the time moves with the machine.
func BenchmarkDeviceStateGC(b *testing.B) {
	for _, c := range []struct {
		name     string
		readings int
		every    time.Duration
	}{
		{"warming", 25, time.Second},
		{"fitted/every20s", 600, 20 * time.Second},
	} {
		b.Run(c.name, func(b *testing.B) {
			const devices = 20000
			part, before, after := warmFleet(Default(), devices, c.readings, c.every)
			b.ResetTimer()
			for b.Loop() {
				runtime.GC()
			}
			b.StopTimer()
			b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/devices, "objects/device")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/devices, "ns-GC/device")
			b.ReportMetric(0, "ns/op")
			runtime.KeepAlive(part)
		})
	}
}

// warmFleet steps four-metric devices (ingest1), readings each, a reading
// every `every` a device, through a processor of cfg, and returns their
// partition with the heap's figures before and after (each after a
// collection).
func warmFleet(cfg Config, devices, readings int, every time.Duration) (part *partition, before, after runtime.MemStats) {
	pr := NewProcessor(cfg, "eu", nil)
	rng := rand.New(rand.NewPCG(3, 3))
	runtime.GC()
	runtime.ReadMemStats(&before)
	part = newPartition()
	var res StepResult
	for i := 0; i < devices*readings; i++ {
		r := ingest1(i, devices, rng)
		r.TS = t0.Add(time.Duration(i/devices) * every)
		r.IngestedAt = r.TS
		pr.Step(part, &r, false, nil, &res)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return part, before, after
}

func ingest1(i, devices int, rng *rand.Rand) contract.Reading {
	return contract.Reading{ID: "msg-" + strconv.Itoa(i) + "-0123456789", DeviceID: "dev-" + strconv.Itoa(i%devices), TS: t0.Add(time.Duration(i/devices) * time.Second), IngestedAt: t0,
		Metrics: []contract.Metric{{Name: "temp_c", Value: 60 + rng.NormFloat64()}, {Name: "current_a", Value: 5 + rng.NormFloat64()}, {Name: "vibration", Value: 0.03 + 0.001*rng.NormFloat64()}, {Name: "pressure_bar", Value: 3 + 0.01*rng.NormFloat64()}},
		Attrs:   []contract.Attr{{Name: "status", Value: "auto"}}}
}

// BenchmarkSnapshot measures the snapshot of a partition of 4,000
// four-metric devices, as the stream writes it every snapshot_interval and
// reads it on a restart or a takeover: bytes per device, and the time to
// save and to load it per device, with the load time of a million devices
// at that rate. "warming" devices have sent 25 readings each (the
// per-metric detectors and the multivariate accumulators hold their
// warm-up), "fitted" ones 600 (the multivariate model judges them).
// "msgpack" is today's format (3), "gob" the one before it (2), measured
// in the same run as the baseline.
func BenchmarkSnapshot(b *testing.B) {
	for _, c := range []struct {
		name     string
		readings int
	}{{"warming", 25}, {"fitted", 600}} {
		const devices = 4000
		pr := NewProcessor(Default(), "eu", nil)
		rng := rand.New(rand.NewPCG(3, 3))
		part := newPartition()
		var res StepResult
		for i := 0; i < devices*c.readings; i++ {
			r := ingest1(i, devices, rng)
			pr.Step(part, &r, false, nil, &res)
		}
		for _, format := range []string{"msgpack", "gob"} {
			b.Run(c.name+"/"+format, func(b *testing.B) {
				snap := &snapshots{dir: b.TempDir(), group: "g", topic: "t"}
				path := snap.path(0)
				save := func() error { return snap.save(0, part) }
				if format == "gob" {
					path = snap.gobPath(0)
					save = func() error { return writeGobSnapshot(path, part) }
				}
				var saveT, loadT time.Duration
				for b.Loop() {
					t0 := time.Now()
					if err := save(); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					got, err := snap.load(0)
					if err != nil || len(got.Devices) != devices {
						b.Fatalf("load: %v, %d devices", err, len(got.Devices))
					}
					saveT, loadT = saveT+t1.Sub(t0), loadT+time.Since(t1)
				}
				st, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				perDev := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N) / devices }
				b.ReportMetric(float64(st.Size())/devices, "snapshot-B/device")
				b.ReportMetric(perDev(saveT), "save-µs/device")
				b.ReportMetric(perDev(loadT), "load-µs/device")
				b.ReportMetric(perDev(loadT), "load-s/1M-devices") // µs a device = s a million
			})
		}
	}
}

// writeGobSnapshot writes part to path in the gob format (2), as Vigil
// did before the MessagePack one: the benchmarks' baseline.
func writeGobSnapshot(path string, part *partition) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := encodeGobSnapshot(w, part); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// BenchmarkSnapshotAll measures the snapshot a stopping stream writes of
// all its partitions (eight of 1,000 warming devices each here): one
// partition after another, as before, and snapshotAll, which encodes them
// on every core. At a million devices the one-core time exceeded
// shutdown.budget.
func BenchmarkSnapshotAll(b *testing.B) {
	const parts, devices = 8, 1000
	pr := NewProcessor(Default(), "eu", nil)
	rng := rand.New(rand.NewPCG(3, 3))
	all := map[int32]*partition{}
	var res StepResult
	for p := int32(0); p < parts; p++ {
		part := newPartition()
		for i := 0; i < devices*25; i++ {
			r := ingest1(i, devices, rng)
			r.DeviceID = fmt.Sprintf("p%d-%s", p, r.DeviceID)
			pr.Step(part, &r, false, nil, &res)
		}
		part.Next = 1
		all[p] = part
	}
	for _, c := range []string{"one-at-a-time", "snapshotAll"} {
		b.Run(c, func(b *testing.B) {
			s := &Stream{log: zap.NewNop(), parts: all, snap: &snapshots{dir: b.TempDir(), group: "g", topic: "t"}}
			for b.Loop() {
				s.snap.saved = nil // every partition dirty
				if c == "snapshotAll" {
					s.snapshotAll(time.Time{})
				} else {
					for p, part := range s.parts {
						if err := s.snap.save(p, part); err != nil {
							b.Fatal(err)
						}
					}
				}
				if len(s.snap.saved) != parts {
					b.Fatalf("%d partitions saved, want %d", len(s.snap.saved), parts)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/(parts*devices), "µs/device")
		})
	}
}
