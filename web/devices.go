package web

import (
	"github.com/vigil/vigil/internal/httpx"

	"github.com/vigil/vigil/contract"

	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"
)

type deviceRequest struct {
	DeviceID string                    `json:"device_id"`
	Attrs    map[string]jsontext.Value `json:"attrs"`
}

// parseDevice turns a registration request into a Device: site, model,
// lat/lon (or location {lat, lon}) and tags are typed; every other attr is
// kept as a string.
func parseDevice(req deviceRequest) (contract.Device, error) {
	d := contract.Device{DeviceID: req.DeviceID, Attrs: map[string]string{}}
	if !contract.ValidName(req.DeviceID) {
		return d, fmt.Errorf("device_id %q must be 1-128 letters, digits or ._:-", req.DeviceID)
	}
	num := func(name string, v jsontext.Value) (*float64, error) {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("attrs.%s must be a number", name)
		}
		return &f, nil
	}
	for k, v := range req.Attrs {
		var err error
		switch k {
		case "site", "model":
			var s string
			if err = json.Unmarshal(v, &s); err != nil {
				return d, fmt.Errorf("attrs.%s must be a string", k)
			}
			if k == "site" {
				d.Site = s
			} else {
				d.Model = s
			}
		case "lat":
			d.Lat, err = num(k, v)
		case "lon":
			d.Lon, err = num(k, v)
		case "location":
			var loc struct {
				Lat float64 `json:"lat"`
				Lon float64 `json:"lon"`
			}
			if err = json.Unmarshal(v, &loc, json.RejectUnknownMembers(true)); err != nil {
				return d, fmt.Errorf("attrs.location must be {\"lat\": number, \"lon\": number}")
			}
			d.Lat, d.Lon = &loc.Lat, &loc.Lon
		case "tags":
			if err = json.Unmarshal(v, &d.Tags); err != nil {
				return d, fmt.Errorf("attrs.tags must be an array of strings")
			}
		default:
			if !contract.ValidName(k) {
				return d, fmt.Errorf("attr name %q must be 1-128 letters, digits or ._:-", k)
			}
			switch v.Kind() {
			case '"':
				var s string
				_ = json.Unmarshal(v, &s)
				d.Attrs[k] = s
			case '0', 't', 'f':
				d.Attrs[k] = string(v)
			default:
				return d, fmt.Errorf("attrs.%s must be a string, number or boolean", k)
			}
		}
		if err != nil {
			return d, err
		}
	}
	if d.Lat != nil && (*d.Lat < -90 || *d.Lat > 90) {
		return d, fmt.Errorf("attrs.lat must be between -90 and 90")
	}
	if d.Lon != nil && (*d.Lon < -180 || *d.Lon > 180) {
		return d, fmt.Errorf("attrs.lon must be between -180 and 180")
	}
	if (d.Lat == nil) != (d.Lon == nil) {
		return d, fmt.Errorf("attrs.lat and attrs.lon go together")
	}
	if len(d.Attrs) == 0 {
		d.Attrs = nil
	}
	return d, nil
}

func (s *Server) registerDevice(w http.ResponseWriter, r *http.Request) {
	var req deviceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	d, err := parseDevice(req)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	key, err := s.o.Registry.RegisterDevice(r.Context(), d)
	if errors.Is(err, contract.ErrExists) {
		writeErr(w, http.StatusConflict, "device "+strconv.Quote(d.DeviceID)+" is already registered")
		return
	}
	if err != nil {
		s.log.Error("device registration failed", zap.String("device_id", d.DeviceID), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		writeErr(w, http.StatusServiceUnavailable, "could not store the device: "+err.Error())
		return
	}
	s.log.Debug("device registered", zap.String("device_id", d.DeviceID))
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{"device_id": d.DeviceID, "key": key})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	d, ok := s.o.Registry.Device(id)
	if !ok {
		writeErr(w, http.StatusNotFound, "device "+strconv.Quote(id)+" is not registered")
		return
	}
	httpx.WriteJSON(w, http.StatusOK, d) // the public view: no key hash
}

type gatewayRequest struct {
	GatewayID      string   `json:"gateway_id"`
	Devices        []string `json:"devices"`
	DevicePrefixes []string `json:"device_prefixes"`
}

func (s *Server) registerGateway(w http.ResponseWriter, r *http.Request) {
	var req gatewayRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !contract.ValidName(req.GatewayID) {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("gateway_id %q must be 1-128 letters, digits or ._:-", req.GatewayID))
		return
	}
	if len(req.Devices) == 0 && len(req.DevicePrefixes) == 0 {
		writeErr(w, http.StatusBadRequest, "a gateway needs devices or device_prefixes")
		return
	}
	for i, d := range req.Devices {
		if !contract.ValidName(d) {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("devices[%d] %q is not a valid device id", i, d))
			return
		}
	}
	for i, p := range req.DevicePrefixes {
		if p == "" {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("device_prefixes[%d] must not be empty", i))
			return
		}
	}
	key, err := s.o.Registry.RegisterGateway(r.Context(), contract.Gateway{GatewayID: req.GatewayID, Devices: req.Devices, DevicePrefixes: req.DevicePrefixes})
	if errors.Is(err, contract.ErrExists) {
		writeErr(w, http.StatusConflict, "gateway "+strconv.Quote(req.GatewayID)+" is already registered")
		return
	}
	if err != nil {
		s.log.Error("gateway registration failed", zap.String("gateway_id", req.GatewayID), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		writeErr(w, http.StatusServiceUnavailable, "could not store the gateway: "+err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{"gateway_id": req.GatewayID, "key": key})
}
