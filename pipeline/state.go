package pipeline

import (
	"github.com/vigil/vigil/contract"

	"math"
	"slices"
	"time"
)

// The run-length record of the stuck detector (see MetricState.MaxRun).
const (
	stuckRunFactor = 1.2
	stuckRunMin    = 12
)

// MetricState is the streaming baseline of one metric of one device.
// Fields are exported for the snapshot encoding.
type MetricState struct {
	Name     string
	N        int64    // readings seen
	Mean     float64  // exponentially weighted mean (winsorized updates once warm)
	Var      float64  // exponentially weighted variance
	ShortVar float64  // fast EW mean of squared deviation from Mean (volatility)
	Last     float64  // previous value
	Run      int32    // how many readings in a row repeated Last exactly (saturates)
	MaxRun   int32    // the longest run of one value the metric has shown, readings
	RepeatP  float64  // EW probability that a reading repeats the previous one
	UV       *UVState // the per-metric detector
}

// AttrState counts the values of one attr of one device.
type AttrState struct {
	Name   string
	Counts []AttrCount // nil once closed
	Total  float64
	Open   bool // false once the attr has shown too many distinct values to be a category
}

// AttrCount is how often an attr took a value.
type AttrCount struct {
	Value string
	N     float64
}

// count is the value's count, and a pointer to it (nil: unseen).
func (a *AttrState) count(v string) *float64 {
	for i := range a.Counts {
		if a.Counts[i].Value == v {
			return &a.Counts[i].N
		}
	}
	return nil
}

// Incident is an open run of anomalous readings of one device and metric.
type Incident struct {
	AlertID  string
	Metric   string
	OpenedTS time.Time // event time of the reading that opened it
	LastTS   time.Time // event time of its latest anomalous reading
	Readings int
	LastN    int64 // the device's reading count at its latest anomalous reading
	MaxScore float64
	First    contract.Alert // the alert as raised, updated when the incident closes
	Active   bool           // the device's latest reading belonged to it
	// Silent: a repeat of the metric's previous incident (see
	// pipeline.realert_readings; AlertID is that incident's alert, which
	// its readings carry), kept without an alert unless a reading
	// outdoes that incident (ClosedIncident.outdoneBy), which stays in
	// DeviceState.Closed while the repeat is open, or turns into another
	// kind of anomaly scoring above OpenScore (see sameKind).
	Silent    bool
	OpenScore float64 // the score of the reading that opened it
	// Feature is the leading reason of the reading that opened it, and
	// Strength its peak on that reason.
	Feature  string
	Strength float64
	Quiet    int // readings of the device since its latest anomalous one
}

// ClosedIncident is what a closed incident leaves behind.
type ClosedIncident struct {
	AlertID  string // the alert it raised
	Metric   string
	Feature  string  // the leading reason of the reading that opened it
	LastN    int64   // the device's reading count at its latest anomalous reading
	Strength float64 // its peak on Feature (see strength)
	MaxScore float64
}

// DeviceState is everything the pipeline remembers about one device.
type DeviceState struct {
	N          int64
	LastTS     wallTime // event time of the latest reading in order
	LastIngest wallTime // ingest time of the latest reading (for pipeline.device_idle_ttl)
	DtN        int64
	LogDtMean  float64
	LogDtVar   float64
	// Metrics and Attrs, in the order first seen: slices, not maps (a
	// device has a handful, and a reading names them in the same order,
	// so the lookup tries the reading's position first)
	Metrics []MetricState
	Attrs   []AttrState
	// IDHashes is a ring of the recent message ids' 64-bit hashes and
	// IDAt of their readings' ingest times (Unix seconds): IDN of them
	// from IDPos, oldest first. An id is remembered for
	// pipeline.dedup_horizon of ingest time, and at most the last
	// pipeline.dedup_window of them; the ring grows and shrinks with what
	// it holds (see seen).
	IDHashes  []uint64
	IDAt      []uint32
	IDPos     int32
	IDN       int32
	Incidents map[string]*Incident `msg:",allownil"`
	// Closed are the latest closed incidents' metrics, close times and
	// peaks (one per metric): within pipeline.realert_after of one, a new
	// incident of the metric opens only above its peak.
	Closed []ClosedIncident
	MV     *MVState  // the multivariate detector (nil until two metrics are seen)
	Gap    *GapState // calibration of the gaps between readings
	// Through is one past the raw offset of the last record stepped
	// (StepAt): the replay after a snapshot written a slice at a time
	// skips the readings the state already holds. 0: none known.
	Through int64
}

