package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/repo"
)

// notInFile are the flags the config file deliberately cannot set.
var notInFile = map[string]string{
	"help": "kingpin's", "help-long": "kingpin's", "help-man": "kingpin's", "version": "kingpin's",
	"completion-bash": "kingpin's", "completion-script-bash": "kingpin's", "completion-script-zsh": "kingpin's",
	"config.file": "names the file itself",
	// Secrets stay out of the file; it names a password file instead.
	"redis.password": "secret", "database.password": "secret", "redis.sentinel-password": "secret", "rabbitmq.password": "secret",
}

// sample is a non-default value for a flag, as command-line arguments and
// as the YAML value of its config-file key.
type sample struct {
	args []string
	file any
}

func samples(t *testing.T) map[string]sample {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("not-the-default"), 0o600); err != nil {
		t.Fatal(err)
	}
	one := func(flag string, v any) sample { return sample{[]string{fmt.Sprintf("--%s=%v", flag, v)}, v} }
	on := func(flag string) sample { return sample{[]string{"--" + flag}, true} }
	s := map[string]sample{}
	for _, x := range []sample{
		one("redis.url", "redis://elsewhere:6380/3"),
		one("redis.password-file", pw),
		one("dramatiq.namespace", "myapp"),
		one("dramatiq.heartbeat-timeout", "2m"),
		{[]string{"--dramatiq.queues=a,b", "--dramatiq.queues=c"}, []string{"a,b", "c"}},
		one("dramatiq.discovery-interval", "10s"),
		one("dramatiq.discovery-duty", 0.05),
		one("dramatiq.discovery-first-pass-duty", 0.5),
		one("dramatiq.max-queues", 5),
		one("dramatiq.queue-retention", "1h"),
		on("dramatiq.backlog-by-actor"),
		one("dramatiq.backlog-by-actor-exact-limit", 200),
		one("database.url", "postgres://u@db.internal/app"),
		one("database.password-file", pw),
		one("environment", "production"),
		{[]string{"--web.listen-address=127.0.0.1:1", "--web.listen-address=[::1]:2"}, []string{"127.0.0.1:1", "[::1]:2"}},
		one("web.config.file", "web.yml"),
		on("web.systemd-socket"),
		one("web.telemetry-path", "/dramatiq/metrics"),
		one("web.max-requests", 3),
		one("web.max-connections", 7),
		one("web.idle-timeout", "45s"),
		on("web.show-message-args"),
		one("scrape.timeout", "3s"),
		one("scrape.timeout-offset", "1s"),
		one("log.level", "debug"),
		one("log.format", "json"),
		one("check.min-processes", 4),
		{[]string{"--check.max-ready=9", "--check.max-ready=emails=3"}, []string{"9", "emails=3"}},
		{[]string{"--check.max-oldest-age=1m"}, []string{"1m"}},
		on("check.no-orphans"),
		one("check.timeout", "3s"),
		with(sample{[]string{"--redis.sentinel-addrs=s1:26379,s2:26379"}, []string{"s1:26379", "s2:26379"}}, "--redis.sentinel-master=m"),
		with(one("redis.sentinel-master", "other"), "--redis.sentinel-addrs=s1:26379"),
		with(one("redis.sentinel-password-file", pw), "--redis.sentinel-addrs=s1:26379", "--redis.sentinel-master=m"),
		with(on("redis.sentinel-replica"), "--redis.sentinel-addrs=s1:26379", "--redis.sentinel-master=m"),
		with(one("redis.tls-ca-file", "/ca.pem"), "--redis.url=rediss://r:6380/0"),
		with(one("redis.tls-cert-file", "/c.pem"), "--redis.url=rediss://r:6380/0", "--redis.tls-key-file=/k.pem"),
		with(one("redis.tls-key-file", "/k.pem"), "--redis.url=rediss://r:6380/0", "--redis.tls-cert-file=/c.pem"),
		with(one("redis.tls-server-name", "redis.internal"), "--redis.url=rediss://r:6380/0"),
		with(on("redis.tls-insecure-skip-verify"), "--redis.url=rediss://r:6380/0"),
		{[]string{"--probe.allowed-targets=10.0.0.*:6379,redis-*:6379"}, []string{"10.0.0.*:6379", "redis-*:6379"}},
		one("broker", "rabbitmq"),
		with(one("rabbitmq.url", "https://mq.internal:15671/admin"), "--broker=rabbitmq"),
		with(one("rabbitmq.user", "watcher"), "--broker=rabbitmq"),
		with(one("rabbitmq.password-file", pw), "--broker=rabbitmq"),
		with(one("rabbitmq.vhost", "apps/prod"), "--broker=rabbitmq"),
		with(one("rabbitmq.prometheus-url", "http://mq.internal:15692"), "--broker=rabbitmq"),
		with(one("rabbitmq.tls-ca-file", "/ca.pem"), "--broker=rabbitmq", "--rabbitmq.url=https://mq:15671"),
		with(one("rabbitmq.tls-cert-file", "/c.pem"), "--broker=rabbitmq", "--rabbitmq.url=https://mq:15671", "--rabbitmq.tls-key-file=/k.pem"),
		with(one("rabbitmq.tls-key-file", "/k.pem"), "--broker=rabbitmq", "--rabbitmq.url=https://mq:15671", "--rabbitmq.tls-cert-file=/c.pem"),
		with(one("rabbitmq.tls-server-name", "mq.internal"), "--broker=rabbitmq", "--rabbitmq.url=https://mq:15671"),
		with(on("rabbitmq.tls-insecure-skip-verify"), "--broker=rabbitmq", "--rabbitmq.url=https://mq:15671"),
		one("probe.idle-timeout", "1m"),
		one("probe.max-targets", 7),
	} {
		s[strings.SplitN(strings.TrimPrefix(x.args[0], "--"), "=", 2)[0]] = x
	}
	return s
}

