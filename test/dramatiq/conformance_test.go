// Package dramatiq_test checks the exporter against real Dramatiq: each
// scenario_*.py in this directory drives Dramatiq (from PyPI, in the venvs
// scripts/deps.sh builds) into a state and prints what the exporter must
// report there; this driver runs the exporter binary against the same
// redis-server, scrapes /metrics and compares. See harness.py for the
// protocol.
package dramatiq_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// Scenarios mostly wait (on heartbeat timeouts, blocked actors, discovery),
// so running several at once costs little CPU even on two cores.
const parallelRuns = 6

// Per-run ceiling, so a hung scenario cannot hold the suite.
const runTimeout = 120 * time.Second

// Ages and timestamps come from different clocks and moments (the Python
// process, the exporter, the scrape), hence the tolerance.
const timeTolerance = 1.0

// A scenario's expectation key -> the metric family that must show it.
var queueMetrics = map[string]string{
	"ready":                      "dramatiq_queue_ready_messages",
	"inflight":                   "dramatiq_queue_inflight_messages",
	"delayed":                    "dramatiq_queue_delayed_messages",
	"dead_letter":                "dramatiq_queue_dead_letter_messages",
	"orphaned":                   "dramatiq_queue_orphaned_messages",
	"dead_letter_last_timestamp": "dramatiq_queue_dead_letter_last_timestamp_seconds",
	"oldest_message_timestamp":   "dramatiq_queue_oldest_message_age_seconds",
	"dead_lettered_total":        "dramatiq_queue_dead_lettered_total",
	// delayed_unclaimed_since: unix seconds the head of the .DQ list has
	// waited since (within 1 s), null for 0; delayed_unclaimed_since_after:
	// the wait must have started after that time (a bound, not a value).
	"delayed_unclaimed_since":       "dramatiq_queue_delayed_unclaimed_oldest_seconds",
	"delayed_unclaimed_since_after": "dramatiq_queue_delayed_unclaimed_oldest_seconds",
	"delayed_overdue":               "dramatiq_queue_delayed_overdue_messages",
}

type header struct {
	Scenario         string   `json:"scenario"`
	Dramatiq         string   `json:"dramatiq"`
	Namespace        string   `json:"namespace"`
	HeartbeatTimeout float64  `json:"heartbeat_timeout"`
	Queues           []string `json:"queues"`
}

type phase struct {
	Phase        string                                `json:"phase"`
	Done         bool                                  `json:"done"`
	Timeout      float64                               `json:"timeout"`
	Queues       map[string]map[string]json.RawMessage `json:"queues"`
	AbsentQueues []string                              `json:"absent_queues"`
	Processes    map[string]float64                    `json:"processes"`
	// Actors are exact dramatiq_actor_dead_lettered_total values by queue
	// and actor.
	Actors map[string]map[string]float64 `json:"actors"`
}

type venv struct {
	label  string // e.g. "dramatiq-2.2.1"
	python string
}

type run struct {
	venv     venv
	script   string // scenario_*.py
	redisURL string

	// results
	err    error
	log    bytes.Buffer // what happened, phase by phase
	phases int
	took   time.Duration
}

