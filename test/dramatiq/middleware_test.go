package dramatiq_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The shipped per-actor rules and panels (docs/worker-metrics.md) rely on the
// names, types and labels of Dramatiq's own Prometheus middleware, and on how
// it counts. This checks them against the real middleware of every Dramatiq
// version the conformance suite covers: 3 messages that fail with
// max_retries=2 and 3 that succeed.
func TestPrometheusMiddleware(t *testing.T) {
	root := testserver.RepoRoot(t)
	venvs := findVenvs(t, root)
	for _, v := range venvs {
		t.Run(v.label, func(t *testing.T) {
			fams := runMiddleware(t, root, v)
			for _, name := range mixin.MiddlewareMetrics {
				fam := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				mf, ok := fams[fam]
				if !ok {
					t.Errorf("%s: no family %s (have %v)", v.label, fam, familyNames(fams))
					continue
				}
				want := map[string]dto.MetricType{
					"dramatiq_messages_inprogress":           dto.MetricType_GAUGE,
					"dramatiq_message_duration_milliseconds": dto.MetricType_HISTOGRAM,
				}[fam]
				if want == dto.MetricType_COUNTER && !strings.HasSuffix(fam, "_total") {
					t.Errorf("%s: %s is neither a counter nor listed", v.label, fam)
				}
				if mf.GetType() != want {
					t.Errorf("%s: %s is a %s, want %s", v.label, fam, mf.GetType(), want)
				}
				for _, m := range mf.GetMetric() {
					var names []string
					for _, l := range m.GetLabel() {
						names = append(names, l.GetName())
					}
					sort.Strings(names)
					if !slices.Equal(names, []string{"actor_name", "queue_name"}) {
						t.Errorf("%s: %s has labels %v, want actor_name and queue_name", v.label, fam, names)
					}
				}
			}
			// How it counts, as docs/worker-metrics.md says: each attempt;
			// a retry once on the delay queue and once on the queue.
			for _, c := range []struct {
				fam, queue, actor string
				want              float64
			}{
				{"dramatiq_messages_total", "q1", "flaky", 9},
				{"dramatiq_message_errors_total", "q1", "flaky", 9},
				{"dramatiq_message_rejects_total", "q1", "flaky", 3},
				{"dramatiq_message_retries_total", "q1.DQ", "flaky", 6},
				{"dramatiq_message_retries_total", "q1", "flaky", 6},
				{"dramatiq_messages_total", "q1", "ok", 3},
			} {
				if got := counterValue(fams[c.fam], c.queue, c.actor); got != c.want {
					t.Errorf("%s: %s{queue_name=%q,actor_name=%q} = %v, want %v", v.label, c.fam, c.queue, c.actor, got, c.want)
				}
			}
			// An actor that never failed has no error series: the ratio
			// rule must not need one.
			if got := counterValue(fams["dramatiq_message_errors_total"], "q1", "ok"); got != -1 {
				t.Errorf("%s: errors of ok = %v, want no series", v.label, got)
			}
		})
	}
}

// runMiddleware runs middleware_app.py under the dramatiq CLI of v, sends
// its messages and returns the families its exposition server serves once
// every flaky message is dead-lettered.
func runMiddleware(t *testing.T, root string, v venv) map[string]*dto.MetricFamily {
	t.Helper()
	rds := testserver.StartRedis(t)
	dir := filepath.Join(root, "test", "dramatiq")
	promDir := t.TempDir()
	port := testserver.FreePort(t)
	env := testserver.Env(
		"MW_REDIS_URL="+rds.URL(),
		"dramatiq_prom_host=127.0.0.1",
		"dramatiq_prom_port="+strconv.Itoa(port),
		"dramatiq_prom_db="+promDir,
		"dramatiq_prom_lock="+filepath.Join(promDir, "lock"),
		"PROMETHEUS_MULTIPROC_DIR="+promDir,
		"prometheus_multiproc_dir="+promDir,
	)
	var out strings.Builder
	cli := exec.Command(v.python, "-m", "dramatiq", "middleware_app", "--processes", "1", "--threads", "2")
	cli.Dir, cli.Env, cli.Stdout, cli.Stderr = dir, env, &out, &out
	cli.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cli.Wait(); close(done) }()
	t.Cleanup(func() {
		// The 2.x CLI forks the exposition server: end the whole group.
		_ = syscall.Kill(-cli.Process.Pid, syscall.SIGKILL)
		<-done
	})
	send := exec.Command(v.python, "middleware_app.py", "--send")
	send.Dir, send.Env = dir, env
	if b, err := send.CombinedOutput(); err != nil {
		t.Fatalf("send: %v\n%s", err, b)
	}
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		fams, err := scrapeMiddleware(port)
		if err == nil && counterValue(fams["dramatiq_message_rejects_total"], "q1", "flaky") == 3 &&
			counterValue(fams["dramatiq_messages_total"], "q1", "ok") == 3 {
			return fams
		}
		if err == nil {
			err = fmt.Errorf("not all messages processed yet: %v", familyNames(fams))
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %v\n%s", v.label, last, out.String())
	return nil
}

func scrapeMiddleware(port int) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// counterValue is the counter's value for the queue and actor, -1 without
// such a series.
func counterValue(mf *dto.MetricFamily, queue, actor string) float64 {
	for _, m := range mf.GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["queue_name"] == queue && l["actor_name"] == actor {
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func familyNames(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range fams {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
