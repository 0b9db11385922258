// Package notify delivers alerts to people: Prometheus Alertmanager (API
// v2), signed webhooks and Slack-compatible incoming webhooks. Each sink
// reads the alerts topic with a consumer group of its own, so a slow sink
// delays only itself, and commits an alert's offset only after the sink
// took the notification or it was parked as a dead letter: at least once,
// idempotent by alert id, and nothing lost across a crash.
package notify

import (
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/vigil/vigil/contract"
)

// Sink kinds.
const (
	KindAlertmanager = "alertmanager"
	KindWebhook      = "webhook"
	KindSlack        = "slack"
)

// Sink is one destination of alerts.
type Sink struct {
	// Name identifies the sink in metrics, logs, dead letters and its
	// consumer group; letters, digits and -_.
	Name string `yaml:"name"`
	// Kind is alertmanager, webhook or slack.
	Kind string `yaml:"kind"`
	// URL: Alertmanager's base URL (http://am:9093), or the webhook's URL.
	URL string `yaml:"url"`
	// Secret signs webhook bodies (X-Vigil-Signature: sha256=<hex HMAC>).
	Secret string `yaml:"secret"`
	// MinSeverity: low, medium or high; alerts below it are not sent.
	MinSeverity string `yaml:"min_severity"`
	// Sites, when set, limits the sink to alerts of these sites.
	Sites []string `yaml:"sites"`
	// DevicePrefixes, when set, limits it to devices whose ids start so.
	DevicePrefixes []string `yaml:"device_prefixes"`
}

// Config is the alerts section of config.yaml.
type Config struct {
	// AlertmanagerURL is a one-sink shortcut (VIGIL_ALERTS_ALERTMANAGER_URL).
	AlertmanagerURL string `yaml:"alertmanager_url"`
	// WebhookURL and WebhookSecret are another (VIGIL_ALERTS_WEBHOOK_URL).
	WebhookURL    string `yaml:"webhook_url"`
	WebhookSecret string `yaml:"webhook_secret"`
	// Sinks lists destinations with their filters.
	Sinks []Sink `yaml:"sinks"`
	// PageURL is this region's status page as people reach it, for the
	// links in notifications; empty: the http.addr Vigil serves on.
	PageURL string `yaml:"page_url"`
	// MaxTries is how many times a notification is tried before it is
	// parked as a dead letter.
	MaxTries int `yaml:"max_tries"`
	// BackoffInitial and BackoffMax bound the exponential backoff (with
	// jitter) between tries.
	BackoffInitial time.Duration `yaml:"backoff_initial"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
	// Timeout bounds one call to a sink.
	Timeout time.Duration `yaml:"timeout"`
	// ResendInterval: open incidents are sent to Alertmanager again this
	// often, well within its resolve timeout, with endsAt four intervals
	// ahead (as Prometheus does).
	ResendInterval time.Duration `yaml:"resend_interval"`
}

// Default is the built-in alerts section: no sinks.
func Default() Config {
	return Config{MaxTries: 8, BackoffInitial: 500 * time.Millisecond, BackoffMax: time.Minute, Timeout: 10 * time.Second, ResendInterval: time.Minute}
}

var severities = []string{"low", "medium", "high"}

// All is the configured sinks, the shortcuts included, with defaults filled.
func (c Config) All() []Sink {
	out := append([]Sink(nil), c.Sinks...)
	if c.AlertmanagerURL != "" {
		out = append(out, Sink{Name: "alertmanager", Kind: KindAlertmanager, URL: c.AlertmanagerURL})
	}
	if c.WebhookURL != "" {
		out = append(out, Sink{Name: "webhook", Kind: KindWebhook, URL: c.WebhookURL, Secret: c.WebhookSecret})
	}
	for i := range out {
		if out[i].MinSeverity == "" {
			out[i].MinSeverity = "low"
		}
	}
	return out
}

// Validate names the key at fault.
func (c Config) Validate() error {
	if c.MaxTries < 1 || c.MaxTries > 1000 {
		return fmt.Errorf("max_tries: must be 1-1000, got %d", c.MaxTries)
	}
	if c.BackoffInitial <= 0 || c.BackoffMax < c.BackoffInitial {
		return fmt.Errorf("backoff_initial, backoff_max: need 0 < backoff_initial <= backoff_max, got %s and %s", c.BackoffInitial, c.BackoffMax)
	}
	if c.Timeout < 100*time.Millisecond {
		return fmt.Errorf("timeout: must be at least 100ms, got %s", c.Timeout)
	}
	if c.ResendInterval < time.Second {
		return fmt.Errorf("resend_interval: must be at least 1s, got %s", c.ResendInterval)
	}
	if c.PageURL != "" {
		if u, err := url.Parse(c.PageURL); err != nil || u.Host == "" {
			return fmt.Errorf("page_url: %q is not an http(s) URL", c.PageURL)
		}
	}
	if c.WebhookSecret != "" && c.WebhookURL == "" {
		return fmt.Errorf("webhook_secret: set without webhook_url")
	}
	seen := map[string]bool{}
	for i, s := range c.All() {
		key := fmt.Sprintf("sinks[%d]", i)
		if i >= len(c.Sinks) {
			key = s.Name + "_url"
		}
		if !contract.ValidName(s.Name) {
			return fmt.Errorf("%s.name: %q must be 1-128 letters, digits or ._:-", key, s.Name)
		}
		if seen[s.Name] {
			return fmt.Errorf("%s.name: %q is used twice", key, s.Name)
		}
		seen[s.Name] = true
		switch s.Kind {
		case KindAlertmanager, KindWebhook, KindSlack:
		default:
			return fmt.Errorf("%s.kind: %q is not alertmanager, webhook or slack", key, s.Kind)
		}
		u, err := url.Parse(s.URL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("%s.url: %q is not an http(s) URL", key, s.URL)
		}
		if !slices.Contains(severities, s.MinSeverity) {
			return fmt.Errorf("%s.min_severity: %q is not low, medium or high", key, s.MinSeverity)
		}
		if s.Secret != "" && s.Kind != KindWebhook {
			return fmt.Errorf("%s.secret: only a webhook sink signs its bodies", key)
		}
	}
	return nil
}

// wants reports whether the sink takes an alert.
func (s Sink) wants(a *contract.Alert) bool {
	if slices.Index(severities, a.Severity) < slices.Index(severities, s.MinSeverity) {
		return false
	}
	if len(s.Sites) > 0 && !slices.Contains(s.Sites, a.Site) {
		return false
	}
	if len(s.DevicePrefixes) > 0 {
		ok := false
		for _, p := range s.DevicePrefixes {
			if len(a.DeviceID) >= len(p) && a.DeviceID[:len(p)] == p {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
