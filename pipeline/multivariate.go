package pipeline

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The multivariate detector of one device: a relationship between a
// device's metrics often breaks before any single metric looks odd, and a
// small shift of several metrics at once is stronger evidence than one
// large shift. It works in three steps, all causal:
//
//  1. Each metric is smoothed by a rolling mean of its last mv_smooth
//     readings (noise averages out; a lasting shift does not).
//  2. After mv_warmup readings the device's normal is fitted: per metric,
//     the median and the MAD (robust to outliers in the warm-up) of the
//     smoothed values, and a weight. The weight is R^-3, where R is the
//     metric's warm-up standard deviation divided by its short-term noise
//     (the standard deviation of consecutive differences / sqrt 2): a
//     metric that wandered far beyond its noise during the warm-up (a
//     temperature still heating up) is trending, and its distance from the
//     warm-up is weak evidence; a stationary metric (R near 1) keeps full
//     weight. A metric that did not move at all gets weight 0 (the
//     per-metric baseline watches it).
//  3. Each reading's score is the weighted root mean square of the robust
//     z-scores of the smoothed metrics after removing their weighted mean
//     (the common mode), scaled so that mv_threshold maps to z = 6 (score
//     0.8, the default alert threshold). What is left is a change in the
//     relationship between the metrics: when load or the time of day moves
//     every metric of a device together, nothing is left, but when one
//     metric leaves the others, it shows. (A shift of every metric by the
//     same number of standard deviations is, by design, not seen here; a
//     sudden one is seen as a spike.) Beside it, the
//     largest jump of one metric from its recent mean in units of its
//     short-term noise catches one-reading spikes the smoothing hides
//     (mv_spike maps to z = 6). Both are immune to slow drift.
//
// The model is refitted every mv_refit readings on the readings that were
// not anomalous, so it follows a device whose normal changes slowly.
// Parameters were chosen on SKAB (see README, "Detection quality").

// MVState is the multivariate detector's state for one device, as it is
// held: every per-metric number in two arrays, so that a fitted device is
// two small objects and a 112-byte struct (eight slices and their headers
// took a 256-byte struct before session 18). Its snapshot encoding is
// mvWire's, the layout before, so snapshots read and write as they did
// (see MarshalMsg).
type MVState struct {
	Names []string // metrics, sorted; fixed by the first reading with two or more

	// F holds, for n metrics: the last Smooth raw values of each metric
	// (metric j's from j·Smooth), their sums (n), and once fitted the
	// medians, scales, weights and short-term noises (n each; see ring,
	// sum, med, scale, weight, noise).
	F []float64
	// PF holds the ring positions (n), then the fill counts (n).
	PF []int32

	// the fit's accumulators, only while a fit or refit collects (nil
	// between refits: most devices, most of the time)
	Collect *MVCollect

	SinceFit int32 // readings scored since the fit
	Smooth   int32 // the rolling window, readings (mv_smooth when the state began)
	Fitted   bool

	// the anomalous run (score at the alert threshold): when it lasts
	// pipeline.accept_after, its level is taken as the new normal
	RunStart stamp
	RunN     int32
	RunQuiet int32
}

// The per-metric arrays within F and PF.
func (m *MVState) nm() int         { return len(m.Names) }
func (m *MVState) ring() []float64 { return m.F[:m.nm()*int(m.Smooth)] }
func (m *MVState) sum() []float64  { n, r := m.nm(), m.nm()*int(m.Smooth); return m.F[r : r+n] }
func (m *MVState) fitted(k int) []float64 {
	n, r := m.nm(), m.nm()*int(m.Smooth)
	return m.F[r+k*n : r+(k+1)*n]
}
func (m *MVState) med() []float64    { return m.fitted(1) }
func (m *MVState) scale() []float64  { return m.fitted(2) }
func (m *MVState) weight() []float64 { return m.fitted(3) }
func (m *MVState) noise() []float64  { return m.fitted(4) }
func (m *MVState) pos() []int32      { return m.PF[:m.nm()] }
func (m *MVState) filled() []int32   { return m.PF[m.nm():] }