// upgrade makes a state loaded from an older Vigil's snapshot fit this
// one: histograms of 72 bins fold into uvBins (a metric's fold as they
// are decoded: see UVState.UnmarshalMsg).
func (d *DeviceState) upgrade() {
	if d.Gap != nil {
		foldBins(&d.Gap.Hist.Bins, uvPriorHist[:])
	}
}

func newDeviceState() *DeviceState {
	return &DeviceState{}
}

// openIncident records the metric's new incident (the map is made at a
// device's first: most devices never have one).
func (d *DeviceState) openIncident(metric string, inc *Incident) {
	if d.Incidents == nil {
		d.Incidents = map[string]*Incident{}
	}
	d.Incidents[metric] = inc
}

// metric is the state of the named metric, added when new; k is where
// the reading names it, tried first. The pointer is good until the next
// call.
func (d *DeviceState) metric(name string, k int) *MetricState {
	if k < len(d.Metrics) && d.Metrics[k].Name == name {
		return &d.Metrics[k]
	}
	for i := range d.Metrics {
		if d.Metrics[i].Name == name {
			return &d.Metrics[i]
		}
	}
	d.Metrics = append(d.Metrics, MetricState{Name: name})
	return &d.Metrics[len(d.Metrics)-1]
}

// attr is the state of the named attr, added when new (see metric).
func (d *DeviceState) attr(name string, k int) *AttrState {
	if k < len(d.Attrs) && d.Attrs[k].Name == name {
		return &d.Attrs[k]
	}
	for i := range d.Attrs {
		if d.Attrs[i].Name == name {
			return &d.Attrs[i]
		}
	}
	d.Attrs = append(d.Attrs, AttrState{Name: name, Open: true})
	return &d.Attrs[len(d.Attrs)-1]
}

// dedupKeep ids of a device are remembered however old (within the
// window): a device that comes back after an outage re-sends its latest
// unacknowledged readings (an MQTT session its in-flight messages), and
// those are its last ones.
const dedupKeep = 16

// seen reports whether id was among the device's recent ids, and
// remembers it, with at, its reading's ingest time. Ids ingested more
// than horizon (0: no limit) before the newest are forgotten, except the
// last dedupKeep, and so are all but the last window. Only ingest times
// decide, so a replay of the same records remembers the same ids.
func (d *DeviceState) seen(id string, at time.Time, window int, horizon time.Duration) bool {
	h := idHash(id)
	if len(d.IDAt) != len(d.IDHashes) {
		d.upgradeIDs()
	}
	c := len(d.IDHashes)
	pos, n := int(d.IDPos), int(d.IDN)
	if end := pos + n; end <= c {
		if slices.Contains(d.IDHashes[pos:end], h) {
			return true
		}
	} else if slices.Contains(d.IDHashes[pos:], h) || slices.Contains(d.IDHashes[:end-c], h) {
		return true
	}
	now := unixSeconds(at)
	if n > 0 {
		now = max(now, d.IDAt[(pos+n-1)%c])
	}
	hs := int64(horizon / time.Second)
	for n > 0 && (n >= window || horizon > 0 && n >= dedupKeep && int64(d.IDAt[pos])+hs < int64(now)) {
		pos = (pos + 1) % c
		n--
	}
	d.IDPos, d.IDN = int32(pos), int32(n)
	switch {
	case n == c: // full, and under the window: grow
		d.resizeIDs(min(max(2*c, 4), window))
	case c > 8 && 4*n < c: // mostly forgotten: shrink
		d.resizeIDs(c / 2)
	}
	c = len(d.IDHashes)
	i := (int(d.IDPos) + n) % c
	d.IDHashes[i], d.IDAt[i] = h, unixSeconds(at)
	d.IDN++
	return false
}

// resizeIDs moves the dedup ring into one of capacity c (> IDN), oldest
// first.
func (d *DeviceState) resizeIDs(c int) {
	hs, at := make([]uint64, c), make([]uint32, c)
	for k := 0; k < int(d.IDN); k++ {
		j := (int(d.IDPos) + k) % len(d.IDHashes)
		hs[k], at[k] = d.IDHashes[j], d.IDAt[j]
	}
	d.IDHashes, d.IDAt, d.IDPos = hs, at, 0
}

