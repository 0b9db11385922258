package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/zap"

	"github.com/vigil/vigil/ingest"
)

// BridgeOptions are the bridge's dependencies.
type BridgeOptions struct {
	Ingest   Ingester
	ClientID string // used when mqtt.bridge.client_id is empty
	Metrics  *Metrics
	Logger   *zap.Logger
}

// BridgeStatus is the bridge's connection, for /readyz and the status page.
type BridgeStatus struct {
	URL       string `json:"url"`
	Filter    string `json:"filter"`
	Connected bool   `json:"connected"`
	// Subscribed: the broker granted the shared subscription on this connection.
	Subscribed bool      `json:"subscribed"`
	Since      time.Time `json:"since"`
	Attempts   int       `json:"failed_attempts"` // since the last connection
	LastError  string    `json:"last_error,omitempty"`
}

// Bridge subscribes to the fleet's broker with a shared subscription and
// QoS 1, and acknowledges each message only after its readings are in
// Kafka (or, refused, in the dead-letter topic).
type Bridge struct {
	cfg   BridgeConfig
	o     BridgeOptions
	topic TopicMap
	log   *zap.Logger

	mu     sync.Mutex
	status BridgeStatus
}

// NewBridge checks the bridge's settings; Run connects.
func NewBridge(cfg BridgeConfig, o BridgeOptions) (*Bridge, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	tm, err := ParseTopic(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("mqtt.bridge.topic: %w", err)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = o.ClientID
	}
	o.Metrics.init("bridge")
	return &Bridge{cfg: cfg, o: o, topic: tm, log: o.Logger,
		status: BridgeStatus{URL: redact(cfg.URL), Filter: "$share/" + cfg.Group + "/" + tm.Filter(), Since: time.Now()}}, nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

// Status is the bridge's connection now.
func (b *Bridge) Status() BridgeStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

// Ready is nil while the bridge is connected.
func (b *Bridge) Ready(context.Context) error {
	st := b.Status()
	if st.Connected && st.Subscribed {
		return nil
	}
	if st.Connected {
		return fmt.Errorf("MQTT bridge to %s connected but not subscribed to %s yet", st.URL, st.Filter)
	}
	msg := fmt.Sprintf("MQTT bridge to %s not connected (%d failed attempts)", st.URL, st.Attempts)
	if st.LastError != "" {
		msg += ": " + st.LastError
	}
	return errors.New(msg)
}

func (b *Bridge) setStatus(up bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if up != b.status.Connected {
		b.status.Since = time.Now()
	}
	b.status.Connected = up
	if !up {
		b.status.Subscribed = false
	}
	if up {
		b.status.Attempts, b.status.LastError = 0, ""
	}
	if err != nil {
		b.status.Attempts++
		b.status.LastError = err.Error()
	}
}

// Run keeps the bridge connected until ctx ends, reconnecting with
// exponential backoff.
func (b *Bridge) Run(ctx context.Context) error {
	u, err := url.Parse(b.cfg.URL)
	if err != nil {
		return fmt.Errorf("mqtt.bridge.url: %w", err)
	}
	switch u.Scheme { // autopaho's names
	case "tcp":
		u.Scheme = "mqtt"
	case "ssl", "mqtts":
		u.Scheme = "tls"
	}
	var tlsCfg *tls.Config
	if u.Scheme == "tls" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if b.cfg.CAFile != "" {
			pem, err := os.ReadFile(b.cfg.CAFile)
			if err != nil {
				return fmt.Errorf("mqtt.bridge.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("mqtt.bridge.ca_file %s: no PEM certificate in it", b.cfg.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
	}
	filter := "$share/" + b.cfg.Group + "/" + b.topic.Filter()
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     20,
		CleanStartOnInitialConnection: false, // the broker keeps our QoS 1 messages while we are away
		SessionExpiryInterval:         uint32(b.cfg.SessionExpiry / time.Second),
		ConnectTimeout:                10 * time.Second,
		ReconnectBackoff: func(attempt int) time.Duration {
			d := 250 * time.Millisecond << min(attempt, 20)
			return min(d, b.cfg.BackoffMax)
		},
		ConnectUsername: b.cfg.Username,
		ConnectPassword: []byte(b.cfg.Password),
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			b.setStatus(true, nil)
			b.log.Info("MQTT bridge connected", zap.String("url", redact(b.cfg.URL)), zap.String("filter", filter))
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				sa, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
				if err == nil && sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
					err = fmt.Errorf("the broker refused it with reason code %#x", sa.Reasons[0])
				}
				if err != nil {
					b.setStatus(true, fmt.Errorf("subscribe %s: %w", filter, err))
					b.log.Error("MQTT bridge subscription failed; does the broker allow MQTT 5 shared subscriptions and this filter for the bridge's user?", zap.String("filter", filter), zap.Error(err))
					return
				}
				b.mu.Lock()
				b.status.Subscribed = true
				b.mu.Unlock()
			}()
		},
		OnConnectionDown: func() bool {
			b.setStatus(false, errors.New("connection lost"))
			b.log.Warn("MQTT bridge connection lost; reconnecting with backoff", zap.String("url", redact(b.cfg.URL)))
			return true
		},
		OnConnectError: func(err error) {
			b.setStatus(false, err)
			b.log.Warn("MQTT bridge cannot connect; retrying with backoff", zap.String("url", redact(b.cfg.URL)), zap.Error(err))
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   b.cfg.ClientID,
			EnableManualAcknowledgment: true,
		},
	}
	cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if b.handle(ctx, pr.Packet) {
				if err := pr.Client.Ack(pr.Packet); err != nil {
					b.log.Debug("MQTT bridge ack not sent (the broker sends the message again)", zap.Error(err))
				}
			}
			return true, nil
		},
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		return fmt.Errorf("mqtt bridge: %w", err)
	}
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = cm.Disconnect(dctx)
	return nil
}

