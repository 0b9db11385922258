package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/contract"
)

// Signature is the X-Vigil-Signature of a webhook body: "sha256=" and the
// hex HMAC-SHA256 of the body under the sink's secret.
func Signature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// IdempotencyKey names one notification: an alert's opening and its
// closing are two, under the alert's id.
func IdempotencyKey(a *contract.Alert) string { return a.AlertID + "." + a.State }

// sender delivers notifications to one sink.
type sender struct {
	sink    Sink
	client  *http.Client
	pageURL string
	resend  time.Duration
}

// alertLink is the alert on the status page.
func (s *sender) alertLink(a *contract.Alert) string {
	if s.pageURL == "" {
		return ""
	}
	return strings.TrimRight(s.pageURL, "/") + "/alerts/" + url.PathEscape(a.AlertID)
}

// send delivers one batch of alerts (one, except Alertmanager's re-sends).
// An error names the sink's answer.
func (s *sender) send(ctx context.Context, alerts []contract.Alert) error {
	var (
		body   []byte
		err    error
		target = s.sink.URL
		hdr    = http.Header{"Content-Type": {"application/json"}, "User-Agent": {"vigil"}}
	)
	switch s.sink.Kind {
	case KindAlertmanager:
		target = strings.TrimRight(target, "/") + "/api/v2/alerts"
		body, err = json.Marshal(s.alertmanager(alerts, time.Now()))
	case KindWebhook:
		if len(alerts) != 1 {
			return fmt.Errorf("webhook: one alert per call")
		}
		body, err = json.Marshal(webhookBody{Alert: alerts[0], Link: s.alertLink(&alerts[0])})
		hdr.Set("Idempotency-Key", IdempotencyKey(&alerts[0]))
		hdr.Set("X-Vigil-Alert-Id", alerts[0].AlertID)
		if s.sink.Secret != "" {
			hdr.Set("X-Vigil-Signature", Signature(s.sink.Secret, body))
		}
	case KindSlack:
		body, err = json.Marshal(map[string]string{"text": s.slackText(&alerts[0])})
	}
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = hdr
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", target, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

type webhookBody struct {
	contract.Alert
	Link string `json:"link,omitzero"`
}

// amAlert is one alert of Alertmanager's v2 API.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitzero"`
}

func (s *sender) alertmanager(alerts []contract.Alert, now time.Time) []amAlert {
	out := make([]amAlert, 0, len(alerts))
	for i := range alerts {
		a := &alerts[i]
		labels := map[string]string{"alertname": "VigilAnomaly", "alert_id": a.AlertID, "device_id": a.DeviceID, "region": a.Region, "severity": a.Severity}
		if a.Site != "" {
			labels["site"] = a.Site
		}
		if a.Metric != "" {
			labels["metric"] = a.Metric
		}
		ann := map[string]string{"summary": summary(a), "score": fmt.Sprintf("%.3f", a.Score), "reasons": reasonsText(a)}
		if r := expected(a); r != "" {
			ann["expected_vs_observed"] = r
		}
		end := now.Add(4 * s.resend) // re-sent every resend_interval while open
		if a.State == "closed" {
			end = now
			ann["readings"] = fmt.Sprint(a.Readings)
			if a.Accepted {
				ann["accepted"] = "the change lasted pipeline.accept_after and became the new normal"
			}
		}
		out = append(out, amAlert{Labels: labels, Annotations: ann, StartsAt: a.TS, EndsAt: end, GeneratorURL: s.alertLink(a)})
	}
	return out
}

func summary(a *contract.Alert) string {
	what := a.Metric
	if what == "" {
		what = "readings"
	}
	return fmt.Sprintf("%s anomaly on %s (%s), score %.2f", a.Severity, a.DeviceID, what, a.Score)
}

func reasonsText(a *contract.Alert) string {
	parts := make([]string, 0, len(a.Reasons))
	for _, r := range a.Reasons {
		if r.Text != "" {
			parts = append(parts, r.Feature+": "+r.Text)
		} else {
			parts = append(parts, fmt.Sprintf("%s=%.4g", r.Feature, r.Value))
		}
	}
	return strings.Join(parts, "; ")
}

func expected(a *contract.Alert) string {
	for _, r := range a.Reasons {
		if r.High > r.Low {
			return fmt.Sprintf("%s: expected %.4g (%.4g-%.4g), observed %.4g", r.Feature, r.Expected, r.Low, r.High, r.Observed)
		}
	}
	return ""
}

func (s *sender) slackText(a *contract.Alert) string {
	t := ":rotating_light: " + summary(a)
	if a.State == "closed" {
		t = fmt.Sprintf(":white_check_mark: resolved: %s after %d readings", summary(a), a.Readings)
	} else if r := reasonsText(a); r != "" {
		t += " — " + r
	}
	if l := s.alertLink(a); l != "" {
		t += " <" + l + "|open>"
	}
	return t
}
