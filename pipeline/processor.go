package pipeline

import (
	"github.com/vigil/vigil/contract"

	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DeviceLookup finds a registered device; the registry of ingest fills it.
type DeviceLookup interface {
	Device(id string) (*contract.Device, bool)
}

// partition is the state of one raw-topic partition: the devices whose
// readings it carries, and the offset of the next record to fold in.
type partition struct {
	Devices map[string]*DeviceState
	Next    int64
	// MaxIngest is the latest ingest time seen: the clock of idle-device
	// eviction, taken from the data so a replay evicts the same devices.
	MaxIngest time.Time
	Steps     int64
	Evicted   int64
	EvictAt   int64 // the step of the next scan for idle devices
}

// evictEvery is how many readings of a partition pass at least between
// two scans for idle devices; with more devices than that, as many
// readings as devices pass, so a scan costs about one device a reading
// however large the fleet.
const evictEvery = 4096

// evictIdle drops the state of the devices of part that sent nothing for
// ttl before its latest ingest time, except those with an open incident
// (its closing update must still be written).
func (part *partition) evictIdle(ttl time.Duration) {
	cut := part.MaxIngest.Add(-ttl)
	for id, ds := range part.Devices {
		if ds.LastIngest == 0 { // restored from a snapshot that did not keep it
			ds.LastIngest = wallOf(part.MaxIngest)
		}
		if ds.LastIngest.time().Before(cut) && len(ds.Incidents) == 0 {
			delete(part.Devices, id)
			part.Evicted++
		}
	}
}

func newPartition() *partition { return &partition{Devices: map[string]*DeviceState{}} }

// Processor enriches, scores and alerts one reading at a time. It owns no
// Kafka client: the stream feeds it and writes its output, and the restore
// path replays readings through it without output. Step must be called from
// one goroutine; SetModels may be called from any, and takes effect at the
// next BeginBatch, so a micro-batch is scored by one model throughout.
type Processor struct {
	cfg     Config
	groups  []group // pipeline.groups, then the pipeline-wide settings last
	region  string
	devices DeviceLookup
	pending atomic.Pointer[scorerBox]
	active  scorerBox
	now     func() time.Time

	obs     Observation
	scored  contract.Scored
	reasons []contract.Reason
}

// group is one set of detector settings with its derived constants.
type group struct {
	match *Group // nil: every device
	cfg   Config
	p     params
}

// groupOf picks the settings of a device: its group's, or the defaults.
func (pr *Processor) groupOf(deviceID string, dev *contract.Device) *group {
	var site, model string
	if dev != nil {
		site, model = dev.Site, dev.Model
	}
	for i := range pr.groups {
		if g := &pr.groups[i]; g.match == nil || g.match.matches(deviceID, site, model) {
			return g
		}
	}
	return &pr.groups[len(pr.groups)-1]
}

// scorerBox is the scorer in charge and an optional shadow, scored beside
// it and recorded in the enriched record, raising nothing.
type scorerBox struct{ model, shadow Model }

// name is the model name recorded with a score: the model in charge, or
// the streaming detectors'.
func (b *scorerBox) name() string {
	if b.model != nil {
		return b.model.Name()
	}
	return BaselineName
}

// NewProcessor builds a processor scoring with the streaming detectors
// until SetModels hands it a trained model.
func NewProcessor(cfg Config, region string, devices DeviceLookup) *Processor {
	pr := &Processor{cfg: cfg, region: region, devices: devices, now: time.Now}
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		gc := g.apply(cfg)
		pr.groups = append(pr.groups, group{match: g, cfg: gc, p: newParams(gc)})
	}
	pr.groups = append(pr.groups, group{cfg: cfg, p: newParams(cfg)})
	pr.pending.Store(&pr.active)
	return pr
}

// replica is a processor for another goroutine: the same settings,
// device registry and models (their replicas), its own scratch. It is nil
// when a model cannot be replicated (see ReplicableModel).
func (pr *Processor) replica() *Processor {
	r := &Processor{cfg: pr.cfg, groups: pr.groups, region: pr.region, devices: pr.devices, now: pr.now}
	for _, m := range []struct {
		src Model
		dst *Model
	}{{pr.active.model, &r.active.model}, {pr.active.shadow, &r.active.shadow}} {
		if m.src == nil {
			continue
		}
		rm, ok := m.src.(ReplicableModel)
		if !ok {
			return nil
		}
		*m.dst = rm.Replica()
	}
	r.pending.Store(&r.active)
	return r
}