// upgradeIDs reads the dedup ring of a snapshot written before ingest
// times were kept (hashes only; full from IDPos, or filling from 0): its
// ids are taken as ingested at the device's latest ingest time.
func (d *DeviceState) upgradeIDs() {
	d.IDN = int32(len(d.IDHashes))
	d.IDAt = make([]uint32, d.IDN)
	for i := range d.IDAt {
		d.IDAt[i] = unixSeconds(d.LastIngest.time())
	}
	if d.IDN > 0 {
		d.IDPos %= d.IDN
	} else {
		d.IDPos = 0
	}
}

// unixSeconds is t in Unix seconds, clamped to what a uint32 holds (until
// 2106).
func unixSeconds(t time.Time) uint32 {
	return uint32(min(max(t.Unix(), 0), math.MaxUint32))
}

// idHash is a message id's 64-bit FNV-1a hash: fixed across processes
// and restarts (the snapshots keep it), and two ids of one device's window
// meet with a probability of about 2^-48.
func idHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

// MetricObs is what enrichment derives for one metric of one reading, from
// the state before the reading.
type MetricObs struct {
	Name    string
	Value   float64
	HasPrev bool
	Delta   float64
	Rate    float64 // delta per second of event time (0 when dt is 0)
	Mean    float64
	Std     float64
	Warm    bool
	Z       float64 // (value - mean) / std
	VolZ    float64 // how far short-term volatility exceeds the baseline's
	StuckZ  float64 // how unlikely the current run of repeated values is
	Run     int     // readings in the current run of one value (1: no repeat)
	MaxRun  int     // the longest run the metric showed before this one
	UV      UVObs   // the per-metric detector's view
}

// AttrObs is what enrichment derives for one attr.
type AttrObs struct {
	Name, Value string
	// L is -ln of the value's frequency for this device (0 while the attr
	// has too few readings to judge), AL the alert level it is held to:
	// the per-metric detector's, for the device's readings per day.
	L, AL float64
}

// Observation is one reading with its enrichment: the scorer's input.
type Observation struct {
	Reading *contract.Reading
	Device  *contract.Device // nil for a device missing from the registry
	HasDt   bool
	DtS     float64 // seconds since the device's previous reading (event time)
	DtZ     float64 // how unusual that gap is (positive: longer than usual)
	GapL    float64 // -ln of the probability of a gap at least this long, from the device's own gaps
	GapAL   float64 // -ln of the gap detector's alert probability
	Metrics []MetricObs
	Attrs   []AttrObs
	MV      MVObs // the multivariate detector's view
}

// params are the baseline constants derived from Config.
type params struct {
	alpha      float64 // long baseline
	shortAlpha float64 // volatility
	repAlpha   float64 // repeat probability
	dtAlpha    float64
	warmup     int64
	mv         mvParams
	uv         uvParams
}

func newParams(c Config) params {
	hl := func(h float64) float64 { return 1 - math.Pow(2, -1/h) }
	return params{alpha: hl(c.HalfLife), shortAlpha: hl(8), repAlpha: hl(100), dtAlpha: hl(50), warmup: int64(c.WarmupReadings),
		uv: uvParams{warmup: int64(c.WarmupReadings), slowAlpha: hl(c.HalfLife), budget: c.AlertBudget, acceptAfter: c.AcceptAfter},
		mv: mvParams{warmup: c.MVWarmup, smooth: c.MVSmooth, threshold: c.MVThreshold, refit: c.MVRefit, drift: 3, spike: c.MVSpike, accept: c.AcceptAfter}}
}

const (
	maxZ          = 50.0
	attrMaxValues = 64
	attrMinTotal  = 50
)

func clampZ(z float64) float64 {
	switch {
	case math.IsNaN(z):
		return 0
	case z > maxZ:
		return maxZ
	case z < -maxZ:
		return -maxZ
	}
	return z
}

