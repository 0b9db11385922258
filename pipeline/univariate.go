package pipeline

import (
	"math"
	"slices"
	"time"
	"unsafe"
)

// The per-metric detector: what a single metric of a device says on its
// own, for series that are not stationary noise around a set point (server
// and traffic metrics, counts, prices, latencies, temperatures of machines
// that cycle). It works in four steps, all causal and O(1) per reading:
//
//  1. Expected value. Four forecasters run side by side: a slow level (an
//     EW mean, half_life readings), a fast level (EW, 8 readings), a daily
//     profile (48 half-hour bins of the deviation from the slow level) and
//     a weekly one (168 hourly bins). Each keeps the EW mean absolute error
//     of its forecasts; the one with the smallest error is used, so a
//     metric with a daily or weekly pattern is judged against its profile
//     once the profile has seen three days (three weeks), a wandering
//     metric against its recent level, a stationary one against its long
//     mean. The choice is per device and metric, from its own history.
//  2. Nonconformity: s = |value - expected| / that forecaster's mean
//     absolute error.
//  3. Tail probability. s is placed in the device-metric's own decayed
//     histogram of past s (48 log-spaced bins, a Gaussian prior of 30
//     readings): below its 99th percentile the probability of an s at
//     least as large is read off the histogram; above it, it is
//     extrapolated by the power law through the 95th and 99th percentiles
//     (a Pareto tail, whose index the histogram measures: heavy-tailed
//     and count-like metrics get a slow tail and need a far larger s to
//     alarm than Gaussian ones). A count (values all whole and not
//     negative) starts from a heavier prior tail, and its index is the
//     heavier of that and the one measured on the mass beyond the 99th
//     percentile itself: a count's bursts begin near the 99th, where
//     the 95th-to-99th shape says nothing about them. A second figure,
//     the regime, is the same probability for the short-term (EW, 6
//     readings) mean of s: a change of volatility or of the rate of
//     spikes shows there before any single reading is extreme. A third,
//     the evidence figure (see cusum), adds up what readings beyond the
//     95th percentile say, so that a sustained change that no single
//     reading makes extreme (a request rate cut to a third among bursts)
//     alerts within seconds; it counts as the regime's.
//     The reading's figure is named "level" (a shift) rather than "tail"
//     (a spike) when the reading and the uvLevelRun-1 before it all lie
//     beyond the band of usual values on one side; the short-term figure
//     such a shift lifts then counts as the shift's (see Baseline.Score).
//     Vigil before session 12 had a third figure, the distance from the
//     slow level with a histogram of its own: on a metric that keeps to
//     a set point it duplicated the tail figure, and on one that wanders
//     it alarmed on the wandering (on the NAB development split, 15 of 79
//     false detections and no window found first).
//  4. Records. A value beyond every value the metric has shown (its two
//     highest and two lowest, which fade toward the slow level over a
//     year) is news on its own: the tail above cannot see it when the
//     other side's excursions, or a long-gone regime, set the histogram.
//     Its figure grows with the history it beats, counted in half-hours
//     (consecutive readings are not independent draws), and with how far
//     it goes beyond the old record in units of the gap between the two
//     highest (at least the metric's spread: a record that noise sets by a
//     hair is no news): ln(half-hours) · min(2, excess/gap). It needs a
//     day of history, so a young metric's first highs are not news, and
//     on a device that reports every second it needs days (its alert
//     level is higher). On the NAB development set it found 44 windows
//     where the detector found 41, with 79 false detections for 76.
//  5. Calibration. A probability p becomes the score 1 - 5^-(ln p / ln
//     p_alert), where p_alert = alert_budget · uvBudgetK / (readings per
//     day of the device) / 3 (see alertL): the score reaches 0.8 (the
//     default threshold) where the detector expects alert_budget false
//     alerts per device-day, on every metric, whatever its distribution
//     and sampling rate. An attr's rare value is held to the same p_alert
//     (its probability: the value's share of the attr's readings).
//
// A run of anomalous readings freezes the forecasters (an anomaly must not
// teach the baseline to accept it); the histograms learn every reading,
// but a run teaches them as one event per uvRunLearn of event time (see
// learnWeight), and the fast level slows to a quarter of its pace through
// readings in a row beyond the band on one side.
// When the run lasts accept_after of event time, the change is taken as
// the new normal: the levels restart from the run's recent values, and
// the processor closes the incident as accepted. A fault that ends sooner
// never gets there.

// uvBins is the size of the nonconformity histograms: 3 bins an octave
// from s = 2^-4 to 2^12 (larger s count in the last bin; the quantiles
// the figures read never reach it). Vigil before session 12 had 72 bins,
// to 2^20, and a third histogram: DeviceState.upgrade folds its
// snapshots' bins.
const (
	uvBins       = 48
	uvBinsPerOct = 3
	uvMinLog2    = -4
	uvRing       = 8
	uvLevelRun   = 3 // readings in a row beyond the band on one side that make a shift ("level") rather than a spike ("tail")
	uvHoldRun    = 2 // readings in a row beyond the band on one side that hold the fast level (see observe)
	// uvHoldFollow is the fast level's pace while it holds (its half-life
	// 32 readings rather than 8). Session 22 froze it: a request count in
	// the thousands, whose rate wanders by more than its Poisson noise,
	// then stayed held for as long as the wander went one way, and over a
	// day the simulated gateways raised 2.6 false alerts a device-day,
	// most of them the evidence figure adding up a held wander; at a
	// quarter of its pace, 1.6 (their anomalies 86.7 -> 85.6 % alerted,
	// their regime changes 71 -> 60 % in a 4-hour run;
	// TestWanderingHighRateCountStaysQuiet: 12 -> 4 a device-day, 0.5
	// without the hold). Holding only on metrics whose exceedances
	// seldom come in pairs kept such a count within its budget, but lost
	// NAB's machine-temperature window the hold had found (71.7 -> 70.0).
	uvHoldFollow = 0.25
	uvDayBins    = 48
	uvWeekBins   = 168
	uvPrior      = 30.0
	uvHistHL     = 3000.0 // half-life of the histograms, readings
	uvErrHL      = 300.0  // half-life of the forecasters' errors, readings
	uvFastHL     = 8.0
	uvRegimeHL   = 6.0
)

