package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/go-json-experiment/json"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vigil/vigil/internal/testutil"
)

// mqttPub runs Debian's mosquitto_pub and returns its combined output.
func mqttPub(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Fatal("mosquitto_pub is needed (apt-get install mosquitto-clients; the README's test command installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// mqtt5 connects a paho MQTT 5 client, which reads PUBACK reason codes.
func mqtt5(t *testing.T, addr, clientID, user, key string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: clientID})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{KeepAlive: 30, ClientID: clientID, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(key), PasswordFlag: true})
	if err != nil {
		t.Fatalf("MQTT 5 connect as %s: %v (%+v)", user, err, ca)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func publish5(c *paho.Client, topic, payload string) (byte, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if pr == nil {
		return 0, "", err
	}
	reason := ""
	if pr.Properties != nil {
		reason = pr.Properties.ReasonString
	}
	return pr.ReasonCode, reason, nil
}

// enrichedCounts counts the records of vigil.enriched by reading id and by device.
type enrichedCounts struct{ IDs, Devices map[string]int }

// readingIDs reads the enriched topic from the start until until holds and
// it has been quiet for two polls (or timeout), counting reading ids and
// devices.
func readingIDs(t *testing.T, seeds string, until func(enrichedCounts) bool, timeout time.Duration) enrichedCounts {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds), kgo.ConsumeTopics("vigil.enriched"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	count := enrichedCounts{IDs: map[string]int{}, Devices: map[string]int{}}
	deadline := time.Now().Add(timeout)
	quiet := 0
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var e struct {
				ID       string `json:"id"`
				DeviceID string `json:"device_id"`
			}
			if err := json.Unmarshal(r.Value, &e, json.RejectUnknownMembers(false)); err != nil {
				t.Errorf("enriched record at %d/%d is not JSON: %v", r.Partition, r.Offset, err)
				return
			}
			count.IDs[e.ID]++
			count.Devices[e.DeviceID]++
		})
		if fs.NumRecords() == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if until(count) && quiet >= 2 {
			break
		}
	}
	return count
}

// allIn reports whether every id of want was counted.
func allIn(want map[string]bool, count map[string]int) bool {
	for id := range want {
		if count[id] == 0 {
			return false
		}
	}
	return true
}

