package web

import (
	"crypto/tls"
	"fmt"
	"github.com/vigil/vigil/console"
	"github.com/vigil/vigil/internal/tlsx"
	"github.com/vigil/vigil/sitestatus"
	"io"

	"github.com/vigil/vigil/internal/httpx"

	"github.com/vigil/vigil/contract"

	"context"
	"crypto/subtle"
	_ "embed" // the OpenAPI document and status page
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/storage"
)

//go:embed static/openapi.json
var openAPI []byte

//go:embed static/index.html
var indexHTML []byte

//go:embed static/app.js
var appJS []byte

// The chart library, vendored by scripts/vendor-web.sh (version and
// licence in static/vendor/VERSIONS).
//
//go:embed static/vendor/uplot/uPlot.iife.min.js
var uplotJS []byte

//go:embed static/vendor/uplot/uPlot.min.css
var uplotCSS []byte

//go:embed static/vendor/VERSIONS
var vendorVersions []byte

// Registry is what the admin API needs of the device registry.
type Registry interface {
	RegisterDevice(ctx context.Context, d contract.Device) (string, error)
	RegisterGateway(ctx context.Context, g contract.Gateway) (string, error)
	Device(id string) (*contract.Device, bool)
	Devices() []contract.Device
	Len() int
}

// Alerts is what the API needs of the alert store.
type Alerts interface {
	Query(limit int, device string, since time.Time) []contract.Alert
	Get(id string) (contract.Alert, bool)
}

// Models is what the admin API and the page need of the models service
// (ml.Service implements it).
type Models interface {
	Status() ml.Status
	Lease() ml.LeaseRecord
	Models(ctx context.Context) ([]ml.ModelMeta, ml.Current, error)
	Model(ctx context.Context, version string) (ml.ModelMeta, error)
	RequestTraining(ctx context.Context, by string) error
	Promote(ctx context.Context, version, by string) (ml.Current, error)
	SetShadow(ctx context.Context, version, by string) (ml.Current, error)
	Rollback(ctx context.Context, version, by string) (ml.Current, error)
}

// Check is one readiness check: nil when ready, else what is missing.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Options are the server's dependencies.
type Options struct {
	AdminToken string
	// ViewerToken reads the page and the GET endpoints (nil: no viewer).
	ViewerToken string
	Ingest      http.Handler
	Registry    Registry
	Alerts      Alerts
	Ready       []Check
	Gatherer    prometheus.Gatherer // served at /metrics
	// Health gives the pipeline's figures the page shows (nil: none).
	Health func() sitestatus.Health
	Logger *zap.Logger
	// Console is the SQL console; Store the shared bucket (notebooks,
	// labels, site status); Region this region's name.
	Console *console.Console
	Store   storage.Store
	Region  string
	// KafkaOpts and EnrichedTopic let the page read a device's recent readings.
	KafkaOpts     []kgo.Opt
	EnrichedTopic string
	// Models is the models service (registry, lease); nil disables /models.
	Models Models
	// Notifier is alert delivery (nil: no sinks shown).
	Notifier Notifier
	// MQTT reports the MQTT listener and bridge (nil: none).
	MQTT func() MQTTStatus
	// History is the overview's time series, oldest first (nil: none).
	History func() []sitestatus.Point
}

// Server is Vigil's HTTP server.
type Server struct {
	cfg Config
	o   Options
	log *zap.Logger
	srv *http.Server
	ln  net.Listener

	feedbackMu   sync.Mutex
	feedbackSeen map[string]contract.Verdict
}

