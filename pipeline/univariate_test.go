package pipeline

import (
	"github.com/vigil/vigil/contract"

	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// uvRun feeds one metric of one device, every step, through a Processor at
// the built-in defaults and returns what each reading produced.
type uvStep struct {
	ts       time.Time
	score    float64
	incident string
	repeat   bool
	alerts   []contract.Alert
}

func uvRun(t *testing.T, n int, step time.Duration, gen func(i int, ts time.Time) float64) []uvStep {
	t.Helper()
	off := NewOffline(Default(), "r", nil)
	out := make([]uvStep, n)
	ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday
	for i := 0; i < n; i++ {
		r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "d", TS: ts, IngestedAt: ts,
			Metrics: []contract.Metric{{Name: "m", Value: gen(i, ts)}}}
		_, res := off.Step(&r)
		out[i] = uvStep{ts: ts, score: res.Score, incident: res.Incident, repeat: res.Repeat, alerts: append([]contract.Alert(nil), res.Alerts...)}
		ts = ts.Add(step)
	}
	return out
}

func opened(steps []uvStep, from, to int) (n int, first *contract.Alert) {
	for i := from; i < to && i < len(steps); i++ {
		for k := range steps[i].alerts {
			if a := &steps[i].alerts[k]; a.State == "open" {
				if first == nil {
					first = a
				}
				n++
			}
		}
	}
	return n, first
}

// A lasting level shift raises one alert, is accepted as the new normal
// after accept_after (the incident closes with accepted set), and the
// device stays silent on its new level.
func TestPersistentShiftAlertsOnceThenLearns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const shift = 2000
	steps := uvRun(t, 5000, 5*time.Minute, func(i int, _ time.Time) float64 {
		if i >= shift {
			return 80 + 2*rng.NormFloat64()
		}
		return 50 + 2*rng.NormFloat64()
	})
	n, a := opened(steps, shift, shift+36)
	if n != 1 || a.TS != steps[shift].ts {
		t.Fatalf("want exactly one alert in the 3 hours from the shift, at its first reading; got %d (first %+v)", n, a)
	}
	accepted := -1
	for i := shift; i < len(steps); i++ {
		for _, x := range steps[i].alerts {
			if x.State == "closed" && x.Accepted && x.AlertID == a.AlertID {
				accepted = i
			}
		}
	}
	if accepted < 0 {
		t.Fatal("the shift was never accepted as the new normal")
	}
	took := steps[accepted].ts.Sub(steps[shift].ts)
	if took < 2*time.Hour || took > 3*time.Hour {
		t.Fatalf("incident accepted as the new normal at reading %d (%s after the shift), want 2h-3h after", accepted, took)
	}
	// on the new level it is as quiet as on the old: the same rate of
	// (false) alerts per day, within the budget
	before, _ := opened(steps, 300, shift)
	after, _ := opened(steps, accepted+1, len(steps))
	days := func(n int) float64 { return float64(n) / 288 }
	b := Default().AlertBudget
	if float64(after)/days(len(steps)-accepted-1) > 2*b || float64(before)/days(shift-300) > 2*b {
		t.Fatalf("alerts per day before the shift %.2f, after its acceptance %.2f; budget %g", float64(before)/days(shift-300), float64(after)/days(len(steps)-accepted-1), b)
	}
	flagged := 0
	for i := accepted + 1; i < len(steps); i++ {
		if steps[i].incident != "" {
			flagged++
		}
	}
	if flagged > (len(steps)-accepted)/50 {
		t.Fatalf("%d of %d readings after acceptance flagged: the new level was not learnt", flagged, len(steps)-accepted-1)
	}
}

// A fault that ends before accept_after is alerted on every one of its
// readings and is not learnt: the same fault later alerts again.
func TestTemporaryFaultAlertsWholeLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	inFault := func(i int) bool { return i >= 2000 && i < 2018 || i >= 3500 && i < 3518 } // 90 min each
	steps := uvRun(t, 4000, 5*time.Minute, func(i int, _ time.Time) float64 {
		if inFault(i) {
			return 70 + 2*rng.NormFloat64()
		}
		return 50 + 2*rng.NormFloat64()
	})
	for _, from := range []int{2000, 3500} {
		for i := from; i < from+18; i++ {
			if steps[i].incident == "" {
				t.Fatalf("fault reading %d (%d into the fault) is not flagged (score %.3f)", i, i-from, steps[i].score)
			}
		}
		if n, _ := opened(steps, from, from+18); n != 1 {
			t.Fatalf("fault at %d: %d alerts, want 1", from, n)
		}
	}
}