func TestConformance(t *testing.T) {
	root := testserver.RepoRoot(t)
	here := filepath.Join(root, "test", "dramatiq")
	scripts, err := filepath.Glob(filepath.Join(here, "scenario_*.py"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scenario_*.py in %s: %v", here, err)
	}
	// CONFORMANCE_SCENARIOS=a,b runs only scenario_a.py and scenario_b.py,
	// for work on one scenario; unset (as in CI), every one runs.
	if only := os.Getenv("CONFORMANCE_SCENARIOS"); only != "" {
		var picked []string
		for _, name := range strings.Split(only, ",") {
			p := filepath.Join(here, "scenario_"+strings.TrimSpace(name)+".py")
			if !slices.Contains(scripts, p) {
				t.Fatalf("CONFORMANCE_SCENARIOS: no %s", p)
			}
			picked = append(picked, p)
		}
		scripts = picked
	}
	testserver.LookPath(t, "redis-server")

	venvs := findVenvs(t, root)
	if len(venvs) == 0 {
		return // findVenvs skipped or failed already
	}
	exporter := buildExporter(t, root)

	var runs []*run
	for _, v := range venvs {
		for _, s := range scripts {
			// One redis-server per run: scenarios may run in parallel
			// and each owns its whole keyspace.
			r := testserver.StartRedis(t)
			runs = append(runs, &run{venv: v, script: s, redisURL: r.URL()})
		}
	}

	start := time.Now()
	sem := make(chan struct{}, parallelRuns)
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t0 := time.Now()
			r.err = r.execute(exporter, here)
			r.took = time.Since(t0)
		}()
	}
	wg.Wait()
	t.Logf("%d scenario runs in %s", len(runs), time.Since(start).Round(time.Millisecond))

	for _, r := range runs {
		name := r.venv.label + "/" + strings.TrimSuffix(strings.TrimPrefix(filepath.Base(r.script), "scenario_"), ".py")
		t.Run(name, func(t *testing.T) {
			if r.err != nil {
				t.Errorf("%v\n--- log ---\n%s", r.err, r.log.String())
				return
			}
			if r.phases == 0 {
				t.Errorf("scenario checked no phase\n%s", r.log.String())
				return
			}
			t.Logf("%d phases agree with Dramatiq %s in %s", r.phases, r.venv.label, r.took.Round(time.Millisecond))
		})
	}
}

// findVenvs returns the Python interpreters to run the scenarios with: the
// pinned current Dramatiq in .venv (required) and the oldest supported one
// (required too, because deps.sh always builds it). Missing ones fail the
// test in CI and skip it locally.
func findVenvs(t *testing.T, root string) []venv {
	t.Helper()
	var out []venv
	for _, dir := range []string{".venv", ".build/venv-dramatiq-oldest"} {
		py := filepath.Join(root, dir, "bin", "python")
		if _, err := os.Stat(py); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing (CI=%s): run scripts/deps.sh (make deps) first", py, os.Getenv("CI"))
			}
			t.Logf("%s missing: run scripts/deps.sh (make deps); skipping those runs", py)
			continue
		}
		v, err := exec.Command(py, "-c", "import dramatiq; print(dramatiq.__version__)").Output()
		if err != nil {
			t.Fatalf("%s cannot import dramatiq: %v", py, err)
		}
		out = append(out, venv{label: "dramatiq-" + strings.TrimSpace(string(v)), python: py})
	}
	if len(out) == 0 {
		t.Skip("no Dramatiq venv (.venv/bin/python); run scripts/deps.sh (make deps)")
	}
	return out
}

func buildExporter(t *testing.T, root string) string {
	t.Helper()
	bin, err := testserver.BuildExporter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(&r.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// execute runs one scenario with one Dramatiq version. It must not call
// testing.T methods: it runs on its own goroutine.
func (r *run) execute(exporterBin, dir string) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	var pyErr bytes.Buffer
	py := exec.Command(r.venv.python, r.script, "--redis-url", r.redisURL)
	py.Dir = dir
	py.Stderr = &pyErr
	py.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, _ := py.StdinPipe()
	stdout, _ := py.StdoutPipe()
	if err := py.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.script, err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		// Closing stdin tells the scenario to clean up its own children
		// (they live in their own sessions) and exit.
		stdin.Close()
		waited := make(chan error, 1)
		go func() { waited <- py.Wait() }()
		var werr error
		select {
		case werr = <-waited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-py.Process.Pid, syscall.SIGKILL)
			werr = <-waited
		}
		if err == nil && werr != nil {
			err = fmt.Errorf("scenario exited with %v", werr)
		}
		r.log.WriteString("--- scenario stderr ---\n" + tail(pyErr.String(), 6000))
	}()

	next := func() (string, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", fmt.Errorf("scenario ended without saying done")
			}
			return l, nil
		case <-ctx.Done():
			return "", fmt.Errorf("scenario timed out after %s", runTimeout)
		}
	}

	first, err := next()
	if err != nil {
		return err
	}
	var h header
	if err := json.Unmarshal([]byte(first), &h); err != nil || h.Scenario == "" {
		return fmt.Errorf("bad header %q: %v", first, err)
	}
	r.logf("header %s", first)

	exp, err := startExporter(ctx, exporterBin, r.redisURL, h)
	if err != nil {
		return err
	}
	defer func() {
		exp.stop()
		r.log.WriteString("--- exporter log ---\n" + tail(exp.output(), 4000))
	}()

	for {
		l, err := next()
		if err != nil {
			return err
		}
		var p phase
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			return fmt.Errorf("bad phase line %q: %v", l, err)
		}
		if p.Done {
			r.logf("done")
			return nil
		}
		r.logf("phase %s: %s", p.Phase, l)
		if err := r.check(ctx, exp, h, p); err != nil {
			return fmt.Errorf("phase %q: %w", p.Phase, err)
		}
		r.phases++
		if _, err := io.WriteString(stdin, "ok\n"); err != nil {
			return fmt.Errorf("answer phase %q: %w", p.Phase, err)
		}
	}
}