// mvWire is MVState's snapshot encoding: its layout before session 18,
// one array a quantity.
type mvWire struct {
	Names []string

	Ring   []float64
	Pos    []int32
	Filled []int32
	Sum    []float64

	Collect *MVCollect

	Fitted   bool
	Med      []float64
	Scale    []float64
	Weight   []float64
	Noise    []float64
	SinceFit int

	RunN     int32
	RunQuiet int32
	RunStart stamp
}

// wire is m's encoding; its arrays alias m's.
func (m *MVState) wire() mvWire {
	w := mvWire{Names: m.Names, Collect: m.Collect, Fitted: m.Fitted, SinceFit: int(m.SinceFit), RunN: m.RunN, RunQuiet: m.RunQuiet, RunStart: m.RunStart}
	if m.valid() {
		w.Ring, w.Sum, w.Pos, w.Filled = m.ring(), m.sum(), m.pos(), m.filled()
		if m.Fitted {
			w.Med, w.Scale, w.Weight, w.Noise = m.med(), m.scale(), m.weight(), m.noise()
		}
	}
	return w
}

// fromWire makes the state a snapshot's encoding holds, in two arrays. A
// state whose arrays do not fit one another (a damaged snapshot) keeps
// none of them, and valid says so: the device starts its detector over.
func (m *MVState) fromWire(w *mvWire) {
	*m = MVState{Names: w.Names, Collect: w.Collect, Fitted: w.Fitted, SinceFit: int32(min(max(w.SinceFit, 0), math.MaxInt32)), RunN: w.RunN, RunQuiet: w.RunQuiet, RunStart: w.RunStart}
	n := len(w.Names)
	if n == 0 || len(w.Ring) == 0 || len(w.Ring)%n != 0 || len(w.Sum) != n || len(w.Pos) != n || len(w.Filled) != n ||
		w.Fitted && (len(w.Med) != n || len(w.Scale) != n || len(w.Weight) != n || len(w.Noise) != n) {
		return
	}
	smooth := len(w.Ring) / n
	for j := 0; j < n; j++ {
		if w.Pos[j] < 0 || int(w.Pos[j]) >= smooth || w.Filled[j] < 0 || int(w.Filled[j]) > smooth {
			return
		}
	}
	size := len(w.Ring) + n
	if w.Fitted {
		size += 4 * n
	}
	m.F = append(append(make([]float64, 0, size), w.Ring...), w.Sum...)
	if w.Fitted {
		m.F = append(append(append(append(m.F, w.Med...), w.Scale...), w.Weight...), w.Noise...)
	}
	m.PF = append(append(make([]int32, 0, 2*n), w.Pos...), w.Filled...)
	m.Smooth = int32(smooth)
}

// valid reports whether the arrays fit the metrics and one another.
func (m *MVState) valid() bool {
	n := m.nm()
	size := n*int(m.Smooth) + n
	if m.Fitted {
		size += 4 * n
	}
	return n > 0 && m.Smooth > 0 && len(m.F) == size && len(m.PF) == 2*n
}

// MarshalMsg appends the state's encoding (mvWire's).
func (m *MVState) MarshalMsg(b []byte) ([]byte, error) {
	w := m.wire()
	return w.MarshalMsg(b)
}

// UnmarshalMsg reads what MarshalMsg wrote, or a snapshot of an older
// Vigil (the same encoding).
func (m *MVState) UnmarshalMsg(b []byte) ([]byte, error) {
	var w mvWire
	rest, err := w.UnmarshalMsg(b)
	if err != nil {
		return rest, err
	}
	m.fromWire(&w)
	return rest, nil
}

// Msgsize is an upper bound of MarshalMsg's length.
func (m *MVState) Msgsize() int {
	w := m.wire()
	return w.Msgsize()
}

// MVCollect accumulates the readings a fit is made from, one MVCol a
// metric (in Names' order): a device still warming up holds one of these
// (a struct a metric in one array; nine arrays of a few values each took
// 565 bytes for four metrics, this 352).
type MVCollect struct {
	Cols      []MVCol
	Collected int // readings folded into the accumulators
}

