package dramatiq_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// One RabbitMQ node serves every RabbitMQ test of this binary (a start
// costs about 9 s); each run gets a vhost of its own. It starts on first use
// and stops in TestMain.
var (
	rabbitOnce sync.Once
	rabbitNode *testserver.RabbitMQ
	rabbitErr  error
	rabbitDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if rabbitNode != nil {
		rabbitNode.Close()
	}
	if rabbitDir != "" {
		os.RemoveAll(rabbitDir)
	}
	os.Exit(code)
}

func sharedRabbitMQ(t *testing.T) *testserver.RabbitMQ {
	t.Helper()
	testserver.LookPath(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin")
	rabbitOnce.Do(func() {
		rabbitDir, rabbitErr = os.MkdirTemp("", "dramatiq-rabbitmq-")
		if rabbitErr == nil {
			rabbitNode, rabbitErr = testserver.StartRabbitMQNode(rabbitDir)
		}
	})
	if rabbitErr != nil {
		t.Fatal(rabbitErr)
	}
	return rabbitNode
}

// The user the reader runs as in the conformance runs: the monitoring tag
// and, on each run's vhost, a permission entry that grants nothing.
const (
	watchUser = "watcher"
	watchPass = "watch-secret"
)

// A scenario's expectation key -> the reader's number.
var rabbitFields = map[string]func(q *rabbitmq.Queue) rabbitmq.Count{
	"ready":           func(q *rabbitmq.Queue) rabbitmq.Count { return q.Ready },
	"inflight":        func(q *rabbitmq.Queue) rabbitmq.Count { return q.InFlight },
	"delayed":         func(q *rabbitmq.Queue) rabbitmq.Count { return q.Delayed },
	"delayed_held":    func(q *rabbitmq.Queue) rabbitmq.Count { return q.DelayedHeld },
	"dead_letter":     func(q *rabbitmq.Queue) rabbitmq.Count { return q.DeadLetters },
	"consumers":       func(q *rabbitmq.Queue) rabbitmq.Count { return q.Consumers },
	"delay_consumers": func(q *rabbitmq.Queue) rabbitmq.Count { return q.DelayConsumers },
	"dead_ttl":        func(q *rabbitmq.Queue) rabbitmq.Count { return q.Dead.MessageTTL },
	"problems":        func(q *rabbitmq.Queue) rabbitmq.Count { return rabbitmq.Count{N: int64(len(q.Problems)), OK: true} },
}

type rabbitRun struct {
	venv   venv
	script string
	vhost  string

	err    error
	log    bytes.Buffer
	phases int
	took   time.Duration
}

func (r *rabbitRun) logf(format string, args ...any) {
	fmt.Fprintf(&r.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// TestRabbitMQConformance runs every rabbitmq_*.py scenario (except the
// harness and the CLI app) with each Dramatiq release against one node,
// and checks the reader's view of each phase, as a monitoring-only user.
func TestRabbitMQConformance(t *testing.T) {
	root := testserver.RepoRoot(t)
	here := filepath.Join(root, "test", "dramatiq")
	all, _ := filepath.Glob(filepath.Join(here, "rabbitmq_*.py"))
	var scripts []string
	for _, s := range all {
		if b := filepath.Base(s); b != "rabbitmq_harness.py" && b != "rabbitmq_cli_app.py" {
			scripts = append(scripts, s)
		}
	}
	if len(scripts) == 0 {
		t.Fatalf("no rabbitmq_*.py scenario in %s", here)
	}
	venvs := rabbitVenvs(t, root)
	node := sharedRabbitMQ(t)
	node.PutUser(t, watchUser, watchPass, "monitoring")

	var runs []*rabbitRun
	for _, v := range venvs {
		for _, s := range scripts {
			name := strings.TrimSuffix(filepath.Base(s), ".py")
			// A "/" in the vhost name: the reader must escape it.
			vhost := "conformance/" + v.label + "/" + name
			node.PutVhost(t, vhost)
			node.SetPermissions(t, vhost, watchUser, "", "", "")
			runs = append(runs, &rabbitRun{venv: v, script: s, vhost: vhost})
		}
	}
	// Scenarios mostly wait on RabbitMQ's statistics; a few at once.
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			r.err = r.execute(node)
			r.took = time.Since(start)
		}()
	}
	wg.Wait()
	for _, r := range runs {
		name := r.venv.label + "/" + strings.TrimSuffix(filepath.Base(r.script), ".py")
		t.Run(name, func(t *testing.T) {
			if r.err != nil {
				t.Errorf("%v\n%s", r.err, r.log.String())
				return
			}
			if r.phases == 0 {
				t.Errorf("no phase checked\n%s", r.log.String())
			}
			t.Logf("%d phases in %s", r.phases, r.took.Round(time.Millisecond))
		})
	}
}

// rabbitVenvs are the current Dramatiq (.venv) and the oldest release whose
// RabbitMQ broker runs on this Python (1.3.0; see
// requirements-rabbitmq-oldest.txt for why not 1.2.0).
func rabbitVenvs(t *testing.T, root string) []venv {
	t.Helper()
	var out []venv
	for _, dir := range []string{".venv", ".build/venv-dramatiq-rabbitmq-oldest"} {
		py := filepath.Join(root, dir, "bin", "python")
		v, err := exec.Command(py, "-c", "import dramatiq, pika; print(dramatiq.__version__)").Output()
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s cannot import dramatiq and pika (CI=%s): run scripts/deps.sh (make deps) first: %v", py, os.Getenv("CI"), err)
			}
			t.Skipf("%s cannot import dramatiq and pika: run scripts/deps.sh (make deps): %v", py, err)
		}
		out = append(out, venv{label: "dramatiq-" + strings.TrimSpace(string(v)), python: py})
	}
	return out
}

