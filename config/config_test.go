package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"gopkg.in/yaml.v3"
)

func load(t *testing.T, env map[string]string, args ...string) (*Config, error) {
	t.Helper()
	c, _, err := loadCommand(t, env, "serve", args...)
	return c, err
}

// loadCommand parses args for the subcommand command ("serve" or "check")
// of an application declared like the real one, and loads the result.
func loadCommand(t *testing.T, env map[string]string, command string, args ...string) (*Config, *Check, error) {
	t.Helper()
	for _, k := range []string{"REDIS_URL", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE", "DATABASE_URL", "DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE", "ENVIRONMENT", "DRAMATIQ_NAMESPACE", "DRAMATIQ_QUEUES", "DRAMATIQ_EXPORTER_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	app := kingpin.New("test", "")
	fl := AddFlags(app, []Collector{{Name: "broker", DefaultEnabled: true}, {Name: "database", DefaultEnabled: true}})
	app.Command("serve", "").Default()
	cf := fl.AddCheckFlags(app.Command("check", ""))
	if _, err := app.Parse(append([]string{command}, args...)); err != nil {
		return nil, nil, err
	}
	c, err := fl.Load()
	if err != nil || command != "check" {
		return c, nil, err
	}
	chk, err := cf.Load()
	return c, chk, err
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != DefaultRedisURL || c.Namespace != "dramatiq" || c.HeartbeatTimeout != time.Minute ||
		c.Environment != "development" || c.TelemetryPath != "/metrics" || c.DiscoveryInterval != 30*time.Second ||
		!c.Collectors["broker"] || c.DatabaseURL != "" ||
		strings.Join(c.ListenAddresses, ",") != DefaultListenAddress || c.WebConfigFile != "" || c.SystemdSocket ||
		c.LogLevel != "info" || c.LogFormat != "logfmt" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join("testdata", "good.yml")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want func(*Config) bool
	}{
		{"file over defaults", nil, []string{"--config.file", file}, func(c *Config) bool {
			return c.RedisURL == "redis://cache.internal:6380/2" && c.Namespace == "myapp" && c.HeartbeatTimeout == 2*time.Minute &&
				strings.Join(c.Queues, ",") == "default,emails.high" && c.MaxQueues == 50 && c.Environment == "staging" &&
				c.TelemetryPath == "/dramatiq/metrics"
		}},
		{"env over file", map[string]string{"REDIS_URL": "redis://env:1/0", "ENVIRONMENT": "prod"}, []string{"--config.file", file}, func(c *Config) bool {
			return c.RedisURL == "redis://env:1/0" && c.Environment == "prod" && c.Namespace == "myapp"
		}},
		{"flag over env and file", map[string]string{"REDIS_URL": "redis://env:1/0"}, []string{"--config.file", file, "--redis.url", "redis://flag:2/0", "--dramatiq.heartbeat-timeout", "5s"}, func(c *Config) bool {
			return c.RedisURL == "redis://flag:2/0" && c.HeartbeatTimeout == 5*time.Second
		}},
		{"empty file is fine", nil, []string{"--config.file", filepath.Join("testdata", "empty.yml")}, func(c *Config) bool {
			return c.Namespace == "dramatiq"
		}},
		{"queues split on commas and repeat", nil, []string{"--dramatiq.queues", "b,a", "--dramatiq.queues", "c", "--dramatiq.queues", "a"}, func(c *Config) bool {
			return strings.Join(c.Queues, ",") == "a,b,c"
		}},
		{"queues from env", map[string]string{"DRAMATIQ_QUEUES": "x,y.z"}, nil, func(c *Config) bool {
			return strings.Join(c.Queues, ",") == "x,y.z"
		}},
		{"collector switch", nil, []string{"--no-collector.broker"}, func(c *Config) bool { return !c.Collectors["broker"] }},
		{"database from env", map[string]string{"DATABASE_URL": "postgres://u@h/db"}, nil, func(c *Config) bool { return c.DatabaseURL == "postgres://u@h/db" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, map[string]string{"REDIS_PASSWORD": "from-env", "DATABASE_PASSWORD_FILE": pw})
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisPassword != "from-env" || c.DatabasePassword != "from-file" {
		t.Fatalf("passwords: %q %q", c.RedisPassword, c.DatabasePassword)
	}
	c, err = load(t, map[string]string{"REDIS_PASSWORD": "from-env"}, "--redis.password-file", pw)
	if err != nil || c.RedisPassword != "from-file" {
		t.Fatalf("file should win: %v %q", err, c.RedisPassword)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, nil, "--database.password-file", empty); err == nil || !strings.Contains(err.Error(), "--database.password-file") {
		t.Fatalf("an empty password file: %v", err)
	}
}

// Every bad value names the flag or file key at fault, and never echoes a
// password.
func TestErrorsNameTheCulprit(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--redis.url", "http://x"}, "--redis.url: scheme must be redis, rediss or unix"},
		{[]string{"--redis.url", "redis://user:hunter2@host:port/0"}, "--redis.url: cannot be parsed as a URL"},
		{[]string{"--dramatiq.namespace", ""}, "--dramatiq.namespace"},
		{[]string{"--dramatiq.heartbeat-timeout", "0s"}, "--dramatiq.heartbeat-timeout: must be positive"},
		{[]string{"--dramatiq.discovery-interval", "1ms"}, "--dramatiq.discovery-interval"},
		{[]string{"--dramatiq.max-queues", "-1"}, "--dramatiq.max-queues"},
		{[]string{"--dramatiq.queues", "ok,not ok"}, `--dramatiq.queues: "not ok"`},
		{[]string{"--environment", ""}, "--environment"},
		{[]string{"--web.telemetry-path", "metrics"}, "--web.telemetry-path"},
		{[]string{"--scrape.timeout", "0s"}, "--scrape.timeout"},
		{[]string{"--redis.password-file", "/nonexistent/pw"}, "--redis.password-file"},
		{[]string{"--config.file", "testdata/bad-key.yml"}, "field namespcae not found"},
		{[]string{"--config.file", "testdata/bad-duration.yml"}, "dramatiq.heartbeat_timeout: invalid duration \"soon\""},
		{[]string{"--config.file", "testdata/bad-collector.yml"}, `unknown collector "nonsense"`},
		{[]string{"--config.file", "testdata/bad-queue.yml"}, `--config.file testdata/bad-queue.yml: dramatiq.queues: "has space"`},
		{[]string{"--config.file", "testdata/missing.yml"}, "--config.file"},
		{[]string{"--config.file", "testdata/bad-log-level.yml"}, `log.level: unrecognized log level loud`},
		{[]string{"--config.file", "testdata/bad-web-key.yml"}, "field listen_address not found"},
		{[]string{"--config.file", "testdata/bad-check-timeout.yml"}, `check.timeout: invalid duration "soon"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := load(t, nil, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks the password: %q", err)
			}
		})
	}
}

// The settings that libraries declare (web.*, log.*) and the check
// subcommand's follow the same precedence as the others: flag, then file,
// then default. None of them has an environment variable.
func TestLibraryAndCheckKeys(t *testing.T) {
	file := filepath.Join("testdata", "good.yml")
	c, chk, err := loadCommand(t, nil, "check", "--config.file", file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.ListenAddresses, " ") != "127.0.0.1:9999 [::1]:9999" || c.WebConfigFile != "/etc/dramatiq_exporter/web.yml" ||
		c.SystemdSocket || c.LogLevel != "debug" || c.LogFormat != "json" {
		t.Errorf("file over defaults: %+v", c)
	}
	want := &Check{
		MinProcesses: 3, NoOrphans: true, Timeout: 7 * time.Second,
		MaxReady:     map[string]int64{AllQueues: 100, "emails.high": 5},
		MaxOldestAge: map[string]time.Duration{AllQueues: 10 * time.Minute, "emails.high": time.Hour},
	}
	if !reflect.DeepEqual(chk, want) {
		t.Errorf("check from file = %+v, want %+v", chk, want)
	}

	c, chk, err = loadCommand(t, nil, "check", "--config.file", file,
		"--web.listen-address=:1", "--web.config.file=web.yml", "--log.level=warn", "--log.format=logfmt",
		"--check.min-processes=0", "--check.max-ready=7", "--check.max-oldest-age=1m", "--no-check.no-orphans", "--check.timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.ListenAddresses, " ") != ":1" || c.WebConfigFile != "web.yml" || c.LogLevel != "warn" || c.LogFormat != "logfmt" {
		t.Errorf("flags over file: %+v", c)
	}
	want = &Check{
		MinProcesses: 0, NoOrphans: false, Timeout: 2 * time.Second,
		MaxReady:     map[string]int64{AllQueues: 7},
		MaxOldestAge: map[string]time.Duration{AllQueues: time.Minute},
	}
	if !reflect.DeepEqual(chk, want) {
		t.Errorf("check flags over file = %+v, want %+v", chk, want)
	}

	// The server reads the same file and ignores its check: section.
	if _, err := load(t, nil, "--config.file", file); err != nil {
		t.Errorf("serve with a check: section: %v", err)
	}
}

// The documented example file is what users copy: every key in it must exist.
func TestDocumentedExampleKeys(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "## Config file\n\n```yaml\n")
	if !ok {
		t.Fatal("docs/configuration.md has no ## Config file example")
	}
	example, _, _ := strings.Cut(after, "```")
	var f fileConfig
	dec := yaml.NewDecoder(strings.NewReader(example))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("docs/configuration.md's example config: %v", err)
	}
	if len(f.Web.ListenAddresses) == 0 || f.Log.Level == "" || f.Check.Timeout == "" {
		t.Fatalf("docs/configuration.md's example lacks web, log or check keys: %+v", f)
	}
}

// TestExampleConfig: the example that release archives ship loads as it is.
func TestExampleConfig(t *testing.T) {
	c, _, err := loadCommand(t, nil, "serve", "--config.file", "example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis://localhost:6379/0" || c.Namespace != "dramatiq" || strings.Join(c.ListenAddresses, " ") != ":10191" {
		t.Errorf("example.yml read as %+v", c)
	}
}
