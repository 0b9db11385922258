package pipeline

import (
	"github.com/vigil/vigil/contract"

	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/vigil/vigil/eval"
)

// skabCounts runs every SKAB file through a Processor with cfg, one device
// per file, and scores it as `vigil eval` does (rows after the first 400;
// a reading is flagged when it belongs to an incident). It is the fast
// loop for detector work; `vigil eval` measures the same thing through
// the real ingest API and Kafka.
func skabCounts(t testing.TB, cfg Config, perFile func(name string, c eval.Counts, reasons map[string]int)) eval.Counts {
	dir := filepath.Join("..", "..", "shared", "data", "skab")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("SKAB not at %s", dir)
	}
	series, err := eval.LoadSKAB(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tot eval.Counts
	for _, s := range series {
		var c eval.Counts
		reasons := map[string]int{}
		replaySeries(t, cfg, s, func(off *Offline, i int, row eval.Row, buf []byte, _ *StepResult) {
			if i < 400 {
				return
			}
			var e struct {
				Incident string `json:"incident"`
			}
			if err := json.Unmarshal(buf, &e, json.RejectUnknownMembers(false)); err != nil {
				t.Fatal(err)
			}
			flagged := e.Incident != ""
			if flagged && !row.Anomaly && len(off.pr.reasons) > 0 {
				reasons[off.pr.reasons[0].Feature]++
			}
			c.Add(eval.Point{Truth: row.Anomaly, Flagged: flagged})
		})
		if perFile != nil {
			perFile(s.Name, c, reasons)
		}
		tot.Merge(c)
	}
	return tot
}

func skabCfg() Config {
	c := Default()
	if v := os.Getenv("NAB_BUDGET"); v != "" {
		fmt.Sscan(v, &c.AlertBudget)
	}
	if v := os.Getenv("NAB_QUIETN"); v != "" {
		fmt.Sscan(v, &c.IncidentQuietReadings)
	}
	return c
}

func TestSKABDebug(t *testing.T) {
	if os.Getenv("SKAB_DEBUG") == "" {
		t.Skip("set SKAB_DEBUG=1")
	}
	cfgX := skabCfg()

	tot := skabCounts(t, cfgX, func(name string, c eval.Counts, reasons map[string]int) {
		type kv struct {
			k string
			v int
		}
		var top []kv
		for k, v := range reasons {
			top = append(top, kv{k, v})
		}
		sort.Slice(top, func(i, j int) bool { return top[i].v > top[j].v })
		if len(top) > 3 {
			top = top[:3]
		}
		t.Logf("%-18s F1 %.3f FAR %5.1f MAR %5.1f  false-alarm reasons %v", name, c.F1(), 100*c.FAR(), 100*c.MAR(), top)
	})
	t.Logf("TOTAL F1 %.3f FAR %.2f%% MAR %.2f%%", tot.F1(), 100*tot.FAR(), 100*tot.MAR())
}

// TestSKABSensitivity shows how the SKAB figures move around the defaults
// (set SKAB_DEBUG=1): a plateau, not a knife edge, is what defaults need.
func TestSKABSensitivity(t *testing.T) {
	if os.Getenv("SKAB_DEBUG") == "" {
		t.Skip("set SKAB_DEBUG=1")
	}

	for _, v := range []struct {
		name string
		set  func(c *Config)
	}{
		{"defaults", func(*Config) {}},
		{"mv_threshold 2.5", func(c *Config) { c.MVThreshold = 2.5 }},
		{"mv_threshold 2.9", func(c *Config) { c.MVThreshold = 2.9 }},
		{"mv_smooth 8", func(c *Config) { c.MVSmooth = 8 }},
		{"mv_smooth 12", func(c *Config) { c.MVSmooth = 12 }},
		{"mv_spike 6", func(c *Config) { c.MVSpike = 6 }},
		{"mv_spike 10", func(c *Config) { c.MVSpike = 10 }},
		{"mv_warmup 300", func(c *Config) { c.MVWarmup = 300 }},
		{"mv_warmup 0 (off)", func(c *Config) { c.MVWarmup = 0 }},
	} {
		c := skabCfg()
		v.set(&c)
		tot := skabCounts(t, c, nil)
		t.Logf("%-18s F1 %.3f FAR %5.2f%% MAR %5.2f%%", v.name, tot.F1(), 100*tot.FAR(), 100*tot.MAR())
	}
}

// replaySeries runs a labelled series through an offline Processor with
// cfg, one device per file (named after it), the file's timestamps as
// event time, and hands each reading's output to fn.
func replaySeries(t testing.TB, cfg Config, s eval.Series, fn func(off *Offline, i int, row eval.Row, buf []byte, res *StepResult)) {
	off := NewOffline(cfg, "eval", nil)
	dev := strings.TrimSuffix(strings.ReplaceAll(s.Name, "/", "-"), ".csv")
	for i, row := range s.Rows {
		r := contract.Reading{ID: fmt.Sprint(i), DeviceID: dev, TS: row.TS, IngestedAt: time.Now()}
		for _, m := range row.Metrics {
			r.Metrics = append(r.Metrics, contract.Metric{Name: m.Name, Value: m.Value})
		}
		buf, res := off.Step(&r)
		fn(off, i, row, buf, res)
	}
}