// A daily cycle raises nothing once learnt; the day's peak value at the
// hour of its trough raises an alert that names the cycle and what was
// expected at that hour.
func TestDailyCycleAndOffHourPeak(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const day = 288            // 5-minute readings
	peakAt := 10*day + day/4*3 // day 10, 18:00: the trough of the cycle
	steps := uvRun(t, 12*day, 5*time.Minute, func(i int, ts time.Time) float64 {
		h := float64(ts.Hour()) + float64(ts.Minute())/60
		v := 50 + 20*math.Sin(2*math.Pi*h/24) + rng.NormFloat64()
		if i >= peakAt && i < peakAt+3 {
			v = 70 + rng.NormFloat64() // the 06:00 peak, 12 hours late
		}
		return v
	})
	// the cycle itself: no more than the budget's false alerts per day
	if n, a := opened(steps, 4*day, peakAt); float64(n)/6.75 > 2*Default().AlertBudget {
		t.Fatalf("%d alerts on the plain cycle in 6.75 days, first %+v", n, a)
	}
	n, a := opened(steps, peakAt, peakAt+3)
	if n != 1 {
		t.Fatalf("off-hour peak: %d alerts, want 1", n)
	}
	r := a.Reasons[0]
	if r.Detector != "cycle" || r.Expected > 40 || r.Observed < 65 || r.Text == "" {
		t.Fatalf("off-hour peak reason %+v: want the cycle detector, expected about 30 at 18:00, observed about 70", r)
	}
	t.Logf("off-hour peak: %s", r.Text)
}

// Pareto-tailed counts (a request counter) stay within the alert budget.
func TestParetoCountsWithinBudget(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	const days = 60
	steps := uvRun(t, days*288, 5*time.Minute, func(int, time.Time) float64 {
		return math.Floor(10 / math.Pow(1-rng.Float64(), 1/1.5)) // Pareto, index 1.5
	})
	n, _ := opened(steps, 288, len(steps))
	perDay := float64(n) / (days - 1)
	t.Logf("Pareto counts: %d alerts in %d days (%.2f per day, budget %g)", n, days-1, perDay, Default().AlertBudget)
	if perDay > 1.5*Default().AlertBudget {
		t.Fatalf("%.2f alerts per day, over the budget of %g", perDay, Default().AlertBudget)
	}
}

// Calibration: on clean series of different shapes and rates, the false
// alerts per device-day stay at or under the budget, and lowering the
// budget lowers them.
func TestCalibration(t *testing.T) {
	shapes := []struct {
		name string
		gen  func(rng *rand.Rand) float64
	}{
		{"gaussian", func(rng *rand.Rand) float64 { return 100 + 5*rng.NormFloat64() }},
		{"laplace", func(rng *rand.Rand) float64 { return 100 + 5*rng.ExpFloat64()*float64(1-2*rng.IntN(2)) }},
		{"lognormal", func(rng *rand.Rand) float64 { return math.Exp(3 + rng.NormFloat64()) }},
		{"poisson-ish", func(rng *rand.Rand) float64 { return math.Round(4 + 2*rng.NormFloat64()*rng.Float64()) }},
		{"mostly-zero", func(rng *rand.Rand) float64 { // idle, with bursts: runs of zeros
			if rng.Float64() < 0.8 {
				return 0
			}
			return math.Round(100 * rng.ExpFloat64())
		}},
	}
	var rates []float64
	for _, step := range []time.Duration{time.Minute, 5 * time.Minute} {
		for _, sh := range shapes {
			rng := rand.New(rand.NewPCG(7, 7))
			n := int(20 * 24 * time.Hour / step)
			steps := uvRun(t, n, step, func(int, time.Time) float64 { return sh.gen(rng) })
			perDay := float64(mustOpened(steps, n/10)) / 18
			t.Logf("%-12s every %-4s %.2f false alerts per device-day (budget %g)", sh.name, step, perDay, Default().AlertBudget)
			if b := Default().AlertBudget; perDay > 2*b {
				t.Errorf("%s every %s: %.2f false alerts per day, budget %g", sh.name, step, perDay, b)
			}
			rates = append(rates, perDay)
		}
	}
	sort.Float64s(rates)
	if med, b := (rates[len(rates)/2-1]+rates[len(rates)/2])/2, Default().AlertBudget; med < b/3 || med > 1.5*b {
		t.Errorf("median false alerts per day %.2f, want within [%.2f, %.2f] of the budget %g", med, b/3, 1.5*b, b)
	}
}