// The daily recurrence memory: a reading that goes no further from the
// slow level (in spreads) than the metric went at the same half hour on
// an earlier day does not open an alert. A job that spikes the metric at
// 02:10 every night is then normal after its first night, while the same
// spike at 15:00 still alarms. Levels are kept as 8·log2 of the deviation
// in a byte; a reading is excused up to uvRecTol above the earlier days'
// figure (a factor 1.5), which loses uvRecDecay a day (9 %), so a spike
// that stopped recurring is news again after five days. On the NAB
// development split this memory and the gap habit (gapRecurN) cut false
// detections from 156 to 103 and found the same 40 windows; SKAB and the
// simulated fleet did not move.
const (
	uvRecDecay = 1
	uvRecTol   = 5
)

// recLevel quantizes a deviation of d spreads (0 below one spread).
func recLevel(d float64) uint8 {
	if !(d >= 1) {
		return 0
	}
	return uint8(min(255, 1+math.Floor(8*math.Log2(d))))
}

// The tail index's shrinkage: uvTailN0 readings' worth of the prior's
// index (uvPriorA, a Gaussian's through its 95th and 99th percentiles);
// uvTailN caps the count of readings it weighs against. A count's index
// rests on the readings beyond its 99th percentile, one in a hundred, so
// its prior (uvCountA) weighs uvCountN0 readings, about thirty of them,
// and the index is the running mean of its estimates (see refresh): the
// forty-odd bursts of a histogram's half-life measured the simulated
// gateways' Pareto 2.5 anywhere from 1.4 to 4.5, so a natural burst
// alarmed where the estimate was high (a young gateway's most of all,
// its index resting on a handful of bursts) and a flood of 30 times the
// rate went unseen where it was low. With 100 readings of prior and no
// running mean the gateways raised 1.9 false alerts a device-day and
// alerted 72 % of their floods; now 0.9 and 83 %.
const (
	uvTailN0  = 100.0
	uvCountN0 = 3000.0
	uvTailN   = 30000
)

// uvCountA is the tail index's prior for a count (a metric whose values
// have all been whole and not negative: requests, clicks, errors, events).
// Counts of events come in bursts far more often than a Gaussian's tail
// allows, so a young count's first burst is not yet news; its own
// exceedances take over as they come (see uvHist.refresh).
const uvCountA = 2.0

var uvPriorA = func() float64 {
	c := math.Sqrt(2 / math.Pi)
	q := func(p float64) float64 { return math.Sqrt2 * math.Erfinv(1-p) / c } // s exceeded with probability p
	return math.Log(5) / math.Log(q(0.01)/q(0.05))
}()

// uvBudgetK turns an alert budget into a probability per reading: alerts
// are rarer than alarming readings (an incident covers many readings, and
// closes only after incident_quiet_readings), so the probability per
// reading is budget·K/readings-per-day. K is measured on clean synthetic
// series of several shapes and rates (TestCalibration logs the figures).
const uvBudgetK = 8.3

// alertL is -ln of the probability per reading at which a figure alarms,
// for an alert budget (false alerts per device-day) and a device that
// sends rpd readings per day.
func alertL(budget, rpd float64) float64 {
	pAlert := budget * uvBudgetK / math.Max(rpd, 1) / 3
	return -math.Log(math.Max(1e-12, math.Min(pAlert, uvPAlertMax)))
}

// uvPAlertMax is the largest probability per reading that may alarm,
// whatever the budget: on a device that reports rarely (hourly, every
// half hour), budget·K/readings-per-day would let a 1-in-15 reading
// alarm, and an alert must stay a rare event among the device's own
// readings. At 0.005 (one reading in 200) it binds below about 330
// readings per day at the default budget. On the NAB development set it
// cut false detections from 181 to 155 and found the same windows.
const uvPAlertMax = 0.005

// Forecasters.
const (
	fcSlow = iota
	fcFast
	fcDay
	fcWeek
	nForecasters
)

// UVState is the per-metric detector's state. Fields are exported for the
// snapshot encoding.
type UVState struct {
	// (8-byte fields first, then 4-byte ones: 320 bytes, a size class)
	N       int64
	FirstTS stamp
	Slow    float64
	Fast    float64
	Err     [nForecasters]float64 // EW mean absolute error of each forecaster
	Spread  float64               // EW mean absolute deviation from Slow (a floor for the scales)
	// B holds the decayed histograms of s (uvArrHist) and of the regime
	// figure (uvArrRHist), and the daily (value per half hour of day,
	// interpolated; NaN: unseen) and weekly (per hour of week) profiles,
	// in one slice (see binSet); Hist and RHist are the histograms'
	// cached quantiles.
	B     binSet
	Hist  uvQ
	RHist uvQ
	Hi    [2]float64 // the two highest values (records; fading toward Slow)
	Lo    [2]float64 // the two lowest
	// Rec remembers how far from the slow level the metric went at each
	// half hour of day (see recurrence): up and down on the days before
	// (decayed), then up and down today; RecDay is today's day number.
	Rec      lazyBins[uint8]
	RunStart stamp               // event time of the run's first reading
	ErrN     [nForecasters]int32 // forecasts scored
	ProfRPD  float32             // readings per day the profile rates were computed for
	DayA     float32             // the profiles' learning rates per reading
	WeekA    float32
	HistW    float32         // weight of the next histogram increment (grows; rescaled)
	Ring     [uvRing]float32 // last values
	RingN    int32
	RunN     int32 // readings of the current anomalous run
	RunQuiet int32 // normal readings in a row within the run
	RecDay   int32
	RecT0    int32   // minute (Unix) the records started; 0: not yet
	Regime   float32 // EW mean of s
	// The evidence figure (see cusum): its sum, and the decayed counts
	// of readings that followed an exceedance and of those that were
	// one again (the chance that an exceedance follows another).
	Cusum   float32
	ExcN    float32
	ExcPair float32
	PrevExc bool // the last reading exceeded
}

