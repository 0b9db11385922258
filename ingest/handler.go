package ingest

import (
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/internal/httpx"
	"github.com/vigil/vigil/internal/promread"

	"github.com/vigil/vigil/contract"

	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Handler serves POST /v1/ingest.
type Handler struct {
	cfg    Config
	region string
	topic  string
	dlq    string
	reg    *Registry
	prod   *kgo.Client
	dec    Decoder
	log    *zap.Logger
	now    func() time.Time

	requests *prometheus.CounterVec
	readings prometheus.Counter
	produce  prometheus.Histogram
	bufPool  sync.Pool
	limits   *limits
	backlog  func() int64
	inflight atomic.Int64 // request bytes reserved (ingest.max_inflight_bytes)
}

// HandlerOptions are the ingest handler's settings and dependencies.
type HandlerOptions struct {
	Region   string    // stamped on every reading
	Topic    string    // the raw topic
	DLQTopic string    // refusals a transport cannot answer (MQTT 3.1.1)
	Registry *Registry // authenticates keys
	// Backlog is the pipeline's lag in raw records (nil: not checked).
	Backlog    func() int64
	ClientOpts []kgo.Opt // the bus's client options
	Logger     *zap.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
}

// NewHandler builds the ingest handler and its idempotent producer
// (acks=all) to topic. Close must be called to flush and close the producer.
func NewHandler(cfg Config, o HandlerOptions) (*Handler, error) {
	region, topic, reg, opts, log, mreg := o.Region, o.Topic, o.Registry, o.ClientOpts, o.Logger, o.Registerer
	if log == nil {
		log = zap.NewNop()
	}
	prod, err := kgo.NewClient(bus.With(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
		kgo.RecordDeliveryTimeout(max(cfg.ProduceTimeout, time.Second)), // franz-go's floor; the handler's own timer enforces produce_timeout
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return nil, fmt.Errorf("ingest producer: %w", err)
	}
	h := &Handler{
		cfg: cfg, region: region, topic: topic, dlq: o.DLQTopic, backlog: o.Backlog, reg: reg, prod: prod, log: log, now: time.Now, limits: newLimits(cfg, time.Now),
		dec: Decoder{MaxReadings: cfg.MaxReadings, FutureMargin: cfg.FutureMargin, MaxMetrics: cfg.MaxMetrics},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_requests_total", Help: "Ingest requests by HTTP status.",
		}, []string{"code"}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingest_readings_total", Help: "Readings accepted (acknowledged by Kafka).",
		}),
		produce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_ingest_produce_seconds", Help: "Time from decoded request to Kafka acknowledgement of all its readings.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if mreg != nil {
		for _, c := range []prometheus.Collector{h.requests, h.readings, h.produce} {
			if err := mreg.Register(c); err != nil {
				prod.Close()
				return nil, fmt.Errorf("register ingest metrics: %w", err)
			}
		}
	}
	return h, nil
}

// Readings is how many readings the handler acknowledged.
func (h *Handler) Readings() float64 { return promread.Value(h.readings) }

// Close flushes buffered readings (within ctx) and closes the producer.
func (h *Handler) Close(ctx context.Context) {
	if err := h.prod.Flush(ctx); err != nil {
		h.log.Warn("ingest producer flush at shutdown did not finish", zap.Error(err))
	}
	h.prod.Close()
}

// Ping reports whether the producer can reach the brokers.
func (h *Handler) Ping(ctx context.Context) error { return h.prod.Ping(ctx) }

func (h *Handler) refuse(w http.ResponseWriter, e *RequestError) {
	if e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable {
		after := max(h.cfg.RetryAfter, e.retryAfter)
		w.Header().Set("Retry-After", strconv.Itoa(int((after+time.Second-1)/time.Second)))
	}
	h.requests.WithLabelValues(strconv.Itoa(e.Status)).Inc()
	httpx.WriteJSON(w, e.Status, e)
}

