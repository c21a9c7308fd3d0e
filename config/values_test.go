package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeFile writes a file under a directory whose name has a space, braces
// and a %, so every path case also checks that such paths work.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my {conf} 100%")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func fifo(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// billionLaughs nests ten levels of nine aliases each under a known key.
func billionLaughs() string {
	var b strings.Builder
	b.WriteString("x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "x%d: &a%d [", i, i)
		for j := 0; j < 9; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("dramatiq:\n  queues: *a9\n")
	return b.String()
}

// Every flag and file value either works or is refused with an error that
// names the flag or the file's key, quickly: no value may hang start-up.
func TestFlagValues(t *testing.T) {
	long := strings.Repeat("e", MaxNameBytes+1)
	cases := []struct {
		name string
		args func(t *testing.T) []string
		env  map[string]string
		want string // "" means it must work
		ok   func(*Config) bool
	}{
		// Values that become labels or key prefixes.
		{name: "environment not UTF-8", args: argv("--environment", "prod\xff\xfe"), want: "--environment: \"prod\\xff\\xfe\" is not valid UTF-8"},
		{name: "environment from env not UTF-8", env: map[string]string{"ENVIRONMENT": "\xff"}, want: "--environment"},
		{name: "namespace not UTF-8", args: argv("--dramatiq.namespace", "app\xff"), want: "--dramatiq.namespace: \"app\\xff\" is not valid UTF-8"},
		{name: "environment too long", args: argv("--environment", long), want: fmt.Sprintf("--environment: is %d bytes long, more than %d", len(long), MaxNameBytes)},
		{name: "environment 50 MB", args: argv("--environment", strings.Repeat("x", 50<<20)), want: "--environment: is 52428800 bytes long"},
		{name: "namespace too long", args: argv("--dramatiq.namespace", long), want: "--dramatiq.namespace: is"},
		{name: "queue name too long", args: argv("--dramatiq.queues", "q"+long), want: "--dramatiq.queues: a queue name is"},
		{name: "environment at the limit", args: argv("--environment", long[1:]), ok: func(c *Config) bool { return len(c.Environment) == MaxNameBytes }},
		{name: "namespace with glob characters", args: argv("--dramatiq.namespace", "a*b?[c]"), ok: func(c *Config) bool { return c.Namespace == "a*b?[c]" }},
		{name: "environment from file too long", args: fileArgs("environment: " + long + "\n"), want: "environment: is"},

		// The telemetry path is literal.
		{name: "path brace", args: argv("--web.telemetry-path", "/{"), ok: func(c *Config) bool { return c.TelemetryPath == "/{" }},
		{name: "path space", args: argv("--web.telemetry-path", "/a b"), ok: func(c *Config) bool { return c.TelemetryPath == "/a b" }},
		{name: "path wildcard", args: argv("--web.telemetry-path", "/{path...}"), ok: func(c *Config) bool { return c.TelemetryPath == "/{path...}" }},
		{name: "path percent", args: argv("--web.telemetry-path", "/100%"), ok: func(c *Config) bool { return c.TelemetryPath == "/100%" }},
		{name: "path method-like", args: argv("--web.telemetry-path", "/GET /x"), ok: func(c *Config) bool { return c.TelemetryPath == "/GET /x" }},
		{name: "path from file", args: fileArgs("web:\n  telemetry_path: \"/{\"\n"), ok: func(c *Config) bool { return c.TelemetryPath == "/{" }},
		{name: "path empty", args: argv("--web.telemetry-path", ""), want: "--web.telemetry-path: must start with /"},
		{name: "path root", args: argv("--web.telemetry-path", "/"), want: "--web.telemetry-path: \"/\" is taken"},
		{name: "path health", args: argv("--web.telemetry-path", "/-/healthy"), want: "--web.telemetry-path: \"/-/healthy\" is taken"},
		{name: "path api", args: argv("--web.telemetry-path", "/api/v1/status"), want: "is taken"},
		{name: "path probe", args: argv("--web.telemetry-path", "/probe"), want: "is taken"},
		{name: "path control", args: argv("--web.telemetry-path", "/a\nb"), want: "--web.telemetry-path: \"/a\\nb\" holds a control character"},
		{name: "path not UTF-8", args: argv("--web.telemetry-path", "/\xff"), want: "--web.telemetry-path: \"/\\xff\" is not valid UTF-8"},
		{name: "path root from file names the key", args: fileArgs("web:\n  telemetry_path: /\n"), want: "web.telemetry_path: \"/\" is taken"},

		// The config file.
		{name: "config FIFO", args: func(t *testing.T) []string { return []string{"--config.file", fifo(t)} }, want: "is a named pipe (FIFO), not a regular file"},
		{name: "config directory", args: func(t *testing.T) []string { return []string{"--config.file", t.TempDir()} }, want: "is a directory, not a regular file"},
		{name: "config too large", args: fileArgs("environment: x\n" + strings.Repeat("# filler\n", MaxConfigFileBytes/9+1)), want: fmt.Sprintf("is larger than %d bytes", MaxConfigFileBytes)},
		{name: "config second document", args: fileArgs("environment: x\n---\nenvironmnet: y\n"), want: "line 2: a second YAML document"},
		{name: "config empty second document", args: fileArgs("environment: x\n---\n"), want: "a second YAML document"},
		{name: "config leading ---", args: fileArgs("---\nenvironment: lead\n"), ok: func(c *Config) bool { return c.Environment == "lead" }},
		{name: "config billion laughs", args: fileArgs(billionLaughs()), want: "--config.file"},
		{name: "config deeply nested", args: fileArgs("environment: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n"), want: "--config.file"},
		{name: "config many unknown keys", args: fileArgs(manyUnknownKeys(2000)), want: "... and 1995 more"},
		{name: "config path with space, braces, %", args: fileArgs("environment: spaced\n"), ok: func(c *Config) bool { return c.Environment == "spaced" }},
		{name: "config empty path", args: argv("--config.file", ""), ok: func(c *Config) bool { return c.Environment == DefaultEnvironment }},

		// Password files.
		{name: "redis password FIFO", args: func(t *testing.T) []string { return []string{"--redis.password-file", fifo(t)} }, want: "--redis.password-file: "},
		{name: "database password FIFO", args: func(t *testing.T) []string { return []string{"--database.password-file", fifo(t)} }, want: "--database.password-file: "},
		{name: "redis password directory", args: func(t *testing.T) []string { return []string{"--redis.password-file", t.TempDir()} }, want: "is a directory"},
		{name: "redis password too large", args: func(t *testing.T) []string {
			return []string{"--redis.password-file", writeFile(t, "pw", strings.Repeat("p", MaxSecretFileBytes+1))}
		}, want: "--redis.password-file: "},
		{name: "redis password path with space", args: func(t *testing.T) []string {
			return []string{"--redis.password-file", writeFile(t, "my pw", "s3cret\n")}
		}, ok: func(c *Config) bool { return c.RedisPassword == "s3cret" }},
		{name: "redis password FIFO from file", args: func(t *testing.T) []string {
			return fileArgs("redis:\n  password_file: " + fifo(t) + "\n")(t)
		}, want: "redis.password_file: "},
		{name: "empty password file path", args: argv("--redis.password-file", ""), ok: func(c *Config) bool { return c.RedisPassword == "" }},

		// Empty strings.
		{name: "empty redis url", args: argv("--redis.url", ""), want: "--redis.url: scheme must be"},
		{name: "empty namespace", args: argv("--dramatiq.namespace", ""), want: "--dramatiq.namespace: must not be empty"},
		{name: "empty database url disables", args: argv("--database.url", ""), ok: func(c *Config) bool { return c.DatabaseURL == "" }},
		{name: "empty queues", args: argv("--dramatiq.queues", ""), ok: func(c *Config) bool { return len(c.Queues) == 0 }},
		{name: "empty duration", args: argv("--scrape.timeout", ""), want: "--scrape.timeout"},
		{name: "empty count", args: argv("--web.max-requests", ""), want: "--web.max-requests"},

		// Durations and counts: zero, negative, huge.
		{name: "negative heartbeat", args: argv("--dramatiq.heartbeat-timeout", "-1s"), want: "--dramatiq.heartbeat-timeout"},
		{name: "zero discovery", args: argv("--dramatiq.discovery-interval", "0s"), want: "--dramatiq.discovery-interval"},
		{name: "negative retention", args: argv("--dramatiq.queue-retention", "-5m"), want: "--dramatiq.queue-retention"},
		{name: "zero retention", args: argv("--dramatiq.queue-retention", "0s"), ok: func(c *Config) bool { return c.QueueRetention == 0 }},
		{name: "zero scrape timeout", args: argv("--scrape.timeout", "0s"), want: "--scrape.timeout: must be positive"},
		{name: "overflowing duration", args: argv("--scrape.timeout", "1000y"), want: "--scrape.timeout"},
		{name: "zero offset", args: argv("--scrape.timeout-offset", "0s"), ok: func(c *Config) bool { return c.TimeoutOffset == 0 }},
		{name: "negative max queues", args: argv("--dramatiq.max-queues", "-1"), want: "--dramatiq.max-queues"},
		{name: "huge max queues", args: argv("--dramatiq.max-queues", "99999999999999999999"), want: "--dramatiq.max-queues"},
		{name: "zero max requests", args: argv("--web.max-requests", "0"), ok: func(c *Config) bool { return c.MaxRequests == 0 }},
		{name: "negative max requests from file", args: fileArgs("web:\n  max_requests: -3\n"), want: "web.max_requests: must be 0 or more"},
		{name: "negative duration from file", args: fileArgs("scrape:\n  timeout: -1s\n"), want: "scrape.timeout: invalid duration"},
		{name: "zero duration from file", args: fileArgs("scrape:\n  timeout: 0s\n"), want: "scrape.timeout: must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.args != nil {
				args = tc.args(t)
			}
			type result struct {
				c   *Config
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := load(t, tc.env, args...)
				done <- result{c, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Load hung")
			}
			if tc.want == "" && tc.ok == nil {
				tc.want = "--"
			}
			if tc.ok != nil {
				if r.err != nil {
					t.Fatalf("want it to work, got %v", r.err)
				}
				if !tc.ok(r.c) {
					t.Fatalf("got %+v", r.c)
				}
				return
			}
			if r.err == nil {
				t.Fatal("no error")
			}
			msg := r.err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %.300q does not contain %q", msg, tc.want)
			}
			if len(msg) > 4096 {
				t.Fatalf("error is %d bytes long", len(msg))
			}
		})
	}
}

