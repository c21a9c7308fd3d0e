package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// binary is the exporter built once for every test of this package, so the
// tests run exactly what a HEALTHCHECK runs.
var binary string

func TestMain(m *testing.M) { testserver.RunWithExporter(m, &binary) }

type checkResult struct {
	code   int
	took   time.Duration
	stdout string
	stderr string
	json   map[string]any
}

// runCheck runs `dramatiq_exporter check args...` with env added to a clean
// environment (no REDIS_URL or DATABASE_URL leaking in from the host).
func runCheck(t *testing.T, env []string, args ...string) checkResult {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"check"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	begin := time.Now()
	err := cmd.Run()
	r := checkResult{took: time.Since(begin), stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run check: %v", err)
	}
	if r.code != 2 {
		if strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
			t.Fatalf("check must print exactly one JSON line, got:\n%s", r.stdout)
		}
		if err := json.Unmarshal(out.Bytes(), &r.json); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s\nstderr: %s", err, r.stdout, r.stderr)
		}
	}
	return r
}

// get walks a decoded JSON value: get(m, "components", "redis", "status").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// queue finds a queue by name in the status's queues.
func queue(t *testing.T, st map[string]any, name string) map[string]any {
	t.Helper()
	for _, q := range st["queues"].([]any) {
		if m := q.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("queue %q not in %v", name, st["queues"])
	return nil
}

// failedChecks lists "check" or "check:queue" of every failure, sorted.
func failedChecks(st map[string]any) []string {
	out := []string{}
	for _, f := range st["failed"].([]any) {
		m := f.(map[string]any)
		s := m["check"].(string)
		if q, ok := m["queue"].(string); ok {
			s += ":" + q
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func wantCode(t *testing.T, r checkResult, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
}

func TestCheckHealthy(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	worker := testserver.UUID()
	b.Enqueue("default", 4, now.Add(-30*time.Second))
	b.Fetch(worker, "default", 1, now)
	b.Enqueue("emails.DQ", 2, now)
	b.DeadLetter("emails", now.Add(-time.Minute), nil)
	// The password in REDIS_URL must never be printed.
	url := r.ReadOnlyUser(t, "checker", "pw-Very-Secret-42")

	// Queues are read when named (without, check reads no queue).
	res := runCheck(t, []string{"REDIS_URL=" + url, "ENVIRONMENT=staging"}, "--dramatiq.queues=default,emails")
	wantCode(t, res, 0)
	st := res.json
	for path, want := range map[string]any{
		"status": "healthy", "environment": "staging", "namespace": "dramatiq",
		"processes_alive": 1.0, "processes_stale": 0.0,
	} {
		if got := st[path]; got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	if get(st, "components", "redis", "status") != "ok" || get(st, "components", "database", "status") != "not_configured" ||
		get(st, "components", "processes", "status") != "ok" {
		t.Errorf("components = %v", st["components"])
	}
	def := queue(t, st, "default")
	if def["ready"] != 3.0 || def["in_flight"] != 1.0 || def["delayed"] != 0.0 || def["dead_letter"] != 0.0 || def["orphaned"] != 0.0 {
		t.Errorf("default = %v", def)
	}
	if age, _ := def["oldest_message_age_seconds"].(float64); age < 29 || age > 60 {
		t.Errorf("default oldest age = %v, want about 30", def["oldest_message_age_seconds"])
	}
	em := queue(t, st, "emails")
	if em["delayed"] != 2.0 || em["dead_letter"] != 1.0 || em["dead_letter_last"] == nil {
		t.Errorf("emails = %v", em)
	}
	if _, ok := em["recent_dead_letters"]; ok {
		t.Errorf("check must not read dead letters: %v", em)
	}
	if got := failedChecks(st); len(got) != 0 {
		t.Errorf("failed = %v", got)
	}
	if strings.Contains(res.stdout+res.stderr, "pw-Very-Secret-42") {
		t.Fatalf("the Redis password leaked:\n%s\n%s", res.stdout, res.stderr)
	}
	// A passing check prints nothing to stderr at the default log level:
	// it runs every few seconds and would flood the container log.
	if res.stderr != "" {
		t.Errorf("stderr of a healthy check: %s", res.stderr)
	}
}

func TestCheckRedisDown(t *testing.T) {
	r := testserver.StartRedis(t)
	url := r.URL()
	r.Stop()
	res := runCheck(t, []string{"REDIS_URL=" + url})
	wantCode(t, res, 1)
	if got := failedChecks(res.json); !reflect.DeepEqual(got, []string{"redis"}) {
		t.Errorf("failed = %v, want [redis]", got)
	}
	if get(res.json, "components", "redis", "status") != "failing" || get(res.json, "components", "processes", "status") != "unknown" {
		t.Errorf("components = %v", res.json["components"])
	}
	if res.took > 2*time.Second {
		t.Errorf("check against a closed port took %s", res.took)
	}
	if !strings.Contains(res.stderr, "connection refused") {
		t.Errorf("stderr does not say why: %s", res.stderr)
	}
}

// A Redis that accepts connections and never answers must not hold the
// check past --check.timeout.
func TestCheckHungRedisWithinTimeout(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("q", 1, time.Now())
	r.Freeze()
	defer r.Thaw()
	res := runCheck(t, []string{"REDIS_URL=" + r.URL()}, "--check.timeout=1s")
	wantCode(t, res, 1)
	if res.took > 1500*time.Millisecond {
		t.Fatalf("check took %s with --check.timeout=1s", res.took)
	}
	if got := failedChecks(res.json); !reflect.DeepEqual(got, []string{"redis"}) {
		t.Errorf("failed = %v, want [redis]", got)
	}
}

func TestCheckThresholds(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	alive, dead := testserver.UUID(), testserver.UUID()
	b.Heartbeat(alive, now)
	b.Enqueue("small", 3, now.Add(-2*time.Hour))
	b.Enqueue("big", 50, now)
	b.Enqueue("fine", 1, now)
	b.Fetch(dead, "fine", 1, now.Add(-10*time.Minute))

	url := r.URL()
	// Within every threshold first, so the failures below are the
	// thresholds' doing.
	ok := runCheck(t, []string{"REDIS_URL=" + url}, "--check.max-ready=100", "--check.max-oldest-age=3h")
	wantCode(t, ok, 0)

	res := runCheck(t, []string{"REDIS_URL=" + url},
		"--check.min-processes=2",
		"--check.max-ready=10", "--check.max-ready=small=2",
		"--check.max-oldest-age=1h", "--check.max-oldest-age=fine=1d",
		"--check.no-orphans")
	wantCode(t, res, 1)
	want := []string{"max_oldest_age:small", "max_ready:big", "max_ready:small", "min_processes", "no_orphans:fine"}
	if got := failedChecks(res.json); !reflect.DeepEqual(got, want) {
		t.Fatalf("failed = %v, want %v", got, want)
	}
	for _, f := range res.json["failed"].([]any) {
		m := f.(map[string]any)
		if m["check"] == "max_ready" && m["queue"] == "small" && (m["value"] != 3.0 || m["threshold"] != 2.0) {
			t.Errorf("max_ready:small = %v", m)
		}
		if m["message"] == "" {
			t.Errorf("failure without a message: %v", m)
		}
	}
	if p := queue(t, res.json, "big")["problems"]; !reflect.DeepEqual(p, []any{"max_ready"}) {
		t.Errorf("big problems = %v", p)
	}
	if get(res.json, "components", "processes", "status") != "failing" || get(res.json, "thresholds", "max_ready", "small") != 2.0 ||
		get(res.json, "thresholds", "max_oldest_age", "*") != "1h0m0s" {
		t.Errorf("components %v thresholds %v", res.json["components"], res.json["thresholds"])
	}
	if !strings.Contains(res.stderr, "1 process alive, at least 2 required") {
		t.Errorf("stderr: %s", res.stderr)
	}
}

func TestCheckUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--check.no-such-flag"},
		{"--check.min-processes=-1"},
		{"--check.max-ready=lots"},
		{"--check.max-ready=bad:name=3"},
		{"--check.max-oldest-age=soon"},
		{"--check.timeout=0s"},
		{"--redis.url=http://example.com"},
	} {
		res := runCheck(t, nil, args...)
		if res.code != 2 || res.stdout != "" || res.stderr == "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, nothing, an error", args, res.code, res.stdout, res.stderr)
		}
	}
}

func TestCheckHealthyDatabase(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Heartbeat(testserver.UUID(), time.Now())
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	url := pg.CreateRole(t, "monitor", "db-Secret-88", "app", "pg_monitor")
	res := runCheck(t, []string{"REDIS_URL=" + r.URL(), "DATABASE_URL=" + url})
	wantCode(t, res, 0)
	if get(res.json, "components", "database", "status") != "ok" {
		t.Errorf("components = %v", res.json["components"])
	}
	if strings.Contains(res.stdout+res.stderr, "db-Secret-88") {
		t.Fatalf("the database password leaked:\n%s\n%s", res.stdout, res.stderr)
	}
}

func TestCheckDatabaseDown(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Heartbeat(testserver.UUID(), time.Now())
	port := testserver.FreePort(t)
	dsn := fmt.Sprintf("postgres://app:db-Secret-77@127.0.0.1:%d/app?sslmode=disable", port)
	res := runCheck(t, []string{"REDIS_URL=" + r.URL(), "DATABASE_URL=" + dsn})
	wantCode(t, res, 1)
	if got := failedChecks(res.json); !reflect.DeepEqual(got, []string{"database"}) {
		t.Errorf("failed = %v, want [database]", got)
	}
	if get(res.json, "components", "database", "status") != "failing" || get(res.json, "components", "redis", "status") != "ok" {
		t.Errorf("components = %v", res.json["components"])
	}
	if strings.Contains(res.stdout+res.stderr, "db-Secret-77") {
		t.Fatalf("the database password leaked:\n%s\n%s", res.stdout, res.stderr)
	}
}

// A database host that accepts TCP and never answers (a hung server, a
// black-holing proxy) must not hold the check past its timeout either.
func TestCheckHungDatabaseWithinTimeout(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Heartbeat(testserver.UUID(), time.Now())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dsn := fmt.Sprintf("postgres://app@%s/app?sslmode=disable&connect_timeout=30", l.Addr())
	res := runCheck(t, []string{"REDIS_URL=" + r.URL(), "DATABASE_URL=" + dsn}, "--check.timeout=1s")
	wantCode(t, res, 1)
	if res.took > 1500*time.Millisecond {
		t.Fatalf("check took %s with --check.timeout=1s", res.took)
	}
	if got := failedChecks(res.json); !reflect.DeepEqual(got, []string{"database"}) {
		t.Errorf("failed = %v, want [database]", got)
	}
}

// The check never SCANs unless a threshold for every queue (with none
// named) or the orphan check needs it: proved by a Redis user that may not
// SCAN at all.
func TestCheckWithNamedQueuesDoesNotScan(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Heartbeat(testserver.UUID(), time.Now())
	b.Enqueue("emails", 4, time.Now())
	if err := r.Admin.Do(t.Context(), "ACL", "SETUSER", "noscan", "on", ">pw", "~*", "-@all", "+@read", "-keys", "-scan",
		"+ping", "+hello", "+auth", "+info", "+select", "+client|setname").Err(); err != nil {
		t.Fatal(err)
	}
	url := "redis://noscan:pw@" + r.Addr + "/0"
	res := runCheck(t, []string{"REDIS_URL=" + url}, "--dramatiq.queues=emails")
	wantCode(t, res, 0)
	if !strings.Contains(res.stdout, `"name":"emails","ready":4,`) {
		t.Errorf("emails should have 4 ready: %s", res.stdout)
	}
	// Nor does it with no queue named and no threshold: it judges Redis and
	// the heartbeats, and reads no queue.
	res = runCheck(t, []string{"REDIS_URL=" + url})
	wantCode(t, res, 0)
	if !strings.Contains(res.stdout, `"queues":[]`) {
		t.Errorf("no queue was named or needed: %s", res.stdout)
	}
	// A threshold for one queue reads that queue.
	res = runCheck(t, []string{"REDIS_URL=" + url}, "--check.max-ready=emails=3")
	wantCode(t, res, 1)
	if !strings.Contains(res.stdout, `"check":"max_ready"`) || !strings.Contains(res.stdout, `"name":"emails","ready":4,`) {
		t.Errorf("emails has 4 ready, over 3: %s", res.stdout)
	}
	res = runCheck(t, []string{"REDIS_URL=" + url}, "--check.max-oldest-age=emails=1h", "--check.max-ready=emails=10")
	wantCode(t, res, 0)
	// A threshold for every queue, or the orphan check, needs discovery,
	// which needs SCAN: this user fails them.
	for _, args := range [][]string{{"--check.max-ready=10"}, {"--check.max-oldest-age=1h"}, {"--check.no-orphans"}} {
		res = runCheck(t, []string{"REDIS_URL=" + url}, args...)
		wantCode(t, res, 1)
	}
	// With the queues named, a threshold for every queue means those.
	res = runCheck(t, []string{"REDIS_URL=" + url}, "--dramatiq.queues=emails", "--check.max-ready=10")
	wantCode(t, res, 0)
}

// Broker data that once crashed check (a non-UTF-8 queue name in an ack
// set) or made it exit silently (a status JSON cannot carry) gives an
// answer: JSON on stdout, or a reason on stderr and a non-zero exit.
func TestCheckHostileBrokerDataAnswers(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Heartbeat(testserver.UUID(), time.Now())
	r.Admin.SAdd(context.Background(), "dramatiq:__acks__."+testserver.UUID()+".q\xff\xfebad", "m1")
	b.DeadLetter("default", time.UnixMilli(253402300800000), nil)
	cmd := exec.Command(binary, "check", "--check.min-processes=0")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "REDIS_URL=" + r.URL()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if strings.Contains(stderr.String(), "panic") {
		t.Fatalf("check panicked:\n%s", stderr.String())
	}
	var v map[string]any
	switch {
	case json.Unmarshal(stdout.Bytes(), &v) == nil:
		if v["status"] == nil {
			t.Errorf("JSON without status: %s", stdout.String())
		}
	case err == nil:
		t.Errorf("exit 0 without JSON: stdout %q", stdout.String())
	case !strings.Contains(stderr.String(), "cannot encode the status"):
		t.Errorf("%v without a reason: stdout %q stderr %q", err, stdout.String(), stderr.String())
	}
}
