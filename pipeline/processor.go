package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/vigil/vigil/ingest"
)

// DeviceLookup finds a registered device; the registry of ingest fills it.
type DeviceLookup interface {
	Device(id string) (*ingest.Device, bool)
}

// partition is the state of one raw-topic partition: the devices whose
// readings it carries, and the offset of the next record to fold in.
type partition struct {
	Devices map[string]*DeviceState
	Next    int64
}

func newPartition() *partition { return &partition{Devices: map[string]*DeviceState{}} }

// Processor enriches, scores and alerts one reading at a time. It owns no
// Kafka client: the stream feeds it and writes its output, and the restore
// path replays readings through it without output. Step must be called from
// one goroutine; SetScorer may be called from any.
type Processor struct {
	cfg     Config
	p       params
	region  string
	devices DeviceLookup
	scorer  atomic.Pointer[scorerBox]
	now     func() time.Time

	obs     Observation
	reasons []Reason
}

type scorerBox struct{ s Scorer }

// NewProcessor builds a processor; a nil scorer means the baseline detector.
func NewProcessor(cfg Config, region string, devices DeviceLookup, scorer Scorer) *Processor {
	if scorer == nil {
		scorer = Baseline{}
	}
	pr := &Processor{cfg: cfg, p: newParams(cfg), region: region, devices: devices, now: time.Now}
	pr.scorer.Store(&scorerBox{scorer})
	return pr
}

// SetScorer swaps the scorer; the next reading is scored by it.
func (pr *Processor) SetScorer(s Scorer) { pr.scorer.Store(&scorerBox{s}) }

// Scorer returns the current scorer.
func (pr *Processor) Scorer() Scorer { return pr.scorer.Load().s }

// StepResult is what one reading produced.
type StepResult struct {
	Duplicate bool
	Score     float64
	Alerts    []Alert // opened or closed incidents
}

// Step folds r into the partition state and, when emit is set, appends the
// enriched record to buf. It returns the grown buffer and what happened.
func (pr *Processor) Step(part *partition, r *ingest.Reading, emit bool, buf []byte, res *StepResult) []byte {
	res.Duplicate, res.Score, res.Alerts = false, 0, res.Alerts[:0]
	ds := part.Devices[r.DeviceID]
	if ds == nil {
		ds = newDeviceState()
		part.Devices[r.DeviceID] = ds
	}
	if ds.seen(r.ID, pr.cfg.DedupWindow) {
		res.Duplicate = true
		return buf
	}
	var dev *ingest.Device
	if pr.devices != nil {
		dev, _ = pr.devices.Device(r.DeviceID)
	}
	// Close incidents that have been quiet for long enough (event time).
	for metric, inc := range ds.Incidents {
		if r.TS.Sub(inc.LastTS) > pr.cfg.IncidentQuiet {
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
	ds.observe(&pr.p, r, o)
	sc := pr.scorer.Load().s
	score, reasons := sc.Score(o, pr.reasons)
	pr.reasons = reasons
	res.Score = score
	if len(reasons) > 0 && score >= pr.cfg.Threshold*0.8 {
		metric := metricOf(reasons[0].Feature)
		if inc := ds.Incidents[metric]; inc != nil {
			// hysteresis: an open incident goes on above 80% of the threshold
			inc.Readings++
			inc.LastTS = r.TS
			if score > inc.MaxScore {
				inc.MaxScore = score
			}
		} else if score >= pr.cfg.Threshold {
			a := Alert{
				AlertID: alertID(r.DeviceID, r.ID, metric), DeviceID: r.DeviceID, Region: pr.region,
				TS: r.TS, DetectedAt: pr.now().UTC(), IngestedAt: r.IngestedAt,
				Score: score, Threshold: pr.cfg.Threshold, Severity: Severity(score), Model: sc.Name(),
				MessageID: r.ID, Metric: metric, Reasons: append([]Reason(nil), reasons...),
				State: "open", Readings: 1, LastTS: r.TS, MaxScore: score,
			}
			if dev != nil {
				a.Site = dev.Site
			}
			ds.Incidents[metric] = &Incident{AlertID: a.AlertID, Metric: metric, OpenedTS: r.TS, LastTS: r.TS, Readings: 1, MaxScore: score, First: a}
			if emit {
				res.Alerts = append(res.Alerts, a)
			}
		}
	}
	if emit {
		buf = appendEnriched(buf, o, pr.region, score, sc.Name(), pr.cfg.Threshold)
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