func manyUnknownKeys(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "unknown%d: 1\n", i)
	}
	return b.String()
}

func argv(a ...string) func(*testing.T) []string { return func(*testing.T) []string { return a } }

func fileArgs(content string) func(*testing.T) []string {
	return func(t *testing.T) []string { return []string{"--config.file", writeFile(t, "config.yml", content)} }
}

// A password with any URL delimiter, unescaped, never appears in the error,
// nor any part of it; escaped, it works.
func TestURLPasswordsNeverEchoed(t *testing.T) {
	for _, pw := range passwordsWithDelimiters() {
		for _, tc := range []struct{ flag, url string }{
			{"--redis.url", "redis://:" + pw + "@redis.internal:6379/0"},
			{"--redis.url", "redis://exporter:" + pw + "@redis.internal:6379/0"},
			{"--redis.url", "rediss://exporter:" + pw + "@redis.internal:6380/1"},
			{"--database.url", "postgres://exporter:" + pw + "@db.internal:5432/app"},
			{"--database.url", "postgresql://exporter:" + pw + "@db.internal/app?sslmode=disable"},
		} {
			c, err := load(t, nil, tc.flag, tc.url)
			if err == nil {
				// Parsed cleanly: the password is whole in the user info.
				u := c.RedisURL
				if tc.flag == "--database.url" {
					u = c.DatabaseURL
				}
				if !strings.Contains(u, "@") {
					t.Errorf("%s %q: accepted without user info", tc.flag, tc.url)
				}
				continue
			}
			msg := err.Error()
			for _, part := range secretParts(pw) {
				if strings.Contains(msg, part) {
					t.Errorf("%s with password %q: error %q contains %q", tc.flag, pw, msg, part)
				}
			}
			if !strings.HasPrefix(msg, tc.flag+": ") || !strings.Contains(msg, "percent-encode") {
				t.Errorf("%s with password %q: error %q does not say how to escape", tc.flag, pw, msg)
			}
		}
		// Percent-encoded, every one of them parses.
		enc := strings.NewReplacer("%", "%25", ":", "%3A", "/", "%2F", "?", "%3F", "#", "%23", "[", "%5B", "]", "%5D", "@", "%40",
			"!", "%21", "$", "%24", "&", "%26", "'", "%27", "(", "%28", ")", "%29", "*", "%2A", "+", "%2B", ",", "%2C", ";", "%3B", "=", "%3D", " ", "%20").Replace(pw)
		if _, err := load(t, nil, "--redis.url", "redis://:"+enc+"@redis.internal:6379/0", "--database.url", "postgres://u:"+enc+"@db/app"); err != nil {
			t.Errorf("percent-encoded %q: %v", pw, err)
		}
	}
}

// passwordsWithDelimiters puts each URL delimiter in a password, after
// digits (the #-after-digits case parses as a port), and all of them at once.
func passwordsWithDelimiters() []string {
	out := []string{"2024#Winter-PW-10"}
	for _, d := range strings.Split(":/?#[]@!$&'()*+,;=% ", "") {
		out = append(out, "Sec"+d+"ret-Word-9", "2024"+d+"Winter-PW-10")
	}
	return append(out, "A:/?#[]@!$&'()*+,;=% Z")
}

// secretParts are the pieces of a password a leak would show: split at
// every delimiter, the pieces of 4 characters or more.
func secretParts(pw string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(pw, func(r rune) bool { return strings.ContainsRune(":/?#[]@!$&'()*+,;=% ", r) }) {
		if len(p) >= 4 {
			out = append(out, p)
		}
	}
	return out
}
