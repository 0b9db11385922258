package simulate

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-json-experiment/json"
	"go.uber.org/zap"
)

// mqttSender publishes a fleet's readings to Vigil's MQTT listener as the
// fleet's gateway: one QoS 1 message per device and tick, NDJSON.
type mqttSender struct {
	f               *Fleet
	addr, user, key string
	mu              sync.Mutex
	c               *paho.Client
}

func (m *mqttSender) client(ctx context.Context) (*paho.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c != nil {
		return m.c, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%s-%d", m.user, time.Now().UnixNano())
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{KeepAlive: 30, ClientID: id, CleanStart: true,
		Username: m.user, UsernameFlag: true, Password: []byte(m.key), PasswordFlag: true}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("MQTT connect to %s: %w", m.addr, err)
	}
	m.c = c
	return c, nil
}

func (m *mqttSender) drop(c *paho.Client) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == c {
		_ = c.Disconnect(&paho.Disconnect{})
		m.c = nil
	}
}

func (m *mqttSender) close() {
	m.mu.Lock()
	c := m.c
	m.mu.Unlock()
	if c != nil {
		m.drop(c)
	}
}

// send publishes the batch, devices in parallel (eight in flight), and
// retries a message the server did not acknowledge.
func (m *mqttSender) send(ctx context.Context, batch []map[string]any) {
	byDev := map[string][]byte{}
	counts := map[string]int{}
	var order []string
	for _, r := range batch {
		id, _ := r["device_id"].(string)
		b, _ := json.Marshal(r)
		if _, ok := byDev[id]; !ok {
			order = append(order, id)
		}
		byDev[id] = append(append(byDev[id], b...), '\n')
		counts[id]++
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.publish(ctx, id, byDev[id], counts[id])
		}()
	}
	wg.Wait()
}

func (m *mqttSender) publish(ctx context.Context, dev string, payload []byte, n int) {
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		c, err := m.client(ctx)
		if err != nil {
			m.f.count(0, 0, 1)
			m.f.log.Warn("simulated fleet: MQTT not connected; retrying", zap.Error(err))
			time.Sleep(500 * time.Millisecond)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		pr, err := c.Publish(pctx, &paho.Publish{Topic: "vigil/ingest/" + dev, QoS: 1, Payload: payload})
		cancel()
		switch {
		case pr != nil && pr.ReasonCode == 0x97 || pr != nil && pr.ReasonCode == 0x80: // quota, server trouble: retry
			m.f.count(0, 0, 1)
			time.Sleep(500 * time.Millisecond)
		case pr != nil && pr.ReasonCode >= 0x80:
			reason := ""
			if pr.Properties != nil {
				reason = pr.Properties.ReasonString
			}
			m.f.count(0, n, 0)
			m.f.log.Error("MQTT listener refused a simulated message", zap.String("device", dev), zap.Uint8("reason_code", pr.ReasonCode), zap.String("reason", reason))
			return
		case err != nil:
			m.f.count(0, 0, 1)
			m.drop(c)
		default:
			m.f.count(n, 0, 0)
			return
		}
	}
}