// SetModels hands over the model in charge and the shadow (nil: none);
// the next BeginBatch puts them in charge.
func (pr *Processor) SetModels(model, shadow Model) {
	pr.pending.Store(&scorerBox{model: model, shadow: shadow})
}

// ModelNames are the names of the model in charge (BaselineName when none)
// and of the shadow ("" when none), as of the last BeginBatch.
func (pr *Processor) ModelNames() (model, shadow string) {
	if pr.active.shadow != nil {
		shadow = pr.active.shadow.Name()
	}
	return pr.active.name(), shadow
}

// score is the scoring policy: the streaming detectors always score; a
// model in charge scores too, and the larger score wins. When the model's
// is larger it leads the reasons (it sees what it learnt from the whole
// fleet's history), and the detectors' figures follow with no share.
func (pr *Processor) score(o *Observation) (float64, []contract.Reason) {
	base, reasons := Baseline{}.Score(o, pr.reasons)
	if m := pr.active.model; m != nil {
		ms, raw := m.Score(o)
		ms = round3(ms)
		if ms > base {
			reasons = append(reasons, contract.Reason{})
			copy(reasons[1:], reasons)
			reasons[0] = contract.Reason{Feature: m.Feature(), Value: round3(raw), Contribution: 1, Detector: "model", Score: ms}
			for i := 1; i < len(reasons); i++ {
				reasons[i].Contribution = 0
			}
			return ms, reasons
		}
	}
	return base, reasons
}

// BeginBatch puts the scorers last handed over in charge; the stream calls
// it between micro-batches. It reports whether they changed.
func (pr *Processor) BeginBatch() bool {
	b := pr.pending.Load()
	if *b == pr.active {
		return false
	}
	pr.active = *b
	return true
}

// StepResult is what one reading produced.
type StepResult struct {
	Duplicate bool
	Held      bool // the device's state already held the reading (see StepAt)
	Score     float64
	Incident  string           // the alert id of the incident the reading belongs to ("" if none)
	Repeat    bool             // the reading began a silent repeat of its metric's previous incident
	Alerts    []contract.Alert // opened or closed incidents
}

// Step folds r into the partition state and, when emit is set, appends the
// enriched record to buf. It returns the grown buffer and what happened.
func (pr *Processor) Step(part *partition, r *contract.Reading, emit bool, buf []byte, res *StepResult) []byte {
	return pr.StepAt(part, -1, r, emit, buf, res)
}