// observe derives o from the device state before r, then folds r into the
// state. It is deterministic: replaying the same readings rebuilds the same
// state, which is how state is restored after a crash or rebalance.
func (d *DeviceState) observe(p *params, r *contract.Reading, o *Observation) {
	o.Reading = r
	o.Metrics = o.Metrics[:0]
	o.Attrs = o.Attrs[:0]
	o.HasDt, o.DtS, o.DtZ, o.GapL, o.GapAL = false, 0, 0, 0, 0
	lastTS := d.LastTS.time()
	inOrder := d.N == 0 || r.TS.After(lastTS)
	if d.N > 0 && inOrder {
		dt := r.TS.Sub(lastTS).Seconds()
		o.HasDt, o.DtS = true, dt
		ld := math.Log(dt)
		if d.DtN >= 10 {
			std := math.Max(math.Sqrt(d.LogDtVar), 0.25)
			o.DtZ = clampZ((ld - d.LogDtMean) / std)
			if d.Gap == nil {
				d.Gap = &GapState{HistW: 1, Hist: uvHist{Stale: 1 << 14}}
			}
			ratio := dt / math.Exp(d.LogDtMean)
			o.GapL = d.Gap.l(ratio)
			o.GapAL = -math.Log(math.Max(1e-12, math.Min(uvPAlertMax, p.uv.budget*uvBudgetK/(86400/math.Exp(d.LogDtMean)))))
			if o.GapL > 0.9*o.GapAL && d.Gap.seen(ratio/2) >= gapRecurN {
				// the device has gone this quiet before, often enough
				// that it is its habit: held below the alert
				o.GapL = math.Min(o.GapL, 0.9*o.GapAL)
			}
			d.Gap.add(ratio)
		}
		a := math.Max(p.dtAlpha, 1/float64(d.DtN+1))
		diff := ld - d.LogDtMean
		if d.DtN >= 10 {
			// winsorize: one long gap must not teach the device to be silent
			lim := 3 * math.Max(math.Sqrt(d.LogDtVar), 0.25)
			diff = math.Max(-lim, math.Min(lim, diff))
		}
		incr := a * diff
		d.LogDtMean += incr
		d.LogDtVar = (1 - a) * (d.LogDtVar + diff*incr)
		d.DtN++
	}
	rpd := 1440.0 // readings per day, until the device's gaps are known
	if d.DtN >= 2 {
		rpd = 86400 / math.Exp(d.LogDtMean)
	}
	for k, m := range r.Metrics {
		ms := d.metric(m.Name, k)
		mo := MetricObs{Name: m.Name, Value: m.Value}
		if ms.N > 0 {
			mo.HasPrev = true
			mo.Delta = m.Value - ms.Last
			if o.HasDt && o.DtS > 0 {
				mo.Rate = mo.Delta / o.DtS
			}
			mo.Mean = ms.Mean
			mo.Std = math.Sqrt(ms.Var)
		}
		std := math.Max(mo.Std, 1e-3*math.Abs(ms.Mean)+1e-9)
		if ms.N >= p.warmup {
			mo.Warm = true
			mo.Z = clampZ((m.Value - ms.Mean) / std)
			ratio := math.Sqrt(ms.ShortVar) / std
			if ratio > 1 {
				mo.VolZ = clampZ(math.Log(ratio) / 0.25)
			}
		}
		// repeats
		repeated := ms.N > 0 && m.Value == ms.Last
		if repeated {
			if ms.Run < math.MaxInt32-1 {
				ms.Run++
			}
		} else {
			if ms.N > 0 {
				ms.MaxRun = max(ms.MaxRun, ms.Run+1) // Run stops below MaxInt32
			}
			ms.Run = 0
		}
		mo.Run, mo.MaxRun = int(ms.Run)+1, int(ms.MaxRun)
		if mo.Warm && repeated && ms.RepeatP < 0.2 {
			surprise := float64(ms.Run) * -math.Log(math.Max(ms.RepeatP, 0.005))
			mo.StuckZ = clampZ(math.Sqrt(2 * surprise))
		}
		// A metric that often repeats (zeros between bursts, a key held)
		// is stuck when a run goes well beyond the longest it has shown:
		// stuckRunFactor times it, with that longest at least
		// stuckRunMin readings and at most a quarter of the history.
		if mo.Warm && repeated && ms.MaxRun >= stuckRunMin && ms.N >= 4*int64(ms.MaxRun) {
			ratio := float64(ms.Run+1) / (stuckRunFactor * float64(ms.MaxRun))
			mo.StuckZ = max(mo.StuckZ, clampZ(6*ratio*ratio*ratio*ratio))
		}
		if ms.N > 0 {
			ind := 0.0
			if repeated {
				ind = 1
			}
			ms.RepeatP += p.repAlpha * (ind - ms.RepeatP)
		}
		// baseline update
		a := math.Max(p.alpha, 1/float64(ms.N+1))
		diff := m.Value - ms.Mean
		dev2 := diff * diff
		outlier := false
		if mo.Warm {
			lim := 4 * std
			outlier = math.Abs(diff) > lim
			diff = math.Max(-lim, math.Min(lim, diff))
		}
		switch {
		case ms.N == 0:
			ms.Mean = m.Value
		case outlier:
			// an outlier moves the mean a little (a lasting shift is
			// learnt) but does not widen the variance: a slow drift must
			// not teach the baseline to accept it
			ms.Mean += a * diff
		default:
			incr := a * diff
			ms.Mean += incr
			ms.Var = (1 - a) * (ms.Var + diff*incr)
		}
		if ms.N < p.warmup {
			ms.ShortVar = ms.Var
		} else {
			ms.ShortVar += p.shortAlpha * (dev2 - ms.ShortVar)
		}
		// a device whose multivariate model is fitted is judged by it; its
		// per-metric detectors wait (and cost nothing) meanwhile
		switch {
		case d.MV != nil && d.MV.Fitted && d.MV.watches(m.Name):
			// the multivariate model judges the metric from now on (it
			// stays fitted: refits replace it): the per-metric state,
			// about 2 KiB a metric, is let go. A metric the model gave no
			// weight (it did not move in the warm-up) or does not know
			// keeps its per-metric detector.
			ms.UV = nil
		case inOrder && !p.uv.off:
			if ms.UV == nil {
				ms.UV = newUVState()
			}
			ms.UV.observe(&p.uv, m.Value, r.TS, rpd, &mo.UV)
		}
		ms.Last = m.Value
		ms.N++
		o.Metrics = append(o.Metrics, mo)
	}
	var attrAL float64 // a rare attr value is held to the metrics' alert level
	if len(r.Attrs) > 0 {
		attrAL = alertL(p.uv.budget, rpd)
	}
	for k, at := range r.Attrs {
		as := d.attr(at.Name, k)
		ao := AttrObs{Name: at.Name, Value: at.Value}
		if as.Open {
			c := as.count(at.Value)
			if as.Total >= attrMinTotal {
				n := 0.0
				if c != nil {
					n = *c
				}
				ao.L, ao.AL = -math.Log((n+0.5)/(as.Total+1)), attrAL
			}
			if c != nil {
				*c++
			} else {
				as.Counts = append(as.Counts, AttrCount{Value: at.Value, N: 1})
			}
			as.Total++
			if len(as.Counts) > attrMaxValues {
				as.Open, as.Counts = false, nil // free text, not a category
			}
		}
		o.Attrs = append(o.Attrs, ao)
	}
	if inOrder {
		d.mvObserve(&p.mv, o.Metrics, r.TS, &o.MV)
		d.LastTS = wallOf(r.TS)
	} else {
		o.MV = MVObs{}
	}
	d.N++
}