// uvStateWire is UVState's snapshot encoding: the layout before session
// 18, each binned array a field of its own (see binSet).
type uvStateWire struct {
	N        int64
	FirstTS  stamp
	Slow     float64
	Fast     float64
	Err      [nForecasters]float64
	Spread   float64
	Day      lazyBins[float32]
	Week     lazyBins[float32]
	Hist     uvHist
	RHist    uvHist
	Hi       [2]float64
	Lo       [2]float64
	Rec      lazyBins[uint8]
	RunStart stamp
	ErrN     [nForecasters]int32
	ProfRPD  float32
	DayA     float32
	WeekA    float32
	HistW    float32
	Ring     [uvRing]float32
	RingN    int32
	RunN     int32
	RunQuiet int32
	RecDay   int32
	RecT0    int32
	Regime   float32
	Cusum    float32
	ExcN     float32
	ExcPair  float32
	PrevExc  bool
}

// wire is u's encoding; its arrays alias u's.
func (u *UVState) wire(w *uvStateWire) {
	*w = uvStateWire{N: u.N, FirstTS: u.FirstTS, Slow: u.Slow, Fast: u.Fast, Err: u.Err, Spread: u.Spread,
		Day: u.B.view(uvArrDay), Week: u.B.view(uvArrWeek), Hi: u.Hi, Lo: u.Lo, Rec: u.Rec, RunStart: u.RunStart,
		ErrN: u.ErrN, ProfRPD: u.ProfRPD, DayA: u.DayA, WeekA: u.WeekA, HistW: u.HistW, Ring: u.Ring, RingN: u.RingN,
		RunN: u.RunN, RunQuiet: u.RunQuiet, RecDay: u.RecDay, RecT0: u.RecT0, Regime: u.Regime, Cusum: u.Cusum,
		ExcN: u.ExcN, ExcPair: u.ExcPair, PrevExc: u.PrevExc}
	w.Hist.setQ(u.Hist)
	w.Hist.Bins = u.B.view(uvArrHist)
	w.RHist.setQ(u.RHist)
	w.RHist.Bins = u.B.view(uvArrRHist)
}

// fromWire makes the state an encoding holds, its binned arrays in one
// slice. Histograms of an older Vigil's 72 bins fold into uvBins.
func (u *UVState) fromWire(w *uvStateWire) {
	*u = UVState{N: w.N, FirstTS: w.FirstTS, Slow: w.Slow, Fast: w.Fast, Err: w.Err, Spread: w.Spread,
		Hist: w.Hist.q(), RHist: w.RHist.q(), Hi: w.Hi, Lo: w.Lo, Rec: w.Rec, RunStart: w.RunStart,
		ErrN: w.ErrN, ProfRPD: w.ProfRPD, DayA: w.DayA, WeekA: w.WeekA, HistW: w.HistW, Ring: w.Ring, RingN: w.RingN,
		RunN: w.RunN, RunQuiet: w.RunQuiet, RecDay: w.RecDay, RecT0: w.RecT0, Regime: w.Regime, Cusum: w.Cusum,
		ExcN: w.ExcN, ExcPair: w.ExcPair, PrevExc: w.PrevExc}
	foldBins(&w.Hist.Bins, uvPriorHist[:])
	foldBins(&w.RHist.Bins, uvPriorHist[:])
	if n := len(w.Hist.Bins.V) + len(w.RHist.Bins.V) + len(w.Day.V) + len(w.Week.V); n > 0 {
		u.B.V = make([]float32, 0, n)
	}
	u.B.set(uvArrHist, w.Hist.Bins)
	u.B.set(uvArrRHist, w.RHist.Bins)
	u.B.set(uvArrDay, w.Day)
	u.B.set(uvArrWeek, w.Week)
	if r := u.Rec.V; len(r) != len(uvRecZero) && (len(r)%2 != 0 || len(r)/2 > len(uvRecZero)/4 || !sparseBinsFit(r, len(uvRecZero))) {
		u.Rec.V = nil // damaged: the memory starts over
	}
}

// sparseBinsFit reports whether every (bin, value) pair of v names a bin
// below n.
func sparseBinsFit(v []uint8, n int) bool {
	for i := 0; i < len(v); i += 2 {
		if int(v[i]) >= n {
			return false
		}
	}
	return true
}

// MarshalMsg appends the state's encoding (uvStateWire's).
func (u *UVState) MarshalMsg(b []byte) ([]byte, error) {
	var w uvStateWire
	u.wire(&w)
	return w.MarshalMsg(b)
}

// UnmarshalMsg reads what MarshalMsg wrote, or a snapshot of an older
// Vigil (the same encoding).
func (u *UVState) UnmarshalMsg(b []byte) ([]byte, error) {
	var w uvStateWire
	rest, err := w.UnmarshalMsg(b)
	if err != nil {
		return rest, err
	}
	u.fromWire(&w)
	return rest, nil
}

// Msgsize is an upper bound of MarshalMsg's length.
func (u *UVState) Msgsize() int {
	var w uvStateWire
	u.wire(&w)
	return w.Msgsize()
}

// UVObs is what the per-metric detector says about one reading.
type UVObs struct {
	Warm      bool
	Kind      string  // the forecaster used: "level" or "cycle"
	Expected  float64 // the forecast
	Low       float64 // the band of usual values around it (95 %)
	High      float64
	S         float64 // nonconformity
	PointL    float64 // -ln p of the reading
	RegimeL   float64 // -ln p of the short-term mean of s
	CusumL    float64 // the evidence figure (see cusum), in the units of -ln p
	Record    float64 // the record the reading beats, when RecordLed
	RecordLed bool    // a new record's figure (see record) set PointL
	AlertL    float64 // -ln p_alert
	Accepted  bool    // a lasting change was accepted as the new normal with this reading
	// Shift: this reading and the uvLevelRun-1 before it all lie beyond
	// the band of usual values, on the same side: the metric moved
	// away from its level rather than spiked or grew volatile.
	Shift bool
	// Recurring: the metric went as far at this time of day on an earlier
	// day, so the reading does not open an alert.
	Recurring bool
}