// ServeHTTP authenticates, decodes and produces one request. It answers 202
// only after Kafka acknowledged every reading of it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-h.reg.Ready():
	default:
		h.refuse(w, &RequestError{Status: http.StatusServiceUnavailable, Message: "the device registry is still loading; retry shortly"})
		return
	}
	var who *Principal
	if key, ok := bearer(r); ok {
		if who = h.reg.Authenticate(key); who == nil {
			h.refuse(w, &RequestError{Status: http.StatusUnauthorized, Message: "unknown device or gateway key"})
			return
		}
	} else if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		// mTLS (http.client_ca_file): the verified certificate names the device or gateway
		leaf := r.TLS.VerifiedChains[0][0]
		if who = h.reg.AuthenticateCert(leaf); who == nil {
			h.refuse(w, &RequestError{Status: http.StatusUnauthorized, Message: fmt.Sprintf("client certificate %q names no registered device or gateway (CN, or URI SAN urn:vigil:device:<id> / urn:vigil:gateway:<id>)", leaf.Subject.CommonName)})
			return
		}
	} else {
		h.refuse(w, &RequestError{Status: http.StatusUnauthorized, Message: "missing device key: send Authorization: Bearer <device or gateway key>, or a client certificate"})
		return
	}
	ndjson, err := contentKind(r.Header.Get("Content-Type"))
	if err != nil {
		h.refuse(w, &RequestError{Status: http.StatusUnsupportedMediaType, Message: err.Error()})
		return
	}
	// the key's byte rate, charged before the body is read
	if e := h.limits.takeBytes(who.Name(), r.ContentLength); e != nil {
		h.refuse(w, e)
		return
	}
	// the bytes this request may hold while it is read and processed
	reserve := r.ContentLength
	if reserve < 0 || reserve > h.cfg.MaxBodyBytes {
		reserve = h.cfg.MaxBodyBytes
	}
	if h.inflight.Add(reserve) > h.cfg.MaxInflightBytes {
		h.inflight.Add(-reserve)
		h.refuse(w, &RequestError{Status: http.StatusServiceUnavailable, Message: fmt.Sprintf("overloaded: more than %d request bytes in flight (ingest.max_inflight_bytes); retry later", h.cfg.MaxInflightBytes)})
		return
	}
	defer h.inflight.Add(-reserve)
	body, rerr := h.readBody(w, r)
	if rerr != nil {
		h.refuse(w, rerr)
		return
	}
	defer h.putBuf(body)
	if r.ContentLength < 0 {
		h.limits.chargeBytes(who.Name(), int64(len(*body)))
	}
	n, serr := h.Submit(r.Context(), Submission{Who: who, Body: *body, NDJSON: ndjson})
	if serr != nil {
		h.refuse(w, serr)
		return
	}
	h.requests.WithLabelValues("202").Inc()
	httpx.WriteJSON(w, http.StatusAccepted, map[string]int{"accepted": n})
}

// Submission is one body from a device or gateway, by any transport.
type Submission struct {
	Who    *Principal // authenticated sender
	Body   []byte
	NDJSON bool
	// Device, when set, is the one device the body may hold readings of
	// (an MQTT topic's device).
	Device string
	// Charge applies the key's byte rate and the in-flight cap to the body
	// here; HTTP applies them before it reads the body.
	Charge bool
}

// Submit runs one body through the path every transport shares: the key's
// byte rate and the in-flight cap (when Charge), the decoder, the
// sender's devices, the per-key limits, and the Kafka acknowledgement of
// every reading. It returns how many readings Kafka acknowledged, or the
// refusal; nothing of a refused body is stored.
func (h *Handler) Submit(ctx context.Context, s Submission) (int, *RequestError) {
	who := s.Who
	if s.Charge {
		if e := h.limits.takeBytes(who.Name(), int64(len(s.Body))); e != nil {
			return 0, e
		}
		reserve := int64(len(s.Body))
		if h.inflight.Add(reserve) > h.cfg.MaxInflightBytes {
			h.inflight.Add(-reserve)
			return 0, &RequestError{Status: http.StatusServiceUnavailable, Message: fmt.Sprintf("overloaded: more than %d request bytes in flight (ingest.max_inflight_bytes); retry later", h.cfg.MaxInflightBytes)}
		}
		defer h.inflight.Add(-reserve)
		if int64(len(s.Body)) > h.cfg.MaxBodyBytes {
			return 0, &RequestError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("body larger than %d bytes (ingest.max_body_bytes); split it", h.cfg.MaxBodyBytes)}
		}
	}
	if h.backlog != nil && h.cfg.MaxPipelineLag > 0 {
		if lag := h.backlog(); lag > h.cfg.MaxPipelineLag {
			return 0, &RequestError{Status: http.StatusServiceUnavailable, Message: fmt.Sprintf("overloaded: the pipeline is %d readings behind (ingest.max_pipeline_lag %d); retry later", lag, h.cfg.MaxPipelineLag)}
		}
	}
	readings, derr := h.dec.Decode(s.Body, s.NDJSON, h.now())
	if derr != nil {
		return 0, derr
	}
	var denied []Detail
	for i := range readings {
		id := readings[i].DeviceID
		reason := ""
		switch {
		case s.Device != "" && id != s.Device:
			reason = fmt.Sprintf("reading for device %q published on the topic of device %q", id, s.Device)
		case !who.Allows(id):
			reason = fmt.Sprintf("%s may not post for device %q", who.Name(), id)
		default:
			continue
		}
		if len(denied) < maxDetails {
			denied = append(denied, Detail{Index: i, Reason: reason})
		}
	}
	if len(denied) > 0 {
		return 0, &RequestError{Status: http.StatusForbidden, Message: "key not allowed for a device in the request; nothing was accepted", Details: denied}
	}
	lerr, commit := h.limits.admit(who, readings)
	if lerr != nil {
		return 0, lerr
	}
	if buffered := h.prod.BufferedProduceRecords(); buffered+int64(len(readings)) > int64(h.cfg.MaxBufferedRecords) {
		return 0, &RequestError{Status: http.StatusTooManyRequests, Message: fmt.Sprintf("overloaded: %d readings are waiting for Kafka; retry later", buffered)}
	}
	if err := h.produceAll(ctx, readings); err != nil {
		status := http.StatusServiceUnavailable
		msg := "Kafka did not acknowledge the readings: " + err.Error() + "; retry with the same ids (retries are stored once)"
		if errors.Is(err, kgo.ErrMaxBuffered) {
			status = http.StatusTooManyRequests
			msg = "overloaded: the producer buffer is full; retry later with the same ids (retries are stored once)"
		}
		h.log.Warn("ingest request not acknowledged", zap.Int("readings", len(readings)), zap.String("principal", who.Name()), zap.Error(err))
		return 0, &RequestError{Status: status, Message: msg}
	}
	commit()
	h.readings.Add(float64(len(readings)))
	return len(readings), nil
}

