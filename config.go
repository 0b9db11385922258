package main

import (
	"github.com/vigil/vigil/console"
	"github.com/vigil/vigil/contract"

	"bytes"
	_ "embed" // config.yaml holds the built-in defaults
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigil/vigil/bus"
	"github.com/vigil/vigil/ingest"
	"github.com/vigil/vigil/ml"
	"github.com/vigil/vigil/mqtt"
	"github.com/vigil/vigil/notify"
	"github.com/vigil/vigil/pipeline"
	"github.com/vigil/vigil/simulate"
	"github.com/vigil/vigil/storage"
	"github.com/vigil/vigil/web"
)

//go:embed config.yaml
var defaultConfig []byte

// Config is the shape of config.yaml: each section is its package's Config.
type Config struct {
	Region string `yaml:"region"`
	Data   struct {
		Dir string `yaml:"dir"`
	} `yaml:"data"`
	HTTP  web.Config `yaml:"http"`
	Admin struct {
		Token       string `yaml:"token"`
		ViewerToken string `yaml:"viewer_token"`
	} `yaml:"admin"`
	Kafka    bus.Config            `yaml:"kafka"`
	Storage  storage.Config        `yaml:"storage"`
	Archive  storage.ArchiveConfig `yaml:"archive"`
	Ingest   ingest.Config         `yaml:"ingest"`
	Pipeline pipeline.Config       `yaml:"pipeline"`
	Models   ml.Config             `yaml:"models"`
	Simulate simulate.Config       `yaml:"simulate"`
	Console  console.Config        `yaml:"console"`
	MQTT     mqtt.Config           `yaml:"mqtt"`
	Alerts   notify.Config         `yaml:"alerts"`
	Log      struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Shutdown struct {
		// Budget is how long a graceful stop may take, all phases together.
		Budget time.Duration `yaml:"budget"`
	} `yaml:"shutdown"`
	Memory struct {
		// Limit is the Go heap's soft limit: auto, off or a size (see
		// memoryLimit).
		Limit string `yaml:"limit"`
	} `yaml:"memory"`
}

// loadConfig starts from the built-in defaults, applies the file (when
// path is set) strictly, then the VIGIL_* environment, then validates.
// Every error names the key (or file line) at fault.
func loadConfig(path string, environ []string) (Config, error) {
	var c Config
	if err := decodeStrict(defaultConfig, &c); err != nil {
		return c, fmt.Errorf("built-in config.yaml: %w", err)
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if err := decodeStrict(b, &c); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func decodeStrict(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
		return err
	}
	return nil
}

// Validate checks every section; the error names the key.
func (c Config) Validate() error {
	if !contract.ValidName(c.Region) {
		return fmt.Errorf("region: %q must be 1-128 letters, digits or ._:-", c.Region)
	}
	if c.Data.Dir == "" {
		return errors.New("data.dir: must not be empty")
	}
	if _, _, err := memoryLimit(c.Memory.Limit, nil, nil); err != nil {
		return fmt.Errorf("memory.limit: %w", err)
	}
	if t := c.Admin.ViewerToken; t != "" && (len(t) < 32 || t == c.Admin.Token) {
		return fmt.Errorf("admin.viewer_token: must be at least 32 characters and differ from admin.token")
	}
	if t := c.Admin.Token; t != "" && len(t) < 32 {
		return fmt.Errorf("admin.token: must be at least 32 characters (it guards the whole admin API), got %d; leave it empty to have one made at each start", len(t))
	}
	sections := []struct {
		name string
		v    interface{ Validate() error }
	}{{"http", c.HTTP}, {"kafka", c.Kafka}, {"storage", c.Storage}, {"archive", c.Archive}, {"ingest", c.Ingest}, {"pipeline", c.Pipeline}, {"models", c.Models}, {"simulate", c.Simulate}, {"console", c.Console}, {"mqtt", c.MQTT}, {"alerts", c.Alerts}}
	for _, s := range sections {
		if err := s.v.Validate(); err != nil {
			return fmt.Errorf("%s.%w", s.name, err)
		}
	}
	if c.Shutdown.Budget < time.Second || c.Shutdown.Budget > time.Hour {
		return fmt.Errorf("shutdown.budget: must be between 1s and 1h, got %s", c.Shutdown.Budget)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		return fmt.Errorf("log.format: %q is not console or json", c.Log.Format)
	}
	return nil
}

// envKeys maps every VIGIL_* variable name to the config field it sets.
func envKeys(c *Config) map[string]envField {
	out := map[string]envField{}
	var walk func(v reflect.Value, path []string)
	walk = func(v reflect.Value, path []string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			p := append(append([]string{}, path...), tag)
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				walk(fv, p)
				continue
			}
			out["VIGIL_"+strings.ToUpper(strings.Join(p, "_"))] = envField{key: strings.Join(p, "."), v: fv}
		}
	}
	walk(reflect.ValueOf(c).Elem(), nil)
	return out
}

type envField struct {
	key string
	v   reflect.Value
}

func applyEnv(c *Config, environ []string) error {
	keys := envKeys(c)
	sections := map[string]bool{}
	for k := range keys {
		sections[strings.SplitN(strings.TrimPrefix(k, "VIGIL_"), "_", 2)[0]] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "VIGIL_") {
			continue
		}
		f, ok := keys[name]
		if !ok {
			// A typo under a known section is an error; other VIGIL_*
			// variables (VIGIL_MINIO_BIN of the test script, say) are not ours.
			if sections[strings.SplitN(strings.TrimPrefix(name, "VIGIL_"), "_", 2)[0]] {
				unknown = append(unknown, name)
			}
			continue
		}
		if err := setField(f.v, val); err != nil {
			return fmt.Errorf("%s (from %s): %w", f.key, name, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%s: not a config key (see config.yaml; e.g. VIGIL_HTTP_ADDR for http.addr)", strings.Join(unknown, ", "))
	}
	return nil
}

func setField(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 250ms, 5m)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("a list of settings has no environment form; set it in the config file")
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}