// MVCol is one metric's accumulators: the smoothed values, and the raw
// values' mean and variance for the trend ratio (Welford's running mean
// and sum of squared deviations: raw sums of x and x² cancel for a metric
// near 1e9, whose variance then came out 0 and left it out of the model).
// The smoothed values are kept as float32 differences from the metric's
// first one (Base): half the bytes of float64 values, which a device
// holds up to mv_warmup of a metric late in its warm-up (12.8 KB for four
// metrics as float64), and exact to about 1e-7 of the metric's spread,
// not of its magnitude.
type MVCol struct {
	Base     float64
	Mean, M2 float64
	SDD      float64 // sum of squared differences of consecutive raw values
	Last     float64
	NX, ND   int32
	HasLast  bool
	Vals     []float32
}

// nameSets holds the sorted metric-name sets of the multivariate
// detectors, shared by every device that carries the set: a fleet's
// devices carry a few sets, and each device saves its own copy (64 bytes
// for four names). A shared set is never written. At most maxNameSets
// are kept; beyond them a device keeps its own.
var nameSets = struct {
	sync.Mutex
	m map[string][]string
}{m: map[string][]string{}}

const maxNameSets = 4096

// sharedNames is the shared copy of names, a sorted name set.
func sharedNames(names []string) []string {
	key := strings.Join(names, "\x00")
	nameSets.Lock()
	defer nameSets.Unlock()
	if s, ok := nameSets.m[key]; ok {
		return s
	}
	if len(nameSets.m) < maxNameSets {
		nameSets.m[key] = names
	}
	return names
}

// watches reports whether the fitted model judges the named metric (it
// knows it and gave it weight).
func (m *MVState) watches(name string) bool {
	j, ok := slices.BinarySearch(m.Names, name)
	return ok && m.weight()[j] > 0
}

// collect returns the accumulators, started if need be. Vals grow as the
// readings come (a fleet of devices still warming up holds a few values
// each, not mv_warmup).
func (m *MVState) collect() *MVCollect {
	n := len(m.Names)
	if m.Collect != nil && len(m.Collect.Cols) != n {
		m.Collect = nil // a snapshot written before Cols (or another metric set): collect again
	}
	if m.Collect == nil {
		m.Collect = &MVCollect{Cols: make([]MVCol, n)}
	}
	return m.Collect
}

// mvRefitEvery: a refit's median and MAD are taken from every fourth
// smoothed value of the mv_warmup readings it collects, not from each.
// The values are rolling means of mv_smooth (10) readings, so four in a
// row share most of their readings and the fourth holds about what the
// four do. Kept whole, they made a four-metric device hold 6.4 KB half
// way through its refit against 2.0 KB between refits, and with a refit
// collecting 400 readings in every 4,000 a fitted fleet averaged about
// 2.4 KB a device; now 3.4 KB and 2.1 KB. The first fit keeps every
// value: a device is judged by it from its first minutes.
const mvRefitEvery = 4

// mvParams are the detector's constants.
type mvParams struct {
	warmup    int
	smooth    int
	threshold float64 // weighted rms z that maps to z = 6
	refit     int     // 0: never
	drift     float64 // exponent of the trend ratio in the weights
	spike     float64 // jump from the recent mean, in noise units, that maps to z = 6
	accept    time.Duration
}

// MVObs is what the detector says about one reading.
type MVObs struct {
	Warm bool
	Z    float64 // z-like figure: 6 at mv_threshold
	// Spike is the metric that jumped most from its recent mean, in units of
	// its short-term noise (a one-reading spike the smoothing would hide),
	// scaled so that mv_spike maps to z = 6.
	Spike  string
	SpikeZ float64
	// Accepted: the device's lasting change was taken as the new normal
	// with this reading (its incident closes as accepted).
	Accepted bool
}

func newMVState(names []string, smooth int) *MVState {
	n := len(names)
	return &MVState{Names: names, F: make([]float64, n*smooth+n), PF: make([]int32, 2*n), Smooth: int32(smooth)}
}

