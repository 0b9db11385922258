package mqtt

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil/vigil/ingest"
)

func TestTopicMap(t *testing.T) {
	cases := []struct {
		tmpl, filter string
		topics       map[string]string // topic -> device ("" = no match)
		err          string
	}{
		{tmpl: "devices/{device_id}/readings", filter: "devices/+/readings", topics: map[string]string{
			"devices/p-1/readings": "p-1", "devices/p-1/status": "", "devices//readings": "", "devices/p-1/readings/x": ""}},
		{tmpl: "{device_id}", filter: "+", topics: map[string]string{"abc": "abc", "a/b": ""}},
		{tmpl: "site/+/{device_id}/up", filter: "site/+/+/up", topics: map[string]string{"site/n/d-2/up": "d-2", "site/n/d-2/down": ""}},
		{tmpl: "devices/+/readings", err: "no {device_id}"},
		{tmpl: "a/{device_id}/{device_id}", err: "twice"},
		{tmpl: "a/#/{device_id}", err: "may hold only"},
		{tmpl: "", err: "empty"},
	}
	for _, tc := range cases {
		m, err := ParseTopic(tc.tmpl)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.tmpl, err, tc.err)
			}
			continue
		}
		if err != nil || m.Filter() != tc.filter {
			t.Errorf("%q: filter %q err %v, want %q", tc.tmpl, m.Filter(), err, tc.filter)
		}
		for topic, want := range tc.topics {
			got, ok := m.Device(topic)
			if ok != (want != "") || got != want {
				t.Errorf("%q: Device(%q) = %q %v, want %q", tc.tmpl, topic, got, ok, want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		mod func(*Config)
		key string
	}{
		{func(c *Config) { c.MaxClients = 0 }, "max_clients"},
		{func(c *Config) { c.Bridge.URL = "http://x:1" }, "bridge.url"},
		{func(c *Config) { c.Bridge.URL = "::" }, "bridge.url"},
		{func(c *Config) { c.Bridge.URL = "mqtt://b:1883"; c.Bridge.Topic = "x/+" }, "bridge.topic"},
		{func(c *Config) { c.Bridge.URL = "mqtt://b:1883"; c.Bridge.Group = "" }, "bridge.group"},
		{func(c *Config) { c.Bridge.URL = "mqtt://b:1883"; c.Bridge.BackoffMax = time.Millisecond }, "bridge.backoff_max"},
	}
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		c := Default()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.key) {
			t.Errorf("error %v does not start with %q", err, tc.key)
		}
	}
}

func TestReasonCodes(t *testing.T) {
	cases := map[int]byte{http.StatusBadRequest: 0x99, http.StatusRequestEntityTooLarge: 0x99, http.StatusForbidden: 0x87,
		http.StatusUnauthorized: 0x87, http.StatusTooManyRequests: 0x97, http.StatusServiceUnavailable: 0x80}
	for status, want := range cases {
		c := reasonCode(&ingest.RequestError{Status: status, Message: "m", Details: []ingest.Detail{{Index: 2, Reason: "ts bad"}}})
		if c.Code != want || c.Reason != "m; reading 2: ts bad" {
			t.Errorf("status %d: code %#x reason %q, want %#x", status, c.Code, c.Reason, want)
		}
	}
}