// uvParams are the detector's constants.
type uvParams struct {
	warmup      int64
	slowAlpha   float64
	budget      float64 // false alerts per device-day
	acceptAfter time.Duration
	off         bool // benchmarks: the step without this detector
}

var (
	uvPriorHist [uvBins]float32 // Gaussian prior of s (|z| over its mean)
	uvAlpha     = func(hl float64) float64 { return 1 - math.Pow(2, -1/hl) }
	uvHistGrow  = float32(1 / (1 - uvAlpha(uvHistHL)))
	uvErrAlpha  = uvAlpha(uvErrHL)
	uvFastAlpha = uvAlpha(uvFastHL)
	uvRegAlpha  = uvAlpha(uvRegimeHL)
)

func init() {
	// s of a Gaussian is |z| / E|z| = |z| / sqrt(2/pi)
	c := math.Sqrt(2 / math.Pi)
	cdf := func(s float64) float64 { return math.Erf(s * c / math.Sqrt2) } // P(|z| <= s·c)
	for b := 0; b < uvBins; b++ {
		lo, hi := uvBinEdge(b), uvBinEdge(b+1)
		if b == 0 {
			lo = 0
		}
		uvPriorHist[b] = float32(uvPrior * (cdf(hi) - cdf(lo)))
	}
}

func uvBinEdge(b int) float64 { return math.Exp2(float64(b)/uvBinsPerOct + uvMinLog2) }

// uvBin is the bin of s and the fraction of the bin below s.
func uvBin(s float64) (int, float64) {
	if s <= 0 {
		return 0, 0
	}
	x := (math.Log2(s) - uvMinLog2) * uvBinsPerOct
	switch {
	case x < 0:
		return 0, 0
	case x >= uvBins:
		return uvBins - 1, 1
	}
	b := int(x)
	return b, x - float64(b)
}

func newUVState() *UVState {
	u := &UVState{HistW: 1}
	u.Hist, u.RHist = newUVQ(), newUVQ()
	return u
}

// uvQ is a decayed histogram's cached quantiles (refreshed every 32
// additions: the hot path reads three numbers, not the bins). The bins
// are the metric's binSet's (uvArrHist, uvArrRHist), or the gap
// histogram's own (see histRef).
type uvQ struct {
	S50, S95, S99 float32 // quantiles
	A             float32 // Pareto index of the tail beyond S99
	Stale         int16   // additions since the quantiles were computed
	N             int16   // additions, up to uvTailN: how far the tail index is trusted
	// Count: every value of the metric has been whole and not negative
	// (see uvCountA, refresh). Set at a metric's first reading, cleared
	// for good by the first value that is not: a metric restored from a
	// snapshot older than the flag, and a device's gap histogram, keep a
	// Gaussian's prior, as before.
	Count bool
}

func newUVQ() uvQ { return uvQ{Stale: 1 << 14} }

// uvHist is a decayed histogram with its own bins and cached quantiles:
// the device's gap histogram, and the snapshot encoding of a metric's
// (see uvStateWire).
type uvHist struct {
	Bins          lazyBins[float32] // from uvPriorHist
	S50, S95, S99 float32
	A             float32
	Stale         int16
	N             int16
	Count         bool
}

func (h *uvHist) q() uvQ {
	return uvQ{S50: h.S50, S95: h.S95, S99: h.S99, A: h.A, Stale: h.Stale, N: h.N, Count: h.Count}
}

func (h *uvHist) setQ(q uvQ) {
	h.S50, h.S95, h.S99, h.A, h.Stale, h.N, h.Count = q.S50, q.S95, q.S99, q.A, q.Stale, q.N, q.Count
}

// histRef is where a histogram's bins are: its own, or array k of a set.
type histRef struct {
	own *lazyBins[float32]
	set *binSet
	k   int
}

func (r histRef) ref(b int) *float32 {
	if r.own != nil {
		return r.own.ref(b, uvPriorHist[:])
	}
	return r.set.ref(r.k, b)
}

func (r histRef) all(dst []float32) []float32 {
	if r.own != nil {
		return r.own.all(dst, uvPriorHist[:])
	}
	return r.set.all(r.k, dst)
}

// dense makes the bins the plain array and returns it.
func (r histRef) dense() []float32 {
	if r.own != nil {
		r.own.densify(uvPriorHist[:])
		return r.own.V
	}
	return r.set.dense(r.k)
}

func (h *uvQ) add(r histRef, s float64, w float32) {
	b, _ := uvBin(s)
	*r.ref(b) += w
	if h.Stale < 1<<14 {
		h.Stale++
	}
	if h.N < uvTailN {
		h.N++
	}
}

func (h *uvQ) scale(r histRef, f float32) {
	v := r.dense()
	for b := range v {
		v[b] /= f
	}
}

