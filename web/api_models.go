package web

import (
	"github.com/vigil/vigil/internal/httpx"

	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/storage"
)

// The models API: the registry in the shared bucket, as every process sees
// it, and this process's view of the trainer lease.

func (s *Server) modelsOff(w http.ResponseWriter) bool {
	if s.o.Models == nil {
		writeErr(w, http.StatusNotImplemented, "the models service is not running in this process")
		return true
	}
	return false
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	models, cur, err := s.o.Models.Models(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "could not read the model registry: "+err.Error())
		return
	}
	if models == nil {
		models = []ml.ModelMeta{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"current": cur, "this_process": s.o.Models.Status(), "models": models})
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	m, err := s.o.Models.Model(r.Context(), chi.URLParam(r, "version"))
	if err != nil {
		s.modelErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, m)
}

func (s *Server) modelErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		writeErr(w, http.StatusNotFound, "no such model: "+err.Error())
	case errors.Is(err, ml.ErrStale):
		writeErr(w, http.StatusConflict, err.Error())
	default:
		writeErr(w, http.StatusBadRequest, err.Error())
	}
}

func (s *Server) trainModel(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	if err := s.o.Models.RequestTraining(r.Context(), "api@"+s.o.Region); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	l := s.o.Models.Lease()
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{
		"requested": true, "trainer": l.Holder, "epoch": l.Epoch,
		"note": "the process holding the trainer lease starts within lease_ttl/3; follow GET /api/v1/models",
	})
}

func (s *Server) promoteModel(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	cur, err := s.o.Models.Promote(r.Context(), chi.URLParam(r, "version"), "api@"+s.o.Region)
	if err != nil {
		s.modelErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, cur)
}

func (s *Server) shadowModel(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	cur, err := s.o.Models.SetShadow(r.Context(), chi.URLParam(r, "version"), "api@"+s.o.Region)
	if err != nil {
		s.modelErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, cur)
}

func (s *Server) rollbackModel(w http.ResponseWriter, r *http.Request) {
	if s.modelsOff(w) {
		return
	}
	var req struct {
		Version string `json:"version"`
	}
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	cur, err := s.o.Models.Rollback(r.Context(), req.Version, "api@"+s.o.Region)
	if err != nil {
		s.modelErr(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, cur)
}

func (s *Server) getLease(w http.ResponseWriter, _ *http.Request) {
	if s.modelsOff(w) {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"lease": s.o.Models.Lease(), "this_process": s.o.Models.Status()})
}