// New builds the server and binds its listener, so the address is known
// (and a port conflict reported) before Run.
func New(cfg Config, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Server{cfg: cfg, o: o, log: o.Logger, feedbackSeen: map[string]contract.Verdict{}}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errors.New("listen on http.addr " + cfg.Addr + ": " + err.Error() + "; choose another address with VIGIL_HTTP_ADDR")
	}
	if cfg.TLS() {
		tc, err := tlsx.ServerConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.ClientCAFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("http.%w", err)
		}
		ln = tls.NewListener(ln, tc)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.Router(),
		ReadTimeout:       cfg.ReadTimeout,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          zap.NewStdLog(o.Logger.Named("http")),
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then stops taking requests and waits (up to
// http.shutdown_timeout) for the requests in flight.
func (s *Server) Run(ctx context.Context) error {
	loaded := make(chan struct{})
	go func() { defer close(loaded); s.loadVerdicts(ctx) }()
	defer func() { <-loaded }()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.log.Warn("HTTP shutdown did not finish in time; closing connections", zap.Error(err))
		_ = s.srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loadVerdicts reads the operators' verdicts stored under labels/ (by this
// or any earlier process), so the alerts list shows them after a restart.
// A verdict given meanwhile is newer and kept.
func (s *Server) loadVerdicts(ctx context.Context) {
	if s.o.Store == nil {
		return
	}
	start := time.Now()
	objs, err := s.o.Store.List(ctx, contract.LabelsPrefix)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot list the operators' verdicts; the alerts list shows only verdicts given from now on. Check the bucket", zap.String("prefix", contract.LabelsPrefix), zap.Error(err))
		}
		return
	}
	n := 0
	for _, o := range objs {
		rc, _, err := s.o.Store.Get(ctx, o.Key)
		if err != nil {
			continue // deleted since listed, or the store is going away
		}
		var v contract.Verdict
		err = json.UnmarshalRead(io.LimitReader(rc, 1<<20), &v, json.RejectUnknownMembers(false))
		rc.Close()
		if err != nil || v.AlertID == "" {
			s.log.Warn("skipping a verdict that does not decode", zap.String("key", o.Key), zap.Error(err))
			continue
		}
		s.feedbackMu.Lock()
		if old, ok := s.feedbackSeen[v.AlertID]; !ok || old.At.Before(v.At) {
			s.feedbackSeen[v.AlertID] = v
		}
		s.feedbackMu.Unlock()
		n++
	}
	s.log.Info("operators' verdicts loaded", zap.Int("verdicts", n), zap.Duration("took", time.Since(start)))
}

func (s *Server) health() sitestatus.Health {
	if s.o.Health == nil {
		return sitestatus.Health{LagByPartition: map[string]float64{}}
	}
	return s.o.Health()
}

// securityHeaders: no page of Vigil may be framed (the promote and verdict
// buttons cannot be clickjacked), no referrer leaves it, and no answer is
// content-sniffed.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// Router builds the chi router.
func (s *Server) Router() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(securityHeaders)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(s.o.Gatherer, promhttp.HandlerOpts{}))
	r.Method(http.MethodPost, "/v1/ingest", s.o.Ingest)
	page := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Everything is served from here: no CDN, and no inline script.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		_, _ = w.Write(indexHTML)
	}
	r.Get("/", page)
	r.Get("/report/{id}", page)
	r.Get("/alerts/{id}", page)
	r.Get("/devices/{id}", page)
	r.Get("/fleet", page)
	static := func(path, ctype string, body []byte) {
		r.Get(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ctype)
			_, _ = w.Write(body)
		})
	}
	static("/static/app.js", "text/javascript; charset=utf-8", appJS)
	static("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", uplotJS)
	static("/static/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8", uplotCSS)
	static("/static/vendor/VERSIONS", "text/plain; charset=utf-8", vendorVersions)
	r.Get("/api/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	// Go's profiler (CPU, heap, allocations, goroutines), for the admin
	// token only: `go tool pprof -http :0 'http://127.0.0.1:8080/debug/pprof/profile?seconds=20'`
	// with the header Authorization: Bearer <admin.token>.
	r.Route("/debug", func(r chi.Router) {
		r.Use(s.authorize, adminOnly)
		r.Mount("/", middleware.Profiler())
	})
	r.Route("/api/v1", func(r chi.Router) {
		r.Use(s.authorize)
		r.Get("/whoami", s.whoami)
		r.Post("/devices", s.registerDevice)
		r.Get("/devices/{id}", s.getDevice)
		r.Post("/gateways", s.registerGateway)
		r.Get("/alerts", s.listAlerts)
		r.Get("/alerts/{id}", s.getAlert)
		r.Get("/delivery", s.delivery)
		r.Get("/fleet", s.fleet)
		r.Post("/sinks/{sink}/dead-letters/{id}/retry", s.retryDeadLetter)
		r.Post("/alerts/{id}/feedback", s.feedback)
		r.Get("/devices/{id}/readings", s.deviceReadings)
		r.Get("/overview", s.overview)
		r.Get("/sites", s.sites)
		r.Post("/sql", s.sqlQuery)
		r.Get("/sample", s.sampleStatus)
		r.Post("/sample", s.sampleLoad)
		r.Delete("/sample", s.sampleCancel)
		r.Get("/notebooks", s.listNotebooks)
		r.Get("/notebooks/{id}", s.getNotebook)
		r.Put("/notebooks/{id}", s.putNotebook)
		r.Delete("/notebooks/{id}", s.deleteNotebook)
		r.Get("/models", s.listModels)
		r.Get("/models/{version}", s.getModel)
		r.Post("/models/train", s.trainModel)
		r.Post("/models/{version}/promote", s.promoteModel)
		r.Post("/models/{version}/shadow", s.shadowModel)
		r.Post("/models/rollback", s.rollbackModel)
		r.Get("/lease", s.getLease)
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path+" (see /api/v1/openapi.json)")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
	})
	return r
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	httpx.WriteJSON(w, status, map[string]string{"error": msg})
}

