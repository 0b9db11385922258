package web

import (
	"github.com/vigil/vigil/internal/httpx"

	"github.com/vigil/vigil/contract"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.uber.org/zap"

	"github.com/vigil/vigil/storage"
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
	case errors.Is(err, ErrNoSample):
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

// Paragraph is one query of a notebook.
type Paragraph struct {
	Title   string `json:"title,omitzero"`
	SQL     string `json:"sql"`
	Chart   string `json:"chart"`   // table, bar, line, pie, histogram, scatter
	Refresh int    `json:"refresh"` // seconds between re-runs in the report view; 0: never
}

// Notebook is a saved set of paragraphs, stored at notebooks/<id>.json in
// the bucket so every region sees it.
type Notebook struct {
	ID         string      `json:"id"`
	Title      string      `json:"title"`
	Paragraphs []Paragraph `json:"paragraphs"`
	UpdatedAt  time.Time   `json:"updated_at"`
}

var charts = map[string]bool{"table": true, "bar": true, "line": true, "pie": true, "histogram": true, "scatter": true}

func (s *Server) putNotebook(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !contract.ValidName(id) {
		writeErr(w, http.StatusBadRequest, "notebook id must be 1-128 letters, digits or ._:-")
		return
	}
	var nb Notebook
	if !decodeBody(w, r, &nb) {
		return
	}
	if len(nb.Paragraphs) > 100 {
		writeErr(w, http.StatusBadRequest, "a notebook holds at most 100 paragraphs")
		return
	}
	for i, p := range nb.Paragraphs {
		if !charts[p.Chart] {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("paragraphs[%d].chart %q is not one of table, bar, line, pie, histogram, scatter", i, p.Chart))
			return
		}
		if p.Refresh < 0 {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("paragraphs[%d].refresh must not be negative", i))
			return
		}
	}
	nb.ID, nb.UpdatedAt = id, time.Now().UTC()
	if nb.Title == "" {
		nb.Title = id
	}
	b, _ := json.Marshal(nb)
	if _, err := s.o.Store.Put(r.Context(), contract.NotebookKey(id), bytes.NewReader(b), int64(len(b))); err != nil {
		s.log.Error("saving a notebook failed", zap.String("id", id), zap.Error(err))
		writeErr(w, http.StatusServiceUnavailable, "could not store the notebook: "+err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, nb)
}

func (s *Server) getNotebook(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !contract.ValidName(id) {
		writeErr(w, http.StatusBadRequest, "bad notebook id")
		return
	}
	nb, err := s.loadNotebook(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		writeErr(w, http.StatusNotFound, "no notebook "+id)
		return
	}
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, nb)
}

func (s *Server) loadNotebook(ctx context.Context, id string) (*Notebook, error) {
	rc, _, err := s.o.Store.Get(ctx, contract.NotebookKey(id))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var nb Notebook
	if err := json.UnmarshalRead(rc, &nb); err != nil {
		return nil, fmt.Errorf("notebook %s: %w", id, err)
	}
	return &nb, nil
}

func (s *Server) listNotebooks(w http.ResponseWriter, r *http.Request) {
	objs, err := s.o.Store.List(r.Context(), contract.NotebooksPrefix)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := []map[string]any{}
	for _, o := range objs {
		id, ok := contract.NotebookID(o.Key)
		if !ok {
			continue
		}
		out = append(out, map[string]any{"id": id, "updated_at": o.Modified.UTC()})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"notebooks": out})
}

func (s *Server) deleteNotebook(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !contract.ValidName(id) {
		writeErr(w, http.StatusBadRequest, "bad notebook id")
		return
	}
	if err := s.o.Store.Delete(r.Context(), contract.NotebookKey(id)); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
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
