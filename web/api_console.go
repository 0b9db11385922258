package web

import (
	"github.com/vigil/vigil/console"
	"github.com/vigil/vigil/internal/httpx"

	"github.com/vigil/vigil/contract"

	"bytes"
	"errors"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"
)

func (s *Server) sqlQuery(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query string `json:"query"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	res, err := s.o.Console.Query(r.Context(), req.Query)
	switch {
	case errors.Is(err, console.ErrNoSample):
		writeErr(w, http.StatusConflict, err.Error())
	case err != nil:
		writeErr(w, http.StatusBadRequest, err.Error())
	default:
		httpx.WriteJSON(w, http.StatusOK, res)
	}
}

func (s *Server) sampleStatus(w http.ResponseWriter, _ *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, s.o.Console.Status())
}

func (s *Server) sampleLoad(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Fraction float64   `json:"fraction"`
		From     time.Time `json:"from"`
		To       time.Time `json:"to"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if err := s.o.Console.StartLoad(req.Fraction, req.From, req.To); err != nil {
		writeErr(w, http.StatusConflict, err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, s.o.Console.Status())
}

func (s *Server) sampleCancel(w http.ResponseWriter, _ *http.Request) {
	if !s.o.Console.CancelLoad() {
		writeErr(w, http.StatusConflict, "no sample is loading")
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, s.o.Console.Status())
}

// notebookErr answers a console error about a notebook.
func (s *Server) notebookErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, console.ErrBadNotebook):
		writeErr(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, console.ErrNoNotebook):
		writeErr(w, http.StatusNotFound, err.Error())
	default:
		s.log.Error("notebook storage failed", zap.Error(err))
		writeErr(w, http.StatusServiceUnavailable, "the bucket did not answer: "+err.Error())
	}
}

func (s *Server) putNotebook(w http.ResponseWriter, r *http.Request) {
	var nb console.Notebook
	if !decodeBody(w, r, &nb) {
		return
	}
	nb, err := s.o.Console.SaveNotebook(r.Context(), chi.URLParam(r, "id"), nb)
	if err != nil {
		s.notebookErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, nb)
}

func (s *Server) getNotebook(w http.ResponseWriter, r *http.Request) {
	nb, err := s.o.Console.Notebook(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.notebookErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, nb)
}

func (s *Server) listNotebooks(w http.ResponseWriter, r *http.Request) {
	out, err := s.o.Console.Notebooks(r.Context())
	if err != nil {
		s.notebookErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"notebooks": out})
}

func (s *Server) deleteNotebook(w http.ResponseWriter, r *http.Request) {
	if err := s.o.Console.DeleteNotebook(r.Context(), chi.URLParam(r, "id")); err != nil {
		s.notebookErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) feedback(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	var req struct {
		Label string `json:"label"`
		Note  string `json:"note"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Label != "anomaly" && req.Label != "normal" {
		writeErr(w, http.StatusBadRequest, `label must be "anomaly" (a true alert) or "normal" (a false alert)`)
		return
	}
	if len(req.Note) > 4096 {
		writeErr(w, http.StatusBadRequest, "note is longer than 4096 bytes")
		return
	}
	a, ok := s.o.Alerts.Get(id)
	if !ok {
		writeErr(w, http.StatusNotFound, "no recent alert "+id)
		return
	}
	fb := contract.Verdict{AlertID: a.AlertID, DeviceID: a.DeviceID, MessageID: a.MessageID, TS: a.TS, Region: a.Region, Label: req.Label, Note: req.Note, At: time.Now().UTC()}
	b, _ := json.Marshal(fb)
	key := contract.LabelKey(a.Region, a.AlertID)
	if _, err := s.o.Store.Put(r.Context(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "could not store the label: "+err.Error())
		return
	}
	s.feedbackMu.Lock()
	s.feedbackSeen[a.AlertID] = fb
	s.feedbackMu.Unlock()
	httpx.WriteJSON(w, http.StatusCreated, fb)
}

func (s *Server) sites(w http.ResponseWriter, r *http.Request) {
	objs, err := s.o.Store.List(r.Context(), contract.SitesPrefix)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := []jsontext.Value{}
	for _, o := range objs {
		if !contract.IsSiteStatusKey(o.Key) {
			continue
		}
		rc, _, err := s.o.Store.Get(r.Context(), o.Key)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(rc, 1<<20))
		rc.Close()
		out = append(out, jsontext.Value(b))
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i]) < string(out[j]) })
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"sites": out})
}