func mustOpened(steps []uvStep, from int) int {
	n, _ := opened(steps, from, len(steps))
	return n
}

// A job that spikes the metric at 02:10 every night alerts on its first
// nights, then is the metric's habit and stays silent; the same spike at
// 15:00 is still news and alerts.
func TestDailyRecurringSpikeIsLearnt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const perDay = 288 // every 5 minutes
	offHour := 9*perDay + 15*12
	steps := uvRun(t, 11*perDay, 5*time.Minute, func(i int, ts time.Time) float64 {
		v := 50 + 2*rng.NormFloat64()
		if ts.Hour() == 2 && ts.Minute() == 10 || i == offHour {
			v += 13
		}
		return v
	})
	nightly := func(day int) int {
		n, _ := opened(steps, day*perDay+2*12, day*perDay+3*12)
		return n
	}
	if nightly(0) != 1 {
		t.Fatalf("the first night's spike raised %d alerts, want 1", nightly(0))
	}
	for day := 3; day < 11; day++ {
		if n := nightly(day); n != 0 {
			t.Errorf("night %d: the recurring 02:10 spike raised %d alerts, want none once it is a habit", day, n)
		}
	}
	if n, _ := opened(steps, offHour, offHour+1); n != 1 {
		t.Errorf("the same spike at 15:00 raised %d alerts, want 1", n)
	}
	if n, _ := opened(steps, 3*perDay, 11*perDay); n != 1 {
		t.Errorf("%d alerts from day 3 on, want exactly the off-hour one", n)
	}
}

// A device that goes silent for an hour every six hours alerts on its
// first gaps; once the gap is its habit it stays silent, and a far longer
// silence alerts again.
func TestRecurringGapIsLearnt(t *testing.T) {
	off := NewOffline(Default(), "r", nil)
	ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(7, 7))
	var gapAlerts []int // the gap (1-based) each gap alert followed
	gap := 0
	step := func() {
		r := contract.Reading{ID: ts.String(), DeviceID: "d", TS: ts, IngestedAt: ts,
			Metrics: []contract.Metric{{Name: "m", Value: 50 + rng.NormFloat64()}}}
		_, res := off.Step(&r)
		for _, a := range res.Alerts {
			if a.State == "open" && a.Metric == "dt" {
				gapAlerts = append(gapAlerts, gap)
			}
		}
	}
	for gap = 0; gap < 12; gap++ {
		for i := 0; i < 300; i++ { // five hours, a reading a minute
			step()
			ts = ts.Add(time.Minute + time.Duration(rng.IntN(5))*time.Second)
		}
		ts = ts.Add(time.Hour)
		if gap == 10 {
			ts = ts.Add(9 * time.Hour) // ten hours this time
		}
	}
	step()
	t.Logf("gap alerts after gaps %v", gapAlerts)
	if len(gapAlerts) == 0 || gapAlerts[0] != 1 {
		t.Fatalf("the first hour-long gap did not alert: %v", gapAlerts)
	}
	for _, g := range gapAlerts[1:] {
		if g >= 5 && g != 11 {
			t.Errorf("gap %d alerted after the hour-long gap became the habit: %v", g, gapAlerts)
		}
	}
	if gapAlerts[len(gapAlerts)-1] != 11 {
		t.Errorf("the ten-hour gap did not alert: %v", gapAlerts)
	}
}