// StepAt is Step for the raw record at offset off of the partition (-1:
// no record, as offline). The device remembers the offset (Through), and
// a reading at an offset its state already holds changes only the
// partition's clocks: a snapshot written a slice at a time, between
// micro-batches (see snapWriter), holds each device as of the moment it
// was written, and the replay from the snapshot's offset must not fold
// the later readings in twice. res.Held says so.
func (pr *Processor) StepAt(part *partition, off int64, r *contract.Reading, emit bool, buf []byte, res *StepResult) []byte {
	res.Duplicate, res.Held, res.Score, res.Incident, res.Repeat, res.Alerts = false, false, 0, "", false, res.Alerts[:0]
	ds := part.Devices[r.DeviceID]
	if ds == nil {
		ds = newDeviceState()
		part.Devices[r.DeviceID] = ds
	}
	switch {
	case off >= 0 && off < ds.Through:
		res.Held = true
	case ds.seen(r.ID, r.IngestedAt, pr.cfg.DedupWindow, pr.cfg.DedupHorizon):
		res.Duplicate = true
	case r.IngestedAt.After(ds.LastIngest.time()):
		ds.LastIngest = wallOf(r.IngestedAt)
	}
	if off >= ds.Through {
		ds.Through = off + 1
	}
	// the partition's clocks count every record, a duplicate's too: a
	// replay that finds a reading already held cannot tell whether it was
	// a duplicate, and must step the clocks as the stream did
	if r.IngestedAt.After(part.MaxIngest) {
		part.MaxIngest = r.IngestedAt
	}
	if part.Steps++; pr.cfg.DeviceIdleTTL > 0 && part.Steps >= part.EvictAt {
		if part.EvictAt > 0 {
			part.evictIdle(pr.cfg.DeviceIdleTTL)
		}
		part.EvictAt = part.Steps + max(evictEvery, int64(len(part.Devices)))
	}
	if res.Held || res.Duplicate {
		return buf
	}
	var dev *contract.Device
	if pr.devices != nil {
		dev, _ = pr.devices.Device(r.DeviceID)
	}
	g := pr.groupOf(r.DeviceID, dev)
	thr := g.cfg.Threshold
	// Close incidents that have been quiet for long enough (event time).
	for metric, inc := range ds.Incidents {
		if r.TS.Sub(inc.LastTS) > g.cfg.IncidentQuiet && inc.Quiet >= g.cfg.IncidentQuietReadings {
			delete(ds.Incidents, metric)
			ds.rememberClosed(inc)
			if emit && !inc.Silent {
				res.Alerts = append(res.Alerts, inc.closed(false))
			}
		}
	}
	o := &pr.obs
	o.Device = dev
	ds.observe(&g.p, r, o)
	score, reasons := pr.score(o)
	pr.reasons = reasons
	res.Score = score
	var cur *Incident // the incident this reading belongs to
	if len(reasons) > 0 && score >= thr*0.8 {
		metric := metricOf(reasons[0].Feature)
		inc := ds.Incidents[metric]
		if inc != nil && !inc.Active && !inc.Silent && score >= thr && !sameKind(reasons[0].Feature, inc.Feature) {
			// the metric's incident had gone quiet and another kind of
			// anomaly begins (a spike, then the value frozen for hours):
			// that one closes, and this one is an incident of its own
			delete(ds.Incidents, metric)
			ds.rememberClosed(inc)
			if emit {
				res.Alerts = append(res.Alerts, inc.closed(false))
			}
			inc = nil
		}
		switch {
		case inc != nil && inc.Silent && score >= thr && (!sameKind(reasons[0].Feature, inc.Feature) && score > inc.OpenScore || ds.closedOf(metric).outdoneBy(strength(reasons, inc.Feature), score)):
			// a repeat that grew stronger than the incident it repeats, or
			// turned into another kind of anomaly (a spike that became a
			// lasting change of volatility) scoring above its own start:
			// it is news after all, and raises its alert now
			a := pr.newAlert(r, dev, metric, score, thr, reasons)
			inc.AlertID, inc.First, inc.Silent = a.AlertID, a, false
			inc.Active, inc.Readings, inc.LastTS, inc.LastN = true, inc.Readings+1, r.TS, ds.N
			inc.MaxScore = max(inc.MaxScore, score)
			inc.Strength = max(inc.Strength, strength(reasons, inc.Feature))
			cur = inc
			if emit {
				res.Alerts = append(res.Alerts, a)
			}
		case inc != nil && (inc.Active || score >= thr):
			// hysteresis: an incident goes on while its readings stay above
			// 80% of the threshold; once they dropped below, it takes the
			// threshold again to resume it (same alert, until it closes)
			inc.Active = true
			inc.Readings++
			inc.LastTS, inc.LastN = r.TS, ds.N
			inc.MaxScore = max(inc.MaxScore, score)
			inc.Strength = max(inc.Strength, strength(reasons, inc.Feature))
			cur = inc
		case inc == nil && score >= thr:
			feature, st := reasons[0].Feature, math.Abs(reasons[0].Value)
			if ref, ok := ds.repeats(g.cfg.RealertReadings, metric, feature, st, score); ok {
				// the metric does again what its last incident did, no
				// stronger: the incident is kept, silent, without an alert
				// (its readings carry the repeated alert's id)
				cur = &Incident{AlertID: ref.AlertID, Metric: metric, Feature: feature, OpenedTS: r.TS, LastTS: r.TS, Readings: 1, LastN: ds.N, MaxScore: score, OpenScore: score, Strength: st,
					Active: true, Silent: true}
				ds.openIncident(metric, cur)
				res.Repeat = true
				break
			}
			a := pr.newAlert(r, dev, metric, score, thr, reasons)
			cur = &Incident{AlertID: a.AlertID, Metric: metric, Feature: feature, OpenedTS: r.TS, LastTS: r.TS, Readings: 1, LastN: ds.N, MaxScore: score, Strength: st,
				First: a, Active: true}
			ds.openIncident(metric, cur)
			if emit {
				res.Alerts = append(res.Alerts, a)
			}
		}
	}
	incident := ""
	if cur != nil {
		incident = cur.AlertID
	}
	for _, inc := range ds.Incidents {
		if inc != cur {
			inc.Active = false
			inc.Quiet++
		} else {
			inc.Quiet = 0
		}
	}
	// A metric (or the device's multivariate model) whose anomalous run
	// lasted pipeline.accept_after has a new normal: its incident closes
	// as accepted.
	for i := 0; i <= len(o.Metrics); i++ {
		key := contract.Multivariate
		if i < len(o.Metrics) {
			if !o.Metrics[i].UV.Accepted {
				continue
			}
			key = o.Metrics[i].Name
		} else if !o.MV.Accepted {
			continue
		}
		if inc := ds.Incidents[key]; inc != nil {
			delete(ds.Incidents, inc.Metric)
			if inc == cur {
				incident = ""
			}
			if emit && !inc.Silent {
				res.Alerts = append(res.Alerts, inc.closed(true))
			}
		}
	}
	res.Incident = incident
	if emit {
		s := &pr.scored
		scoredOf(s, o, pr.region)
		s.Score, s.Threshold, s.Model, s.Incident = score, thr, pr.active.name(), incident
		if sh := pr.active.shadow; sh != nil {
			// the candidate's own score, not mixed with the detectors'
			ss, _ := sh.Score(o)
			s.ShadowScore, s.ShadowModel = round3(ss), sh.Name()
		}
		buf = contract.AppendEnriched(buf, o.Reading, s)
	}
	return buf
}

