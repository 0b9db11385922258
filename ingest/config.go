package ingest

import (
	"fmt"
	"math"
	"time"
)

// Config is the ingest section of config.yaml.
type Config struct {
	// MaxBodyBytes is the largest request body accepted (413 above). Default 8 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxReadings is the most readings in one request (413 above). Default 10000.
	MaxReadings int `yaml:"max_readings"`
	// MaxMetrics is the most metrics, and separately attrs, in one reading. Default 256.
	MaxMetrics int `yaml:"max_metrics"`
	// FutureMargin is how far ahead of the server clock an event time may be. Default 5m.
	FutureMargin time.Duration `yaml:"future_margin"`
	// ProduceTimeout is how long a request waits for Kafka to acknowledge
	// its readings before it is answered 503. Default 10s.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// MaxBufferedRecords is the producer buffer; a request that does not
	// fit is answered 429 with Retry-After. Default 200000.
	MaxBufferedRecords int `yaml:"max_buffered_records"`
	// RetryAfter is the Retry-After sent with 429 and 503. Default 1s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// MaxMetricsPerDevice is the most distinct metric names one device may
	// use, and separately attr names; a reading that would add one more is
	// refused (400). It bounds the archive's columns and the state one key
	// can make the server keep. Default 64.
	MaxMetricsPerDevice int `yaml:"max_metrics_per_device"`
	// MaxDevicesPerGateway is the most distinct device ids one gateway key
	// may post for; one more is refused (403). Default 10000.
	MaxDevicesPerGateway int `yaml:"max_devices_per_gateway"`
	// RatePerKey is each key's sustained rate, readings/s (0: no limit);
	// BurstPerKey the readings it may send at once. Over it: 429 with the
	// Retry-After the bucket needs. Default 5000 and 50000.
	RatePerKey  float64 `yaml:"rate_per_key"`
	BurstPerKey int     `yaml:"burst_per_key"`
	// MaxInflightBytes caps the request bytes being read and processed at
	// once, across every key; over it: 503 with Retry-After. Default 64 MiB.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// BytesPerKey is each key's sustained request bytes/s, with a burst of
	// twice max_body_bytes; charged from Content-Length before the body is
	// read, so a key sending huge bodies is refused (429) without costing
	// the server the read. 0: no limit. Default 8 MiB.
	BytesPerKey int64 `yaml:"bytes_per_key"`
	// MaxPipelineLag refuses readings (503 with Retry-After) while the
	// pipeline is this many raw records behind, so a stalled or slow
	// pipeline cannot let the raw topic's retention (kafka.retention_bytes)
	// drop acknowledged readings. 0: no bound. Default 2,000,000.
	MaxPipelineLag int64 `yaml:"max_pipeline_lag"`
}

// Default is the ingest section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{MaxBodyBytes: 8 << 20, MaxReadings: 10_000, MaxMetrics: 256, FutureMargin: 5 * time.Minute, ProduceTimeout: 10 * time.Second,
		MaxBufferedRecords: 200_000, RetryAfter: time.Second,
		MaxMetricsPerDevice: 64, MaxDevicesPerGateway: 10_000, RatePerKey: 5000, BurstPerKey: 50_000, MaxInflightBytes: 64 << 20,
		BytesPerKey: 8 << 20, MaxPipelineLag: 2_000_000}
}

// Validate checks the ingest section; errors name the key below "ingest.".
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("max_body_bytes: must be at least 1024, got %d", c.MaxBodyBytes)
	case c.MaxReadings < 1:
		return fmt.Errorf("max_readings: must be at least 1, got %d", c.MaxReadings)
	case c.MaxMetrics < 1:
		return fmt.Errorf("max_metrics: must be at least 1, got %d", c.MaxMetrics)
	case c.FutureMargin < 0:
		return fmt.Errorf("future_margin: must not be negative, got %s", c.FutureMargin)
	case c.ProduceTimeout < 100*time.Millisecond:
		return fmt.Errorf("produce_timeout: must be at least 100ms, got %s", c.ProduceTimeout)
	case c.MaxBufferedRecords < c.MaxReadings:
		return fmt.Errorf("max_buffered_records: must be at least max_readings (%d), got %d", c.MaxReadings, c.MaxBufferedRecords)
	case c.RetryAfter < time.Second:
		return fmt.Errorf("retry_after: must be at least 1s, got %s", c.RetryAfter)
	case c.MaxMetricsPerDevice < 1 || c.MaxMetricsPerDevice > 100_000:
		return fmt.Errorf("max_metrics_per_device: must be between 1 and 100000, got %d", c.MaxMetricsPerDevice)
	case c.MaxDevicesPerGateway < 1:
		return fmt.Errorf("max_devices_per_gateway: must be at least 1, got %d", c.MaxDevicesPerGateway)
	case c.RatePerKey < 0 || math.IsNaN(c.RatePerKey) || math.IsInf(c.RatePerKey, 0):
		return fmt.Errorf("rate_per_key: must be 0 (no limit) or a positive number of readings/s, got %g", c.RatePerKey)
	case c.RatePerKey > 0 && c.BurstPerKey < c.MaxReadings:
		return fmt.Errorf("burst_per_key: must be at least max_readings (%d) so a whole request can pass, got %d", c.MaxReadings, c.BurstPerKey)
	case c.BytesPerKey < 0:
		return fmt.Errorf("bytes_per_key: must be 0 (no limit) or positive, got %d", c.BytesPerKey)
	case c.MaxPipelineLag < 0:
		return fmt.Errorf("max_pipeline_lag: must not be negative (0: no bound), got %d", c.MaxPipelineLag)
	case c.MaxInflightBytes < c.MaxBodyBytes:
		return fmt.Errorf("max_inflight_bytes: must be at least max_body_bytes (%d), got %d", c.MaxBodyBytes, c.MaxInflightBytes)
	}
	return nil
}
