package storage

import (
	"fmt"
	"time"
)

// ArchiveConfig is the archive section of config.yaml.
type ArchiveConfig struct {
	// Enabled runs the archiver in this process. Turn it off to run the
	// archivers as separate processes (same group, same bucket). Default true.
	Enabled bool `yaml:"enabled"`
	// Group is the Kafka consumer group of the archivers. Default "archiver".
	Group string `yaml:"group"`
	// MaxRecords closes a file at this many rows. Default 1000000.
	MaxRecords int `yaml:"max_records"`
	// MaxBytes closes a file when its records' Kafka values reach this size. Default 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// RollInterval closes a file when a record's ingested_at falls in the
	// next interval (aligned to the epoch; must divide an hour). Default 1h.
	RollInterval time.Duration `yaml:"roll_interval"`
	// FlushInterval closes an open file this long after its first record,
	// so the bucket always holds recent data. Default 1m.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// KeepArchived is how long the broker keeps enriched records after they
	// are archived; unarchived records are never dropped. Default 24h.
	KeepArchived time.Duration `yaml:"keep_archived"`
	// MaxBackoff caps the retry backoff while the store is down. Default 30s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// DefaultArchive is the archive section's built-in configuration
// (config.yaml mirrors it).
func DefaultArchive() ArchiveConfig {
	return ArchiveConfig{Enabled: true, Group: "archiver", MaxRecords: 1_000_000, MaxBytes: 64 << 20, RollInterval: time.Hour,
		FlushInterval: time.Minute, KeepArchived: 24 * time.Hour, MaxBackoff: 30 * time.Second}
}

// Validate checks the archive section; errors name the key below "archive.".
func (c ArchiveConfig) Validate() error {
	switch {
	case c.Group == "":
		return fmt.Errorf("group: must not be empty")
	case c.MaxRecords < 1:
		return fmt.Errorf("max_records: must be at least 1, got %d", c.MaxRecords)
	case c.MaxBytes < 1024:
		return fmt.Errorf("max_bytes: must be at least 1024, got %d", c.MaxBytes)
	case c.RollInterval < time.Second || time.Hour%c.RollInterval != 0:
		return fmt.Errorf("roll_interval: must divide an hour (1m, 5m, 15m, 1h...), got %s", c.RollInterval)
	case c.FlushInterval < time.Second:
		return fmt.Errorf("flush_interval: must be at least 1s, got %s", c.FlushInterval)
	case c.KeepArchived < 0:
		return fmt.Errorf("keep_archived: must not be negative, got %s", c.KeepArchived)
	case c.MaxBackoff < 100*time.Millisecond:
		return fmt.Errorf("max_backoff: must be at least 100ms, got %s", c.MaxBackoff)
	}
	return nil
}
