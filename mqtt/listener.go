package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vigil/vigil/contract"
	"github.com/vigil/vigil/ingest"
)

// Topics of the embedded listener.
const (
	IngestPrefix = "vigil/ingest/" // + device id: a device's readings
	ErrorsPrefix = "vigil/errors/" // + device id: refusals, for the device to read
)

// Ingester is the path a message's payload takes: ingest.Handler.
type Ingester interface {
	Authenticate(key string) (*ingest.Principal, *ingest.RequestError)
	Registry() *ingest.Registry
	Submit(ctx context.Context, s ingest.Submission) (int, *ingest.RequestError)
	DeadLetter(ctx context.Context, key string, body []byte, source string, reason error) error
}

// Metrics are the counters both MQTT paths share.
type Metrics struct {
	messages *prometheus.CounterVec
}

// results are the outcomes a message is counted under.
var results = []string{"accepted", "refused", "dead_lettered", "retry"}

// init makes a path's series exist from the start, at zero.
func (m *Metrics) init(path string) {
	for _, r := range results {
		m.messages.WithLabelValues(path, r)
	}
}

// NewMetrics registers the MQTT counters with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{messages: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_mqtt_messages_total",
		Help: "MQTT messages by path (listener, bridge) and result: accepted, refused (answered with a reason code), dead_lettered (kept in the DLQ), retry (not acknowledged, to be redelivered).",
	}, []string{"path", "result"})}
	if reg != nil {
		if err := reg.Register(m.messages); err != nil {
			return nil, fmt.Errorf("register mqtt metrics: %w", err)
		}
	}
	return m, nil
}

// ListenerOptions are the listener's dependencies.
type ListenerOptions struct {
	Ingest    Ingester
	TLSConfig *tls.Config // nil: plain TCP
	Metrics   *Metrics
	Logger    *zap.Logger
}

// Listener is the embedded MQTT server.
type Listener struct {
	cfg    Config
	o      ListenerOptions
	srv    *mochi.Server
	log    *zap.Logger
	mu     sync.Mutex
	who    map[*mochi.Client]*ingest.Principal
	tcp    *listeners.TCP
	ctx    context.Context
	cancel context.CancelFunc
}

// NewListener builds the listener on cfg.Addr; Run serves it.
func NewListener(cfg Config, o ListenerOptions) (*Listener, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	srv := mochi.New(&mochi.Options{
		InlineClient: true, // publishes refusals to vigil/errors/<device>
		Logger:       slog.New(slog.DiscardHandler),
		Capabilities: func() *mochi.Capabilities {
			c := mochi.NewDefaultServerCapabilities()
			c.MaximumQos = 1 // QoS 2 is taken as QoS 1: the dedup makes it exactly once
			c.MaximumClients = int64(cfg.MaxClients)
			c.RetainAvailable = 0
			return c
		}(),
	})
	o.Metrics.init("listener")
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{cfg: cfg, o: o, srv: srv, log: o.Logger, who: map[*mochi.Client]*ingest.Principal{}, ctx: ctx, cancel: cancel}
	if err := srv.AddHook(&hook{l: l}, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqtt hook: %w", err)
	}
	l.tcp = listeners.NewTCP(listeners.Config{ID: "vigil", Address: cfg.Addr, TLSConfig: o.TLSConfig})
	if err := srv.AddListener(l.tcp); err != nil {
		cancel()
		return nil, fmt.Errorf("mqtt.addr %s: %w", cfg.Addr, err)
	}
	return l, nil
}

// Addr is the address the listener is bound to.
func (l *Listener) Addr() string { return l.tcp.Address() }

// Clients is the number of connected clients.
func (l *Listener) Clients() int64 { return atomic.LoadInt64(&l.srv.Info.ClientsConnected) }

// Run serves until ctx ends, then closes every connection. A message being
// handled when ctx ends finishes (its Kafka acknowledgement is awaited) or
// is not acknowledged, so the client sends it again.
func (l *Listener) Run(ctx context.Context) error {
	if err := l.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt listener %s: %w", l.cfg.Addr, err)
	}
	l.log.Info("MQTT listener up", zap.String("addr", l.Addr()), zap.Bool("tls", l.o.TLSConfig != nil))
	<-ctx.Done()
	l.cancel()
	return l.srv.Close()
}

