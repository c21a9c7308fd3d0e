package alerts

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// Query is one PromQL expression shipped in alerts/ or dashboards/.
type Query struct {
	Where string // file and rule, panel or variable, for messages
	Expr  string
	// Grafana marks queries that are written with dashboard variables.
	Grafana bool
	// Variable marks the PromQL of a dashboard variable's label_values.
	Variable bool
}

type promRuleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// RuleFiles returns the shipped rule files, the ones a deployment loads as
// alerts/*.rules.yml.
func RuleFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testserver.RepoRoot(t), "alerts", "*.rules.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no alerts/*.rules.yml: %v", err)
	}
	return files
}

func loadRules(t testing.TB, path string) promRuleFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rf promRuleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rf
}

// DashboardFiles returns the shipped Grafana dashboards.
func DashboardFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testserver.RepoRoot(t), "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards/*.json: %v", err)
	}
	return files
}

func loadDashboard(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// dashboardPanels flattens the panels of a dashboard, including those inside
// collapsed rows.
func dashboardPanels(d map[string]any) []map[string]any {
	var out []map[string]any
	var walk func(list []any)
	walk = func(list []any) {
		for _, p := range list {
			pm, ok := p.(map[string]any)
			if !ok {
				continue
			}
			out = append(out, pm)
			if sub, ok := pm["panels"].([]any); ok {
				walk(sub)
			}
		}
	}
	ps, _ := d["panels"].([]any)
	walk(ps)
	return out
}

// ShippedQueries returns every PromQL expression in alerts/*.rules.yml and
// dashboards/*.json: rule expressions, panel targets and the selectors of
// dashboard variables.
func ShippedQueries(t testing.TB) []Query {
	t.Helper()
	root := testserver.RepoRoot(t)
	var qs []Query
	for _, f := range RuleFiles(t) {
		rel, _ := filepath.Rel(root, f)
		for _, g := range loadRules(t, f).Groups {
			for _, r := range g.Rules {
				name := r.Alert + r.Record
				qs = append(qs, Query{Where: rel + ": " + name, Expr: r.Expr})
			}
		}
	}
	for _, f := range DashboardFiles(t) {
		rel, _ := filepath.Rel(root, f)
		d := loadDashboard(t, f)
		for _, p := range dashboardPanels(d) {
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				expr, _ := tm["expr"].(string)
				ref, _ := tm["refId"].(string)
				qs = append(qs, Query{Where: fmt.Sprintf("%s: panel %q %s", rel, p["title"], ref), Expr: expr, Grafana: true})
			}
		}
		tmpl, _ := d["templating"].(map[string]any)
		vars, _ := tmpl["list"].([]any)
		for _, v := range vars {
			vm, _ := v.(map[string]any)
			if vm["type"] != "query" {
				continue
			}
			q, _ := vm["query"].(string)
			if qm, ok := vm["query"].(map[string]any); ok {
				q, _ = qm["query"].(string)
			}
			if expr, ok := grafanaQueryExpr(q); ok {
				qs = append(qs, Query{Where: fmt.Sprintf("%s: variable %s", rel, vm["name"]), Expr: expr, Grafana: true, Variable: true})
			}
		}
	}
	return qs
}

// RecordingRules returns the names of the shipped recording rules.
func RecordingRules(t testing.TB) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range RuleFiles(t) {
		for _, g := range loadRules(t, f).Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					out[r.Record] = true
				}
			}
		}
	}
	return out
}

// ReferencedMetrics returns every metric name that the shipped rules and
// dashboards query, each with the places that use it. An end-to-end test
// compares its keys with the metric names of a real exporter's /metrics
// (plus RecordingRules and Prometheus's own "up").
func ReferencedMetrics(t testing.TB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, q := range ShippedQueries(t) {
		sels, err := parseSelectors(q.Expr)
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		for _, s := range sels {
			if s.Metric == "" {
				t.Errorf("%s: selector %s has no metric name", q.Where, s)
				continue
			}
			out[s.Metric] = append(out[s.Metric], q.Where)
		}
	}
	return out
}

// contractMetrics is the metric contract of the exporter (the common brief
// and issue 4). Tests here check the shipped queries against it; the
// end-to-end test checks them against a real exporter.
var contractMetrics = []string{
	"dramatiq_redis_up",
	"dramatiq_redis_memory_used_bytes",
	"dramatiq_redis_connected_clients",
	"dramatiq_queue_ready_messages",
	"dramatiq_queue_inflight_messages",
	"dramatiq_queue_delayed_messages",
	"dramatiq_queue_dead_letter_messages",
	"dramatiq_queue_dead_letter_last_timestamp_seconds",
	"dramatiq_queue_oldest_message_age_seconds",
	"dramatiq_queue_orphaned_messages",
	"dramatiq_processes",
	"dramatiq_exporter_queues_dropped",
	"dramatiq_exporter_broker_anomalies_total",
	"dramatiq_exporter_collector_success",
	"dramatiq_exporter_collector_duration_seconds",
	"dramatiq_exporter_build_info",
	"dramatiq_exporter_info",
	"dramatiq_database_up",
	"dramatiq_database_ping_duration_seconds",
	"dramatiq_database_info",
	"dramatiq_database_connections",
	"dramatiq_database_max_connections",
	"dramatiq_database_oldest_transaction_age_seconds",
	"dramatiq_database_blocked_connections",
	"dramatiq_database_in_recovery",
	"dramatiq_database_replication_lag_seconds",
	"dramatiq_database_size_bytes",
}

