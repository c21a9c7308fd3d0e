package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// runInProcess calls the real run() with a clean environment for the
// variables it reads, and fails the test if it does not return.
func runInProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	for _, k := range []string{"REDIS_URL", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE", "DATABASE_URL", "DATABASE_PASSWORD",
		"DATABASE_PASSWORD_FILE", "ENVIRONMENT", "DRAMATIQ_NAMESPACE", "DRAMATIQ_QUEUES", "DRAMATIQ_EXPORTER_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	var o, e bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &o, &e) }()
	select {
	case code = <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("run %q hung", args)
	}
	return o.String(), e.String(), code
}

func mkfifo(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every bad flag or file value ends run() with exit 2 and a message naming
// the flag or key, for both commands, without touching Redis (the URL
// points at a closed port) and without hanging.
func TestRunRefusesBadValues(t *testing.T) {
	closed := fmt.Sprintf("--redis.url=redis://127.0.0.1:%d/0", testserver.FreePort(t))
	cases := []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"environment not UTF-8", argv("--environment=prod\xff"), "--environment"},
		{"namespace not UTF-8", argv("--dramatiq.namespace=q\xff\xfebad"), "--dramatiq.namespace"},
		{"environment 50 MB", argv("--environment=" + strings.Repeat("x", 50<<20)), "--environment: is 52428800 bytes long"},
		{"telemetry path root", argv("--web.telemetry-path=/"), "--web.telemetry-path"},
		{"telemetry path from file", func(t *testing.T) []string {
			return []string{"--config.file=" + write(t, "c.yml", "web:\n  telemetry_path: /-/ready\n")}
		}, "web.telemetry_path: \"/-/ready\" is taken"},
		{"config FIFO", func(t *testing.T) []string { return []string{"--config.file=" + mkfifo(t)} }, "--config.file: "},
		{"config directory", func(t *testing.T) []string { return []string{"--config.file=" + t.TempDir()} }, "is a directory"},
		{"config second document", func(t *testing.T) []string {
			return []string{"--config.file=" + write(t, "c.yml", "environment: a\n---\nnot_a_key: 1\n")}
		}, "a second YAML document"},
		{"redis password FIFO", func(t *testing.T) []string { return []string{"--redis.password-file=" + mkfifo(t)} }, "--redis.password-file: "},
		{"database password directory", func(t *testing.T) []string {
			return []string{"--database.url=postgres://u@127.0.0.1/app", "--database.password-file=" + t.TempDir()}
		}, "--database.password-file: "},
		{"web config FIFO", func(t *testing.T) []string { return []string{"--web.config.file=" + mkfifo(t)} }, "--web.config.file: "},
		{"web config directory", func(t *testing.T) []string { return []string{"--web.config.file=" + t.TempDir()} }, "--web.config.file: "},
		{"web config invalid", func(t *testing.T) []string {
			return []string{"--web.config.file=" + write(t, "web.yml", "tls_server_config:\n  cert_file: /nonexistent\n")}
		}, "--web.config.file"},
		{"listen address invalid", argv("--web.listen-address=not-an-address"), "--web.listen-address not-an-address"},
		{"negative idle timeout", argv("--web.idle-timeout=-1s"), "--web.idle-timeout"},
		{"zero idle timeout", argv("--web.idle-timeout=0s"), "--web.idle-timeout: must be positive"},
		{"negative max connections", argv("--web.max-connections=-1"), "--web.max-connections"},
		{"zero scrape timeout", argv("--scrape.timeout=0s"), "--scrape.timeout"},
		{"listen address empty", argv("--web.listen-address="), "--web.listen-address: empty"},
		{"check timeout not a duration", argv("--check.timeout=abc"), "--check.timeout: invalid duration \"abc\""},
		{"check min processes not a number", argv("--check.min-processes=abc"), "--check.min-processes"},
		{"check queue name too long", argv("--check.max-ready=" + strings.Repeat("q", 300) + "=1"), "more than 256"},
		{"check negative threshold from file", func(t *testing.T) []string {
			return []string{"--config.file=" + write(t, "c.yml", "check:\n  max_ready: [\"-1\"]\n")}
		}, "--check.max-ready"},
		{"unescaped # in the password", argv("--redis.url=redis://:2024#Winter-PW-10@host:6379/0"), "--redis.url: has an @ after the host"},
	}
	for _, tc := range cases {
		for _, cmd := range []string{"serve", "check"} {
			// check serves nothing, so it has no web settings to refuse;
			// serve takes no check flags.
			if cmd == "check" && (strings.HasPrefix(tc.name, "web config") || strings.HasPrefix(tc.name, "listen")) ||
				cmd == "serve" && strings.HasPrefix(tc.name, "check ") {
				continue
			}
			t.Run(cmd+"/"+tc.name, func(t *testing.T) {
				args := append([]string{cmd, "--web.listen-address=127.0.0.1:0"}, tc.args(t)...)
				if !strings.Contains(strings.Join(args, " "), "--redis.url") {
					args = append(args, closed)
				}
				_, stderr, code := runInProcess(t, args...)
				if code != 2 {
					t.Fatalf("exit %d, want 2; stderr %.500s", code, stderr)
				}
				if !strings.Contains(stderr, tc.want) {
					t.Fatalf("stderr %.500q does not name %q", stderr, tc.want)
				}
				if len(stderr) > 8192 || strings.Contains(stderr, "goroutine ") {
					t.Fatalf("stderr is %d bytes: %.300s", len(stderr), stderr)
				}
			})
		}
	}
}

