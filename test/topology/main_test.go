// Package topology_test runs the exporter binary against the Redis
// topologies production uses: Sentinel with a failover, TLS and mutual TLS,
// and many brokers watched through /probe. Every server is real and started
// by the test; the Dramatiq apps are real Dramatiq from the repository's venv.
package topology_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// binary is the exporter, built once for the package.
var binary string

func TestMain(m *testing.M) { testserver.RunWithExporter(m, &binary) }

type exporter struct {
	base string
	logs *testserver.LogBuffer
}

// startExporter runs the binary with args on a free port and waits until it
// serves.
func startExporter(t *testing.T, args ...string) *exporter {
	t.Helper()
	port := testserver.FreePort(t)
	e := &exporter{base: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &testserver.LogBuffer{}}
	cmd := exec.Command(binary, append([]string{"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("exporter log:\n%s", e.logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(e.base + "/-/healthy"); err == nil {
			resp.Body.Close()
			return e
		}
		if resp, err := http.Get(e.base + "/"); err == nil {
			resp.Body.Close()
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %s", e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeResult is one scrape: when it began, how long it took, what it said.
type scrapeResult struct {
	begin time.Time
	took  time.Duration
	fams  map[string]*dto.MetricFamily
	err   error
}

func (s scrapeResult) up() float64 {
	if s.err != nil {
		return -1
	}
	return value(s.fams, "dramatiq_redis_up", nil)
}

// scrape GETs path with Prometheus's scrape-timeout header.
func (e *exporter) scrape(path string, timeout time.Duration) scrapeResult {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+path, nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprint(timeout.Seconds()))
	res := scrapeResult{begin: begin}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		res.err = err
		res.took = time.Since(begin)
		return res
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	res.took = time.Since(begin)
	if resp.StatusCode != http.StatusOK {
		res.err = fmt.Errorf("%s: %s", resp.Status, body)
		return res
	}
	res.fams, res.err = parse(body)
	return res
}

// value is the one sample of name with labels, or -1 when absent.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	mf, ok := fams[name]
	if !ok {
		return -1
	}
	v := testserver.Samples(mf, labels)
	if len(v) != 1 {
		return -1
	}
	return v[0]
}

// queueNumbers reads the counts the scenarios give for queue q.
func queueNumbers(fams map[string]*dto.MetricFamily, q string) map[string]float64 {
	out := map[string]float64{}
	for key, name := range map[string]string{
		"ready": "dramatiq_queue_ready_messages", "inflight": "dramatiq_queue_inflight_messages",
		"delayed": "dramatiq_queue_delayed_messages", "dead_letter": "dramatiq_queue_dead_letter_messages",
	} {
		out[key] = value(fams, name, map[string]string{"queue": q})
	}
	return out
}

// matches says whether every expected count of every queue is reported.
func matches(fams map[string]*dto.MetricFamily, want map[string]map[string]float64) string {
	for q, counts := range want {
		got := queueNumbers(fams, q)
		for k, v := range counts {
			if got[k] != v {
				return fmt.Sprintf("%s %s = %v, want %v", q, k, got[k], v)
			}
		}
	}
	return ""
}

// waitMatch scrapes until the exporter reports want, or fails.
func (e *exporter) waitMatch(t *testing.T, path string, want map[string]map[string]float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	why := ""
	for time.Now().Before(deadline) {
		s := e.scrape(path, 5*time.Second)
		if s.err != nil {
			why = s.err.Error()
		} else if why = matches(s.fams, want); why == "" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s%s never matched Dramatiq's numbers within %s: %s (%s)", e.base, path, timeout, why, e.discoveryState())
}

// waitQueue scrapes until the exporter reports queue q, whatever its
// numbers, or fails.
func (e *exporter) waitQueue(t *testing.T, q string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s := e.scrape("/metrics", 5*time.Second); s.err == nil && queueNumbers(s.fams, q)["ready"] >= 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never reported queue %s within %s (%s)", e.base, q, timeout, e.discoveryState())
}

// discoveryState summarises the exporter's discovery metrics, to tell a
// queue discovery never found from one it lost.
func (e *exporter) discoveryState() string {
	s := e.scrape("/metrics", 5*time.Second)
	if s.err != nil {
		return s.err.Error()
	}
	var parts []string
	for _, name := range []string{"dramatiq_exporter_discovery_passes_total", "dramatiq_exporter_discovery_keys",
		"dramatiq_exporter_discovery_scanned_keys", "dramatiq_exporter_discovery_last_completed_timestamp_seconds"} {
		parts = append(parts, fmt.Sprintf("%s %g", strings.TrimPrefix(name, "dramatiq_exporter_discovery_"), value(s.fams, name, nil)))
	}
	parts = append(parts, fmt.Sprintf("now %d", time.Now().Unix()))
	return "discovery: " + strings.Join(parts, ", ")
}

// app is a Python Dramatiq program speaking one JSON event per line.
type app struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	logs   *testserver.LogBuffer
}

func venvPython(t *testing.T) string {
	t.Helper()
	p := filepath.Join(testserver.RepoRoot(t), ".venv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing (CI=%s): run scripts/deps.sh (make deps) first", p, os.Getenv("CI"))
		}
		t.Skipf("%s missing: run scripts/deps.sh (make deps) to run this test", p)
	}
	return p
}

func startApp(t *testing.T, script string, args ...string) *app {
	t.Helper()
	py := venvPython(t)
	cmd := exec.Command(py, append([]string{script}, args...)...)
	a := &app{cmd: cmd, events: make(chan map[string]any, 16), logs: &testserver.LogBuffer{}}
	var err error
	if a.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = a.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(a.events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				a.events <- ev
			}
		}
	}()
	t.Cleanup(func() {
		_ = a.stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(script), a.logs.String())
		}
	})
	return a
}

func (a *app) wait(t *testing.T, name string, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case ev, ok := <-a.events:
		if !ok {
			t.Fatalf("app ended before %q: %s", name, a.logs.String())
		}
		if ev["event"] != name {
			t.Fatalf("app said %v, want %q", ev, name)
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("app: no %q within %s: %s", name, timeout, a.logs.String())
	}
	return nil
}

func (a *app) say(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(a.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// counts turns an event's {"queue": {"ready": 7}} into numbers.
func counts(ev map[string]any, queues ...string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, q := range queues {
		m, _ := ev[q].(map[string]any)
		out[q] = map[string]float64{}
		for k, v := range m {
			out[q][k] = v.(float64)
		}
	}
	return out
}

func script(t *testing.T, name string) string {
	return filepath.Join(testserver.RepoRoot(t), "test", "topology", name)
}

// runCheck runs `check` and returns its exit code, duration and JSON.
func runCheck(t *testing.T, args ...string) (int, time.Duration, map[string]any, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"check"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	begin := time.Now()
	err := cmd.Run()
	took := time.Since(begin)
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	_ = json.Unmarshal(out.Bytes(), &st)
	return code, took, st, errOut.String()
}

func checkQueue(st map[string]any, name string) map[string]any {
	qs, _ := st["queues"].([]any)
	for _, q := range qs {
		if m, _ := q.(map[string]any); m["name"] == name {
			return m
		}
	}
	return nil
}

func joinAddrs(a []string) string { return strings.Join(a, ",") }

func parse(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}