// closed is the incident's alert as it closes (accepted: its change was
// taken as the new normal).
func (inc *Incident) closed(accepted bool) contract.Alert {
	a := inc.First
	a.State, a.Readings, a.LastTS, a.MaxScore, a.Accepted = "closed", inc.Readings, inc.LastTS, inc.MaxScore, accepted
	return a
}

// newAlert is the alert a reading raises when it opens an incident.
func (pr *Processor) newAlert(r *contract.Reading, dev *contract.Device, metric string, score, thr float64, reasons []contract.Reason) contract.Alert {
	a := contract.Alert{
		AlertID: alertID(r.DeviceID, r.ID, metric), DeviceID: r.DeviceID, Region: pr.region,
		TS: r.TS, DetectedAt: pr.now().UTC(), IngestedAt: r.IngestedAt,
		Score: score, Threshold: thr, Severity: contract.Severity(score), Model: pr.active.name(),
		MessageID: r.ID, Metric: metric, Reasons: describedCopy(reasons, r.TS),
		State: "open", Readings: 1, LastTS: r.TS, MaxScore: score,
	}
	if dev != nil {
		a.Site = dev.Site
	}
	// a stuck reason's words name the runs, known here from the
	// observation (an alert is rare; the scoring of every reading does
	// not build them)
	for i := range a.Reasons {
		if rs := &a.Reasons[i]; rs.Detector == "stuck" {
			for _, m := range pr.obs.Metrics {
				if m.Name+".stuck" == rs.Feature {
					rs.Text = "the same value for " + strconv.Itoa(m.Run) + " readings in a row; the longest run before was " + strconv.Itoa(m.MaxRun)
				}
			}
		}
	}
	return a
}