// A metric that does again what its last incident did, no stronger and
// within realert_readings, is not alerted again (the incident is kept
// silent); a stronger one is, and so is the same one once the metric has
// been quiet for longer.
func TestRepeatIsSilentUnlessStronger(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	spikes := map[int]float64{2000: 40, 2200: 40, 2400: 80, 3300: 40}
	steps := uvRun(t, 3500, 5*time.Minute, func(i int, _ time.Time) float64 {
		return 50 + 2*rng.NormFloat64() + spikes[i]
	})
	if n, a := opened(steps, 2000, 2001); n != 1 || steps[2000].repeat {
		t.Fatalf("the first spike raised %d alerts (%+v), want 1", n, a)
	}
	if steps[2200].score >= repeatNews {
		t.Fatalf("the repeated spike scored %.3f, at or beyond repeatNews (%g): not the marginal repeat this test is about", steps[2200].score, repeatNews)
	}
	if n, _ := opened(steps, 2001, 2400); n != 0 || !steps[2200].repeat || steps[2200].incident != steps[2000].incident {
		t.Errorf("the same spike 200 readings later: %d alerts, repeat %v, incident %q; want a silent repeat of %q", n, steps[2200].repeat, steps[2200].incident, steps[2000].incident)
	}
	if n, _ := opened(steps, 2400, 2401); n != 1 {
		t.Errorf("a spike twice as large raised %d alerts, want 1", n)
	}
	if n, _ := opened(steps, 3300, 3301); n != 1 || steps[3300].repeat {
		t.Errorf("the first spike's size 900 readings after the last incident raised %d alerts (repeat %v), want 1", n, steps[3300].repeat)
	}
	if Default().RealertReadings >= 900 {
		t.Fatalf("the test assumes realert_readings below 900, not %d", Default().RealertReadings)
	}
}

// A repeat scoring at or beyond repeatNews is an event of its own: a
// dropout-sized or flood-sized excursion ten minutes after the same one
// alerts again (at a reading a second realert_readings are ten minutes),
// while a marginal one stays silent (TestRepeatIsSilentUnlessStronger).
func TestStrongRepeatAlerts(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	spikes := map[int]float64{3000: 1000, 3500: 1000}
	steps := uvRun(t, 4000, time.Second, func(i int, _ time.Time) float64 {
		return 50 + 2*rng.NormFloat64() + spikes[i]
	})
	if n, _ := opened(steps, 3000, 3001); n != 1 {
		t.Fatalf("the first flood raised %d alerts, want 1", n)
	}
	if steps[3500].score < repeatNews {
		t.Fatalf("the second flood scored %.3f, below repeatNews (%g): not the strong repeat this test is about", steps[3500].score, repeatNews)
	}
	if n, _ := opened(steps, 3001, 3600); n != 1 || steps[3500].repeat || steps[3500].incident == steps[3000].incident {
		t.Errorf("the same flood 500 readings later: %d alerts (repeat %v, incident %q, the first's %q), want an alert of its own",
			n, steps[3500].repeat, steps[3500].incident, steps[3000].incident)
	}
	if Default().RealertReadings <= 500 {
		t.Fatalf("the test assumes realert_readings above 500, not %d", Default().RealertReadings)
	}
}

// A value beyond every value the metric has shown alarms as a record even
// when deep dips on the other side made its tail heavy (a symmetric tail
// judges the spike by the dips); a metric with less than a day of history
// has no records to beat.
func TestNewRecordAlarms(t *testing.T) {
	for _, c := range []struct {
		name   string
		at     int  // reading of the spike (5 min apart)
		record bool // the spike opens an alert led by the record detector
	}{
		{"after five days", 1500, true},
		{"in the first day", 200, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			steps := uvRun(t, c.at+50, 5*time.Minute, func(i int, _ time.Time) float64 {
				switch {
				case i == c.at:
					return 56 // 6 above the level: a new high
				case i%70 == 35:
					return 38 // a deep dip every six hours
				}
				return 50 + 0.3*rng.NormFloat64()
			})
			n, first := opened(steps, c.at, c.at+1)
			led := n > 0 && first.Reasons[0].Detector == "record"
			if led != c.record {
				t.Fatalf("spike at %d: %d alerts, led by record %v (first %+v), want %v", c.at, n, led, first, c.record)
			}
			if led && first.Reasons[0].Text == "" || led && first.Reasons[0].Expected < 50 {
				t.Fatalf("record reason %+v: want the old record as expected and a text", first.Reasons[0])
			}
			if n, a := opened(steps, 300, c.at); c.at > 300 && n > 0 {
				t.Errorf("%d alerts on the dips and noise before the spike, the first %+v", n, a)
			}
		})
	}
}