// mvObserve folds the reading's metrics into the device's detector and
// scores them with the model fitted so far.
func (d *DeviceState) mvObserve(p *mvParams, metrics []MetricObs, ts time.Time, out *MVObs) {
	*out = MVObs{}
	if p.warmup <= 0 || len(metrics) < 2 {
		return
	}
	m := d.MV
	// a new metric set during the warm-up, or a changed mv_smooth (a state
	// restored under another config), starts the detector over
	if m == nil || !m.Fitted && !sameNames(m.Names, metrics) || int(m.Smooth) != p.smooth || !m.valid() {
		names := make([]string, len(metrics))
		for i := range metrics {
			names[i] = metrics[i].Name
		}
		sort.Strings(names)
		names = slices.Compact(names)
		if len(names) < 2 {
			return
		}
		m = newMVState(sharedNames(names), p.smooth)
		d.MV = m
	}
	// 1. roll the smoothing windows of the metrics this reading carries
	present := 0
	ring, sum, pos, filled := m.ring(), m.sum(), m.pos(), m.filled()
	for i := range metrics {
		j, ok := slices.BinarySearch(m.Names, metrics[i].Name)
		if !ok {
			continue
		}
		present++
		v := metrics[i].Value
		if m.Fitted && m.weight()[j] > 0 && filled[j] > 0 {
			sz := clampZ((v - sum[j]/float64(filled[j])) / m.noise()[j] * 6 / p.spike)
			if math.Abs(sz) > math.Abs(out.SpikeZ) {
				out.Spike, out.SpikeZ = m.Names[j], sz
			}
		}
		if int(filled[j]) == p.smooth {
			sum[j] -= ring[j*p.smooth+int(pos[j])]
		} else {
			filled[j]++
		}
		ring[j*p.smooth+int(pos[j])] = v
		pos[j] = int32((int(pos[j]) + 1) % p.smooth)
		sum[j] += v
		// the raw values' mean and variance for the trend ratio
		if !m.Fitted || int(m.SinceFit) >= p.refit && p.refit > 0 {
			c := &m.collect().Cols[j]
			c.NX++
			d := v - c.Mean
			c.Mean += d / float64(c.NX)
			c.M2 += d * (v - c.Mean)
			if c.HasLast {
				dd := v - c.Last
				c.SDD += dd * dd
				c.ND++
			}
			c.Last, c.HasLast = v, true
		}
	}
	if present == 0 {
		return
	}
	// 2. score with the fitted model
	if m.Fitted {
		var ss, ws, zsum float64
		med, scale, weight := m.med(), m.scale(), m.weight()
		z := func(j int) float64 { return (sum[j]/float64(filled[j]) - med[j]) / scale[j] }
		for j := range m.Names {
			if weight[j] > 0 && filled[j] > 0 {
				zsum += weight[j] * z(j)
				ws += weight[j]
			}
		}
		cm := 0.0
		if ws > 0 {
			cm = zsum / ws // the weighted common mode
		}
		for j := range m.Names {
			if weight[j] == 0 {
				continue
			}
			dz := -cm // a metric not yet seen since the fit counts as z = 0
			if filled[j] > 0 {
				dz += z(j)
			}
			ss += weight[j] * dz * dz
		}
		if ws > 0 {
			out.Warm = true
			out.Z = clampZ(math.Sqrt(ss/ws) * 6 / p.threshold)
		}
		m.SinceFit++
		if m.accept(p, ts, out.Z >= 6) {
			out.Accepted = true
			return
		}
	}
	// 3. collect (normal readings only, once the model exists) and fit
	collecting := !m.Fitted || p.refit > 0 && int(m.SinceFit) >= p.refit
	if !collecting || m.Fitted && out.Z >= 3 {
		return
	}
	c := m.collect()
	c.Collected++
	// a refit keeps every mvRefitEvery-th smoothed value (see
	// mvRefitEvery); the first fit keeps them all
	keep, vcap := !m.Fitted || c.Collected%mvRefitEvery == 0, p.warmup
	if m.Fitted {
		vcap = (p.warmup + mvRefitEvery - 1) / mvRefitEvery
	}
	for j := range m.Names {
		if keep && int(filled[j]) == p.smooth {
			v := sum[j] / float64(p.smooth)
			col := &c.Cols[j]
			b := col.Vals
			if len(b) == 0 {
				col.Base = v
			}
			if len(b) == cap(b) {
				// grow by doubling, but never past the mv_warmup values a fit
				// takes (append's doubling made 512 of 400)
				nb := make([]float32, len(b), max(min(max(2*len(b), 16), vcap), len(b)+1))
				copy(nb, b)
				b = nb
			}
			col.Vals = append(b, float32(v-col.Base))
		}
	}
	if c.Collected >= p.warmup {
		m.fit(p)
	}
}