type hook struct {
	mochi.HookBase
	l *Listener
}

func (h *hook) ID() string { return "vigil" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish, mochi.OnDisconnect:
		return true
	}
	return false
}

// OnConnectAuthenticate: the username is the device or gateway id and the
// password its key; or, over TLS with http.client_ca_file, the verified
// client certificate names it.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	l := h.l
	user := string(pk.Connect.Username)
	var who *ingest.Principal
	if len(pk.Connect.Password) > 0 {
		p, rerr := l.o.Ingest.Authenticate(string(pk.Connect.Password))
		if rerr != nil {
			l.log.Info("MQTT connection refused", zap.String("remote", cl.Net.Remote), zap.String("username", user), zap.String("reason", rerr.Message))
			return false
		}
		who = p
	} else if tc, ok := cl.Net.Conn.(*tls.Conn); ok && len(tc.ConnectionState().VerifiedChains) > 0 {
		leaf := tc.ConnectionState().VerifiedChains[0][0]
		if who = l.o.Ingest.Registry().AuthenticateCert(leaf); who == nil {
			l.log.Info("MQTT connection refused: the client certificate names no registered device or gateway", zap.String("remote", cl.Net.Remote), zap.String("cn", leaf.Subject.CommonName))
			return false
		}
	} else {
		l.log.Info("MQTT connection refused: no password (the device or gateway key) and no client certificate", zap.String("remote", cl.Net.Remote), zap.String("username", user))
		return false
	}
	if user != "" && user != principalID(who) {
		l.log.Info("MQTT connection refused: the username is not the id the key belongs to", zap.String("remote", cl.Net.Remote), zap.String("username", user))
		return false
	}
	l.mu.Lock()
	l.who[cl] = who
	l.mu.Unlock()
	return true
}

func principalID(p *ingest.Principal) string {
	if p.Device != nil {
		return p.Device.DeviceID
	}
	return p.Gateway.GatewayID
}

func (h *hook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h.l.mu.Lock()
	delete(h.l.who, cl)
	h.l.mu.Unlock()
}

func (h *hook) principal(cl *mochi.Client) *ingest.Principal {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	return h.l.who[cl]
}

// OnACLCheck lets a client publish only under vigil/ingest/ (which device
// is checked per message, so a refusal can say why) and subscribe only to
// the error topics of its own devices.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if write {
		return strings.HasPrefix(topic, IngestPrefix)
	}
	dev, ok := strings.CutPrefix(topic, ErrorsPrefix)
	who := h.principal(cl)
	return ok && who != nil && contract.ValidName(dev) && who.Allows(dev)
}

