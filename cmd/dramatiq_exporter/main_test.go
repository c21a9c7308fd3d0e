package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func runBinary(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestVersionAndHelp(t *testing.T) {
	out, _, code := runBinary(t, nil, "--version")
	if code != 0 || !strings.Contains(out, "dramatiq_exporter, version") {
		t.Fatalf("--version: code %d, %q", code, out)
	}
	out, _, code = runBinary(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, flag := range []string{"--redis.url", "--redis.password-file", "--dramatiq.namespace", "--dramatiq.heartbeat-timeout",
		"--dramatiq.queues", "--dramatiq.discovery-interval", "--dramatiq.max-queues", "--database.url", "--environment",
		"--web.listen-address", "--web.telemetry-path", "--web.config.file", "--log.level", "--log.format", "--config.file",
		"--[no-]collector.broker", "$REDIS_URL", "$DATABASE_URL", "$ENVIRONMENT", ":10191"} {
		if !strings.Contains(out, flag) {
			t.Errorf("--help lacks %s", flag)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--dramatiq.heartbeat-timeout=soon"}, "dramatiq.heartbeat-timeout"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"--redis.url=ftp://x"}, "--redis.url"},
		{[]string{"--log.level=loud"}, "loud"},
	}
	for _, tc := range cases {
		_, stderr, code := runBinary(t, nil, tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "goroutine") {
			t.Errorf("%v: stderr %q", tc.args, stderr)
		}
	}
}

func scrape(t *testing.T, url string, timeoutHeader string) (string, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if timeoutHeader != "" {
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeoutHeader)
	}
	begin := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return string(body), time.Since(begin)
}

// The binary end to end: a password-protected Redis, a scrape, Redis gone
// and back, and the password in none of the output.
func TestServeEndToEnd(t *testing.T) {
	const password = "correct-horse-battery"
	r := testserver.StartRedis(t, "--requirepass", password)
	b := r.NewBroker(t, "myapp")
	b.Enqueue("emails", 3, time.Now())

	const dbPassword = "db-pass-never-shown"
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	pg.CreateRole(t, "exporter", dbPassword, "app", "pg_monitor")

	port := testserver.FreePort(t)
	cmd := exec.Command(binary, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--dramatiq.namespace", "myapp", "--environment", "ci", "--log.level", "debug")
	cmd.Env = append(os.Environ(), fmt.Sprintf("REDIS_URL=redis://:%s@%s/0", password, r.Addr),
		"DATABASE_URL="+pg.URL("exporter", dbPassword, "app"))
	logs := &testserver.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Deadlines here are generous: under -race on a loaded machine start-up,
	// discovery and reconnection are slow, and only their outcome is asserted.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Discovery runs in the background from start-up; until its first pass
	// completes a scrape knows only the configured queues (none here).
	var body string
	deadline = time.Now().Add(60 * time.Second)
	for {
		body, _ = scrape(t, base+"/metrics", "")
		if strings.Contains(body, "dramatiq_exporter_discovery_complete 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("discovery did not complete: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	wants := []string{
		"dramatiq_redis_up 1",
		`dramatiq_queue_ready_messages{queue="emails"} 3`,
		`dramatiq_exporter_info{environment="ci",namespace="myapp"} 1`,
		"dramatiq_exporter_build_info{",
		`dramatiq_exporter_collector_success{collector="broker"} 1`,
		"process_resident_memory_bytes",
		"dramatiq_database_up 1",
		`dramatiq_database_info{database="app",server_version=`,
	}
	// One scrape must show all of them; a slow scrape on a loaded machine
	// may miss one (its collector cut short by the deadline), so try again.
	deadline = time.Now().Add(60 * time.Second)
	for {
		var missing []string
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, body)
		}
		time.Sleep(100 * time.Millisecond)
		body, _ = scrape(t, base+"/metrics", "")
	}

	r.Stop()
	body, took := scrape(t, base+"/metrics", "2")
	if !strings.Contains(body, "dramatiq_redis_up 0") || strings.Contains(body, "dramatiq_queue_ready_messages") {
		t.Errorf("with Redis down: %s", body)
	}
	// The header leaves a 1.5 s budget; the margin is for a loaded machine,
	// and still well under the 10 s the scrape would have without the header.
	if took > 4*time.Second {
		t.Errorf("scrape with Redis down took %s", took)
	}

	// The first scrape after the restart may still meet a pooled connection
	// to the old process (go-redis retries are off), so recovery is polled.
	r.Restart()
	deadline = time.Now().Add(60 * time.Second)
	for {
		body, _ = scrape(t, base+"/metrics", "")
		if strings.Contains(body, "dramatiq_redis_up 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	landing, _ := scrape(t, base+"/", "")
	for name, text := range map[string]string{"logs": logs.String(), "metrics": body, "landing page": landing} {
		if strings.Contains(text, password) || strings.Contains(text, dbPassword) {
			t.Errorf("a password appears in the %s", name)
		}
	}
	if !strings.Contains(logs.String(), "redis://:xxxxx@") {
		t.Errorf("logs should name the redacted URL: %s", logs.String())
	}
}
