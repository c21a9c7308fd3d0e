package dramatiq_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// Stuck work against real Dramatiq on a Redis that also holds a million
// unrelated keys, with discovery's first pass paced so slowly that it
// cannot complete during the test: what the exporter reports here comes
// from the ack sets it finds through the heartbeat set, not from SCAN.
//
//   - crash: a worker holding 4 messages is SIGKILLed; its orphans must
//     show within the heartbeat timeout plus one scrape (scrapes every
//     second here).
//   - hung: an actor blocks past a threshold while its worker keeps
//     heartbeating; dramatiq_queue_longest_held_message_seconds grows, then
//     drops to 0 when the actor returns.
func TestStuckWorkWithoutDiscovery(t *testing.T) {
	root := testserver.RepoRoot(t)
	py := filepath.Join(root, ".venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing: run scripts/deps.sh (make deps)", py)
		}
		t.Skipf("%s missing: run scripts/deps.sh (make deps)", py)
	}
	const hb = 3 * time.Second
	srv := testserver.StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := srv.Admin.Do(ctx, "DEBUG", "POPULATE", 1_000_000, "django.cache:").Err(); err != nil {
		t.Fatal(err)
	}
	bin, err := testserver.BuildExporter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	port := testserver.FreePort(t)
	exp := exec.Command(bin, "--redis.url="+srv.URL(), "--dramatiq.namespace=stuck", "--dramatiq.queues=crash,hung",
		"--dramatiq.heartbeat-timeout=3s", "--dramatiq.discovery-first-pass-duty=0.0001",
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	var expOut strings.Builder
	exp.Stdout, exp.Stderr = &expOut, &expOut
	if err := exp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exp.Process.Kill(); _ = exp.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)

	dir := filepath.Join(root, "test", "dramatiq")
	env := append(os.Environ(), "STUCK_REDIS_URL="+srv.URL(), "STUCK_NAMESPACE=stuck", "STUCK_HEARTBEAT_TIMEOUT=3")
	worker := func(queue string) *exec.Cmd {
		c := exec.Command(py, "-m", "dramatiq", "stuck_app", "--processes", "1", "--threads", "2", "--queues", queue)
		c.Dir, c.Env = dir, env
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL); _ = c.Wait() })
		return c
	}
	send := func(args ...string) {
		c := exec.Command(py, append([]string{"stuck_app.py"}, args...)...)
		c.Dir, c.Env = dir, env
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("send %v: %v\n%s", args, err, out)
		}
	}
	value := func(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
		mf, ok := fams[name]
		if !ok {
			return 0, false
		}
		v := testserver.Samples(mf, labels)
		if len(v) != 1 {
			return 0, false
		}
		return v[0], true
	}
	scrape := func() map[string]*dto.MetricFamily {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		fams, err := testserver.ScrapeMetrics(sctx, url)
		if err != nil {
			t.Fatalf("%v\n%s", err, expOut.String())
		}
		return fams
	}
	// until scrapes every second until cond holds, up to timeout.
	until := func(what string, timeout time.Duration, cond func(map[string]*dto.MetricFamily) bool) (map[string]*dto.MetricFamily, time.Time) {
		deadline := time.Now().Add(timeout)
		for {
			fams := scrape()
			if cond(fams) {
				return fams, time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, timeout)
			}
			time.Sleep(time.Second)
		}
	}
	crash := map[string]string{"queue": "crash"}
	hung := map[string]string{"queue": "hung"}

	// Crash.
	crasher := worker("crash")
	send("hold", "4")
	until("the crash worker holds 4", 60*time.Second, func(f map[string]*dto.MetricFamily) bool {
		v, _ := value(f, "dramatiq_queue_inflight_messages", crash)
		return v == 4
	})
	if err := syscall.Kill(-crasher.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	fams, seen := until("orphans of the killed worker", 30*time.Second, func(f map[string]*dto.MetricFamily) bool {
		v, _ := value(f, "dramatiq_queue_orphaned_messages", crash)
		if v != 0 && time.Since(killed) < hb-1500*time.Millisecond {
			t.Fatalf("%g orphans %s after the kill, before the heartbeat timeout", v, time.Since(killed))
		}
		return v == 4
	})
	lag := seen.Sub(killed)
	t.Logf("orphans reported %s after SIGKILL (heartbeat timeout %s, scrapes every 1s)", lag.Round(10*time.Millisecond), hb)
	// The worker's last heartbeat precedes the kill by under a second;
	// one scrape (1 s) plus the scrape's own time and slack.
	if lag > hb+4*time.Second {
		t.Errorf("orphans reported %s after the kill, want within the %s heartbeat timeout plus one scrape", lag, hb)
	}
	if v, _ := value(fams, "dramatiq_exporter_discovery_passes_total", nil); v != 0 {
		t.Errorf("a discovery pass completed (%g): the test no longer shows orphans found without SCAN", v)
	}

	// Hung: an 8 s block past a 4 s threshold, while the worker heartbeats.
	worker("hung")
	const block, threshold = 8, 4.0
	send("block", fmt.Sprint(block))
	var peak float64
	until("the held time passes the threshold", 60*time.Second, func(f map[string]*dto.MetricFamily) bool {
		v, _ := value(f, "dramatiq_queue_longest_held_message_seconds", hung)
		peak = max(peak, v)
		if alive, _ := value(f, "dramatiq_processes", map[string]string{"state": "alive"}); v > 0 && alive < 1 {
			t.Fatalf("held %gs with no live process", v)
		}
		if lb, _ := value(f, "dramatiq_queue_longest_held_message_lower_bound", hung); lb != 0 {
			t.Fatalf("a message fetched after the exporter started is marked as a lower bound")
		}
		return v >= threshold
	})
	until("the held time drops when the actor returns", 60*time.Second, func(f map[string]*dto.MetricFamily) bool {
		v, _ := value(f, "dramatiq_queue_longest_held_message_seconds", hung)
		if v < peak-1.5 && v != 0 {
			t.Fatalf("held time went back from %g to %g while the message was still held", peak, v)
		}
		peak = max(peak, v)
		return v == 0
	})
	t.Logf("held time peaked at %gs for an actor blocking %ds", peak, block)
	if peak > block+2 {
		t.Errorf("held time peaked at %gs, more than the %ds the actor blocked", peak, block)
	}
}