// check scrapes until the exporter shows what the phase expects, or the
// phase's timeout passes. Polling is needed because the exporter discovers
// keys on its own interval and staleness arrives with time; the values it
// waits for are exact.
func (r *run) check(ctx context.Context, exp *exporter, h header, p phase) error {
	timeout := time.Duration(p.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		sc, err := exp.scrape(ctx)
		var problems []string
		if err != nil {
			problems = []string{err.Error()}
		} else {
			problems = compare(sc, h, p)
		}
		if len(problems) == 0 {
			r.logf("phase %s agrees after %s", p.Phase, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("exporter still disagrees with Dramatiq after %s:\n  %s", timeout, strings.Join(problems, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrape is one parsed /metrics response and when it was taken.
type scrape struct {
	families map[string]*dto.MetricFamily
	// The exporter read Redis somewhere between before and after.
	before, after float64
}

func compare(sc *scrape, h header, p phase) []string {
	var problems []string
	want := func(name string, labels map[string]string, value float64) {
		got, ok := sc.value(name, labels)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s%s missing, want %g", name, fmtLabels(labels), value))
		} else if got != value {
			problems = append(problems, fmt.Sprintf("%s%s = %g, want %g", name, fmtLabels(labels), got, value))
		}
	}
	want("dramatiq_redis_up", nil, 1)
	want("dramatiq_exporter_collector_success", map[string]string{"collector": "broker"}, 1)
	if _, ok := sc.value("dramatiq_exporter_info", map[string]string{"namespace": h.Namespace}); !ok {
		problems = append(problems, fmt.Sprintf("dramatiq_exporter_info{namespace=%q} missing", h.Namespace))
	}

	queues := make([]string, 0, len(p.Queues))
	for q := range p.Queues {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	for _, q := range queues {
		keys := make([]string, 0, len(p.Queues[q]))
		for k := range p.Queues[q] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			raw := p.Queues[q][k]
			name, ok := queueMetrics[k]
			if !ok {
				problems = append(problems, fmt.Sprintf("scenario bug: unknown expectation %q", k))
				continue
			}
			lbl := map[string]string{"queue": q}
			isNull := string(raw) == "null"
			var v float64
			if !isNull {
				if err := json.Unmarshal(raw, &v); err != nil {
					problems = append(problems, fmt.Sprintf("scenario bug: %s.%s = %s", q, k, raw))
					continue
				}
			}
			switch k {
			case "delayed_unclaimed_since_after":
				got, ok := sc.value(name, lbl)
				switch {
				case !ok:
					problems = append(problems, fmt.Sprintf("%s%s missing", name, fmtLabels(lbl)))
				case got >= sc.after-v:
					problems = append(problems, fmt.Sprintf("%s%s = %.3f, want < %.3f (waiting since after %.3f)", name, fmtLabels(lbl), got, sc.after-v, v))
				}
			case "oldest_message_timestamp", "delayed_unclaimed_since":
				got, ok := sc.value(name, lbl)
				switch {
				case !ok:
					problems = append(problems, fmt.Sprintf("%s%s missing", name, fmtLabels(lbl)))
				case isNull && got != 0:
					problems = append(problems, fmt.Sprintf("%s%s = %g, want 0 (empty queue)", name, fmtLabels(lbl), got))
				case !isNull && (got < sc.before-v-timeTolerance || got > sc.after-v+timeTolerance):
					problems = append(problems, fmt.Sprintf("%s%s = %.3f, want %.3f±%g (first message created at %.3f)", name, fmtLabels(lbl), got, sc.before-v, timeTolerance, v))
				}
			case "dead_letter_last_timestamp":
				got, ok := sc.value(name, lbl)
				switch {
				case isNull && ok:
					problems = append(problems, fmt.Sprintf("%s%s = %g, want no series (empty dead-letter queue)", name, fmtLabels(lbl), got))
				case !isNull && !ok:
					problems = append(problems, fmt.Sprintf("%s%s missing, want %.3f", name, fmtLabels(lbl), v))
				case !isNull && math.Abs(got-v) > timeTolerance:
					problems = append(problems, fmt.Sprintf("%s%s = %.3f, want %.3f±%g", name, fmtLabels(lbl), got, v, timeTolerance))
				}
			default:
				want(name, lbl, v)
			}
		}
	}
	for _, q := range p.AbsentQueues {
		for _, name := range queueMetrics {
			if got, ok := sc.value(name, map[string]string{"queue": q}); ok {
				problems = append(problems, fmt.Sprintf("%s{queue=%q} = %g, want no such queue", name, q, got))
			}
		}
	}
	for q, actors := range p.Actors {
		for actor, n := range actors {
			want("dramatiq_actor_dead_lettered_total", map[string]string{"queue": q, "actor": actor}, n)
		}
	}
	for _, state := range []string{"alive", "stale"} {
		if n, ok := p.Processes[state]; ok {
			want("dramatiq_processes", map[string]string{"state": state}, n)
		}
	}
	return problems
}

// value finds the sample of a gauge or counter whose labels include all of
// labels.
func (sc *scrape) value(name string, labels map[string]string) (float64, bool) {
	mf, ok := sc.families[name]
	if !ok {
		return 0, false
	}
	if v := testserver.Samples(mf, labels); len(v) > 0 {
		return v[0], true
	}
	return 0, false
}

type exporter struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func startExporter(ctx context.Context, bin, redisURL string, h header) (*exporter, error) {
	var lastErr error
	// A free port can be taken between asking for it and binding it, so
	// try a few.
	for attempt := 0; attempt < 3; attempt++ {
		e, err := tryExporter(ctx, bin, redisURL, h)
		if err == nil {
			return e, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func tryExporter(ctx context.Context, bin, redisURL string, h header) (*exporter, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	e := &exporter{url: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), exited: make(chan struct{})}
	args := []string{
		"--redis.url=" + redisURL,
		"--dramatiq.namespace=" + h.Namespace,
		"--dramatiq.heartbeat-timeout=" + strconv.FormatFloat(h.HeartbeatTimeout, 'f', -1, 64) + "s",
		"--dramatiq.discovery-interval=1s",
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(port),
		"--log.level=debug",
	}
	if len(h.Queues) > 0 {
		args = append(args, "--dramatiq.queues="+strings.Join(h.Queues, ","))
	}
	e.cmd = exec.Command(bin, args...)
	e.cmd.Stdout = &lockedWriter{&e.mu, &e.out}
	e.cmd.Stderr = e.cmd.Stdout
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start exporter: %w", err)
	}
	go func() { _ = e.cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := e.scrape(ctx)
		if err == nil {
			return e, nil
		}
		select {
		case <-e.exited:
			return nil, fmt.Errorf("exporter exited: %s", e.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("exporter never served %s: %v\n%s", e.url, err, e.output())
		}
	}
}

func (e *exporter) stop() {
	_ = e.cmd.Process.Kill()
	<-e.exited
}

func (e *exporter) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.out.String()
}

func (e *exporter) scrape(ctx context.Context) (*scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	before := float64(time.Now().UnixNano()) / 1e9
	fams, err := testserver.ScrapeMetrics(ctx, e.url)
	if err != nil {
		return nil, err
	}
	after := float64(time.Now().UnixNano()) / 1e9
	return &scrape{families: fams, before: before, after: after}, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// freePort is testserver.FreePort without a testing.TB, because runs
// happen off the test goroutine.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fmtLabels(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