// OnPublish hands the payload to the ingest path and answers for it: the
// PUBACK is sent only after Kafka acknowledged every reading.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	l := h.l
	dev := strings.TrimPrefix(pk.TopicName, IngestPrefix)
	who := h.principal(cl)
	var (
		rerr *ingest.RequestError
		n    int
	)
	switch {
	case who == nil:
		rerr = &ingest.RequestError{Status: http.StatusUnauthorized, Message: "not authenticated"}
	case !contract.ValidName(dev):
		rerr = &ingest.RequestError{Status: http.StatusBadRequest, Message: fmt.Sprintf("topic %q: publish to %s<device_id>, the id 1-128 letters, digits or ._:-", pk.TopicName, IngestPrefix)}
	case !who.Allows(dev):
		rerr = &ingest.RequestError{Status: http.StatusForbidden, Message: fmt.Sprintf("%s may not publish for device %q", who.Name(), dev)}
	default:
		n, rerr = l.o.Ingest.Submit(l.ctx, ingest.Submission{Who: who, Body: pk.Payload, NDJSON: ingest.LooksNDJSON(pk.Payload), Device: dev, Charge: true})
	}
	if rerr == nil {
		l.o.Metrics.messages.WithLabelValues("listener", "accepted").Inc()
		_ = n
		return pk, packets.CodeSuccessIgnore // acknowledged; not fanned out to subscribers
	}
	v5 := cl.Properties.ProtocolVersion == 5
	if retryable(rerr) {
		// not acknowledged: the client sends it again (MQTT 5: it reads the reason)
		l.o.Metrics.messages.WithLabelValues("listener", "retry").Inc()
		l.log.Warn("MQTT message not acknowledged; the client will send it again", zap.String("topic", pk.TopicName), zap.String("client", cl.ID), zap.String("reason", rerr.Message))
		if v5 && pk.FixedHeader.Qos > 0 {
			return pk, reasonCode(rerr)
		}
		return pk, packets.ErrRejectPacket
	}
	h.publishError(dev, pk.TopicName, rerr)
	if v5 && pk.FixedHeader.Qos > 0 {
		l.o.Metrics.messages.WithLabelValues("listener", "refused").Inc()
		l.log.Info("MQTT message refused", zap.String("topic", pk.TopicName), zap.String("client", cl.ID), zap.String("reason", describe(rerr)))
		return pk, reasonCode(rerr)
	}
	// MQTT 3.1.1 (or QoS 0) cannot carry a reason: keep the message in the
	// dead-letter topic with it, then acknowledge.
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	if err := l.o.Ingest.DeadLetter(ctx, dev, pk.Payload, "mqtt:"+pk.TopicName, errors.New(describe(rerr))); err != nil {
		l.o.Metrics.messages.WithLabelValues("listener", "retry").Inc()
		l.log.Warn("MQTT refusal could not be written to the dead-letter topic; not acknowledged, the client will send it again", zap.String("topic", pk.TopicName), zap.Error(err))
		return pk, packets.ErrRejectPacket
	}
	l.o.Metrics.messages.WithLabelValues("listener", "dead_lettered").Inc()
	l.log.Info("MQTT message refused and kept in the dead-letter topic", zap.String("topic", pk.TopicName), zap.String("client", cl.ID), zap.String("reason", describe(rerr)))
	return pk, packets.CodeSuccessIgnore
}

// publishError tells the device why, on vigil/errors/<device_id>.
func (h *hook) publishError(dev, topic string, rerr *ingest.RequestError) {
	if !contract.ValidName(dev) {
		return
	}
	b, _ := json.Marshal(struct {
		Topic  string          `json:"topic"`
		Status int             `json:"status"`
		Error  string          `json:"error"`
		Detail []ingest.Detail `json:"details,omitempty"`
	}{topic, rerr.Status, rerr.Message, rerr.Details})
	if err := h.l.srv.Publish(ErrorsPrefix+dev, b, false, 1); err != nil {
		h.l.log.Debug("publishing an MQTT refusal failed", zap.Error(err))
	}
}

// describe is a refusal with its first details, for a log line or a header.
func describe(e *ingest.RequestError) string {
	s := e.Message
	for i, d := range e.Details {
		if i == 3 {
			s += fmt.Sprintf("; and %d more", len(e.Details)-3)
			break
		}
		s += fmt.Sprintf("; reading %d: %s", d.Index, d.Reason)
	}
	return s
}

// retryable refusals are the server's state, not the message's fault.
func retryable(e *ingest.RequestError) bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable
}

// reasonCode is the MQTT 5 PUBACK reason of a refusal, with its reason string.
func reasonCode(e *ingest.RequestError) packets.Code {
	code := packets.ErrUnspecifiedError.Code
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		code = packets.ErrNotAuthorized.Code
	case http.StatusTooManyRequests:
		code = packets.ErrQuotaExceeded.Code
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		code = packets.ErrPayloadFormatInvalid.Code
	}
	reason := describe(e)
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	return packets.Code{Code: code, Reason: reason}
}

// Close closes the listener (Run does it when its context ends).
func (l *Listener) Close() error {
	l.cancel()
	return l.srv.Close()
}