// Values near the float64 limits make the records' gaps overflow; the
// scores stay numbers in [0, 1].
func TestRecordsAtFloatLimits(t *testing.T) {
	steps := uvRun(t, 1200, 5*time.Minute, func(i int, _ time.Time) float64 {
		switch {
		case i > 1000 && i%2 == 0:
			return math.MaxFloat64
		case i > 1000:
			return -math.MaxFloat64
		}
		return float64(i % 7)
	})
	for i, s := range steps {
		if !(s.score >= 0 && s.score <= 1) {
			t.Fatalf("reading %d: score %v", i, s.score)
		}
	}
}

// The per-metric detector names the kind of deviation: a reading that
// jumps is a "tail" reason, one that stays away from its level for
// several readings a "level" reason (a shift), so a lasting shift's
// incident reads "level" once it has lasted, while a lone spike's reads
// "tail" throughout.
func TestShiftIsLevelSpikeIsTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const spike, shift = 1500, 2000
	var leads []string
	off := NewOffline(Default(), "r", nil)
	ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 2010; i++ {
		v := 50 + 2*rng.NormFloat64()
		if i == spike {
			v += 40
		}
		if i >= shift {
			v += 30
		}
		r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "d", TS: ts, IngestedAt: ts, Metrics: []contract.Metric{{Name: "m", Value: v}}}
		off.Step(&r)
		ts = ts.Add(5 * time.Minute)
		if i == spike || i >= shift {
			lead := ""
			if len(off.pr.reasons) > 0 {
				lead = off.pr.reasons[0].Detector
			}
			leads = append(leads, lead)
		}
	}
	if leads[0] != "tail" && leads[0] != "record" {
		t.Errorf("the lone spike was led by %q, want tail (or record)", leads[0])
	}
	for k, d := range leads[1:] {
		want := "level"
		if k < uvLevelRun-1 {
			want = "tail" // the jump itself
		}
		if d != want && (want != "tail" || d != "record") {
			t.Errorf("reading %d of the shift was led by %q, want %s (all: %v)", k, d, want, leads[1:])
		}
	}
}

// A silent repeat (a spike like the metric's last incident's) that turns
// into another kind of anomaly, here a lasting burst of volatility, and
// scores above the spike it began with, is news: it raises its alert, led
// by the new kind, although it never outdoes the first incident's peak.
func TestRepeatThatChangesKindAlerts(t *testing.T) {
	// Noise sets the scene differently per seed (a record on noise may
	// hold an incident open at the first spike, the second may lead by
	// another detector): the seeds where both spikes did what the test
	// needs are judged, and there must be enough of them.
	judged := 0
	for seed := uint64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		steps := uvRun(t, 2300, 5*time.Minute, func(i int, _ time.Time) float64 {
			v := 50 + 2*rng.NormFloat64()
			switch {
			case i == 1800:
				v += 60
			case i == 2200:
				v += 11
			case i > 2200 && i <= 2260:
				v = 50 + 3*(v-50) // three times the noise
			}
			return v
		})
		if n, _ := opened(steps, 1800, 1801); n != 1 {
			t.Logf("seed %d: the first spike raised %d alerts, want 1", seed, n)
			continue
		}
		if n, _ := opened(steps, 2200, 2201); n != 0 || !steps[2200].repeat {
			t.Logf("seed %d: the smaller spike 400 readings later raised %d alerts (repeat %v), want a silent repeat", seed, n, steps[2200].repeat)
			continue
		}
		judged++
		n, a := opened(steps, 2201, 2300)
		if n != 1 || a.Reasons[0].Detector != "regime" {
			t.Errorf("seed %d: the burst of volatility after the silent spike raised %d alerts (%+v), want 1 led by regime", seed, n, a)
		}
	}
	if judged < 3 {
		t.Errorf("only %d of 8 seeds set the scene (an alerted spike, then a silent repeat); want at least 3", judged)
	}
}