// GapState is the decayed histogram of a device's gaps between readings,
// in units of its usual gap: a device that always reported regularly
// alarms at a gap a device with a ragged history shows every day.
type GapState struct {
	Hist  uvHist
	HistW float32
}

// gapRecurN is how many earlier gaps (decayed, half-life uvHistHL gaps)
// at least half as long as this one make a gap the device's habit rather
// than news.
const gapRecurN = 2.5

// seen is the decayed count of earlier gaps of at least ratio.
func (g *GapState) seen(ratio float64) float64 {
	b, _ := uvBin(ratio)
	var tmp [uvBins]float32
	bins := g.Hist.Bins.all(tmp[:], uvPriorHist[:])
	var w float64
	for ; b < uvBins; b++ {
		w += float64(bins[b])
	}
	return w / float64(g.HistW)
}

func (g *GapState) add(ratio float64) {
	q, r := g.Hist.q(), histRef{own: &g.Hist.Bins}
	g.HistW *= uvHistGrow
	if g.HistW > 1e30 {
		q.scale(r, g.HistW)
		g.HistW = 1
	}
	q.add(r, ratio, g.HistW)
	g.Hist.setQ(q)
}

// l is -ln of the probability of a gap of at least ratio.
func (g *GapState) l(ratio float64) float64 {
	q := g.Hist.q()
	l := q.l(histRef{own: &g.Hist.Bins}, ratio)
	g.Hist.setQ(q)
	return l
}
