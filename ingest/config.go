package ingest

import (
	"fmt"
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
}

// Default is the ingest section's built-in configuration (config.yaml
// mirrors it).
func Default() Config {
	return Config{MaxBodyBytes: 8 << 20, MaxReadings: 10_000, MaxMetrics: 256, FutureMargin: 5 * time.Minute, ProduceTimeout: 10 * time.Second,
		MaxBufferedRecords: 200_000, RetryAfter: time.Second}
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
	}
	return nil
}
