package pipeline

import (
	"github.com/vigil/vigil/contract"

	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"
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

func appendStr(b []byte, s string) []byte {
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendEnriched appends the enriched record of o, scored with score by model.
// shadowScore is the shadow model's score of a reading.
type shadowScore struct {
	model string
	score float64
}

func appendEnriched(b []byte, o *Observation, region string, score float64, model string, threshold float64, shadow *shadowScore, incident string) []byte {
	r := o.Reading
	b = append(b, `{"id":`...)
	b = appendStr(b, r.ID)
	b = append(b, `,"device_id":`...)
	b = appendStr(b, r.DeviceID)
	b = append(b, `,"ts":`...)
	b = appendTime(b, r.TS)
	b = append(b, `,"ingested_at":`...)
	b = appendTime(b, r.IngestedAt)
	b = append(b, `,"region":`...)
	src := r.Region
	if src == "" {
		src = region
	}
	b = appendStr(b, src)
	if d := o.Device; d != nil {
		if d.Site != "" {
			b = append(b, `,"site":`...)
			b = appendStr(b, d.Site)
		}
		if d.Model != "" {
			b = append(b, `,"device_model":`...)
			b = appendStr(b, d.Model)
		}
		if d.Lat != nil && d.Lon != nil {
			b = append(b, `,"lat":`...)
			b = contract.AppendFloat(b, *d.Lat)
			b = append(b, `,"lon":`...)
			b = contract.AppendFloat(b, *d.Lon)
		}
		if len(d.Tags) > 0 {
			b = append(b, `,"tags":[`...)
			for i, t := range d.Tags {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendStr(b, t)
			}
			b = append(b, ']')
		}
		if len(d.Attrs) > 0 {
			b = append(b, `,"device_attrs":{`...)
			first := true
			for k, v := range d.Attrs {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = appendStr(b, k)
				b = append(b, ':')
				b = appendStr(b, v)
			}
			b = append(b, '}')
		}
	}
	b = append(b, `,"metrics":{`...)
	for i, m := range r.Metrics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, m.Name)
		b = append(b, ':')
		b = contract.AppendFloat(b, m.Value)
	}
	b = append(b, '}')
	if len(r.Attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		for i, a := range r.Attrs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStr(b, a.Name)
			b = append(b, ':')
			b = appendStr(b, a.Value)
		}
		b = append(b, '}')
	}
	if r.Label != "" {
		b = append(b, `,"label":`...)
		b = appendStr(b, r.Label)
	}
	b = append(b, `,"derived":{`...)
	first := true
	field := func(name, suffix string, v float64) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...) // names are validated to [A-Za-z0-9._:-]
		b = append(b, suffix...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, v, 'g', 9, 64)
	}
	if o.HasDt {
		field("dt_s", "", o.DtS)
		field("dt", ".z", o.DtZ)
	}
	for i := range o.Metrics {
		m := &o.Metrics[i]
		if m.HasPrev {
			field(m.Name, ".delta", m.Delta)
			field(m.Name, ".rate", m.Rate)
			field(m.Name, ".mean", m.Mean)
			field(m.Name, ".std", m.Std)
		}
		if m.Warm {
			field(m.Name, ".z", m.Z)
			field(m.Name, ".vol", m.VolZ)
			field(m.Name, ".stuck", m.StuckZ)
		}
	}
	if o.MV.Warm {
		field(MultivariateFeature, "", o.MV.Z)
	}
	b = append(b, `},"score":`...)
	b = contract.AppendFloat(b, score)
	b = append(b, `,"threshold":`...)
	b = contract.AppendFloat(b, threshold)
	b = append(b, `,"model":`...)
	b = appendStr(b, model)
	if incident != "" {
		b = append(b, `,"incident":`...)
		b = appendStr(b, incident)
	}
	if shadow != nil {
		b = append(b, `,"shadow_model":`...)
		b = appendStr(b, shadow.model)
		b = append(b, `,"shadow_score":`...)
		b = contract.AppendFloat(b, shadow.score)
	}
	return append(b, '}')
}