// Every metric a rule or panel queries is one the exporter promises, a
// recording rule of ours, or Prometheus's own up.
func TestReferencedMetricsAreInContract(t *testing.T) {
	known := map[string]bool{"up": true}
	for _, m := range contractMetrics {
		known[m] = true
	}
	for m := range RecordingRules(t) {
		known[m] = true
	}
	refs := ReferencedMetrics(t)
	if len(refs) < 20 {
		t.Fatalf("found only %d metrics in alerts and dashboards: the reader is missing selectors", len(refs))
	}
	var names []string
	for m := range refs {
		names = append(names, m)
		if !known[m] {
			t.Errorf("%s is not a metric the exporter emits; used by %s", m, strings.Join(refs[m], "; "))
		}
	}
	sort.Strings(names)
	t.Logf("%d metrics referenced: %s", len(names), strings.Join(names, " "))
	// Every broker and database metric with an operational meaning is shown
	// somewhere; build_info is the only one left to Prometheus's own UI.
	for _, m := range contractMetrics {
		if _, ok := refs[m]; !ok && m != "dramatiq_exporter_build_info" {
			t.Errorf("contract metric %s is used by no rule or dashboard", m)
		}
	}
}

func TestParseSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string // selector strings
	}{
		{`up{job="dramatiq"} == 0`, []string{`up{job="dramatiq"}`}},
		{`sum by (queue, state) (rate(foo_total{a="b"}[5m])) > 0`, []string{`foo_total{a="b"}`}},
		{`sum(rate(foo_total[$__rate_interval])) without (instance)`, []string{`foo_total{}`}},
		{`a / on (job, instance) group_left (version) b_info{x=~"y|z"}`, []string{`a{}`, `b_info{x=~"y|z"}`}},
		{`a unless ignoring(queue) b`, []string{`a{}`, `b{}`}},
		{`a > bool 1 and b offset 5m`, []string{`a{}`, `b{}`}},
		{`time() - ts{q="x"} < 900`, []string{`ts{q="x"}`}},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []string{`m{}`}},
		{`{__name__="via_name", job="j"}`, []string{`via_name{__name__="via_name",job="j"}`}},
		{`max_over_time(deriv(x{job=~"$job"}[10m:1m])[1h:]) * 1e-3`, []string{`x{job=~"$job"}`}},
		{`count_values("v", build_info) > Inf or nan_metric`, []string{`build_info{}`, `nan_metric{}`}},
		{"x # comment with y_metric\n+ z", []string{`x{}`, `z{}`}},
		{`level:metric:rate5m{job="a"} @ start()`, []string{`level:metric:rate5m{job="a"}`}},
		{`topk(5, sum by (kind) (m{s="a,b}c"}))`, []string{`m{s="a,b}c"}`}},
		{`quantile(0.9, m) + avg without(x)(n)`, []string{`m{}`, `n{}`}},
		{`a{l!="1",k!~"2"} - 3`, []string{`a{l!="1",k!~"2"}`}},
	} {
		sels, err := parseSelectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.String())
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got  %q\n want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`a{job="x}`, `sum(a`, `a{job}`, `a{job="x" b}`} {
		if _, err := parseSelectors(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestGrafanaQueryExpr(t *testing.T) {
	for q, want := range map[string]string{
		`label_values(dramatiq_exporter_info, job)`:                                    `dramatiq_exporter_info`,
		`label_values(m{job=~"$job",x="a,b"}, instance)`:                               `m{job=~"$job",x="a,b"}`,
		`label_values(sum by (queue) (m{job=~"$job"}), queue)`:                         `sum by (queue) (m{job=~"$job"})`,
		`  label_values(dramatiq_queue_ready_messages{instance=~"$instance"}, queue) `: `dramatiq_queue_ready_messages{instance=~"$instance"}`,
		`up{job="a"}`: `up{job="a"}`,
	} {
		got, ok := grafanaQueryExpr(q)
		if !ok || got != want {
			t.Errorf("%s: got %q %v, want %q", q, got, ok, want)
		}
	}
	if _, ok := grafanaQueryExpr(`label_values(job)`); ok {
		t.Errorf("label_values(job) has no selector")
	}
}

func TestExpandGrafanaVars(t *testing.T) {
	vars := map[string]string{"job": "dramatiq", "instance": "127.0.0.1:1", "queue": ".+", "__rate_interval": "1m"}
	got, err := ExpandGrafanaVars(`sum(rate(m{job=~"$job",instance=~"${instance}",queue=~"$queue"}[$__rate_interval]))`, vars)
	if want := `sum(rate(m{job=~"dramatiq",instance=~"127.0.0.1:1",queue=~".+"}[1m]))`; err != nil || got != want {
		t.Errorf("got %q %v, want %q", got, err, want)
	}
	if _, err := ExpandGrafanaVars(`m{x=~"$unknown"}`, vars); err == nil {
		t.Error("unknown variable accepted")
	}
	// Every shipped dashboard query expands with the dashboards' variables.
	for _, q := range ShippedQueries(t) {
		if !q.Grafana {
			continue
		}
		if _, err := ExpandGrafanaVars(q.Expr, vars); err != nil {
			t.Errorf("%s: %v", q.Where, err)
		}
	}
}