func TestSameKind(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"m.tail", "m.tail", true},
		{"m.tail", "m.level", true},
		{"m.record", "m.tail", true},
		{"m.tail", "m.cycle", false},
		{"m.tail", "m.regime", false},
		{"m.tail", "n.tail", false},
		{"m.level", "n.level", false},
		{"dt.gap", "dt.gap", true},
		{"multivariate", "m.tail", false},
		{"a.b.tail", "a.b.level", true},
	} {
		if got := sameKind(c.a, c.b); got != c.want {
			t.Errorf("sameKind(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// A metric that idles at zero between bursts repeats itself all the time,
// so the stuck detector's run probability cannot judge it; a run of zeros
// well beyond the longest it has shown (writes that stopped, a key held)
// is news, led by stuck, even while the metric's last incident (a spike
// of another kind) has gone quiet but not yet closed. Its ordinary runs
// (records of their own while the history is young) stay within the
// alert budget.
func TestFrozenIdleMetricAlerts(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const spike, freeze, thaw = 2600, 2700, 3100
	steps := uvRun(t, 3300, 5*time.Minute, func(i int, _ time.Time) float64 {
		switch {
		case i == spike:
			return 5000
		case i >= freeze && i < thaw:
			return 0
		case rng.Float64() < 0.85:
			return 0
		}
		return math.Round(100 * rng.ExpFloat64())
	})
	// the longest ordinary run grows with the history, so the first days
	// see a few records: they must stay within the alert budget
	stuck := 0
	for i := 1; i < spike; i++ {
		for _, a := range steps[i].alerts {
			if a.State == "open" && a.Reasons[0].Detector == "stuck" {
				stuck++
			}
		}
	}
	days := steps[spike].ts.Sub(steps[0].ts).Hours() / 24
	if perDay := float64(stuck) / days; perDay > Default().AlertBudget {
		t.Errorf("ordinary runs of zeros raised %d stuck alerts in %.1f days (%.2f a day), over the budget %g", stuck, days, perDay, Default().AlertBudget)
	}
	if n, a := opened(steps, spike, spike+1); n != 1 || a.Reasons[0].Detector == "stuck" {
		t.Fatalf("the spike raised %d alerts (%+v), want 1", n, a)
	}
	n, a := opened(steps, freeze, thaw)
	if n != 1 || a.Reasons[0].Detector != "stuck" {
		t.Fatalf("400 readings of zeros raised %d alerts (%+v), want 1 led by stuck", n, a)
	}
	if !strings.Contains(a.Reasons[0].Text, "readings in a row; the longest run before was") {
		t.Errorf("the stuck alert's reason says %q; want the run and the longest one before", a.Reasons[0].Text)
	}
	t.Logf("the freeze alerted %s after it began: %s", a.TS.Sub(steps[freeze].ts), a.Reasons[0].Text)
}

// burstyCount is a request count read once a second: Poisson around rate,
// and in one reading of 100 a burst of Pareto size (index 2.5, from half
// the rate), as a busy gateway's.
func burstyCount(rng *rand.Rand, rate float64) float64 {
	n := math.Max(0, math.Round(rate+math.Sqrt(rate)*rng.NormFloat64()))
	if rng.Float64() < 0.01 {
		n += math.Round(rate / 2 * math.Pow(1-rng.Float64(), -1/2.5))
	}
	return n
}

// A request rate cut to a third for a minute, among bursts, alerts: no
// single reading of it is extreme (a burst goes further), but the
// evidence figure adds the minute up. The bursts themselves stay within
// the budget. Without the evidence figure the cut is found on none of the
// 6 seeds.
func TestSustainedRateCutAmongBurstsAlerts(t *testing.T) {
	const cut, end, n = 3000, 3060, 3400
	found, falseAlerts := 0, 0
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		steps := uvRun(t, n, time.Second, func(i int, _ time.Time) float64 {
			if i >= cut && i < end {
				return burstyCount(rng, 40.0/3)
			}
			return burstyCount(rng, 40)
		})
		if k, _ := opened(steps, cut, end+10); k > 0 {
			found++
		}
		k, _ := opened(steps, 0, cut)
		falseAlerts += k
	}
	t.Logf("cut found on %d of 6 seeds; %d alerts before it on 6×%d readings", found, falseAlerts, cut)
	if found < 5 {
		t.Errorf("a rate cut to a third for a minute alerted on %d of 6 seeds, want at least 5", found)
	}
	// 6×3000 s is 0.21 device-days: at the 0.6 budget about one alert,
	// in a young series (the histogram learns the bursts as it goes)
	if falseAlerts > 3 {
		t.Errorf("the bursts raised %d alerts in 6×%d readings, want at most 3", falseAlerts, cut)
	}
}

// A rare attr value is held to the alert budget like every other figure:
// a status that first changes after 2,000 readings is ordinary on a device
// that reports every second (2,000 readings are half an hour), and news
// on one that reports every five minutes (a week).
func TestRareAttrValueHeldToBudget(t *testing.T) {
	for _, tc := range []struct {
		step  time.Duration
		alert bool
	}{{time.Second, false}, {5 * time.Minute, true}} {
		off := NewOffline(Default(), "r", nil)
		ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
		var got []contract.Alert
		for i := 0; i < 2010; i++ {
			status := "auto"
			if i >= 2000 {
				status = "eco"
			}
			r := contract.Reading{ID: strconv.Itoa(i), DeviceID: "d", TS: ts, IngestedAt: ts,
				Metrics: []contract.Metric{{Name: "m", Value: 50 + float64(i%7)}}, Attrs: []contract.Attr{{Name: "status", Value: status}}}
			_, res := off.Step(&r)
			if i >= 2000 {
				for _, a := range res.Alerts {
					if a.State == "open" {
						got = append(got, a)
					}
				}
			}
			ts = ts.Add(tc.step)
		}
		switch {
		case tc.alert && (len(got) != 1 || got[0].Reasons[0].Detector != "attr" || got[0].Reasons[0].Feature != "attrs.status=eco"):
			t.Errorf("every %s: the first eco after 2,000 readings raised %+v, want one alert led by attrs.status=eco", tc.step, got)
		case !tc.alert && len(got) != 0:
			t.Errorf("every %s: the first eco after 2,000 readings raised %+v, want none", tc.step, got)
		}
	}
}

// A metric is a count (heavier prior tail, see uvCountA) while every value
// it has shown is whole and not negative; one value with a fraction or
// below zero makes it a measurement for good.
func TestCountFlag(t *testing.T) {
	p := newParams(Default())
	ts := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		vals  []float64
		count bool
	}{
		{"requests", []float64{40, 38, 0, 41, 1200}, true},
		{"temperature", []float64{20.5, 21, 20.75}, false},
		{"a count that turns fractional", []float64{3, 4, 5, 4.5, 6}, false},
		{"below zero", []float64{3, -1, 2}, false},
		{"whole but first fractional", []float64{0.5, 1, 2, 3}, false},
	} {
		u := newUVState()
		var o UVObs
		for i, v := range tc.vals {
			u.observe(&p.uv, v, ts.Add(time.Duration(i)*time.Minute), 1440, &o)
		}
		if u.Hist.Count != tc.count || u.RHist.Count != tc.count {
			t.Errorf("%s %v: count %v/%v, want %v", tc.name, tc.vals, u.Hist.Count, u.RHist.Count, tc.count)
		}
	}
}

// Floods a minute long, every quarter of an hour, on a request count read
// once a second, all alert: a flood is one event to the histograms (see
// learnWeight), not sixty readings of the metric's normal tail. When each
// flood taught its readings in full, the histogram's top percent filled
// with them and 16 of the 21 floods alerted.
func TestFloodsDoNotTeachTheTail(t *testing.T) {
	const warm, every, flood, floods = 1200, 900, 60, 7
	n := warm + floods*every
	caught := 0
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		steps := uvRun(t, n, time.Second, func(i int, _ time.Time) float64 {
			if i >= warm && (i-warm)%every < flood {
				return burstyCount(rng, 3*40)
			}
			return burstyCount(rng, 40)
		})
		for f := 0; f < floods; f++ {
			from := warm + f*every
			if k, _ := opened(steps, from, from+flood+10); k > 0 {
				caught++
			}
		}
	}
	t.Logf("floods alerted: %d of %d", caught, 3*floods)
	if caught < 3*floods-1 {
		t.Errorf("alerted %d of %d floods, want at least %d", caught, 3*floods, 3*floods-1)
	}
}

