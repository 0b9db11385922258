package contract

import (
	"time"

	"github.com/go-json-experiment/json"
)

// Alert is the value of a record on the alerts topic. An incident raises
// one alert when it opens ("state": "open") and updates it, under the same
// alert_id, when it closes ("state": "closed", with the readings it covered).
type Alert struct {
	AlertID    string    `json:"alert_id"`
	DeviceID   string    `json:"device_id"`
	Region     string    `json:"region"`
	Site       string    `json:"site,omitzero"`
	TS         time.Time `json:"ts"`
	DetectedAt time.Time `json:"detected_at"`
	IngestedAt time.Time `json:"ingested_at"`
	Score      float64   `json:"score"`
	Threshold  float64   `json:"threshold"`
	Severity   string    `json:"severity"`
	Model      string    `json:"model"`
	MessageID  string    `json:"message_id"`
	Metric     string    `json:"metric"`
	Reasons    []Reason  `json:"reasons"`
	State      string    `json:"state"`
	Readings   int       `json:"readings"`
	LastTS     time.Time `json:"last_ts"`
	MaxScore   float64   `json:"max_score"`
	// Accepted is set on the closing update of an incident whose change
	// lasted pipeline.accept_after: it was accepted as the new normal.
	Accepted bool `json:"accepted,omitzero"`
}

// Severity names a score band: high from 0.95, medium from 0.88, else low.
func Severity(score float64) string {
	switch {
	case score >= 0.95:
		return "high"
	case score >= 0.88:
		return "medium"
	}
	return "low"
}

// Reason is one feature that drove a score. Detector names what fired:
// level, cycle, tail, record, regime, multivariate, spike, stuck, gap or attr.
// Where the detector forecasts a value, Expected is its forecast, Low and
// High the band of usual values around it, Observed the value seen, and
// Text says it in words ("expected 40-55 at this hour, got 210").
type Reason struct {
	Feature      string  `json:"feature"`
	Value        float64 `json:"value"`
	Contribution float64 `json:"contribution"`
	Detector     string  `json:"detector,omitzero"`
	Score        float64 `json:"score,omitzero"`
	Observed     float64 `json:"observed,omitzero"`
	Expected     float64 `json:"expected,omitzero"`
	Low          float64 `json:"low,omitzero"`
	High         float64 `json:"high,omitzero"`
	Text         string  `json:"text,omitzero"`
}

// EncodeAlert is the alerts topic's encoding of a.
func EncodeAlert(a *Alert) ([]byte, error) { return json.Marshal(a) }

// DecodeAlert reads an alerts-topic value. Fields it does not know are
// skipped, so a newer writer can add fields.
func DecodeAlert(b []byte) (Alert, error) {
	var a Alert
	err := json.Unmarshal(b, &a, json.RejectUnknownMembers(false))
	return a, err
}