func (h *uvQ) refresh(r histRef) {
	var tmp [uvBins]float32
	bins := r.all(tmp[:])
	var tot float64
	for _, v := range bins {
		tot += float64(v)
	}
	q := func(surv float64) float64 {
		acc := 0.0
		for b := uvBins - 1; b >= 0; b-- {
			m := float64(bins[b]) / tot
			if m > 0 && acc+m >= surv {
				f := (surv - acc) / m // fraction of the bin above the quantile
				return math.Exp2((float64(b+1)-f)/uvBinsPerOct + uvMinLog2)
			}
			acc += m
		}
		return uvBinEdge(0)
	}
	s50, s95, s99 := q(0.5), q(0.05), q(0.01)
	a := 8.0
	if s99 > s95 {
		a = math.Max(1, math.Min(8, math.Log(5)/math.Log(s99/s95)))
	}
	if h.Count {
		// A count's bursts begin near its 99th percentile, so the shape
		// between the 95th and the 99th says little about the tail beyond.
		// The tail index is measured on the mass beyond the 99th itself
		// (Hill's estimator: one over the mean log excess), each
		// reading's excess capped at uvHillCap: a flood that the
		// histogram learnt must not make the tail look unbounded.
		var m, sl float64
		l99 := math.Log2(s99)
		for b := uvBins - 1; b >= 0; b-- {
			lo, hi := float64(b)/uvBinsPerOct+uvMinLog2, float64(b+1)/uvBinsPerOct+uvMinLog2
			if hi <= l99 {
				break
			}
			mb := float64(bins[b]) / tot
			if lo < l99 {
				mb *= (hi - l99) / (hi - lo)
				lo = l99
			}
			m += mb
			sl += mb * math.Min(((lo+hi)/2-l99)*uvLn2, uvHillCap)
		}
		if m > 0 && sl > 0 {
			a = math.Min(a, math.Max(1, math.Min(8, m/sl)))
		}
	}
	// The 99th percentile of a few dozen readings is their largest: one
	// unsteady reading of the warm-up would make the tail look heavy and a
	// 40-sigma jump score below the alert. The index is shrunk toward the
	// prior's (a Gaussian's, or a count's) by the readings it rests on.
	n := float64(h.N)
	prior, n0 := uvPriorA, uvTailN0
	if h.Count {
		prior, n0 = uvCountA, uvCountN0
	}
	a = (n*a + n0*prior) / (n + n0)
	if h.Count && h.A > 0 && n > float64(h.Stale) {
		// and a count's index is the running mean of these estimates
		// (weight Stale/N: the mean of all of them until uvTailN
		// readings, then an EW mean over about as many)
		a = float64(h.A) + float64(h.Stale)/n*(a-float64(h.A))
	}
	h.S50, h.S95, h.S99, h.A, h.Stale = float32(s50), float32(s95), float32(s99), float32(a), 0
}

var (
	uvLn2, uvLn20, uvLn100 = math.Log(2), math.Log(20), math.Log(100)
)

// l is -ln of the probability of a figure at least s: read off the
// quantiles (log-linear between the median, the 95th and the 99th
// percentile), and beyond the 99th by the Pareto tail through the 95th and
// 99th.
func (h *uvQ) l(r histRef, s float64) float64 {
	if h.Stale >= 32 {
		h.refresh(r)
	}
	s50, s95, s99, a := float64(h.S50), float64(h.S95), float64(h.S99), float64(h.A)
	interp := func(s, s0, l0, s1, l1 float64) float64 {
		if s1 <= s0 {
			return l1
		}
		return l0 + (l1-l0)*math.Log(s/s0)/math.Log(s1/s0)
	}
	switch {
	case s <= 0:
		return 0
	case s <= s50:
		return uvLn2 * s / s50
	case s <= s95:
		return interp(s, s50, uvLn2, s95, uvLn20)
	case s <= s99:
		return interp(s, s95, uvLn20, s99, uvLn100)
	}
	return uvLn100 + a*math.Log(s/s99)
}

// dayPos is the position of ts in the daily profile, in bins: bin b's
// value is the value at b + 0.5.
func dayPos(ts time.Time) float64 {
	s := ts.Unix() % 86400
	if s < 0 {
		s += 86400
	}
	return float64(s)/1800 + float64(ts.Nanosecond())/1800e9
}

// weekPos is the position of ts in the weekly profile (hours from Monday
// 00:00 UTC; Unix time 0 was a Thursday).
func weekPos(ts time.Time) float64 {
	s := (ts.Unix() + 3*86400) % (7 * 86400)
	if s < 0 {
		s += 7 * 86400
	}
	return float64(s) / 3600
}

// profileBins are the two bins around position pos and the weight of the second.
func profileBins(n int, pos float64) (int, int, float64) {
	x := pos - 0.5
	b := int(math.Floor(x))
	f := x - float64(b)
	return (b%n + n) % n, ((b+1)%n + n) % n, f
}

// profileAt is profile k's value at position pos, interpolated between
// its two bins around it (ok false while both are unseen).
func (s *binSet) profileAt(k int, pos float64) (float64, bool) {
	a, b, f := profileBins(len(binTmpl(k)), pos)
	va, vb := float64(s.at(k, a)), float64(s.at(k, b))
	switch {
	case math.IsNaN(va) && math.IsNaN(vb):
		return 0, false
	case math.IsNaN(va):
		return vb, true
	case math.IsNaN(vb):
		return va, true
	}
	return va + f*(vb-va), true
}

// profileLearn moves profile k's two bins around pos toward x, each by
// its share.
func (s *binSet) profileLearn(k int, pos, x, alpha float64) {
	a, b, f := profileBins(len(binTmpl(k)), pos)
	updBin(s.ref(k, a), x, alpha*(1-f))
	updBin(s.ref(k, b), x, alpha*f)
}

// forecast is forecaster f's expected value at ts (ok false while it cannot
// forecast).
func (u *UVState) forecast(f int, ts time.Time) (float64, bool) {
	switch f {
	case fcSlow:
		return u.Slow, true
	case fcFast:
		return u.Fast, true
	case fcDay:
		if u.B.untouched(uvArrDay) || u.FirstTS.since(ts) < 3*24*time.Hour {
			return 0, false
		}
		return u.B.profileAt(uvArrDay, dayPos(ts))
	case fcWeek:
		if u.B.untouched(uvArrWeek) || u.FirstTS.since(ts) < 21*24*time.Hour {
			return 0, false
		}
		return u.B.profileAt(uvArrWeek, weekPos(ts))
	}
	return 0, false
}

