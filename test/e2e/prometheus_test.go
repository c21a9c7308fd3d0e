package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// proc is a child process owned by the test, with its output kept for
// failure messages. It runs in its own process group and is killed by its
// pid when the test ends.
type proc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    []byte
	exited chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	return len(b), nil
}

// output returns the last n bytes the process wrote.
func (p *proc) output(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.out) > n {
		return "…" + string(p.out[len(p.out)-n:])
	}
	return string(p.out)
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p
	}
	cmd.Stderr = p
	// Pdeathsig: if the test binary dies without its cleanups (a timeout,
	// a closed output pipe), the child goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	return p
}

// kill ends the process by its pid and waits for it. Safe to call twice.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// startListening starts a server process on a free port (start builds its
// command for a port) and waits until ready(port) succeeds. A free port can
// be taken between asking for it and binding it, so it tries three ports.
func startListening(t *testing.T, name string, start func(port int) *exec.Cmd, ready func(port int) error) (*proc, int) {
	t.Helper()
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		port := testserver.FreePort(t)
		p := startProc(t, name, start(port))
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := ready(port)
			if err == nil {
				return p, port
			}
			last = err
			if !p.running() || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		p.kill()
		last = fmt.Errorf("%v\n%s", last, p.output(3000))
	}
	t.Fatalf("%s never became ready: %v", name, last)
	return nil, 0
}

func httpGet(ctx context.Context, u string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

type prometheus struct {
	*proc
	name string // the release, "prometheus-3.16.0_alertmanager-0.35.0"
	base string
}

// startPrometheus runs the release's prometheus in dir with a 1 s scrape and
// evaluation interval, scraping the exporter as job "dramatiq" and the
// workers' own Prometheus middleware as job "dramatiq-workers" (the rules'
// two job selectors), and loading rules.
func startPrometheus(t *testing.T, rel testserver.PromRelease, dir, exporterAddr, workersAddr string, rules []byte) *prometheus {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "dramatiq.rules.yml")
	if err := os.WriteFile(rulesPath, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: dramatiq
    static_configs:
      - targets: [%q]
  - job_name: dramatiq-workers
    static_configs:
      - targets: [%q]
`, rulesPath, exporterAddr, workersAddr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p, port := startListening(t, rel.Name, func(port int) *exec.Cmd {
		return exec.Command(rel.Prometheus,
			"--config.file="+cfgPath,
			"--storage.tsdb.path="+filepath.Join(dir, "data-"+strconv.Itoa(port)),
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
			"--log.level=warn",
		)
	}, func(port int) error {
		_, code, err := httpGet(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/-/ready", port))
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/-/ready: HTTP %d", code)
		}
		return err
	})
	return &prometheus{proc: p, name: rel.Name, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

// api calls a Prometheus HTTP API endpoint and decodes its data into out.
// An answer with status "error" is returned as an error with Prometheus's
// own message.
func (p *prometheus) api(path string, params url.Values, out any) error {
	u := p.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	b, _, err := httpGet(context.Background(), u)
	if err != nil {
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %v: %.300s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value() float64 {
	str, _ := s.Value[1].(string)
	v, _ := strconv.ParseFloat(str, 64)
	return v
}

// query runs an instant query and returns its samples. A scalar or string
// result counts as one sample.
func (p *prometheus) query(expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var out []sample
		err := json.Unmarshal(data.Result, &out)
		return out, err
	case "scalar", "string":
		var v [2]any
		err := json.Unmarshal(data.Result, &v)
		return []sample{{Value: v}}, err
	default:
		return nil, fmt.Errorf("unexpected result type %q for an instant query", data.ResultType)
	}
}

type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a alert) String() string {
	var parts []string
	for _, k := range []string{"queue", "collector"} {
		if v, ok := a.Labels[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
	}
	return a.Labels["alertname"] + "{" + strings.Join(parts, ",") + "}"
}

func (p *prometheus) alerts() ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	err := p.api("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

type ruleHealth struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

func (p *prometheus) rules() ([]ruleHealth, error) {
	var data struct {
		Groups []struct {
			Rules []ruleHealth `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []ruleHealth
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}
