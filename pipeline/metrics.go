package pipeline

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	batches     prometheus.Counter
	batchSize   prometheus.Histogram
	batchTime   prometheus.Histogram
	readings    prometheus.Counter
	duplicates  prometheus.Counter
	dlq         prometheus.Counter
	alerts      *prometheus.CounterVec
	repeats     prometheus.Counter
	aborts      prometheus.Counter
	split       prometheus.Counter
	postToAlert prometheus.Histogram
	postToDone  prometheus.Histogram
	lag         *prometheus.GaugeVec
	restored    prometheus.Counter
	swaps       prometheus.Counter
	snapTime    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lat := prometheus.ExponentialBuckets(0.001, 2, 16)
	m := &metrics{
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_batches_total", Help: "Micro-batches committed."}),
		batchSize:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_pipeline_batch_readings", Help: "Readings per micro-batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 15)}),
		batchTime:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_pipeline_batch_seconds", Help: "Time to process and commit one micro-batch.", Buckets: lat}),
		readings:   prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_readings_total", Help: "Readings enriched, scored and committed."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_duplicates_total", Help: "Re-sent readings dropped by id."}),
		dlq:        prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_dlq_total", Help: "Raw records sent to the dead-letter topic."}),
		alerts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_pipeline_alerts_total", Help: "Alert records written, by incident state."}, []string{"state"}),
		repeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_repeats_total",
			Help: "Incidents kept silent, without an alert, as repeats of their metric's previous incident (pipeline.realert_readings)."}),
		aborts: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_aborted_batches_total", Help: "Micro-batches whose transaction was aborted (rebalance or error); they are processed again."}),
		split:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_split_batches_total", Help: "Micro-batches scored on two goroutines, their partitions shared between them."}),
		postToAlert: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_pipeline_post_to_alert_seconds",
			Help: "From ingest acknowledgement time to the commit of the alert it raised.", Buckets: lat}),
		postToDone: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_pipeline_post_to_commit_seconds",
			Help: "From ingest acknowledgement time to the commit of the enriched record.", Buckets: lat}),
		lag:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vigil_pipeline_lag_records", Help: "Raw records not yet processed, per partition."}, []string{"partition"}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_restored_readings_total", Help: "Raw readings replayed to rebuild per-device state."}),
		swaps:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_pipeline_model_swaps_total", Help: "Times a new scorer (model or shadow) took over between micro-batches."}),
		snapTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_pipeline_snapshot_seconds",
			Help: "The stream's time the latest round of state snapshots took, written a slice of at most 20 ms at a time between micro-batches (at most a tenth of the stream's time while it is behind; the file's sync runs aside). The next round comes pipeline.snapshot_interval after one ends."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.batches, m.batchSize, m.batchTime, m.readings, m.duplicates, m.dlq, m.alerts, m.repeats, m.aborts, m.split, m.postToAlert, m.postToDone, m.lag, m.restored, m.swaps, m.snapTime} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	return m, nil
}
