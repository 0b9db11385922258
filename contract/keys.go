package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The bucket layout: every key of the shared bucket is built here.
const (
	// ArchivePrefix holds the archive: ArchiveKey names its objects.
	ArchivePrefix = "enriched/"
	// ModelsPrefix holds models/<version>/<file> for each model.
	ModelsPrefix = "models/"
	// CurrentModelKey names the version every region runs.
	CurrentModelKey = "models/current"
	// TrainRequestKey asks the elected trainer for a run.
	TrainRequestKey = "models/train-request"
	// LeasesPrefix holds the conditional-write leases.
	LeasesPrefix = "leases/"
	// LabelsPrefix holds operators' verdicts: labels/<region>/<alert id>.json.
	LabelsPrefix = "labels/"
	// NotebooksPrefix holds the console's notebooks: notebooks/<id>.json.
	NotebooksPrefix = "notebooks/"
	// SitesPrefix holds each region's status: sites/<region>/status.json.
	SitesPrefix = "sites/"
	// DeadLettersPrefix holds alert notifications a sink never took:
	// notify/dead/<region>/<sink>/<alert id>.<state>.json.
	DeadLettersPrefix = "notify/dead/"
)

// DeadLetterKey is the key of a parked notification.
func DeadLetterKey(region, sink, alertID, state string) string {
	return DeadLettersPrefix + region + "/" + sink + "/" + alertID + "." + state + ".json"
}

// ModelKey is the key of one file of a model version.
func ModelKey(version, file string) string { return ModelsPrefix + version + "/" + file }

// LeaseKey is the key of the lease called name (the trainer's: "trainer").
func LeaseKey(name string) string { return LeasesPrefix + name }

// LabelKey is the key of the verdict on an alert raised in region.
func LabelKey(region, alertID string) string {
	return LabelsPrefix + region + "/" + alertID + ".json"
}

// NotebookKey is the key of a notebook.
func NotebookKey(id string) string { return NotebooksPrefix + id + ".json" }

// NotebookID is the id of a notebook key ("", false for another key).
func NotebookID(key string) (string, bool) {
	if !strings.HasPrefix(key, NotebooksPrefix) || !strings.HasSuffix(key, ".json") {
		return "", false
	}
	id := strings.TrimSuffix(strings.TrimPrefix(key, NotebooksPrefix), ".json")
	return id, ValidName(id)
}

// SiteStatusKey is the key of a region's published status.
func SiteStatusKey(region string) string { return SitesPrefix + region + "/status.json" }

// IsSiteStatusKey reports whether key is a region's published status.
func IsSiteStatusKey(key string) bool {
	return strings.HasPrefix(key, SitesPrefix) && strings.HasSuffix(key, "/status.json")
}

// ArchiveKey names an archive object:
//
//	enriched/region=<r>/dt=<YYYY-MM-DD>/hr=<HH>/<topic>-<partition>-<first>-<last>.parquet
//
// First and Last are the Kafka offsets it holds (inclusive), so a retry
// rewrites the same object; Hour is the UTC hour of the rows' ingested_at.
type ArchiveKey struct {
	Region      string
	Hour        time.Time
	Topic       string
	Partition   int32
	First, Last int64
}

// Format is the object key.
func (k ArchiveKey) Format() string { return k.prefix() + strconv.FormatInt(k.Last, 10) + ".parquet" }

// Prefix is the key up to and including "<first>-": the objects of one
// partition that start at First, whatever their Last.
func (k ArchiveKey) Prefix() string { return k.prefix() }

func (k ArchiveKey) prefix() string {
	h := k.Hour.UTC()
	return fmt.Sprintf("%sregion=%s/dt=%s/hr=%02d/%s-%d-%d-", ArchivePrefix, k.Region, h.Format("2006-01-02"), h.Hour(), k.Topic, k.Partition, k.First)
}

// Rows is the number of offsets the object spans (an upper bound of its
// rows: transaction markers take offsets too).
func (k ArchiveKey) Rows() int64 { return k.Last - k.First + 1 }

// ErrNotArchiveKey is returned by ParseArchiveKey for another key.
var ErrNotArchiveKey = errors.New("not an archive object key")

// ParseArchiveKey reads an archive object key.
func ParseArchiveKey(key string) (ArchiveKey, error) {
	var k ArchiveKey
	rest, ok := strings.CutPrefix(key, ArchivePrefix+"region=")
	if !ok {
		return k, fmt.Errorf("%w: %q does not start with %sregion=", ErrNotArchiveKey, key, ArchivePrefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || !strings.HasPrefix(parts[1], "dt=") || !strings.HasPrefix(parts[2], "hr=") || !strings.HasSuffix(parts[3], ".parquet") {
		return k, fmt.Errorf("%w: %q is not region=/dt=/hr=/<file>.parquet", ErrNotArchiveKey, key)
	}
	k.Region = parts[0]
	h, err := time.Parse("2006-01-02 15", parts[1][3:]+" "+parts[2][3:])
	if err != nil {
		return k, fmt.Errorf("%w: %q: dt or hr: %w", ErrNotArchiveKey, key, err)
	}
	k.Hour = h
	name := strings.TrimSuffix(parts[3], ".parquet")
	// <topic>-<partition>-<first>-<last>; the topic may hold '-'
	f := strings.Split(name, "-")
	if len(f) < 4 {
		return k, fmt.Errorf("%w: %q: want <topic>-<partition>-<first>-<last>.parquet", ErrNotArchiveKey, key)
	}
	n := len(f)
	p, err1 := strconv.ParseInt(f[n-3], 10, 32)
	first, err2 := strconv.ParseInt(f[n-2], 10, 64)
	last, err3 := strconv.ParseInt(f[n-1], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || last < first || first < 0 {
		return k, fmt.Errorf("%w: %q: partition or offsets", ErrNotArchiveKey, key)
	}
	k.Topic, k.Partition, k.First, k.Last = strings.Join(f[:n-3], "-"), int32(p), first, last
	return k, nil
}

// Verdict is an operator's verdict on an alert, stored at LabelKey for the
// trainer and for the alerts list.
type Verdict struct {
	AlertID   string    `json:"alert_id"`
	DeviceID  string    `json:"device_id"`
	MessageID string    `json:"message_id"`
	TS        time.Time `json:"ts"`
	Region    string    `json:"region"`
	Label     string    `json:"label"` // VerdictAnomaly or VerdictNormal
	Note      string    `json:"note,omitzero"`
	At        time.Time `json:"at"`
}

// The two verdicts.
const (
	VerdictAnomaly = "anomaly" // a true alert
	VerdictNormal  = "normal"  // a false alert
)