// observe scores value x at event time ts (rpd: the device's readings per
// day) and folds it into the state.
func (u *UVState) observe(p *uvParams, x float64, ts time.Time, rpd float64, o *UVObs) {
	*o = UVObs{}
	if u.N == 0 {
		u.FirstTS, u.Slow, u.Fast = stampOf(ts), x, x
	}
	// 1. pick the forecaster with the smallest error
	best, bestErr, bestE := -1, math.Inf(1), 0.0
	var fc [nForecasters]float64
	var fok [nForecasters]bool
	for f := 0; f < nForecasters; f++ {
		fc[f], fok[f] = u.forecast(f, ts)
		if !fok[f] || u.ErrN[f] < 20 {
			continue
		}
		e := u.Err[f]
		if f >= fcDay {
			e = e*1.1 + 1e-3*u.Spread // a profile must clearly beat the levels
		}
		if e < bestErr {
			best, bestErr, bestE = f, e, fc[f]
		}
	}
	warm := u.N >= p.warmup && best >= 0
	scale := 0.0
	if best >= 0 {
		scale = math.Max(u.Err[best], 0.05*u.Spread+1e-9*(1+math.Abs(bestE)))
	}
	s := 0.0
	holdFast := false
	if warm {
		s = math.Abs(x-bestE) / scale
		o.Warm, o.Expected, o.S, o.AlertL = true, bestE, s, alertL(p.budget, rpd)
		o.Kind = "level"
		if best >= fcDay {
			o.Kind = "cycle"
		}
		o.PointL = u.Hist.l(histRef{set: &u.B, k: uvArrHist}, s)
		reg := float64(u.Regime) + uvRegAlpha*(math.Min(s, 16)-float64(u.Regime))
		o.RegimeL = u.RHist.l(histRef{set: &u.B, k: uvArrRHist}, reg)
		o.CusumL = u.cusum(o.PointL, o.AlertL)
		o.RegimeL = math.Max(o.RegimeL, o.CusumL)
		if l, rec := u.record(x, ts); l > o.PointL {
			o.PointL, o.Record, o.RecordLed = l, rec, true
		}
		w := float64(u.Hist.S95) * scale
		o.Low, o.High = bestE-w, bestE+w
		run := u.sideRun(x, o.Low, o.High)
		o.Shift, holdFast = run >= uvLevelRun, run >= uvHoldRun
	}
	if warm {
		u.recurrence(x, ts, o)
	}
	// 2. the anomalous run: freeze while in it, accept when it lasts
	maxL := max(o.PointL, o.RegimeL)
	alerting := warm && maxL >= o.AlertL
	elevated := warm && maxL >= 0.5*o.AlertL
	if alerting || u.RunN > 0 && elevated {
		if u.RunN == 0 {
			u.RunStart = stampOf(ts)
		}
		u.RunN++
		u.RunQuiet = 0
	} else if u.RunN > 0 {
		u.RunQuiet++
		if u.RunQuiet >= 3 {
			u.RunN, u.RunQuiet = 0, 0
		}
	}
	if count := x >= 0 && x == math.Trunc(x); count != u.Hist.Count && (u.N == 0 || !count) {
		// a count from its first reading; not one from its first value
		// with a fraction or below zero (the tails are then refreshed)
		u.Hist.Count, u.RHist.Count = count, count
		u.Hist.Stale, u.RHist.Stale = 1<<14, 1<<14
	}
	u.Ring[u.RingN%uvRing] = float32(x)
	u.RingN++
	if u.RunN > 0 && p.acceptAfter > 0 && u.RunN >= 6 && u.RunStart.since(ts) >= p.acceptAfter {
		u.accept()
		o.Accepted = true
		u.N++
		return
	}
	// 3. learn: the forecasters' errors and the profiles always (a
	// profile bin is visited once a day or week, and a pattern that recurs
	// must be learnt even while it still alarms), the levels and the
	// histograms only outside anomalous runs
	for f := 0; f < nForecasters; f++ {
		if !fok[f] {
			continue
		}
		e := math.Abs(x - fc[f])
		if u.ErrN[f] >= 20 {
			// winsorized: one outlier must not widen it
			e = math.Min(e, 5*math.Max(u.Err[f], 0.05*u.Spread))
		}
		a := math.Max(uvErrAlpha, 1/float64(u.ErrN[f]+1))
		u.Err[f] += a * (e - u.Err[f])
		u.ErrN[f]++
	}
	if u.N >= p.warmup {
		// each bin moves by about a third per day (week) it is seen
		if r := float32(rpd); r != u.ProfRPD {
			u.ProfRPD = r
			u.DayA = float32(1 - math.Pow(0.7, uvDayBins/math.Max(rpd, 1)))
			u.WeekA = float32(1 - math.Pow(0.6, uvDayBins/2/math.Max(rpd, 1)))
		}
		u.B.profileLearn(uvArrDay, dayPos(ts), x, float64(u.DayA))
		u.B.profileLearn(uvArrWeek, weekPos(ts), x, float64(u.WeekA))
	}
	// the histograms learn every reading, what keeps recurring is normal,
	// but an anomalous run teaches them as one event (see learnWeight)
	if warm {
		u.HistW *= uvHistGrow
		if u.HistW > 1e30 {
			u.Hist.scale(histRef{set: &u.B, k: uvArrHist}, u.HistW)
			u.RHist.scale(histRef{set: &u.B, k: uvArrRHist}, u.HistW)
			u.HistW = 1
		}
		w := u.HistW * u.learnWeight(ts)
		u.Hist.add(histRef{set: &u.B, k: uvArrHist}, s, w)
		u.Regime += float32(uvRegAlpha * (math.Min(s, 16) - float64(u.Regime)))
		u.RHist.add(histRef{set: &u.B, k: uvArrRHist}, float64(u.Regime), w)
		u.cusumAdd(o.CusumL, o.PointL)
	}
	u.recordAdd(x, ts, rpd)
	if u.RunN > 0 {
		u.N++
		return // frozen
	}
	u.Spread += math.Max(p.slowAlpha, 1/float64(u.N+1)) * (math.Abs(x-u.Slow) - u.Spread)
	// winsorized level updates
	dev := x - u.Slow
	if best >= 0 && u.ErrN[fcSlow] >= 20 {
		lim := 4 * u.Err[fcSlow]
		dev = math.Max(-lim, math.Min(lim, dev))
	}
	u.Slow += math.Max(p.slowAlpha, 1/float64(u.N+1)) * dev
	df := x - u.Fast
	if best >= 0 && u.ErrN[fcFast] >= 20 {
		lim := 4 * u.Err[fcFast]
		df = math.Max(-lim, math.Min(lim, df))
	}
	// the fast level follows a metric that wanders, not a step: it slows
	// to uvHoldFollow of its pace while this reading and the one before
	// lie beyond the band on one side (a request rate cut to a third
	// would otherwise be its new level within ten readings, before the
	// evidence figure adds up)
	a := uvFastAlpha
	if holdFast {
		a *= uvHoldFollow
	}
	u.Fast += a * df
	u.N++
}