// accept follows the anomalous run (alarm: this reading is at the alert
// threshold); once it lasted p.accept of event time (and six readings) the
// model's medians move to the metrics' current smoothed values: a lasting
// change (a new set point, a replaced part) becomes the new normal, as the
// per-metric detector does. A fault that ends sooner never gets there.
func (m *MVState) accept(p *mvParams, ts time.Time, alarm bool) bool {
	if p.accept <= 0 {
		return false
	}
	switch {
	case alarm:
		if m.RunN == 0 {
			m.RunStart = stampOf(ts)
		}
		m.RunN++
		m.RunQuiet = 0
	case m.RunN > 0:
		if m.RunQuiet++; m.RunQuiet >= 3 {
			m.RunN, m.RunQuiet = 0, 0
		}
	}
	if m.RunN < 6 || m.RunStart.since(ts) < p.accept {
		return false
	}
	med, sum, filled := m.med(), m.sum(), m.filled()
	for j := range m.Names {
		if filled[j] > 0 {
			med[j] = sum[j] / float64(filled[j])
		}
	}
	m.RunN, m.RunQuiet = 0, 0
	return true
}

func sameNames(names []string, metrics []MetricObs) bool {
	if len(metrics) != len(names) {
		return false
	}
	for i := range metrics {
		if _, ok := slices.BinarySearch(names, metrics[i].Name); !ok {
			return false
		}
	}
	return true
}

// fit sets the per-metric medians, scales and weights from the
// accumulators and starts the next collection.
func (m *MVState) fit(p *mvParams) {
	n := len(m.Names)
	c := m.collect()
	fitted := make([]float64, 4*n)
	med, scale, weight, noises := fitted[:n:n], fitted[n:2*n:2*n], fitted[2*n:3*n:3*n], fitted[3*n:]
	usable := 0
	var buf []float64
	for j := 0; j < n; j++ {
		col := &c.Cols[j]
		if len(col.Vals) < 10 || col.NX < 10 || col.ND < 10 {
			continue
		}
		b := buf[:0]
		for _, d := range col.Vals {
			b = append(b, float64(d))
		}
		buf = b
		sort.Float64s(b)
		mdd := b[len(b)/2] // the median's difference from Base
		md := col.Base + mdd
		for i := range b {
			b[i] = math.Abs(b[i] - mdd)
		}
		sort.Float64s(b)
		mad := 1.4826 * b[len(b)/2]
		varRaw := math.Max(col.M2/float64(col.NX), 0)
		noise := math.Sqrt(col.SDD / float64(col.ND) / 2)
		if mad <= 1e-12*(1+math.Abs(md)) || varRaw <= 0 || noise <= 0 {
			continue // did not move: the per-metric baseline watches it
		}
		r := math.Sqrt(varRaw) / noise
		med[j], scale[j], weight[j], noises[j] = md, mad, math.Pow(r, -p.drift), noise
		usable++
	}
	m.Collect = nil
	m.SinceFit = 0
	if usable < 2 && !m.Fitted {
		return // collect again
	}
	if usable >= 2 {
		if !m.Fitted {
			// the first fit: F grows by the fitted arrays (one allocation)
			r := n*int(m.Smooth) + n
			m.F = append(make([]float64, 0, r+4*n), m.F[:r]...)
			m.F = m.F[:r+4*n]
			m.Fitted = true
		}
		copy(m.med(), med)
		copy(m.scale(), scale)
		copy(m.weight(), weight)
		copy(m.noise(), noises)
	}
}
