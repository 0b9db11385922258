// Package promread reads the current value of a component's own
// Prometheus collectors, so a component can report its figures without
// anyone scraping its metrics by name.
package promread

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Value is the value of a counter or gauge (0 for other kinds).
func Value(m prometheus.Metric) float64 {
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

// Mean is a histogram's mean observation (0 before the first).
func Mean(h prometheus.Histogram) float64 {
	var d dto.Metric
	if h.Write(&d) != nil || d.Histogram.GetSampleCount() == 0 {
		return 0
	}
	return d.Histogram.GetSampleSum() / float64(d.Histogram.GetSampleCount())
}