// sideRun is how many readings in a row, x and those before it, lie
// beyond [lo, hi] on x's side, counted up to uvLevelRun (0 when x lies
// within).
func (u *UVState) sideRun(x, lo, hi float64) int {
	above := x > hi
	if !above && !(x < lo) {
		return 0
	}
	n := 1
	for k := 1; n < uvLevelRun && k <= int(u.RingN); k++ {
		v := float64(u.Ring[(int(u.RingN)-k)%uvRing])
		if above && !(v > hi) || !above && !(v < lo) {
			break
		}
		n++
	}
	return n
}

// uvRunLearn is the event time an anomalous run needs to teach the
// histograms one reading's worth (see learnWeight), and uvHillCap caps
// each reading's log excess in a count's tail index (see uvQ.refresh).
const (
	uvRunLearn = 5 * time.Minute
	uvHillCap  = 2.0
)

// learnWeight is the weight in the histograms of the reading just folded
// into the anomalous run (1 outside runs): a run's first reading counts
// in full, and the run as a whole teaches at most one reading's worth per
// uvRunLearn of event time. Readings that follow one another closely are
// one event, not many independent draws: a minute-long flood at a reading
// a second would otherwise fill the top percent of the histogram (whose
// half-life is uvHistHL readings, under an hour at that rate), lift its
// 99th percentile above the next flood and flatten its tail, so that
// every anomaly after the first goes unseen. On a device that reports
// every few minutes each reading is its own event and the weight stays 1.
func (u *UVState) learnWeight(ts time.Time) float32 {
	if u.RunN <= 1 {
		return 1
	}
	// a reading older than the run's start (event time goes back) weighs 0
	return float32(max(0, min(1, u.RunStart.since(ts).Seconds()/(float64(u.RunN-1)*uvRunLearn.Seconds()))))
}

// recurrence folds the reading's deviation from the slow level into the
// daily memory and, when the metric went as far the same way at this half
// hour on an earlier day, holds the reading's figures below the alert
// (they may still carry an open incident on: 0.9 of the alert level).
func (u *UVState) recurrence(x float64, ts time.Time, o *UVObs) {
	const n = uvDayBins
	day := int32(ts.Unix() / 86400)
	switch {
	case u.Rec.untouched():
		// all zero: a new day changes nothing but the day
		u.RecDay = max(u.RecDay, day)
	case day > u.RecDay:
		// a new day: today's figures join the earlier days', all decayed
		u.Rec.densify(uvRecZero)
		rec := u.Rec.V
		dec := int(min(day-u.RecDay, 255)) * uvRecDecay
		for b := 0; b < 2*n; b++ {
			v := max(int(rec[b])-dec, int(rec[2*n+b])-dec+uvRecDecay, 0)
			rec[b], rec[2*n+b] = uint8(v), 0
		}
		u.RecDay = day
	}
	d := (x - u.Slow) / math.Max(u.Spread, 1e-9*(1+math.Abs(u.Slow)))
	side := 0
	if d < 0 {
		side, d = n, -d
	}
	q := recLevel(d)
	b := int(dayPos(ts)) % n
	if q > u.Rec.at(2*n+side+b, uvRecZero) {
		*u.Rec.ref(2*n+side+b, uvRecZero) = q
	}
	if q == 0 {
		return
	}
	prev := u.Rec.at(side+b, uvRecZero)
	if prev == 0 || int(q) > int(prev)+uvRecTol {
		return
	}
	lim := 0.9 * o.AlertL
	o.PointL, o.RegimeL = math.Min(o.PointL, lim), math.Min(o.RegimeL, lim)
	o.Recurring = true
}

func updBin(b *float32, d, alpha float64) {
	if math.IsNaN(float64(*b)) {
		*b = float32(d)
		return
	}
	*b += float32(alpha * (d - float64(*b)))
}

// accept takes the current run as the new normal: the levels restart from
// its recent values and the errors from their spread.
func (u *UVState) accept() {
	n := int(min(u.RingN, uvRing, u.RunN))
	vals := make([]float64, 0, uvRing)
	for i := 0; i < n; i++ {
		vals = append(vals, float64(u.Ring[(int(u.RingN)-1-i+uvRing)%uvRing]))
	}
	slices.Sort(vals)
	med := vals[len(vals)/2]
	var mad float64
	for _, v := range vals {
		mad += math.Abs(v - med)
	}
	mad /= float64(len(vals))
	// the metric has shown it can move this far: its spread (the floor of
	// every scale) takes the step into account
	u.Spread = math.Max(u.Spread, math.Max(mad, math.Abs(med-u.Slow)/4))
	u.Slow, u.Fast = med, med
	for f := range u.Err {
		u.Err[f] = math.Max(u.Err[f], math.Max(mad, 0.05*u.Spread))
	}
	u.RunN, u.RunQuiet = 0, 0
	u.Regime, u.Cusum = 1, 0
}