// wanderingLoad is a gateway's load factor, one call a reading: the
// exponential of an AR(1) (0.995 a reading, 0.25 in the log at rest), as
// the simulator's.
func wanderingLoad(rng *rand.Rand) func() float64 {
	load := 0.0
	return func() float64 {
		load = 0.995*load + math.Sqrt(1-0.995*0.995)*rng.NormFloat64()
		return math.Exp(0.25 * load)
	}
}

// A request count in the thousands, whose rate wanders with its load by
// more than its Poisson noise: the fast level, slowed while readings lie
// beyond the band on one side, still follows the wander. Frozen instead
// (session 22), it stayed held for as long as the wander went one way,
// and the evidence figure added the held wander up: 12 false alerts a
// device-day here. Slowed, 4: still well above the budget (0.6; 0.5
// without any hold), a known gap (see uvHoldFollow), so the bound only
// keeps it from getting worse.
func TestWanderingHighRateCountStaysQuiet(t *testing.T) {
	const n = 12 * 3600
	alerts := 0
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 17))
		wander := wanderingLoad(rng)
		steps := uvRun(t, n, time.Second, func(i int, _ time.Time) float64 {
			return burstyCount(rng, 1500*wander())
		})
		k, _ := opened(steps, 0, n)
		alerts += k
	}
	perDay := float64(alerts) / (4 * 0.5)
	t.Logf("%d alerts in 4 half-days: %.1f a device-day (budget %g)", alerts, perDay, Default().AlertBudget)
	if perDay > 5 {
		t.Errorf("%.1f false alerts a device-day on a wandering count, want at most 5", perDay)
	}
}

