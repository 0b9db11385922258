package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/vigil/vigil/internal/httpx"
	"github.com/vigil/vigil/mqtt"
	"github.com/vigil/vigil/notify"
)

// Notifier is what the API and the page need of alert delivery
// (notify.Notifier implements it).
type Notifier interface {
	Sinks(ctx context.Context) ([]notify.SinkStatus, error)
	Retry(ctx context.Context, sink, id string) error
}

// MQTTStatus is the MQTT side of ingest, for the page.
type MQTTStatus struct {
	ListenerAddr string             `json:"listener_addr,omitzero"`
	Clients      int64              `json:"clients"`
	Bridge       *mqtt.BridgeStatus `json:"bridge,omitzero"`
}

// delivery serves GET /api/v1/delivery: every sink's health and dead
// letters, and the MQTT listener and bridge.
func (s *Server) delivery(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Sinks []notify.SinkStatus `json:"sinks"`
		MQTT  MQTTStatus          `json:"mqtt"`
	}{Sinks: []notify.SinkStatus{}}
	if s.o.Notifier != nil {
		sinks, err := s.o.Notifier.Sinks(r.Context())
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, "reading the dead letters from the bucket failed: "+err.Error())
			return
		}
		out.Sinks = sinks
	}
	if s.o.MQTT != nil {
		out.MQTT = s.o.MQTT()
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// retryDeadLetter serves POST /api/v1/sinks/{sink}/dead-letters/{id}/retry.
func (s *Server) retryDeadLetter(w http.ResponseWriter, r *http.Request) {
	if s.o.Notifier == nil {
		writeErr(w, http.StatusNotFound, "no alert sinks configured (alerts.sinks)")
		return
	}
	err := s.o.Notifier.Retry(r.Context(), chi.URLParam(r, "sink"), chi.URLParam(r, "id"))
	switch {
	case err == nil:
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "delivered"})
	case errors.Is(err, notify.ErrNoSink), errors.Is(err, notify.ErrNoDeadLetter):
		writeErr(w, http.StatusNotFound, err.Error())
	default:
		writeErr(w, http.StatusBadGateway, err.Error())
	}
}

// getAlert serves GET /api/v1/alerts/{id}.
func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	a, ok := s.o.Alerts.Get(chi.URLParam(r, "id"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no alert "+chi.URLParam(r, "id")+" in this region's alert store")
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a)
}
