package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vigil/vigil/ingest"
	"github.com/vigil/vigil/internal/tlsx"
	"github.com/vigil/vigil/mqtt"
	"github.com/vigil/vigil/web"
)

// mqttParts are the MQTT listener and bridge of a region, either nil when
// not configured.
type mqttParts struct {
	listener *mqtt.Listener
	bridge   *mqtt.Bridge
}

func newMQTT(cfg Config, ing *ingest.Handler, reg prometheus.Registerer, log *zap.Logger) (*mqttParts, error) {
	p := &mqttParts{}
	if cfg.MQTT.Addr == "" && cfg.MQTT.Bridge.URL == "" {
		return p, nil
	}
	m, err := mqtt.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.MQTT.Addr != "" {
		var tc *tls.Config
		if cfg.HTTP.TLS() {
			if tc, err = tlsx.ServerConfig(cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile, cfg.HTTP.ClientCAFile); err != nil {
				return nil, fmt.Errorf("mqtt listener: http.%w", err)
			}
		}
		if p.listener, err = mqtt.NewListener(cfg.MQTT, mqtt.ListenerOptions{Ingest: ing, TLSConfig: tc, Metrics: m, Logger: log.Named("mqtt")}); err != nil {
			return nil, err
		}
	}
	if cfg.MQTT.Bridge.URL != "" {
		host, _ := os.Hostname()
		abs, _ := filepath.Abs(cfg.Data.Dir)
		if p.bridge, err = mqtt.NewBridge(cfg.MQTT.Bridge, mqtt.BridgeOptions{Ingest: ing, ClientID: "vigil-" + cfg.Region + "-" + host + "-" + shortHash(abs),
			Metrics: m, Logger: log.Named("mqtt-bridge")}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// close releases a listener that was bound but never run.
func (p *mqttParts) close() {
	if p.listener != nil {
		_ = p.listener.Close()
	}
}

func (p *mqttParts) status() web.MQTTStatus {
	var st web.MQTTStatus
	if p.listener != nil {
		st.ListenerAddr, st.Clients = p.listener.Addr(), p.listener.Clients()
	}
	if p.bridge != nil {
		bs := p.bridge.Status()
		st.Bridge = &bs
	}
	return st
}
