package web

import (
	"net/http"
	"sort"
	"time"

	"github.com/vigil/vigil/internal/httpx"
)

type fleetSite struct {
	Site          string  `json:"site"`
	Devices       int     `json:"devices"`
	Alerts24h     int     `json:"alerts_24h"`
	PerDeviceDay  float64 `json:"alerts_per_device_day"`
	OpenIncidents int     `json:"open_incidents"`
	Health        string  `json:"health"` // ok, alerting
}

type fleetDevice struct {
	ID    string   `json:"id"`
	Site  string   `json:"site,omitzero"`
	Lat   *float64 `json:"lat,omitzero"`
	Lon   *float64 `json:"lon,omitzero"`
	State string   `json:"state"` // ok, recent (alerted in 24 h), open (an incident open)
}

type noisy struct {
	Key          string  `json:"key"`
	Alerts24h    int     `json:"alerts_24h"`
	PerDeviceDay float64 `json:"alerts_per_device_day"`
}

// fleet serves GET /api/v1/fleet: the sites with their device counts,
// alert rates and health; every registered device with its position and
// state, for the map; the 20 noisiest devices and metrics (alerts per
// device-day over the last 24 h, against pipeline.alert_budget).
func (s *Server) fleet(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	since := now.Add(-24 * time.Hour)
	devs := s.o.Registry.Devices()
	alerts := s.o.Alerts.Query(1<<30, "", time.Time{})
	open := map[string]int{}
	recent := map[string]int{}
	byMetric := map[string]int{}
	siteOf := map[string]string{}
	for _, d := range devs {
		siteOf[d.DeviceID] = d.Site
	}
	for _, a := range alerts {
		if a.State == "open" {
			open[a.DeviceID]++
		}
		if a.TS.After(since) || a.DetectedAt.After(since) {
			recent[a.DeviceID]++
			m := a.Metric
			if m == "" {
				m = "(multivariate)"
			}
			byMetric[m]++
		}
	}
	sites := map[string]*fleetSite{}
	points := make([]fleetDevice, 0, len(devs))
	for _, d := range devs {
		name := d.Site
		if name == "" {
			name = "(no site)"
		}
		st := sites[name]
		if st == nil {
			st = &fleetSite{Site: name, Health: "ok"}
			sites[name] = st
		}
		st.Devices++
		st.Alerts24h += recent[d.DeviceID]
		st.OpenIncidents += open[d.DeviceID]
		state := "ok"
		switch {
		case open[d.DeviceID] > 0:
			state = "open"
		case recent[d.DeviceID] > 0:
			state = "recent"
		}
		points = append(points, fleetDevice{ID: d.DeviceID, Site: d.Site, Lat: d.Lat, Lon: d.Lon, State: state})
	}
	siteList := make([]*fleetSite, 0, len(sites))
	for _, st := range sites {
		st.PerDeviceDay = float64(st.Alerts24h) / float64(max(st.Devices, 1))
		if st.OpenIncidents > 0 {
			st.Health = "alerting"
		}
		siteList = append(siteList, st)
	}
	sort.Slice(siteList, func(i, j int) bool { return siteList[i].Site < siteList[j].Site })
	sort.Slice(points, func(i, j int) bool { return points[i].ID < points[j].ID })
	top := func(m map[string]int, devicesOf func(string) int) []noisy {
		out := make([]noisy, 0, len(m))
		for k, n := range m {
			out = append(out, noisy{Key: k, Alerts24h: n, PerDeviceDay: float64(n) / float64(max(devicesOf(k), 1))})
		}
		sort.Slice(out, func(i, j int) bool {
			return out[i].PerDeviceDay > out[j].PerDeviceDay || out[i].PerDeviceDay == out[j].PerDeviceDay && out[i].Key < out[j].Key
		})
		return out[:min(len(out), 20)]
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"region": s.o.Region, "sites": siteList, "devices": points,
		"noisiest_devices": top(recent, func(string) int { return 1 }),
		"noisiest_metrics": top(byMetric, func(string) int { return len(devs) }),
	})
}