func reading(dev, id string, ts time.Time, v float64) string {
	idf := ""
	if id != "" {
		idf = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{"device_id":%q,%s"ts":%q,"metrics":{"v":%g}}`, dev, idf, ts.UTC().Format(time.RFC3339Nano), v)
}

// TestMQTTIngest drives the embedded listener with Debian's mosquitto_pub
// and mosquitto_sub (MQTT 3.1.1 and 5) and a paho MQTT 5 client: QoS 1
// readings reach vigil.enriched; a bad payload gets its reason code and
// string (5) or lands in the DLQ with the reason and on vigil/errors (3.1.1);
// one device cannot publish for another; a gateway publishes for its
// prefix; a redelivered message is stored once.
func TestMQTTIngest(t *testing.T) {
	mqttAddr := freeAddr(t)
	s := newServer(t, t.TempDir(), "VIGIL_MQTT_ADDR="+mqttAddr, "VIGIL_INGEST_RATE_PER_KEY=1", "VIGIL_INGEST_BURST_PER_KEY=20", "VIGIL_INGEST_MAX_READINGS=20")
	s.startInProcess()
	defer s.stop()
	host, port, _ := net.SplitHostPort(mqttAddr)
	k1, k2 := s.registerDevice("m-1", nil), s.registerDevice("m-2", nil)
	gw := registerGateway(t, s, "gw-m", "gwdev-")
	ts := time.Now().Add(-time.Minute)

	// QoS 1 from mosquitto_pub, both protocol versions, one object and NDJSON
	for i, v := range []string{"mqttv311", "mqttv5"} {
		payload := reading("m-1", fmt.Sprintf("pub-%d", i), ts.Add(time.Duration(i)*time.Second), 1) + "\n" + reading("m-1", fmt.Sprintf("pub-%d-b", i), ts.Add(time.Duration(i)*time.Second+time.Millisecond), 2)
		out, err := mqttPub(t, "-V", v, "-h", host, "-p", port, "-u", "m-1", "-P", k1, "-q", "1", "-t", "vigil/ingest/m-1", "-m", payload, "-d")
		if err != nil || !strings.Contains(out, "received PUBACK") {
			t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
		}
	}
	// a wrong key is refused at CONNECT
	if out, err := mqttPub(t, "-h", host, "-p", port, "-u", "m-1", "-P", "vgl_wrong", "-q", "1", "-t", "vigil/ingest/m-1", "-m", "{}"); err == nil || !strings.Contains(out, "not authorised") {
		t.Fatalf("a wrong key was not refused: %v %s", err, out)
	}

	// MQTT 5: the PUBACK carries the refusal
	c1 := mqtt5(t, mqttAddr, "m-1-paho", "m-1", k1)
	code, reason, err := publish5(c1, "vigil/ingest/m-1", `{"device_id":"m-1","ts":"yesterday","metrics":{"v":1}}`)
	if err != nil || code != 0x99 || !strings.Contains(reason, "ts") || !strings.Contains(reason, "RFC 3339") {
		t.Fatalf("bad payload over MQTT 5: code %#x reason %q err %v; want 0x99 naming ts", code, reason, err)
	}
	// one device cannot publish for another, by topic or by payload
	if code, reason, _ := publish5(c1, "vigil/ingest/m-2", reading("m-2", "stolen-1", ts, 1)); code != 0x87 || !strings.Contains(reason, "m-2") {
		t.Fatalf("m-1 publishing on m-2's topic: code %#x reason %q; want 0x87", code, reason)
	}
	if code, reason, _ := publish5(c1, "vigil/ingest/m-1", reading("m-2", "stolen-2", ts, 1)); code != 0x87 || !strings.Contains(reason, "m-2") {
		t.Fatalf("m-1 publishing m-2's reading on its own topic: code %#x reason %q; want 0x87", code, reason)
	}
	// a message sent twice (a QoS 1 redelivery) is stored once: same bytes, same id
	dup := reading("m-1", "", ts.Add(10*time.Second), 3)
	for i := 0; i < 2; i++ {
		if code, reason, err := publish5(c1, "vigil/ingest/m-1", dup); err != nil || code != 0 {
			t.Fatalf("publish %d of the duplicate: %#x %q %v", i, code, reason, err)
		}
	}
	// the per-key limits of HTTP apply: m-1 has used 6 of its 20 (refilling at 1/s), so 20 more are refused with 0x97
	var burst []string
	for i := 0; i < 20; i++ {
		burst = append(burst, reading("m-1", fmt.Sprintf("over-%d", i), ts.Add(time.Duration(20+i)*time.Second), 1))
	}
	if code, reason, _ := publish5(c1, "vigil/ingest/m-1", strings.Join(burst, "\n")); code != 0x97 || !strings.Contains(reason, "rate") {
		t.Fatalf("a burst over the key's bucket: code %#x reason %q, want 0x97 naming the rate", code, reason)
	}
	// a gateway publishes for its prefix, not beyond
	cg := mqtt5(t, mqttAddr, "gw-paho", "gw-m", gw)
	if code, reason, err := publish5(cg, "vigil/ingest/gwdev-1", reading("gwdev-1", "gw-1", ts, 4)); err != nil || code != 0 {
		t.Fatalf("gateway for its prefix: %#x %q %v", code, reason, err)
	}
	if code, _, _ := publish5(cg, "vigil/ingest/m-2", reading("m-2", "gw-stolen", ts, 4)); code != 0x87 {
		t.Fatalf("gateway beyond its prefix: code %#x, want 0x87", code)
	}

	// MQTT 3.1.1: the refusal goes to the DLQ with its reason, and to vigil/errors/<device>
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Fatal("mosquitto_sub is needed (apt-get install mosquitto-clients)")
	}
	subCtx, subCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer subCancel()
	var subOut bytes.Buffer
	subCmd := exec.CommandContext(subCtx, sub, "-V", "mqttv311", "-h", host, "-p", port, "-u", "m-2", "-P", k2, "-t", "vigil/errors/m-2", "-C", "1", "-q", "1")
	subCmd.Stdout, subCmd.Stderr = &subOut, &subOut
	if err := subCmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "mosquitto_sub connected", func() bool {
		var st struct {
			MQTT struct {
				Clients int `json:"clients"`
			} `json:"mqtt"`
		}
		_, b, _ := s.do("GET", "/api/v1/delivery", s.token, "", nil)
		return json.Unmarshal(b, &st, json.RejectUnknownMembers(false)) == nil && st.MQTT.Clients >= 3
	})
	// the SUBSCRIBE follows the CONNECT and nothing here tells when the
	// broker has it: publish the bad payload until the subscriber got one
	subDone := make(chan error, 1)
	go func() { subDone <- subCmd.Wait() }()
	var subErr error
	for got := false; !got; {
		if out, err := mqttPub(t, "-V", "mqttv311", "-h", host, "-p", port, "-u", "m-2", "-P", k2, "-q", "1", "-t", "vigil/ingest/m-2", "-m", `{"device_id":"m-2","ts":"later","metrics":{"v":1}}`, "-d"); err != nil || !strings.Contains(out, "received PUBACK") {
			t.Fatalf("3.1.1 bad payload: %v %s", err, out)
		}
		select {
		case subErr = <-subDone:
			got = true
		case <-time.After(500 * time.Millisecond):
		case <-subCtx.Done():
			t.Fatal("mosquitto_sub never received the refusal on vigil/errors/m-2")
		}
	}
	if subErr != nil || !strings.Contains(subOut.String(), `"status":400`) || !strings.Contains(subOut.String(), "later") {
		t.Fatalf("vigil/errors/m-2 did not carry the refusal: %v %q", subErr, subOut.String())
	}
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is needed")
	}
	var dlq []byte
	waitFor(t, 10*time.Second, "the refused 3.1.1 message in vigil.dlq with its reason", func() bool {
		dlq, _ = exec.Command(kcat, "-b", s.kafka, "-C", "-t", "vigil.dlq", "-o", "beginning", "-e", "-q", "-f", "%h %s\n").CombinedOutput()
		return strings.Contains(string(dlq), "RFC 3339") && strings.Contains(string(dlq), `"ts":"later"`) && strings.Contains(string(dlq), "source=mqtt:vigil/ingest/m-2")
	})

	got := readingIDs(t, s.kafka, func(c enrichedCounts) bool { return c.IDs["gw-1"] > 0 && c.Devices["m-1"] >= 5 }, 30*time.Second)
	ids := got.IDs
	for _, id := range []string{"pub-0", "pub-0-b", "pub-1", "pub-1-b", "gw-1"} {
		if ids[id] != 1 {
			t.Errorf("reading %s is in vigil.enriched %d times, want once", id, ids[id])
		}
	}
	for _, id := range []string{"stolen-1", "stolen-2", "gw-stolen", "over-0"} {
		if ids[id] != 0 {
			t.Errorf("refused reading %s is in vigil.enriched", id)
		}
	}
	if got.Devices["m-1"] != 5 || got.Devices["m-2"] != 0 {
		t.Errorf("vigil.enriched holds %d readings of m-1 (want 5: four, and the duplicate once) and %d of m-2 (want 0)", got.Devices["m-1"], got.Devices["m-2"])
	}
	if got := s.metric(`vigil_mqtt_messages_total{path="listener",result="accepted"}`); got != 5 {
		t.Errorf("vigil_mqtt_messages_total accepted = %v, want 5 (two mosquitto_pub, the duplicate twice, the gateway)", got)
	}
}

// mosquitto starts Debian's mosquitto on a loopback port with a config of
// its own, and stops it at the end of the test.
type mosquittoServer struct {
	t    *testing.T
	addr string
	conf string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func startMosquitto(t *testing.T, addr string) *mosquittoServer {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
			t.Fatal("mosquitto is needed (apt-get install mosquitto; the README's test command installs it)")
		}
	}
	if addr == "" {
		addr = freeAddr(t)
	}
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 100000\n", port, host, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquittoServer{t: t, addr: addr, conf: conf}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquittoServer) start() {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	m.logs = &syncBuffer{}
	m.cmd = exec.Command(bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	waitFor(m.t, 10*time.Second, "mosquitto listening on "+m.addr, func() bool {
		c, err := net.Dial("tcp", m.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (m *mosquittoServer) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

// TestMQTTBridge: two Vigil regions bridge from one real Mosquitto with an
// MQTT 5 shared subscription: every message is stored once, by one of
// them, and both take a share. A broker outage shows in /readyz and on the
// status API, and the bridge reconnects by itself.
func TestMQTTBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("bridge test skipped in -short mode")
	}
	mq := startMosquitto(t, "")
	host, port, _ := net.SplitHostPort(mq.addr)
	env := []string{"VIGIL_MQTT_BRIDGE_URL=mqtt://" + mq.addr, "VIGIL_MQTT_BRIDGE_TOPIC=fleet/{device_id}/up", "VIGIL_MQTT_BRIDGE_BACKOFF_MAX=1s"}
	a := newServer(t, t.TempDir(), append(env, "VIGIL_REGION=eu")...)
	b := newServer(t, t.TempDir(), append(env, "VIGIL_REGION=us")...)
	a.startProcess() // two Vigil processes, each its own region and Kafka
	defer a.stop()
	b.startProcess()
	defer b.stop()
	const devices, per = 4, 50
	for _, s := range []*server{a, b} {
		for d := 0; d < devices; d++ {
			s.registerDevice(fmt.Sprintf("br-%d", d), nil)
		}
	}
	ts := time.Now().Add(-time.Hour)
	for d := 0; d < devices; d++ {
		var lines []string
		for i := 0; i < per; i++ {
			lines = append(lines, reading(fmt.Sprintf("br-%d", d), fmt.Sprintf("br-%d-%d", d, i), ts.Add(time.Duration(i)*time.Second), float64(i%7)))
		}
		// one message per line, QoS 1, from Debian's client
		cmd := exec.Command("mosquitto_pub", "-V", "mqttv5", "-h", host, "-p", port, "-q", "1", "-t", fmt.Sprintf("fleet/br-%d/up", d), "-l")
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub -l: %v %s", err, out)
		}
	}
	// an unregistered device's message goes to the DLQ, not to the readings
	if out, err := mqttPub(t, "-V", "mqttv5", "-h", host, "-p", port, "-q", "1", "-t", "fleet/stranger/up", "-m", reading("stranger", "s-1", ts, 1)); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	total := devices * per
	var ia, ib map[string]int
	waitFor(t, 60*time.Second, "every bridged reading enriched in one of the two regions", func() bool {
		got := a.metric("vigil_pipeline_readings_total") + b.metric("vigil_pipeline_readings_total")
		return got >= float64(total)
	})
	ia = readingIDs(t, a.kafka, func(enrichedCounts) bool { return true }, 10*time.Second).IDs
	ib = readingIDs(t, b.kafka, func(enrichedCounts) bool { return true }, 10*time.Second).IDs
	shareA, shareB := 0, 0
	for d := 0; d < devices; d++ {
		for i := 0; i < per; i++ {
			id := fmt.Sprintf("br-%d-%d", d, i)
			if n := ia[id] + ib[id]; n != 1 {
				t.Errorf("reading %s stored %d times across the two regions, want once", id, n)
			}
			if ia[id] > 0 {
				shareA++
			} else if ib[id] > 0 {
				shareB++
			}
		}
	}
	t.Logf("shared subscription: region eu stored %d, us %d of %d", shareA, shareB, total)
	if shareA == 0 || shareB == 0 {
		t.Errorf("one region took every message (eu %d, us %d): the subscription is not shared", shareA, shareB)
	}
	if ia["s-1"]+ib["s-1"] != 0 {
		t.Error("a reading of an unregistered device was stored")
	}

	// the broker goes away: /readyz says so, the page's API too; it comes back: ready again
	mq.stop()
	waitFor(t, 15*time.Second, "/readyz failing on the bridge", func() bool {
		code, body, _ := a.do("GET", "/readyz", "", "", nil)
		return code == http.StatusServiceUnavailable && strings.Contains(string(body), "mqtt-bridge")
	})
	_, body, _ := a.do("GET", "/api/v1/delivery", a.token, "", nil)
	if !strings.Contains(string(body), `"connected":false`) || !strings.Contains(string(body), `"failed_attempts"`) {
		t.Errorf("the delivery API does not show the lost bridge: %s", body)
	}
	mq.start()
	waitFor(t, 20*time.Second, "the bridge reconnected (/readyz 200)", func() bool {
		code, _, _ := a.do("GET", "/readyz", "", "", nil)
		return code == http.StatusOK
	})
}

// TestMQTTKillNine: ten MQTT clients publish QoS 1 readings while the
// server is killed with SIGKILL (three times, then stopped with SIGTERM);
// every PUBACKed reading is in vigil.enriched exactly once.
func TestMQTTKillNine(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test skipped in -short mode")
	}
	mqttAddr := freeAddr(t)
	s := newServer(t, t.TempDir(), "VIGIL_MQTT_ADDR="+mqttAddr, "VIGIL_PIPELINE_SNAPSHOT_INTERVAL=1s")
	s.startProcess()
	gw := registerGateway(t, s, "gw-k", "k-")
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		seq   atomic.Int64
	)
	const rounds = 4
	for round := 0; round < rounds; round++ {
		if round > 0 {
			s.startProcess()
		}
		before := s.metric(`vigil_mqtt_messages_total{path="listener",result="accepted"}`)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 10; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					conn, err := net.Dial("tcp", mqttAddr)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					id := fmt.Sprintf("kc-%d-%d", w, seq.Add(1))
					c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err = c.Connect(ctx, &paho.Connect{KeepAlive: 30, ClientID: id, CleanStart: true, Username: "gw-k", UsernameFlag: true, Password: []byte(gw), PasswordFlag: true})
					cancel()
					if err != nil {
						conn.Close()
						time.Sleep(50 * time.Millisecond)
						continue
					}
					for {
						select {
						case <-stop:
							_ = c.Disconnect(&paho.Disconnect{})
							return
						default:
						}
						n := seq.Add(1)
						rid := fmt.Sprintf("q%d", n)
						dev := fmt.Sprintf("k-%d", n%20)
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						pr, err := c.Publish(ctx, &paho.Publish{Topic: "vigil/ingest/" + dev, QoS: 1, Payload: []byte(reading(dev, rid, time.Now().Add(-time.Hour).Add(time.Duration(n)*time.Millisecond), float64(n%97)))})
						cancel()
						if err != nil {
							_ = c.Disconnect(&paho.Disconnect{})
							break // the server went away: reconnect
						}
						if pr != nil && pr.ReasonCode < 0x80 {
							mu.Lock()
							acked[rid] = true
							mu.Unlock()
						}
					}
				}
			}()
		}
		waitFor(t, 20*time.Second, "the clients publishing this round", func() bool {
			return s.metric(`vigil_mqtt_messages_total{path="listener",result="accepted"}`) > before+300
		})
		if round < rounds-1 {
			s.kill()
		} else {
			s.stop()
		}
		close(stop)
		wg.Wait()
	}
	s.startProcess()
	defer s.stop()
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	count := readingIDs(t, s.kafka, func(c enrichedCounts) bool { return allIn(acked, c.IDs) }, 90*time.Second).IDs
	lost, dup := 0, 0
	for id := range acked {
		if count[id] == 0 {
			lost++
		}
	}
	for _, n := range count {
		if n > 1 {
			dup++
		}
	}
	t.Logf("%d stops (SIGKILL, then SIGTERM); %d readings PUBACKed by MQTT, %d lost, %d duplicated", rounds, want, lost, dup)
	if want < 1000 {
		t.Fatalf("only %d readings acknowledged; the test did not load the server", want)
	}
	if lost > 0 || dup > 0 {
		t.Fatalf("lost %d PUBACKed readings, %d duplicated", lost, dup)
	}
}

// TestSimulateOverMQTT: `vigil simulate --mqtt` drives a fleet through the
// MQTT listener: its readings are acknowledged over MQTT and scored.
func TestSimulateOverMQTT(t *testing.T) {
	mqttAddr := freeAddr(t)
	s := newServer(t, t.TempDir(), "VIGIL_MQTT_ADDR="+mqttAddr)
	s.startInProcess()
	defer s.stop()
	var out syncBuffer
	err := run(context.Background(), []string{"simulate", "--url", s.httpURL, "--token", s.token, "--mqtt", mqttAddr, "--duration", "4s"},
		[]string{"VIGIL_SIMULATE_DEVICES=20", "VIGIL_SIMULATE_RATE=5"}, &out, &out)
	if err != nil {
		t.Fatalf("vigil simulate --mqtt: %v\n%s", err, out.String())
	}
	msgs := s.metric(`vigil_mqtt_messages_total{path="listener",result="accepted"}`)
	readings := s.metric("vigil_ingest_readings_total")
	t.Logf("4 s of 20 devices at 5 readings/s over MQTT: %v messages, %v readings acknowledged", msgs, readings)
	if msgs < 20*4 || readings < 20*5*3 {
		t.Fatalf("only %v MQTT messages and %v readings acknowledged; want at least 80 and 300\n%s", msgs, readings, out.String())
	}
	waitFor(t, 10*time.Second, "the readings scored", func() bool { return s.metric("vigil_pipeline_readings_total") >= readings })
	if !strings.Contains(out.String(), "posted") && !strings.Contains(out.String(), "readings") {
		t.Errorf("no fleet report printed:\n%s", out.String())
	}
}

// TestMQTTOverTLS: with http.tls_* the MQTT listener speaks TLS with the
// same certificate; with http.client_ca_file a device connects by its
// client certificate alone and still cannot publish for another device;
// mosquitto_pub with a key over TLS works too.
func TestMQTTOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "vigil test CA")
	srvCert, srvKey := ca.Issue(t, "127.0.0.1", 100, true)
	certFile, keyFile, caFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem")
	writeFile(t, certFile, srvCert)
	writeFile(t, keyFile, srvKey)
	writeFile(t, caFile, ca.PEM)
	mqttAddr := freeAddr(t)
	s := newServer(t, filepath.Join(dir, "data"), "VIGIL_MQTT_ADDR="+mqttAddr,
		"VIGIL_HTTP_TLS_CERT_FILE="+certFile, "VIGIL_HTTP_TLS_KEY_FILE="+keyFile, "VIGIL_HTTP_CLIENT_CA_FILE="+caFile)
	s.httpURL = strings.Replace(s.httpURL, "http://", "https://", 1)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	s.startInProcess()
	defer s.stop()
	key := s.registerDevice("tls-m-1", nil)
	s.registerDevice("tls-m-2", nil)

	certPEM, keyPEM := ca.Issue(t, "tls-m-1", 200, false)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", mqttAddr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the MQTT listener: %v", err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn), ClientID: "tls-m-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{KeepAlive: 30, ClientID: "tls-m-1", CleanStart: true}); err != nil {
		t.Fatalf("MQTT connect by client certificate alone: %v", err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	ts := time.Now().Add(-time.Minute)
	if code, reason, err := publish5(c, "vigil/ingest/tls-m-1", reading("tls-m-1", "cert-1", ts, 1)); err != nil || code != 0 {
		t.Fatalf("publish by certificate: %#x %q %v", code, reason, err)
	}
	if code, _, _ := publish5(c, "vigil/ingest/tls-m-2", reading("tls-m-2", "cert-2", ts, 1)); code != 0x87 {
		t.Fatalf("a certificate of tls-m-1 publishing for tls-m-2: %#x, want 0x87", code)
	}
	host, port, _ := net.SplitHostPort(mqttAddr)
	if out, err := mqttPub(t, "-h", host, "-p", port, "--cafile", caFile, "-u", "tls-m-1", "-P", key, "-q", "1", "-t", "vigil/ingest/tls-m-1", "-m", reading("tls-m-1", "key-1", ts.Add(time.Second), 2), "-d"); err != nil || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("mosquitto_pub over TLS with a key: %v %s", err, out)
	}
	if out, err := mqttPub(t, "-h", host, "-p", port, "-u", "tls-m-1", "-P", key, "-q", "1", "-t", "vigil/ingest/tls-m-1", "-m", "{}"); err == nil {
		t.Fatalf("plain MQTT to the TLS listener was taken: %s", out)
	}
	ids := readingIDs(t, s.kafka, func(c enrichedCounts) bool { return c.IDs["cert-1"] > 0 && c.IDs["key-1"] > 0 }, 20*time.Second).IDs
	if ids["cert-1"] != 1 || ids["key-1"] != 1 || ids["cert-2"] != 0 {
		t.Fatalf("enriched: cert-1 %d, key-1 %d, cert-2 %d; want 1, 1, 0", ids["cert-1"], ids["key-1"], ids["cert-2"])
	}
}
