package ingest

import (
	"crypto/x509"
	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/contract"

	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// deviceRecord is a device as the registry topic stores it: the public
// view and its key hash.
type deviceRecord struct {
	contract.Device
	KeyHash string `json:"key_hash,omitzero"`
}

// gatewayRecord is a gateway as the registry topic stores it.
type gatewayRecord struct {
	contract.Gateway
	KeyHash string `json:"key_hash"`
}

// Principal is who a key belongs to.
type Principal struct {
	Device  *contract.Device
	Gateway *contract.Gateway
	devices map[string]struct{}
	keyHash string
}

// Allows reports whether the principal may post readings of deviceID.
func (p *Principal) Allows(deviceID string) bool {
	if p.Device != nil {
		return p.Device.DeviceID == deviceID
	}
	if _, ok := p.devices[deviceID]; ok {
		return true
	}
	for _, pre := range p.Gateway.DevicePrefixes {
		if strings.HasPrefix(deviceID, pre) {
			return true
		}
	}
	return false
}

// Name is "device <id>" or "gateway <id>", for logs and errors.
func (p *Principal) Name() string {
	if p.Device != nil {
		return "device " + p.Device.DeviceID
	}
	return "gateway " + p.Gateway.GatewayID
}

// ErrExists is returned by Register for an id already registered.
var ErrExists = contract.ErrExists

// registryEntry is the value of a record on the devices topic. The key is
// "device/<id>" or "gateway/<id>"; the topic is compacted, so the latest
// entry of each key is the registry.
type registryEntry struct {
	Device  *deviceRecord  `json:"device,omitzero"`
	Gateway *gatewayRecord `json:"gateway,omitzero"`
}

// Registry is the durable device and gateway registry: a compacted Kafka
// topic, read whole at start and followed afterwards, so every process of a
// region sees every registration. Keys are stored only as SHA-256 hashes.
type Registry struct {
	topic string
	cl    *kgo.Client // writes registrations
	opts  []kgo.Opt
	log   *zap.Logger

	mu       sync.RWMutex
	devices  map[string]*deviceRecord
	gateways map[string]*gatewayRecord
	byKey    map[string]*Principal
	byID     map[string]*Principal // "device/<id>", "gateway/<id>": for client certificates
	regMu    sync.Mutex            // serialises registrations of this process

	ready     chan struct{}
	closeOnce sync.Once
}

// Close closes the registry's Kafka client; Run closes it when it returns,
// so Close is for a registry whose Run never started.
func (r *Registry) Close() { r.closeOnce.Do(r.cl.Close) }

// RegistryOptions are a registry's settings and dependencies.
type RegistryOptions struct {
	Topic      string    // the compacted registry topic (kafka.topics.devices)
	ClientOpts []kgo.Opt // the bus's client options
	Logger     *zap.Logger
}

// NewRegistry builds a registry over its topic. Run must be called to load
// and follow the topic; Close closes what NewRegistry opened if Run never
// runs.
func NewRegistry(o RegistryOptions) (*Registry, error) {
	topic, opts, log := o.Topic, o.ClientOpts, o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cl, err := kgo.NewClient(bus.With(opts, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))...)
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return &Registry{
		topic: topic, cl: cl, opts: bus.With(opts), log: log,
		devices: map[string]*deviceRecord{}, gateways: map[string]*gatewayRecord{}, byKey: map[string]*Principal{}, byID: map[string]*Principal{},
		ready: make(chan struct{}),
	}, nil
}

// Ready is closed once the registry has read the topic up to its end at start.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// Run loads the registry topic and follows it until ctx ends. It closes the
// client when it returns.
func (r *Registry) Run(ctx context.Context) error {
	defer r.Close()
	return bus.Follow(ctx, r.opts, bus.Span{Topic: r.topic}, func() {
		close(r.ready)
		r.log.Info("device registry loaded", zap.Int("devices", r.Len()))
	}, r.apply)
}

func (r *Registry) apply(rec *kgo.Record) {
	var e registryEntry
	if rec.Value == nil {
		return
	}
	if err := json.Unmarshal(rec.Value, &e); err != nil {
		r.log.Warn("registry: skipping a record that is not a registry entry", zap.String("key", string(rec.Key)), zap.Int64("offset", rec.Offset), zap.Error(err))
		return
	}
	r.put(e)
}