// DeadLetter writes a refused body to the dead-letter topic with the
// reason, and waits for Kafka's acknowledgement. Transports that cannot
// answer a refusal (MQTT 3.1.1) keep it there.
func (h *Handler) DeadLetter(ctx context.Context, key string, body []byte, source string, reason error) error {
	if h.dlq == "" {
		return errors.New("no dead-letter topic configured")
	}
	rec := &kgo.Record{Topic: h.dlq, Key: []byte(key), Value: body, Headers: []kgo.RecordHeader{
		{Key: "reason", Value: []byte(reason.Error())}, {Key: "source", Value: []byte(source)},
	}}
	return h.prod.ProduceSync(ctx, rec).FirstErr()
}

// Authenticate returns the device or gateway a key belongs to, or nil.
// Not ready (the registry still loading) is an error.
func (h *Handler) Authenticate(key string) (*Principal, *RequestError) {
	select {
	case <-h.reg.Ready():
	default:
		return nil, &RequestError{Status: http.StatusServiceUnavailable, Message: "the device registry is still loading; retry shortly"}
	}
	if who := h.reg.Authenticate(key); who != nil {
		return who, nil
	}
	return nil, &RequestError{Status: http.StatusUnauthorized, Message: "unknown device or gateway key"}
}

// Registry is the device registry the handler authenticates with.
func (h *Handler) Registry() *Registry { return h.reg }

// putBuf returns a body buffer to the pool unless it is large: a burst of
// big bodies must not leave the pool holding their memory.
func (h *Handler) putBuf(bp *[]byte) {
	if cap(*bp) <= 1<<20 {
		h.bufPool.Put(bp)
	}
}

func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (*[]byte, *RequestError) {
	bp, _ := h.bufPool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 64<<10)
		bp = &b
	}
	buf := (*bp)[:0]
	if n := r.ContentLength; n > int64(cap(buf)) && n <= h.cfg.MaxBodyBytes {
		buf = make([]byte, 0, n+1) // one allocation, not a doubling series
	}
	rd := http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, &RequestError{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("body larger than %d bytes (ingest.max_body_bytes); split the request", h.cfg.MaxBodyBytes)}
			}
			return nil, &RequestError{Status: http.StatusBadRequest, Message: "reading the body failed: " + err.Error()}
		}
	}
	*bp = buf
	return bp, nil
}

func (h *Handler) produceAll(ctx context.Context, readings []contract.Reading) error {
	ingested := h.now().UTC()
	start := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	wg.Add(len(readings))
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
		wg.Done()
	}
	// A request's readings share one value buffer: one allocation per request.
	size := 0
	for i := range readings {
		size += 160 + 32*len(readings[i].Metrics) + 32*len(readings[i].Attrs)
	}
	buf := make([]byte, 0, size)
	for i := range readings {
		rd := &readings[i]
		rd.Region, rd.IngestedAt = h.region, ingested
		off := len(buf)
		buf = rd.AppendJSON(buf)
		rec := &kgo.Record{Topic: h.topic, Key: []byte(rd.DeviceID), Value: buf[off:len(buf):len(buf)], Timestamp: ingested}
		h.prod.TryProduce(ctx, rec, promise)
	}
	// Wait for every acknowledgement, but no longer than produce_timeout:
	// a broker that hangs a produce request must not hang the device. A
	// record acknowledged after the 503 is stored; the client's retry with
	// the same id is then stored once, by the pipeline's dedup.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(h.cfg.ProduceTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		return fmt.Errorf("no acknowledgement within ingest.produce_timeout (%s)", h.cfg.ProduceTimeout)
	}
	h.produce.Observe(time.Since(start).Seconds())
	mu.Lock()
	defer mu.Unlock()
	return firstErr
}

func bearer(r *http.Request) (string, bool) {
	a := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(a) <= len(p) || !strings.EqualFold(a[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(a[len(p):]), true
}

// contentKind reports whether a Content-Type is NDJSON, or refuses it.
func contentKind(ct string) (ndjson bool, err error) {
	if ct == "" {
		return false, nil
	}
	mt, _, perr := mime.ParseMediaType(ct)
	if perr != nil {
		return false, fmt.Errorf("Content-Type %q cannot be parsed: use application/json or application/x-ndjson", ct)
	}
	switch mt {
	case "application/json":
		return false, nil
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines":
		return true, nil
	}
	return false, fmt.Errorf("Content-Type %q is not supported: use application/json or application/x-ndjson", mt)
}
