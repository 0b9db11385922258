package sitestatus

import (
	"context"
	"sync"
	"time"
)

// Point is the region's figures over one interval, for the overview's
// time series.
type Point struct {
	T              time.Time `json:"t"`
	IngestPerS     float64   `json:"ingest_per_s"`
	PipelinePerS   float64   `json:"pipeline_per_s"`
	Lag            float64   `json:"lag"`           // records behind, all partitions
	BatchMeanMS    float64   `json:"batch_mean_ms"` // micro-batch time over the interval
	ArchivePending float64   `json:"archive_pending_rows"`
	DLQ            float64   `json:"dlq"` // records sent to the DLQ in the interval
}

// Recorder samples the sources every interval and keeps the last points in
// memory (an hour at 10 s by default), for the overview's charts.
type Recorder struct {
	src   Sources
	every time.Duration
	keep  int

	mu     sync.Mutex
	points []Point
}

// NewRecorder keeps keep points taken every every.
func NewRecorder(src Sources, every time.Duration, keep int) *Recorder {
	return &Recorder{src: src, every: every, keep: keep}
}

// Points is a copy of the kept points, oldest first.
func (r *Recorder) Points() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Point(nil), r.points...)
}

// Run samples until ctx ends.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	last, lastAt := HealthOf(r.src), time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		h, now := HealthOf(r.src), time.Now()
		r.add(pointBetween(last, h, now.Sub(lastAt), now))
		last, lastAt = h, now
	}
}

func pointBetween(a, b Health, d time.Duration, at time.Time) Point {
	secs := max(d.Seconds(), 0.001)
	p := Point{T: at.UTC(), IngestPerS: (b.IngestReadings - a.IngestReadings) / secs, PipelinePerS: (b.PipelineReadings - a.PipelineReadings) / secs,
		ArchivePending: b.ArchivePending, DLQ: b.DLQ - a.DLQ}
	for _, l := range b.LagByPartition {
		p.Lag += l
	}
	if n := b.Batches - a.Batches; n > 0 {
		p.BatchMeanMS = (b.BatchMeanMS*b.Batches - a.BatchMeanMS*a.Batches) / n
	}
	return p
}

func (r *Recorder) add(p Point) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.points) >= r.keep {
		copy(r.points, r.points[1:])
		r.points = r.points[:len(r.points)-1]
	}
	r.points = append(r.points, p)
}
