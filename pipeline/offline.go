package pipeline

import (
	"github.com/vigil/vigil/contract"
)

// Offline runs the stream's processor without Kafka, one reading at a
// time, in one goroutine: the same enrichment, scoring and incidents as the
// stream. Tests and measuring tools use it to replay data fast.
type Offline struct {
	pr   *Processor
	part *partition
	res  StepResult
	buf  []byte
}

// NewOffline builds an offline processor scoring with the streaming
// detectors.
func NewOffline(cfg Config, region string, devices DeviceLookup) *Offline {
	return &Offline{pr: NewProcessor(cfg, region, devices), part: newPartition()}
}

// Step processes r and returns its enriched record (valid until the next
// call) and what it produced.
func (o *Offline) Step(r *contract.Reading) ([]byte, *StepResult) {
	o.buf = o.pr.Step(o.part, r, true, o.buf[:0], &o.res)
	return o.buf, &o.res
}

// SetModels puts a model (nil: none) and an optional shadow in charge from
// the next Step, as the models service does for the stream.
func (o *Offline) SetModels(model, shadow Model) {
	o.pr.SetModels(model, shadow)
	o.pr.BeginBatch()
}