// A request rate that wanders (its log follows a slow random walk, as a
// gateway's load does) is judged against its fast level; a cut to a third
// that lasts alerts within its first minute and a half, on at least 5 of
// 6 seeds: the fast level slows to a quarter of its pace while readings
// keep falling beyond the band on one side, instead of following the step
// down within ten readings, before the evidence figure adds the step up.
func TestRateCutOnWanderingLevelAlerts(t *testing.T) {
	const cut, n = 3000, 3090
	found := 0
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 13))
		wander := wanderingLoad(rng)
		steps := uvRun(t, n, time.Second, func(i int, _ time.Time) float64 {
			rate := 40 * wander()
			if i >= cut {
				rate /= 3
			}
			return burstyCount(rng, rate)
		})
		if k, _ := opened(steps, cut, n); k > 0 {
			found++
		}
	}
	t.Logf("cut found on %d of 6 seeds", found)
	if found < 5 {
		t.Errorf("a lasting rate cut to a third alerted within 90 s on %d of 6 seeds, want at least 5", found)
	}
}

// learnWeight: a run teaches one reading's worth per uvRunLearn of event
// time, never less than nothing (a reading from before the run's start).
func TestLearnWeight(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		runN  int32
		after time.Duration
		want  float32
	}{
		{"outside a run", 0, 0, 1},
		{"a run's first reading", 1, 0, 1},
		{"a second a reading, the 61st", 61, time.Minute, 1.0 / 300},
		{"five minutes a reading, the 3rd", 3, 10 * time.Minute, 1},
		{"an hour a reading, the 3rd (capped)", 3, 2 * time.Hour, 1},
		{"event time went back", 5, -time.Minute, 0},
	} {
		u := UVState{RunN: c.runN, RunStart: stampOf(t0)}
		if got := u.learnWeight(t0.Add(c.after)); math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("%s: learnWeight %g, want %g", c.name, got, c.want)
		}
	}
}
