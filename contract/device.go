package contract

import (
	"errors"
	"time"
)

// Device is the public view of a registered device: what the pipeline joins
// to its readings and the admin API shows. The key hash stays in the
// registry.
type Device struct {
	DeviceID  string            `json:"device_id"`
	Site      string            `json:"site,omitzero"`
	Model     string            `json:"model,omitzero"`
	Lat       *float64          `json:"lat,omitzero"`
	Lon       *float64          `json:"lon,omitzero"`
	Tags      []string          `json:"tags,omitzero"`
	Attrs     map[string]string `json:"attrs,omitzero"`
	CreatedAt time.Time         `json:"created_at"`
}

// Gateway is the public view of a gateway: a key allowed to post for the
// listed device ids and any id starting with one of the prefixes.
type Gateway struct {
	GatewayID      string    `json:"gateway_id"`
	Devices        []string  `json:"devices,omitzero"`
	DevicePrefixes []string  `json:"device_prefixes,omitzero"`
	CreatedAt      time.Time `json:"created_at"`
}

// ErrExists is returned when registering an id already registered.
var ErrExists = errors.New("already registered")
