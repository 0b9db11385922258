package pipeline

import (
	"github.com/vigil/vigil/contract"

	"bytes"
	"encoding/gob"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCfg is Default() with what the unit tests need smaller: no
// multivariate model, short quiet times, small windows.
func testCfg() Config {
	c := Default()
	c.Group, c.BatchMaxReadings, c.BatchMaxWait = "g", 100, time.Millisecond
	c.IncidentQuiet, c.IncidentQuietReadings = time.Minute, 12
	c.DedupWindow, c.SnapshotInterval, c.RestoreLookback, c.AlertStoreSize, c.AttrBuckets = 8, time.Second, 1000, 100, 8
	c.MVWarmup, c.MVRefit = 0, 0
	return c
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func reading(dev string, i int, v float64) contract.Reading {
	return contract.Reading{ID: dev + "-" + strconv.Itoa(i), DeviceID: dev, TS: t0.Add(time.Duration(i) * time.Second),
		Metrics: []contract.Metric{{Name: "temp", Value: v}}, Attrs: []contract.Attr{{Name: "mode", Value: "auto"}}, IngestedAt: t0}
}

func TestScoreOfZ(t *testing.T) {
	for _, c := range []struct{ z, want float64 }{{0, 0}, {6, 0.8}, {-6, 0.8}} {
		if got := ScoreOfZ(c.z); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("ScoreOfZ(%g) = %g, want %g", c.z, got, c.want)
		}
	}
	if ScoreOfZ(3) > 0.35 || ScoreOfZ(10) < 0.98 {
		t.Errorf("ScoreOfZ is not the documented curve: 3→%g 10→%g", ScoreOfZ(3), ScoreOfZ(10))
	}
}

func TestMetricOf(t *testing.T) {
	for in, want := range map[string]string{"temp_c.z": "temp_c", "temp_c.vol": "temp_c", "a.b.stuck": "a.b", "dt.z": "dt", "attrs.mode=fault": "attrs.mode", "x": "x"} {
		if got := metricOf(in); got != want {
			t.Errorf("metricOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// Gaussian noise for 5,000 readings raises no alert; a 12-sigma spike does,
// naming the metric, then the incident closes after the quiet period with
// the count of readings it covered.
func TestDetectAndIncident(t *testing.T) {
	pr := NewProcessor(testCfg(), "r", nil)
	part := newPartition()
	rng := rand.New(rand.NewPCG(1, 1))
	var res StepResult
	var buf []byte
	i := 0
	for ; i < 5000; i++ {
		r := reading("d", i, 50+rng.NormFloat64())
		buf = pr.Step(part, &r, true, buf[:0], &res)
		if len(res.Alerts) > 0 {
			t.Fatalf("false alert at reading %d: %+v", i, res.Alerts[0])
		}
	}
	// three anomalous readings in a row: one incident, one alert
	var opened []contract.Alert
	for k := 0; k < 3; k++ {
		r := reading("d", i, 62+rng.NormFloat64()*0.1)
		i++
		buf = pr.Step(part, &r, true, buf[:0], &res)
		opened = append(opened, res.Alerts...)
		if res.Score < 0.8 {
			t.Fatalf("anomalous reading %d scored %g", k, res.Score)
		}
	}
	if len(opened) != 1 || opened[0].State != "open" || opened[0].Metric != "temp" || !strings.HasPrefix(opened[0].Reasons[0].Feature, "temp.") ||
		opened[0].Reasons[0].Expected < 49 || opened[0].Reasons[0].Expected > 51 || opened[0].Reasons[0].Observed < 61 || opened[0].Reasons[0].Text == "" {
		t.Fatalf("want one open alert on temp, got %+v", opened)
	}
	if !bytes.Contains(buf, []byte(`"score":0.`+strconv.Itoa(int(res.Score * 1000))[:1])) || res.Score < 0.8 {
		t.Fatalf("enriched record lacks the score: %s", buf)
	}
	// quiet: normal readings for longer than incident_quiet close it
	var closed []contract.Alert
	for k := 0; k < 90; k++ {
		r := reading("d", i, 50+rng.NormFloat64())
		i++
		pr.Step(part, &r, true, nil, &res)
		closed = append(closed, res.Alerts...)
	}
	if len(closed) != 1 || closed[0].State != "closed" || closed[0].AlertID != opened[0].AlertID || closed[0].Readings < 3 {
		t.Fatalf("want the incident closed with ≥3 readings, got %+v", closed)
	}
}

func TestDedupByID(t *testing.T) {
	pr := NewProcessor(testCfg(), "r", nil)
	part := newPartition()
	var res StepResult
	r := reading("d", 1, 1)
	pr.Step(part, &r, true, nil, &res)
	if res.Duplicate {
		t.Fatal("first copy marked duplicate")
	}
	pr.Step(part, &r, true, nil, &res)
	if !res.Duplicate {
		t.Fatal("second copy not marked duplicate")
	}
	// the window is bounded (8): an id 9 readings back is forgotten
	for i := 2; i < 11; i++ {
		x := reading("d", i, 1)
		pr.Step(part, &x, true, nil, &res)
	}
	pr.Step(part, &r, true, nil, &res)
	if res.Duplicate {
		t.Fatal("id outside the dedup window still remembered")
	}
}

// State restored from a snapshot and a replay equals the state of an
// uninterrupted run: the scores after the restore are identical.
func TestSnapshotReplayDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	var rs []contract.Reading
	for i := 0; i < 3000; i++ {
		v := 20 + rng.NormFloat64()
		if i%700 == 699 {
			v += 15
		}
		rs = append(rs, reading("d"+strconv.Itoa(i%3), i, v))
	}
	straight := NewProcessor(testCfg(), "r", nil)
	sp := newPartition()
	var res StepResult
	var want []float64
	for i := range rs {
		straight.Step(sp, &rs[i], true, nil, &res)
		want = append(want, res.Score)
	}

	dir := t.TempDir()
	snap := &snapshots{dir: dir, group: "g", topic: "raw"}
	first := NewProcessor(testCfg(), "r", nil)
	p1 := newPartition()
	for i := 0; i < 1200; i++ {
		first.Step(p1, &rs[i], true, nil, &res)
	}
	p1.Next = 1200
	if err := snap.save(0, p1); err != nil {
		t.Fatal(err)
	}
	// the process goes on to 1900 and crashes; its state is lost
	second := NewProcessor(testCfg(), "r", nil)
	p2, err := snap.load(0)
	if err != nil || p2 == nil || p2.Next != 1200 {
		t.Fatalf("load snapshot: %v %+v", err, p2)
	}
	for i := 1200; i < 1900; i++ { // replay, no output
		second.Step(p2, &rs[i], false, nil, &res)
	}
	for i := 1900; i < len(rs); i++ {
		second.Step(p2, &rs[i], true, nil, &res)
		if res.Score != want[i] {
			t.Fatalf("reading %d scored %g after restore, %g uninterrupted", i, res.Score, want[i])
		}
	}
	var a, b bytes.Buffer
	_ = gob.NewEncoder(&a).Encode(sp.Devices["d1"].Metrics)
	_ = gob.NewEncoder(&b).Encode(p2.Devices["d1"].Metrics)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("restored baselines differ from the uninterrupted ones")
	}
}

// Each kind of fault the simulator injects is caught by the baseline.
func TestBaselineFaultKinds(t *testing.T) {
	cases := []struct {
		name string
		gen  func(i int, rng *rand.Rand) (float64, time.Duration)
	}{
		{"level shift", func(i int, rng *rand.Rand) (float64, time.Duration) {
			if i >= 600 {
				return 58 + rng.NormFloat64(), time.Second
			}
			return 50 + rng.NormFloat64(), time.Second
		}},
		{"stuck", func(i int, rng *rand.Rand) (float64, time.Duration) {
			if i >= 600 {
				return 50.123, time.Second
			}
			return 50 + rng.NormFloat64(), time.Second
		}},
		{"noise burst", func(i int, rng *rand.Rand) (float64, time.Duration) {
			if i >= 600 {
				return 50 + 7*rng.NormFloat64(), time.Second
			}
			return 50 + rng.NormFloat64(), time.Second
		}},
		{"dropout", func(i int, rng *rand.Rand) (float64, time.Duration) {
			if i == 600 {
				return 50 + rng.NormFloat64(), 90 * time.Second
			}
			return 50 + rng.NormFloat64(), time.Second
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pr := NewProcessor(testCfg(), "r", nil)
			part := newPartition()
			rng := rand.New(rand.NewPCG(9, 9))
			ts := t0
			var res StepResult
			alertAt := -1
			for i := 0; i < 700; i++ {
				v, dt := c.gen(i, rng)
				ts = ts.Add(dt)
				r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "d", TS: ts, Metrics: []contract.Metric{{Name: "m", Value: v}}}
				pr.Step(part, &r, true, nil, &res)
				for _, a := range res.Alerts {
					if a.State == "open" && alertAt < 0 {
						alertAt = i
					}
				}
			}
			if alertAt < 600 || alertAt > 640 {
				t.Fatalf("alert at reading %d, want within 40 readings of the fault at 600", alertAt)
			}
		})
	}
}

// The featurizer's vector: metric values and derived figures as they are,
// zeros for a metric the reading lacks, attrs one-hot by hashing.

// Devices of a group get its settings: the same jump alerts on a device
// with the default threshold and not on one of a group that raised it.
func TestGroupsTuneDevices(t *testing.T) {
	cfg := testCfg()
	cfg.Groups = []Group{{Name: "lenient", DevicePrefix: "quiet-", Threshold: 0.99}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	off := NewOffline(cfg, "eu", nil)
	alerts := map[string]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dev := range []string{"loud-1", "quiet-1"} {
		for i := 0; i < 200; i++ {
			v := 20 + rng.NormFloat64()
			if i == 150 {
				v += 7 // z about 7: score about 0.89
			}
			r := reading(dev, i, v)
			_, res := off.Step(&r)
			for _, a := range res.Alerts {
				if a.State == "open" {
					alerts[dev]++
					if a.Threshold != map[string]float64{"loud-1": 0.8, "quiet-1": 0.99}[dev] {
						t.Errorf("%s alert threshold %g", dev, a.Threshold)
					}
				}
			}
		}
	}
	if alerts["loud-1"] != 1 || alerts["quiet-1"] != 0 {
		t.Fatalf("alerts %v: want one on loud-1 and none on quiet-1", alerts)
	}
	// a bad group setting is refused with its name and key
	cfg.Groups = []Group{{Name: "bad", Site: "x", MVSmooth: 5000}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "groups[0] (bad).mv_smooth") {
		t.Fatalf("bad group: %v", err)
	}
	cfg.Groups = []Group{{Name: "all"}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "device_prefix, site, model") {
		t.Fatalf("group matching everything: %v", err)
	}
}