func (r *rabbitRun) execute(node *testserver.RabbitMQ) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*runTimeout)
	defer cancel()
	reader, err := rabbitmq.New(rabbitmq.Options{URL: node.MgmtURL(), User: watchUser, Password: watchPass, Vhost: r.vhost})
	if err != nil {
		return err
	}
	defer reader.Close()

	cmd := exec.CommandContext(ctx, r.venv.python, r.script, "--amqp-url", node.AdminAMQPURL(r.vhost))
	cmd.Dir = filepath.Dir(r.script)
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	var stderr testserver.LogBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		werr := cmd.Wait()
		if err == nil && werr != nil {
			err = fmt.Errorf("scenario exited: %v", werr)
		}
		if err != nil {
			err = fmt.Errorf("%w\n--- scenario stderr:\n%s", err, tail(stderr.String(), 6000))
		}
	}()

	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	if !lines.Scan() {
		return fmt.Errorf("scenario printed no header")
	}
	r.logf("header %s", lines.Text())
	for lines.Scan() {
		var p phase
		if err := json.Unmarshal(lines.Bytes(), &p); err != nil {
			return fmt.Errorf("bad line %q: %v", lines.Text(), err)
		}
		if p.Done {
			return nil
		}
		if err := r.check(ctx, reader, p); err != nil {
			return fmt.Errorf("phase %s: %w", p.Phase, err)
		}
		r.phases++
		if _, err := io.WriteString(stdin, "ok\n"); err != nil {
			return err
		}
	}
	return fmt.Errorf("scenario ended without done: %v", lines.Err())
}

// check reads until the reader agrees with every expectation, or the
// phase's timeout passes. RabbitMQ's numbers lag by its statistics
// interval, so the first reads may disagree.
func (r *rabbitRun) check(ctx context.Context, reader *rabbitmq.Reader, p phase) error {
	timeout := time.Duration(p.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	deadline := time.Now().Add(timeout)
	var diffs []string
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := reader.Read(rctx)
		cancel()
		if err != nil {
			diffs = []string{"read: " + err.Error()}
		} else if diffs = compareRabbit(s, p); len(diffs) == 0 {
			diffs = compareProjection(s, p)
		}
		if len(diffs) == 0 {
			r.logf("phase %s: ok", p.Phase)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s:\n  %s", timeout, strings.Join(diffs, "\n  "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func compareRabbit(s *rabbitmq.Snapshot, p phase) []string {
	byName := map[string]*rabbitmq.Queue{}
	for i := range s.Queues {
		byName[s.Queues[i].Name] = &s.Queues[i]
	}
	var diffs []string
	names := make([]string, 0, len(p.Queues))
	for q := range p.Queues {
		names = append(names, q)
	}
	sort.Strings(names)
	for _, name := range names {
		q := byName[name]
		if q == nil {
			diffs = append(diffs, fmt.Sprintf("%s: not reported", name))
			continue
		}
		for key, raw := range p.Queues[name] {
			if key == "max_priority" {
				var want *int64
				_ = json.Unmarshal(raw, &want)
				for _, m := range []struct {
					n string
					c rabbitmq.Count
				}{{"q", q.Main.MaxPriority}, {"q.DQ", q.Delay.MaxPriority}} {
					if (want == nil) != !m.c.OK || want != nil && *want != m.c.N {
						diffs = append(diffs, fmt.Sprintf("%s: %s x-max-priority %+v, want %s", name, m.n, m.c, raw))
					}
				}
				if q.Dead.MaxPriority.OK {
					diffs = append(diffs, fmt.Sprintf("%s: q.XQ has x-max-priority", name))
				}
				continue
			}
			get, ok := rabbitFields[key]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s: unknown expectation %q", name, key))
				continue
			}
			var want int64
			if err := json.Unmarshal(raw, &want); err != nil {
				diffs = append(diffs, fmt.Sprintf("%s: %s: bad expectation %s", name, key, raw))
				continue
			}
			got := get(q)
			if !got.OK {
				diffs = append(diffs, fmt.Sprintf("%s: %s absent, want %d", name, key, want))
			} else if got.N != want {
				diffs = append(diffs, fmt.Sprintf("%s: %s = %d, want %d", name, key, got.N, want))
			}
			if key == "problems" && got.N != want {
				diffs = append(diffs, fmt.Sprintf("%s: problems %q", name, q.Problems))
			}
		}
	}
	for _, name := range p.AbsentQueues {
		if byName[name] != nil {
			diffs = append(diffs, fmt.Sprintf("%s: reported, want absent", name))
		}
	}
	return diffs
}
