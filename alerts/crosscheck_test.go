package alerts

import (
	"context"
	"fmt"
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The shipped rules and dashboards are compared with what the real exporter
// binary serves, not with a list in a test: a rule on a metric the exporter
// never emits can never fire, and nothing else would notice (a known failure
// of a shipped postgres_exporter alert).
//
// Two exporters run: one against a broker in which every broker family has
// something to say plus a PostgreSQL primary, one against a streaming replica
// of it, because dramatiq_database_replication_lag_seconds only exists there.
func TestShippedMetricsAreEmitted(t *testing.T) {
	start := time.Now()
	root := testserver.RepoRoot(t)
	rds := testserver.StartRedis(t)
	pg := testserver.StartPostgres(t)

	built := make(chan string, 1)
	binDir := t.TempDir()
	go func() { built <- buildExporterBinary(root, binDir) }()

	brokerState(t, rds)
	pg.CreateDatabase(t, "app")
	primaryURL := pg.CreateRole(t, "exporter", "crosscheck-pw", "app", "pg_monitor")
	// The role and the database exist before the copy, so the replica has
	// them too.
	replica := pg.StartReplica(t)
	replicaURL := replica.URL("exporter", "crosscheck-pw", "app")
	t.Logf("redis-server, PostgreSQL primary and replica ready after %s", time.Since(start).Round(time.Millisecond))

	bin := <-built
	if strings.HasPrefix(bin, "error:") {
		t.Fatal(bin)
	}
	onPrimary := startCrosscheckExporter(t, bin, rds.URL(), primaryURL)
	onReplica := startCrosscheckExporter(t, bin, rds.URL(), replicaURL)

	refs := ReferencedMetrics(t)
	recording := must(shipped.RecordingRules(root))(t)
	wanted := map[string]bool{}
	middleware := map[string]bool{}
	for _, m := range mixin.MiddlewareMetrics {
		middleware[m] = true // the workers' own, checked in test/e2e
	}
	// This exporter reads Redis: the RabbitMQ families are absent here by
	// contract (mixin.RabbitMQOnlyMetrics), and must stay so.
	for m := range refs {
		if m != "up" && !recording[m] && !middleware[m] && mixin.MetricBroker(m) != mixin.BrokerRabbitMQ { // up comes from Prometheus, not the exporter
			wanted[m] = true
		}
	}
	for _, m := range contractMetrics {
		if mixin.MetricBroker(m) != mixin.BrokerRabbitMQ {
			wanted[m] = true
		}
	}

	// Discovery and the first database connection take a moment; the state
	// itself never changes, so poll until nothing is missing.
	var fams map[string]*dto.MetricFamily
	var missing, errs []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = map[string]*dto.MetricFamily{}
		errs = errs[:0]
		for _, e := range []*crosscheckExporter{onPrimary, onReplica} {
			got, err := e.scrape()
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			mergeFamilies(fams, got)
		}
		// The dead-letter counters count what dies after a queue's first
		// read: keep adding dead letters until the exporters have counted.
		if len(errs) == 0 && !emitted(fams, "dramatiq_actor_dead_lettered_total") {
			rds.NewBroker(t, "dramatiq").DeadLetter("default", time.Now(), nil)
		}
		missing = missing[:0]
		for m := range wanted {
			if !emitted(fams, m) {
				missing = append(missing, m)
			}
		}
		if len(errs) == 0 && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	sort.Strings(missing)
	for _, m := range missing {
		if where := refs[m]; len(where) > 0 {
			t.Errorf("%s is never emitted by the exporter, but is used by:\n\t%s", m, strings.Join(where, "\n\t"))
		} else {
			t.Errorf("contract metric %s is never emitted by the exporter", m)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("scrape: %s\nprimary exporter log:\n%s\nreplica exporter log:\n%s",
			strings.Join(errs, "; "), onPrimary.output(), onReplica.output())
	}

	// The broker state is what this test claims it is, so the families above
	// were seen with real values, not only as zeros.
	for _, c := range []struct {
		metric string
		labels map[string]string
		test   func(float64) bool
		want   string
	}{
		{"dramatiq_redis_up", nil, func(v float64) bool { return v == 1 }, "1"},
		{"dramatiq_queue_orphaned_messages", map[string]string{"queue": "default"}, func(v float64) bool { return v == 2 }, "2"},
		{"dramatiq_queue_delayed_messages", map[string]string{"queue": "default"}, func(v float64) bool { return v == 1 }, "1"},
		{"dramatiq_processes", map[string]string{"state": "stale"}, func(v float64) bool { return v == 1 }, "1"},
		{"dramatiq_processes", map[string]string{"state": "alive"}, func(v float64) bool { return v == 1 }, "1"},
		{"dramatiq_database_up", nil, func(v float64) bool { return v == 1 }, "1"},
		{"dramatiq_database_in_recovery", nil, func(v float64) bool { return v == 1 }, "1 (from the replica's exporter)"},
	} {
		vals := testserver.Samples(fams[c.metric], c.labels)
		ok := false
		for _, v := range vals {
			ok = ok || c.test(v)
		}
		if !ok {
			t.Errorf("%s%v = %v, want a sample of %s: the test's broker or database state is not what it claims", c.metric, c.labels, vals, c.want)
		}
	}

	for _, m := range mixin.RabbitMQOnlyMetrics {
		if emitted(fams, m) {
			t.Errorf("%s is served by an exporter that reads Redis; the rules and dashboards take it for RabbitMQ's", m)
		}
	}

	checkMatchers(t, fams)

	var names []string
	for m := range refs {
		names = append(names, m)
	}
	sort.Strings(names)
	t.Logf("%d metrics referenced by %d shipped queries, %d families served; took %s",
		len(names), len(shippedQueries(t)), len(fams), time.Since(start).Round(time.Millisecond))
}

// brokerState writes, in Dramatiq's own layout, a broker in which every
// broker family has a series worth reading: ready messages with a known age,
// a delayed message, a dead letter (the only way to get the last-timestamp
// series), a live producer and a stale worker that still holds two messages.
func brokerState(t *testing.T, rds *testserver.Redis) {
	t.Helper()
	b := rds.NewBroker(t, "dramatiq")
	now := time.Now()
	b.Enqueue("default", 5, now.Add(-2*time.Minute))
	b.Enqueue("default.DQ", 1, now)
	b.Fetch(testserver.UUID(), "default", 2, now.Add(-10*time.Minute))
	b.Heartbeat(testserver.UUID(), now)
	b.DeadLetter("default", now.Add(-time.Minute), nil)
}

// checkMatchers checks the label matchers of every shipped selector against
// the served series: a label the metric does not have, or a literal value no
// series carries (state="live" for "alive"), makes a selector that matches
// nothing, just like a wrong metric name. job and instance are target labels
// that Prometheus adds; values with Grafana variables are left to the
// end-to-end test.
func checkMatchers(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	for _, q := range shippedQueries(t) {
		sels, err := parseSelectors(q.Expr)
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		for _, s := range sels {
			mf, ok := fams[s.Metric]
			if !ok {
				continue // up, a recording rule, or already reported
			}
			for _, m := range s.Matchers {
				if m.Name == "job" || m.Name == "instance" || m.Name == "__name__" {
					continue
				}
				values := labelValues(mf, m.Name)
				if len(values) == 0 {
					t.Errorf("%s: %s has no label %q (it has %s)", q.Where, s.Metric, m.Name, labelNames(mf))
					continue
				}
				if strings.Contains(m.Value, "$") || (m.Op != "=" && m.Op != "=~") {
					continue
				}
				match := func(v string) bool { return v == m.Value }
				if m.Op == "=~" {
					re, err := regexp.Compile("^(?:" + m.Value + ")$")
					if err != nil {
						t.Errorf("%s: bad regexp in %s: %v", q.Where, s, err)
						continue
					}
					match = re.MatchString
				}
				found := false
				for v := range values {
					found = found || match(v)
				}
				if !found {
					var vs []string
					for v := range values {
						vs = append(vs, strconv.Quote(v))
					}
					sort.Strings(vs)
					t.Errorf("%s: no %s series has %s%s%q (values seen: %s)", q.Where, s.Metric, m.Name, m.Op, m.Value, strings.Join(vs, ", "))
				}
			}
		}
	}
}

// emitted tells whether a PromQL metric name is served: a family, or one of
// the series names of a histogram or summary.
func emitted(fams map[string]*dto.MetricFamily, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if mf, ok := fams[base]; ok && (mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY) {
				return true
			}
		}
	}
	return false
}