// handle stores one message and reports whether to acknowledge it. A
// retryable failure is retried here, with backoff, until it succeeds or
// ctx ends (then it is not acknowledged, and the broker redelivers it).
func (b *Bridge) handle(ctx context.Context, pk *paho.Publish) bool {
	dev, ok := b.topic.Device(pk.Topic)
	var rerr *ingest.RequestError
	who := (*ingest.Principal)(nil)
	if ok {
		who = b.o.Ingest.Registry().Principal(dev)
	}
	switch {
	case !ok:
		rerr = &ingest.RequestError{Status: http.StatusBadRequest, Message: fmt.Sprintf("topic %q does not match mqtt.bridge.topic %q", pk.Topic, b.cfg.Topic)}
	case who == nil:
		rerr = &ingest.RequestError{Status: http.StatusForbidden, Message: fmt.Sprintf("device %q (from topic %q) is not registered: register it (POST /api/v1/devices) before it publishes", dev, pk.Topic)}
	}
	for wait := 100 * time.Millisecond; rerr == nil; wait = min(2*wait, 5*time.Second) {
		_, rerr = b.o.Ingest.Submit(ctx, ingest.Submission{Who: who, Body: pk.Payload, NDJSON: ingest.LooksNDJSON(pk.Payload), Device: dev, Charge: true})
		if rerr == nil {
			b.o.Metrics.messages.WithLabelValues("bridge", "accepted").Inc()
			return true
		}
		if !retryable(rerr) {
			break
		}
		b.o.Metrics.messages.WithLabelValues("bridge", "retry").Inc()
		b.log.Warn("MQTT bridge: readings not stored yet; retrying", zap.String("topic", pk.Topic), zap.String("reason", rerr.Message), zap.Duration("in", wait))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		rerr = nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.o.Ingest.DeadLetter(dctx, dev, pk.Payload, "mqtt-bridge:"+pk.Topic, errors.New(describe(rerr))); err != nil {
		b.log.Warn("MQTT bridge: a refused message could not be written to the dead-letter topic; not acknowledged", zap.String("topic", pk.Topic), zap.Error(err))
		return false
	}
	b.o.Metrics.messages.WithLabelValues("bridge", "dead_lettered").Inc()
	b.log.Info("MQTT bridge: message refused and kept in the dead-letter topic", zap.String("topic", pk.Topic), zap.String("reason", describe(rerr)))
	return true
}