// adminOnly, after authorize, lets only the admin token through.
func adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if role, _ := r.Context().Value(roleKey{}).(string); role != "admin" {
			writeErr(w, http.StatusForbidden, "the profiler needs the admin token: send Authorization: Bearer <admin.token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorize lets the admin token do everything and the viewer token
// (admin.viewer_token) read: GET and HEAD only; anything that changes
// state answers 403 for a viewer.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(a, "Bearer ")
		if !ok || tok == "" {
			writeErr(w, http.StatusUnauthorized, "missing admin token: send Authorization: Bearer <admin.token>")
			return
		}
		switch {
		case subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.AdminToken)) == 1:
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), roleKey{}, "admin")))
		case s.o.ViewerToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.ViewerToken)) == 1:
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				writeErr(w, http.StatusForbidden, "the viewer token (admin.viewer_token) is read-only: "+r.Method+" "+r.URL.Path+" needs the admin token")
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), roleKey{}, "viewer")))
		default:
			writeErr(w, http.StatusUnauthorized, "wrong admin token")
		}
	})
}

type roleKey struct{}

// whoami tells the page which role its token has, so it hides what a
// viewer may not do.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	role, _ := r.Context().Value(roleKey{}).(string)
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"role": role})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	failed := map[string]string{}
	for _, c := range s.o.Ready {
		if err := c.Fn(ctx); err != nil {
			failed[c.Name] = err.Error()
		}
	}
	if len(failed) > 0 {
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": failed})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeErr(w, http.StatusBadRequest, "limit must be a whole number from 1 to 10000, got "+strconv.Quote(v))
			return
		}
		limit = n
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "since must be an RFC 3339 time, got "+strconv.Quote(v))
			return
		}
		since = t
	}
	site, severity := q.Get("site"), q.Get("severity")
	all := s.o.Alerts.Query(10000, q.Get("device"), since)
	type withFeedback struct {
		contract.Alert
		Feedback *contract.Verdict `json:"feedback,omitzero"`
	}
	out := make([]withFeedback, 0, min(limit, len(all)))
	s.feedbackMu.Lock()
	for _, a := range all {
		if len(out) >= limit {
			break
		}
		if (site != "" && a.Site != site) || (severity != "" && a.Severity != severity) {
			continue
		}
		x := withFeedback{Alert: a}
		if fb, ok := s.feedbackSeen[a.AlertID]; ok {
			x.Feedback = &fb
		}
		out = append(out, x)
	}
	s.feedbackMu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"alerts": out})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := json.UnmarshalRead(r.Body, v, json.RejectUnknownMembers(true)); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return false
	}
	return true
}