func mergeFamilies(into, from map[string]*dto.MetricFamily) {
	for name, mf := range from {
		if have, ok := into[name]; ok {
			have.Metric = append(have.Metric, mf.Metric...)
		} else {
			into[name] = mf
		}
	}
}

func labelValues(mf *dto.MetricFamily, name string) map[string]bool {
	out := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == name {
				out[lp.GetValue()] = true
			}
		}
	}
	return out
}

func labelNames(mf *dto.MetricFamily) string {
	seen := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			seen[lp.GetName()] = true
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "no labels"
	}
	return strings.Join(out, ", ")
}

// buildExporterBinary builds cmd/dramatiq_exporter into a temporary
// directory. It runs on its own goroutine, so it reports failure as a string
// starting with "error:" instead of calling t.Fatal.
func buildExporterBinary(root, dir string) string {
	bin, err := testserver.BuildExporter(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	return bin
}

type crosscheckExporter struct {
	url    string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{}
}

func (e *crosscheckExporter) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.out.Write(p)
}

func (e *crosscheckExporter) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.out.String()
}

// startCrosscheckExporter runs the binary on a free port and waits until it
// serves /metrics. It is killed by its pid when the test ends.
func startCrosscheckExporter(t *testing.T, bin, redisURL, databaseURL string) *crosscheckExporter {
	t.Helper()
	var last error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before we bind it
		port := testserver.FreePort(t)
		e := &crosscheckExporter{url: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), exited: make(chan struct{})}
		e.cmd = exec.Command(bin,
			"--redis.url="+redisURL,
			"--dramatiq.discovery-interval=1s",
			"--dramatiq.backlog-by-actor", // opt-in; its panel needs it
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		)
		// Through the environment, as documented, so the password stays
		// out of the process list.
		e.cmd.Env = testserver.Env("DATABASE_URL=" + databaseURL)
		e.cmd.Stdout, e.cmd.Stderr = e, e
		// Pdeathsig: the exporter dies with the test binary even when
		// the cleanups cannot run.
		e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := e.cmd.Start(); err != nil {
			t.Fatalf("start exporter: %v", err)
		}
		go func() { _ = e.cmd.Wait(); close(e.exited) }()
		stop := func() {
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := e.scrape()
			if err == nil {
				t.Cleanup(stop)
				return e
			}
			last = err
			exited := false
			select {
			case <-e.exited:
				exited = true
			case <-time.After(50 * time.Millisecond):
			}
			if exited || time.Now().After(deadline) {
				break
			}
		}
		stop()
		last = fmt.Errorf("%v\n%s", last, e.output())
	}
	t.Fatalf("exporter never served /metrics: %v", last)
	return nil
}

func (e *crosscheckExporter) scrape() (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return testserver.ScrapeMetrics(ctx, e.url)
}
