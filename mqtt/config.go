// Package mqtt is Vigil's MQTT ingest: an embedded MQTT 3.1.1 and 5
// listener (mochi-mqtt) and a bridge that subscribes to the fleet's own
// broker (paho). Both hand each message's payload to the same path as
// POST /v1/ingest (ingest.Handler.Submit), and acknowledge a QoS 1 message
// only after Kafka acknowledged its readings.
package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the mqtt section of config.yaml.
type Config struct {
	// Addr enables the embedded MQTT listener (3.1.1 and 5), e.g.
	// "127.0.0.1:1883". Empty (the default): no listener. With
	// http.tls_cert_file set it serves MQTT over TLS with the same
	// certificate, and http.client_ca_file enables client certificates.
	Addr string `yaml:"addr"`
	// MaxClients bounds the connected clients of the listener.
	MaxClients int `yaml:"max_clients"`
	// Bridge subscribes to an existing broker.
	Bridge BridgeConfig `yaml:"bridge"`
}

// BridgeConfig is mqtt.bridge.
type BridgeConfig struct {
	// URL of the fleet's broker: mqtt://host:1883 or tls://host:8883.
	// Empty (the default): no bridge.
	URL string `yaml:"url"`
	// Topic maps topics to devices: {device_id} marks the level that holds
	// the device id, and becomes + in the subscription filter. Default
	// "devices/{device_id}/readings".
	Topic string `yaml:"topic"`
	// Group is the MQTT 5 shared-subscription group: the Vigil processes of
	// one group split the messages between them. Default "vigil".
	Group string `yaml:"group"`
	// ClientID of the bridge's session; empty: vigil-<region>-<host>-<data dir hash>,
	// stable across restarts so the broker keeps the session's messages.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CAFile verifies a tls:// broker signed by a private CA.
	CAFile string `yaml:"ca_file"`
	// SessionExpiry is how long the broker keeps the bridge's session (and
	// its QoS 1 messages) while the bridge is away.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// BackoffMax caps the reconnection backoff (it starts at 250ms and doubles).
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// Default is the built-in mqtt section.
func Default() Config {
	return Config{MaxClients: 100000, Bridge: BridgeConfig{Topic: "devices/{device_id}/readings", Group: "vigil",
		SessionExpiry: time.Hour, BackoffMax: 30 * time.Second}}
}

// Validate names the key at fault.
func (c Config) Validate() error {
	if c.MaxClients < 1 {
		return fmt.Errorf("max_clients: must be at least 1, got %d", c.MaxClients)
	}
	b := c.Bridge
	if b.URL == "" {
		return nil
	}
	u, err := url.Parse(b.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bridge.url: %q is not a broker URL (mqtt://host:1883 or tls://host:8883)", b.URL)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "tls", "ssl", "mqtts":
	default:
		return fmt.Errorf("bridge.url: scheme %q is not mqtt, tcp, tls, ssl or mqtts", u.Scheme)
	}
	if _, err := ParseTopic(b.Topic); err != nil {
		return fmt.Errorf("bridge.topic: %w", err)
	}
	if b.Group == "" || strings.ContainsAny(b.Group, "/+#") {
		return fmt.Errorf("bridge.group: %q must be a non-empty name without / + #", b.Group)
	}
	if b.SessionExpiry < 0 || b.SessionExpiry > 365*24*time.Hour {
		return fmt.Errorf("bridge.session_expiry: must be between 0 and a year, got %s", b.SessionExpiry)
	}
	if b.BackoffMax < 250*time.Millisecond {
		return fmt.Errorf("bridge.backoff_max: must be at least 250ms, got %s", b.BackoffMax)
	}
	return nil
}

// TopicMap maps a bridged topic to its device id.
type TopicMap struct {
	levels []string
	device int // the level of {device_id}
}

// ParseTopic reads a topic template such as "devices/{device_id}/readings".
func ParseTopic(tmpl string) (TopicMap, error) {
	if tmpl == "" {
		return TopicMap{}, errors.New("must not be empty")
	}
	m := TopicMap{levels: strings.Split(tmpl, "/"), device: -1}
	for i, l := range m.levels {
		switch {
		case l == "{device_id}":
			if m.device >= 0 {
				return TopicMap{}, fmt.Errorf("%q names {device_id} twice", tmpl)
			}
			m.device = i
		case strings.ContainsAny(l, "#{}"):
			return TopicMap{}, fmt.Errorf("%q: level %q may hold only a name, + or {device_id}", tmpl, l)
		}
	}
	if m.device < 0 {
		return TopicMap{}, fmt.Errorf("%q has no {device_id} level", tmpl)
	}
	return m, nil
}

// Filter is the subscription filter: {device_id} becomes +.
func (m TopicMap) Filter() string {
	l := append([]string(nil), m.levels...)
	l[m.device] = "+"
	return strings.Join(l, "/")
}

// Device returns the device id a topic names, or false when the topic does
// not match the template.
func (m TopicMap) Device(topic string) (string, bool) {
	parts := strings.Split(topic, "/")
	if len(parts) != len(m.levels) {
		return "", false
	}
	for i, l := range m.levels {
		if i != m.device && l != "+" && l != parts[i] {
			return "", false
		}
	}
	return parts[m.device], parts[m.device] != ""
}