func (r *Registry) put(e registryEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case e.Device != nil:
		if old, ok := r.devices[e.Device.DeviceID]; ok {
			delete(r.byKey, old.KeyHash)
		}
		r.devices[e.Device.DeviceID] = e.Device
		p := &Principal{Device: &e.Device.Device, keyHash: e.Device.KeyHash}
		r.byKey[e.Device.KeyHash] = p
		r.byID["device/"+e.Device.DeviceID] = p
	case e.Gateway != nil:
		if old, ok := r.gateways[e.Gateway.GatewayID]; ok {
			delete(r.byKey, old.KeyHash)
		}
		set := make(map[string]struct{}, len(e.Gateway.Devices))
		for _, d := range e.Gateway.Devices {
			set[d] = struct{}{}
		}
		r.gateways[e.Gateway.GatewayID] = e.Gateway
		p := &Principal{Gateway: &e.Gateway.Gateway, devices: set, keyHash: e.Gateway.KeyHash}
		r.byKey[e.Gateway.KeyHash] = p
		r.byID["gateway/"+e.Gateway.GatewayID] = p
	}
}

// Len is the number of registered devices.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.devices)
}

// Devices returns every registered device (a copy), in no order.
func (r *Registry) Devices() []contract.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]contract.Device, 0, len(r.devices))
	for _, d := range r.devices {
		out = append(out, d.Device)
	}
	return out
}

// Device returns a registered device.
func (r *Registry) Device(id string) (*contract.Device, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.devices[id]
	if !ok {
		return nil, false
	}
	return &d.Device, true
}

// Principal returns the principal of a registered device, or nil: a
// transport that authenticated the sender itself (an MQTT bridge) posts
// as the device.
func (r *Registry) Principal(deviceID string) *Principal {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byID["device/"+deviceID]
}

// AuthenticateCert returns the principal a verified client certificate
// names, or nil: a URI SAN urn:vigil:device:<id> or urn:vigil:gateway:<id>,
// else the subject's CN as a device id, then as a gateway id.
func (r *Registry) AuthenticateCert(cert *x509.Certificate) *Principal {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, u := range cert.URIs {
		if u.Scheme != "urn" {
			continue
		}
		if id, ok := strings.CutPrefix(u.Opaque, "vigil:device:"); ok {
			return r.byID["device/"+id]
		}
		if id, ok := strings.CutPrefix(u.Opaque, "vigil:gateway:"); ok {
			return r.byID["gateway/"+id]
		}
	}
	if cn := cert.Subject.CommonName; cn != "" {
		if p := r.byID["device/"+cn]; p != nil {
			return p
		}
		return r.byID["gateway/"+cn]
	}
	return nil
}

// Authenticate returns the principal of a key, or nil.
func (r *Registry) Authenticate(key string) *Principal {
	h := hashKey(key)
	r.mu.RLock()
	p := r.byKey[h]
	r.mu.RUnlock()
	if p == nil {
		return nil
	}
	// The map lookup already matched; compare again in constant time so the
	// answer's timing says nothing about near-misses.
	want := p.keyHash
	if subtle.ConstantTimeCompare([]byte(want), []byte(h)) != 1 {
		return nil
	}
	return p
}

// RegisterDevice stores a new device and returns its key, which is shown
// only here: the registry keeps its hash. It fails with ErrExists for an id
// already registered, and with the produce error when Kafka does not
// acknowledge the entry.
func (r *Registry) RegisterDevice(ctx context.Context, dev contract.Device) (string, error) {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if _, ok := r.Device(dev.DeviceID); ok {
		return "", fmt.Errorf("device %s: %w", dev.DeviceID, ErrExists)
	}
	key := newKey()
	d := deviceRecord{Device: dev, KeyHash: hashKey(key)}
	d.CreatedAt = time.Now().UTC()
	e := registryEntry{Device: &d}
	if err := r.write(ctx, "device/"+d.DeviceID, e); err != nil {
		return "", err
	}
	r.put(e)
	return key, nil
}

// RegisterGateway stores a new gateway and returns its key (shown once).
func (r *Registry) RegisterGateway(ctx context.Context, gw contract.Gateway) (string, error) {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	r.mu.RLock()
	_, exists := r.gateways[gw.GatewayID]
	r.mu.RUnlock()
	if exists {
		return "", fmt.Errorf("gateway %s: %w", gw.GatewayID, ErrExists)
	}
	key := newKey()
	g := gatewayRecord{Gateway: gw, KeyHash: hashKey(key)}
	g.CreatedAt = time.Now().UTC()
	e := registryEntry{Gateway: &g}
	if err := r.write(ctx, "gateway/"+g.GatewayID, e); err != nil {
		return "", err
	}
	r.put(e)
	return key, nil
}

func (r *Registry) write(ctx context.Context, key string, e registryEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.cl.ProduceSync(ctx, &kgo.Record{Topic: r.topic, Key: []byte(key), Value: v}).FirstErr(); err != nil {
		return fmt.Errorf("write %s to registry topic %s: %w", key, r.topic, err)
	}
	return nil
}

func newKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "vgl_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// hashKey is SHA-256: keys are 256 random bits, so a slow password hash
// would add nothing but latency to every request.
func hashKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}
