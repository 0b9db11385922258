package pipeline

import (
	"github.com/vigil/vigil/contract"

	"crypto/sha256"
	"encoding/hex"
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
}

// evictEvery is how many readings of a partition pass between two scans
// for idle devices.
const evictEvery = 4096

// evictIdle drops the state of the devices of part that sent nothing for
// ttl before its latest ingest time, except those with an open incident
// (its closing update must still be written).
func (part *partition) evictIdle(ttl time.Duration) {
	cut := part.MaxIngest.Add(-ttl)
	for id, ds := range part.Devices {
		if ds.LastIngest.IsZero() { // restored from a snapshot that did not keep it
			ds.LastIngest = part.MaxIngest
		}
		if ds.LastIngest.Before(cut) && len(ds.Incidents) == 0 {
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
	Score     float64
	Incident  string           // the alert id of the incident the reading belongs to ("" if none)
	Alerts    []contract.Alert // opened or closed incidents
}

// Step folds r into the partition state and, when emit is set, appends the
// enriched record to buf. It returns the grown buffer and what happened.
func (pr *Processor) Step(part *partition, r *contract.Reading, emit bool, buf []byte, res *StepResult) []byte {
	res.Duplicate, res.Score, res.Incident, res.Alerts = false, 0, "", res.Alerts[:0]
	ds := part.Devices[r.DeviceID]
	if ds == nil {
		ds = newDeviceState()
		part.Devices[r.DeviceID] = ds
	}
	if ds.seen(r.ID, pr.cfg.DedupWindow) {
		res.Duplicate = true
		return buf
	}
	if r.IngestedAt.After(ds.LastIngest) {
		ds.LastIngest = r.IngestedAt
	}
	if r.IngestedAt.After(part.MaxIngest) {
		part.MaxIngest = r.IngestedAt
	}
	if part.Steps++; pr.cfg.DeviceIdleTTL > 0 && part.Steps%evictEvery == 0 {
		part.evictIdle(pr.cfg.DeviceIdleTTL)
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
			if emit {
				a := inc.First
				a.State, a.Readings, a.LastTS, a.MaxScore = "closed", inc.Readings, inc.LastTS, inc.MaxScore
				res.Alerts = append(res.Alerts, a)
			}
		}
	}
	o := &pr.obs
	o.Device = dev
	ds.observe(&g.p, r, o)
	score, reasons := pr.score(o)
	pr.reasons = reasons
	res.Score = score
	incident := ""
	if len(reasons) > 0 && score >= thr*0.8 {
		metric := metricOf(reasons[0].Feature)
		inc := ds.Incidents[metric]
		switch {
		case inc != nil && (inc.Active || score >= thr):
			// hysteresis: an incident goes on while its readings stay above
			// 80% of the threshold; once they dropped below, it takes the
			// threshold again to resume it (same alert, until it closes)
			incident = inc.AlertID
			inc.Active = true
			inc.Readings++
			inc.LastTS = r.TS
			if score > inc.MaxScore {
				inc.MaxScore = score
			}
		case inc == nil && score >= thr:
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
			ds.Incidents[metric] = &Incident{AlertID: a.AlertID, Metric: metric, OpenedTS: r.TS, LastTS: r.TS, Readings: 1, MaxScore: score, First: a, Active: true}
			incident = a.AlertID
			if emit {
				res.Alerts = append(res.Alerts, a)
			}
		}
	}
	for _, inc := range ds.Incidents {
		if inc.AlertID != incident {
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
			if inc.AlertID == incident {
				incident = ""
			}
			if emit {
				a := inc.First
				a.State, a.Readings, a.LastTS, a.MaxScore, a.Accepted = "closed", inc.Readings, inc.LastTS, inc.MaxScore, true
				res.Alerts = append(res.Alerts, a)
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