// with gives base flags in both runs, for a setting that is only valid
// next to another (a Sentinel master needs Sentinel addresses).
func with(s sample, base ...string) sample {
	bases[s.args[0]] = base
	return s
}

var bases = map[string][]string{}

// effective parses args for `check` (whose flags are a superset of the
// server's) with the real command line, and returns every loaded setting.
func effective(t *testing.T, args ...string) (*config.Config, *config.Check) {
	t.Helper()
	c := newCLI(io.Discard, io.Discard)
	if _, err := c.app.Parse(append([]string{"check"}, args...)); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	cfg, err := c.flags.Load()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	chk, err := c.checkFlags.Load()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return cfg, chk
}

// nested turns a dotted key and a value into the YAML document setting it.
func nested(key string, v any) []byte {
	parts := strings.Split(key, ".")
	doc := map[string]any{parts[len(parts)-1]: v}
	for i := len(parts) - 2; i >= 0; i-- {
		doc = map[string]any{parts[i]: doc}
	}
	out, _ := yaml.Marshal(doc)
	return out
}

// Every flag of the real command line, a later one included, must be
// settable from the config file with the same effect as the flag, and be
// in the flag reference (docs/flags.md) with its key.
func TestEveryFlagHasAConfigKey(t *testing.T) {
	for _, k := range []string{"REDIS_URL", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE", "DATABASE_URL", "DATABASE_PASSWORD",
		"DATABASE_PASSWORD_FILE", "ENVIRONMENT", "DRAMATIQ_NAMESPACE", "DRAMATIQ_QUEUES", "DRAMATIQ_EXPORTER_CONFIG",
		"DRAMATIQ_BROKER", "RABBITMQ_URL", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_PASSWORD_FILE", "RABBITMQ_VHOST"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile(filepath.Join(root, "docs", "flags.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(ref), "\n") {
		if strings.HasPrefix(line, "| `--") {
			name := strings.TrimPrefix(strings.SplitN(line, "`", 3)[1], "--")
			name, _, _ = strings.Cut(name, "=")
			rows[strings.TrimPrefix(name, "[no-]")] = line
		}
	}

	c := newCLI(io.Discard, io.Discard)
	model := c.app.Model()
	flags := model.Flags
	for _, cmd := range model.Commands {
		flags = append(flags, cmd.Flags...)
	}
	defCfg, defChk := effective(t)
	all := samples(t)
	dir := t.TempDir()
	seen := 0
	for _, f := range flags {
		if _, ok := notInFile[f.Name]; ok {
			continue
		}
		seen++
		t.Run(f.Name, func(t *testing.T) {
			key := c.flags.FileKey(f.Name)
			if key == "" {
				t.Fatalf("--%s has no config-file key: bind it in config (see Flags.bind)", f.Name)
			}
			if line, ok := rows[f.Name]; !ok || !strings.Contains(line, "`"+key+"`") {
				t.Errorf("docs/flags.md has no row for --%s naming its key `%s`: run `make docs`", f.Name, key)
			}
			s, ok := all[f.Name]
			if name, isCollector := strings.CutPrefix(f.Name, "collector."); isCollector {
				def := f.Default[0] == "true"
				s, ok = sample{[]string{"--collector." + name}, !def}, true
				if def {
					s.args[0] = "--no-collector." + name
				}
			}
			if !ok {
				t.Fatalf("no sample value for --%s in samples(): add one", f.Name)
			}
			file := filepath.Join(dir, strings.ReplaceAll(key, ".", "_")+".yml")
			if err := os.WriteFile(file, nested(key, s.file), 0o600); err != nil {
				t.Fatal(err)
			}
			flagCfg, flagChk := effective(t, append(append([]string(nil), bases[s.args[0]]...), s.args...)...)
			fileCfg, fileChk := effective(t, append(append([]string(nil), bases[s.args[0]]...), "--config.file", file)...)
			baseCfg, baseChk := defCfg, defChk
			if b := bases[s.args[0]]; len(b) > 0 {
				// The base alone may be invalid; then the defaults stand in.
				c := newCLI(io.Discard, io.Discard)
				if _, err := c.app.Parse(append([]string{"check"}, b...)); err == nil {
					if cfg, err := c.flags.Load(); err == nil {
						baseCfg = cfg
						baseChk, _ = c.checkFlags.Load()
					}
				}
			}
			if reflect.DeepEqual(flagCfg, baseCfg) && reflect.DeepEqual(flagChk, baseChk) {
				t.Fatalf("sample %v changes nothing; pick a non-default value", s.args)
			}
			if !reflect.DeepEqual(flagCfg, fileCfg) || !reflect.DeepEqual(flagChk, fileChk) {
				t.Errorf("%v and %s: %v differ:\nflag: %+v %+v\nfile: %+v %+v", s.args, key, s.file, flagCfg, flagChk, fileCfg, fileChk)
			}
		})
	}
	if seen < 25 {
		t.Fatalf("walked only %d flags; is the command line built as in main?", seen)
	}
}