// The records' constants: the block of event time that counts as one
// independent draw, the blocks of history a record needs, the cap on how
// far beyond the old record counts (in gaps), and the time constant of
// the records' fading toward the slow level.
const (
	uvRecBlockMin  = 30
	uvRecMinBlocks = 48
	uvRecCap       = 2.0
	uvRecFadeDays  = 365.0
)

// record is the figure of value x at ts as a new record (0 when it is
// none), and the record it beats.
func (u *UVState) record(x float64, ts time.Time) (float64, float64) {
	var beyond, gap, rec float64
	switch {
	case u.RecT0 == 0:
		return 0, 0
	case x > u.Hi[0]:
		beyond, gap, rec = x-u.Hi[0], u.Hi[0]-u.Hi[1], u.Hi[0]
	case x < u.Lo[0]:
		beyond, gap, rec = u.Lo[0]-x, u.Lo[1]-u.Lo[0], u.Lo[0]
	default:
		return 0, 0
	}
	blocks := float64(ts.Unix()/60-int64(u.RecT0)) / uvRecBlockMin
	n := math.Min(float64(u.N), blocks)
	if n < uvRecMinBlocks {
		return 0, 0
	}
	gap = math.Max(gap, u.Spread+1e-9*(1+math.Abs(rec)))
	l := math.Log(n) * math.Min(uvRecCap, beyond/gap)
	if math.IsNaN(l) || math.IsInf(l, 0) {
		return 0, 0 // values near the float64 limits overflow the gap
	}
	return l, rec
}

// recordAdd folds x into the records, after fading them toward the slow
// level (rpd: the device's readings per day).
func (u *UVState) recordAdd(x float64, ts time.Time, rpd float64) {
	if u.RecT0 == 0 {
		u.RecT0 = int32(min(max(1, ts.Unix()/60), math.MaxInt32)) // minutes fit an int32 to the year 6053
		u.Hi, u.Lo = [2]float64{x, x}, [2]float64{x, x}
		return
	}
	a := 1 / (uvRecFadeDays * math.Max(rpd, 1))
	for i := range u.Hi {
		u.Hi[i] += a * (u.Slow - u.Hi[i])
		u.Lo[i] += a * (u.Slow - u.Lo[i])
	}
	switch {
	case x > u.Hi[0]:
		u.Hi[1], u.Hi[0] = u.Hi[0], x
	case x > u.Hi[1]:
		u.Hi[1] = x
	}
	switch {
	case x < u.Lo[0]:
		u.Lo[1], u.Lo[0] = u.Lo[0], x
	case x < u.Lo[1]:
		u.Lo[1] = x
	}
}

// uvStateBytes is the memory of one metric's detector state once its
// histograms and profiles are dense (the recurrence memory included),
// each allocation rounded up to the Go allocator's size class.
func uvStateBytes() int {
	return allocSize(int(unsafe.Sizeof(UVState{}))) + allocSize(4*(2*uvBins+uvDayBins+uvWeekBins)) + allocSize(4*uvDayBins)
}

// allocSize is the bytes the Go allocator gives an object of n bytes (its
// small size classes, runtime/sizeclasses.go, up to 2 KiB).
func allocSize(n int) int {
	for _, c := range [...]int{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048} {
		if n <= c {
			return c
		}
	}
	return n
}

// The evidence figure: a CUSUM of the readings' figures. Each reading adds
// its -ln p less uvCusumDrift (-ln 0.05: a reading beyond the 95th
// percentile adds, one within it takes away), and the sum stays at or
// above 0. A sustained change that no single reading makes extreme, a
// rate cut to a third among bursts, a tripled rate, adds up here within
// seconds, while one burst is taken away again by the readings after it.
// For independent readings the sum is about as unlikely as a single
// reading of the same figure (its tail falls as e^-0.94x), so it is held
// to the same alert level. Readings that follow one another closely are
// not independent: each step is weighted by -ln r / uvCusumDrift, where r
// is the metric's own chance that an exceedance follows an exceedance
// (0.05 for independent readings; a metric that wanders has runs of
// them, and its steps count less). r is learnt outside anomalous runs
// (half-life uvHistHL readings, uvCusumR0 of prior weight at 0.05). The
// figure starts after uvCusumMin readings and its steps weigh in
// linearly until uvCusumFull, as the histogram that makes the figures
// sees enough of the metric: at full weight from the 150th reading the
// simulated pumps raised 1.3 false alerts a device-day before their
// multivariate fit (0.3 with the ramp), and from the 600th (before
// session 22) a gateway's regime change in its first ten minutes went
// unseen.
const (
	uvCusumDrift = 2.995732273553991 // -ln 0.05
	uvCusumR0    = 0.005
	uvCusumMin   = 100
	uvCusumFull  = 1000
)

// cusum is the evidence figure with a reading of figure pointL.
func (u *UVState) cusum(pointL, alertL float64) float64 {
	if u.N < uvCusumMin {
		return 0
	}
	r := (float64(u.ExcPair) + uvCusumR0*0.05) / (float64(u.ExcN) + uvCusumR0)
	g := -math.Log(r) / uvCusumDrift * math.Min(1, float64(u.N-uvCusumMin)/(uvCusumFull-uvCusumMin))
	return math.Max(0, float64(u.Cusum)+g*(math.Min(pointL, alertL)-uvCusumDrift))
}

// cusumAdd keeps the evidence figure c and learns how often an
// exceedance follows an exceedance (outside anomalous runs).
func (u *UVState) cusumAdd(c, pointL float64) {
	u.Cusum = float32(c)
	exc := pointL > uvCusumDrift
	if u.RunN == 0 && u.PrevExc {
		const a = float32(1 / uvHistHL)
		u.ExcN += a * (1 - u.ExcN)
		v := float32(0)
		if exc {
			v = 1
		}
		u.ExcPair += a * (v - u.ExcPair)
	}
	u.PrevExc = exc
}