// rememberClosed keeps what a closed incident leaves behind, one per
// metric. A silent repeat extends the memory of the incident it repeated
// (whose peak stays the reference).
func (d *DeviceState) rememberClosed(inc *Incident) {
	if p := d.closedOf(inc.Metric); p != nil {
		if inc.Silent {
			p.LastN = inc.LastN
			p.Strength, p.MaxScore = max(p.Strength, inc.Strength), max(p.MaxScore, inc.MaxScore)
		} else {
			*p = ClosedIncident{AlertID: inc.AlertID, Metric: inc.Metric, Feature: inc.Feature, LastN: inc.LastN, Strength: inc.Strength, MaxScore: inc.MaxScore}
		}
		return
	}
	if !inc.Silent {
		d.Closed = append(d.Closed, ClosedIncident{AlertID: inc.AlertID, Metric: inc.Metric, Feature: inc.Feature, LastN: inc.LastN, Strength: inc.Strength, MaxScore: inc.MaxScore})
	}
}

// closedOf is the metric's last closed incident (nil: none).
func (d *DeviceState) closedOf(metric string) *ClosedIncident {
	for i := range d.Closed {
		if d.Closed[i].Metric == metric {
			return &d.Closed[i]
		}
	}
	return nil
}

// repeatNews is the score from which a reading is never a repeat: the
// rule is for a metric that comes back to the alert level, again and
// again, the same way (a marginal excursion that recurs), and a reading
// its history makes far rarer than the alert level (0.99: about the
// alert level's probability to the power 2.9) is an event of its own,
// however like the last one. At a reading a second the rule's
// realert_readings are ten minutes, and it silenced one in 40 of
// the simulated fleet's anomalies (a dropout, then another five minutes
// later); on the NAB development split strong repeats are 3 of the 25
// false detections the rule prevents.
const repeatNews = 0.99

// repeats reports whether an incident of metric led by feature at
// strength st and score repeats the metric's last closed incident: the
// same leading reason, not outdoing it, scoring below repeatNews, within
// n readings of the device after its last anomalous reading. It returns
// that incident.
func (d *DeviceState) repeats(n int, metric, feature string, st, score float64) (*ClosedIncident, bool) {
	c := d.closedOf(metric)
	if n <= 0 || c == nil || score >= repeatNews {
		return nil, false
	}
	return c, d.N-c.LastN < int64(n) && sameKind(c.Feature, feature) && !c.outdoneBy(st, score)
}

// outdoneBy reports whether a reading of strength st and score goes
// clearly beyond the incident's peak: half as far again on its leading
// reason, or 0.02 higher in score. Noise alone does not make an event of
// the same size stronger. A silent repeat whose incident is gone (nil)
// is outdone by anything.
func (c *ClosedIncident) outdoneBy(st, score float64) bool {
	return c == nil || st > 1.5*c.Strength || score > c.MaxScore+0.02
}

// strength is how far the reading goes on feature, its incident's
// leading reason: the reason's figure (a nonconformity, a z, a gap), which
// unlike the score does not saturate; 0 when another reason leads.
func strength(reasons []contract.Reason, feature string) float64 {
	if len(reasons) == 0 || !sameKind(reasons[0].Feature, feature) {
		return 0
	}
	return math.Abs(reasons[0].Value)
}

// sameKind reports whether two leading features are the same kind of
// anomaly of the same metric. The per-metric figures of the reading's own
// deviation from its level (tail, level, record) see one spike or shift
// from different references, and which of them leads it is incidental:
// they are one kind. Cycle (off the time of day's pattern), regime,
// stuck, gap and the others are kinds of their own.
func sameKind(a, b string) bool {
	if a == b {
		return true
	}
	ia, ib := strings.LastIndexByte(a, '.'), strings.LastIndexByte(b, '.')
	if ia < 0 || ib < 0 || a[:ia] != b[:ib] {
		return false
	}
	return pointKind(a[ia+1:]) && pointKind(b[ib+1:])
}

func pointKind(suffix string) bool {
	switch suffix {
	case "tail", "level", "record":
		return true
	}
	return false
}

func alertID(device, msg, metric string) string {
	h := sha256.New()
	h.Write([]byte(device))
	h.Write([]byte{0})
	h.Write([]byte(msg))
	h.Write([]byte{0})
	h.Write([]byte(metric))
	return "a-" + hex.EncodeToString(h.Sum(nil)[:12])
}

func describedCopy(reasons []contract.Reason, ts time.Time) []contract.Reason {
	out := append([]contract.Reason(nil), reasons...)
	Describe(out, ts)
	return out
}