func argv(a ...string) func(*testing.T) []string { return func(*testing.T) []string { return a } }

// startExporter runs the real binary and waits until /-/ready answers.
func startExporter(t *testing.T, env []string, args ...string) (base string, logs *testserver.LogBuffer) {
	t.Helper()
	port := testserver.FreePort(t)
	cmd := exec.Command(binary, append([]string{"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	logs = &testserver.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, logs
			}
		}
		select {
		case <-exited:
			t.Fatalf("exporter exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not ready: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The telemetry path is a literal: values that are ServeMux pattern syntax
// start and serve there, from the flag and from the file, and leave the
// other pages alone.
func TestTelemetryPathIsLiteral(t *testing.T) {
	r := testserver.StartRedis(t)
	for _, p := range []string{"/{", "/a b", "/{path...}", "/100%", "/GET /x"} {
		for _, from := range []string{"flag", "file"} {
			t.Run(from+" "+p, func(t *testing.T) {
				var args []string
				if from == "flag" {
					args = []string{"--web.telemetry-path=" + p}
				} else {
					args = []string{"--config.file=" + write(t, "c.yml", fmt.Sprintf("web:\n  telemetry_path: %q\n", p))}
				}
				base, logs := startExporter(t, []string{"REDIS_URL=redis://" + r.Addr + "/0"}, args...)
				code, body := testserver.Get(t, base+(&url.URL{Path: p}).EscapedPath())
				if code != 200 || !strings.Contains(body, "dramatiq_redis_up 1") {
					t.Fatalf("GET %q: %d %.200s\n%s", p, code, body, logs.String())
				}
				if code, _ := testserver.Get(t, base+"/metrics"); code != 404 {
					t.Errorf("/metrics: %d, want 404 once the path moved", code)
				}
				if code, body := testserver.Get(t, base+"/"); code != 200 || !strings.Contains(body, "<html") {
					t.Errorf("the status page: %d", code)
				}
				if strings.Contains(logs.String(), "panic") {
					t.Errorf("logs: %s", logs.String())
				}
			})
		}
	}
}

// dialIdle opens a connection, makes one request on it and leaves it open
// and idle, as a keep-alive client does.
func dialIdle(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "200 OK") {
		t.Fatalf("first request on an idle connection: %v %q", err, buf[:n])
	}
	return c
}

// Clients that hold more idle keep-alive connections than the limit lock
// nobody out: a scrape on a new connection still succeeds, promptly, and
// idle connections are closed after --web.idle-timeout.
func TestIdleConnectionsCannotLockOutScrapes(t *testing.T) {
	r := testserver.StartRedis(t)
	base, logs := startExporter(t, []string{"REDIS_URL=redis://" + r.Addr + "/0"},
		"--web.max-connections=8", "--web.idle-timeout=2s")
	addr := strings.TrimPrefix(base, "http://")
	var idle []net.Conn
	for i := 0; i < 20; i++ {
		idle = append(idle, dialIdle(t, addr))
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 3; i++ {
		begin := time.Now()
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatalf("scrape %d with %d idle connections open: %v\n%s", i, len(idle), err, logs.String())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "dramatiq_redis_up 1") {
			t.Fatalf("scrape %d: %d", i, resp.StatusCode)
		}
		// The idle timeout is 2 s: this must not wait for it.
		if took := time.Since(begin); took > 1500*time.Millisecond {
			t.Errorf("scrape %d waited %s for a connection", i, took)
		}
	}
	// Every idle connection is closed by the server within the idle
	// timeout (or sooner, to make room): a read sees EOF.
	for i, c := range idle {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("idle connection %d still open after the idle timeout: %v", i, err)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// /-/healthy and /-/ready answer while Redis and the database are down,
// and never contact either.
func TestHealthEndpointsCostNothing(t *testing.T) {
	r := testserver.StartRedis(t)
	base, _ := startExporter(t, []string{"REDIS_URL=redis://" + r.Addr + "/0"}, "--dramatiq.discovery-interval=1h")
	// Let the start-up discovery finish, then count what the probes cost.
	waitDiscovered(t, base)
	before := commandsProcessed(t, r)
	for _, p := range []string{"/-/healthy", "/-/ready"} {
		for i := 0; i < 20; i++ {
			if code, _ := testserver.Get(t, base+p); code != 200 {
				t.Fatalf("%s: %d", p, code)
			}
		}
		resp, err := http.Head(base + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("HEAD %s: %v", p, err)
		}
		resp.Body.Close()
	}
	// The first INFO counts itself.
	if n := commandsProcessed(t, r) - before - 1; n != 0 {
		t.Errorf("health probes sent %d commands to Redis", n)
	}
	r.Stop()
	for _, p := range []string{"/-/healthy", "/-/ready"} {
		if code, _ := testserver.Get(t, base+p); code != 200 {
			t.Errorf("%s with Redis down: %d", p, code)
		}
	}
	if code, body := testserver.Get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "dramatiq_redis_up 0") {
		t.Errorf("metrics with Redis down: %d", code)
	}
}

// waitDiscovered waits for the exporter's start-up discovery pass to
// complete, so that its commands are not counted as another request's. The
// deadline is generous: under -race on a loaded machine a pass can take
// seconds.
func waitDiscovered(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := testserver.Get(t, base+"/metrics")
		if code == 200 && strings.Contains(body, "dramatiq_exporter_discovery_complete 1\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the start-up discovery did not complete: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func commandsProcessed(t *testing.T, r *testserver.Redis) int {
	t.Helper()
	info, err := r.Admin.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Fatalf("no total_commands_processed in %q", info)
	return 0
}

// Against a hung Redis a scrape lasts its deadline: the --scrape.timeout
// cap for a scrape-timeout header too large for a duration, not the
// 100 ms its overflow once gave.
func TestHugeScrapeTimeoutHeaderGivesTheCap(t *testing.T) {
	r := testserver.StartRedis(t)
	base, _ := startExporter(t, []string{"REDIS_URL=" + r.URL()}, "--scrape.timeout=1500ms", "--scrape.timeout-offset=0s")
	r.Freeze()
	defer r.Thaw()
	for _, h := range []string{"9.3e9", "1e10", "Inf", "NaN", "-5"} {
		body, took := scrape(t, base+"/metrics", h)
		if took < 1300*time.Millisecond || took > 5*time.Second {
			t.Errorf("header %s: the scrape took %s, want about the 1.5 s cap", h, took)
		}
		if !strings.Contains(body, "dramatiq_redis_up 0") {
			t.Errorf("header %s: a hung Redis must read as down", h)
		}
	}
}

// The issue as it was found: with a low file-descriptor limit, clients
// holding many idle keep-alive connections made accept fail ("too many
// open files") and every scrape wait. With the connection limit below the
// descriptor limit, each new connection displaces an idle one instead.
func TestFileDescriptorLimitCannotBlockScrapes(t *testing.T) {
	r := testserver.StartRedis(t)
	port := testserver.FreePort(t)
	cmd := exec.Command("sh", "-c", `ulimit -n 128 && exec "$0" "$@"`, binary,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--web.max-connections=64")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "REDIS_URL=" + r.URL()}
	logs := &testserver.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Twice the descriptor limit in idle keep-alive connections, each
	// served once (dialIdle fails the test if one is not).
	for i := 0; i < 256; i++ {
		dialIdle(t, addr)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, logs.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "dramatiq_redis_up 1") {
		t.Fatalf("scrape: %d", resp.StatusCode)
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the exporter ran out of descriptors: %s", logs.String())
	}
}
