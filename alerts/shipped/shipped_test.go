package shipped

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func TestVariableExpr(t *testing.T) {
	for q, want := range map[string]string{
		`label_values(dramatiq_exporter_info, job)`:                                    `dramatiq_exporter_info`,
		`label_values(m{job=~"$job",x="a,b"}, instance)`:                               `m{job=~"$job",x="a,b"}`,
		`label_values(sum by (queue) (m{job=~"$job"}), queue)`:                         `sum by (queue) (m{job=~"$job"})`,
		`  label_values(dramatiq_queue_ready_messages{instance=~"$instance"}, queue) `: `dramatiq_queue_ready_messages{instance=~"$instance"}`,
		` label_values(m{instance=~"$instance"}, queue) `:                              `m{instance=~"$instance"}`,
		`up{job="a"}`: `up{job="a"}`,
	} {
		got, ok := VariableExpr(q)
		if !ok || got != want {
			t.Errorf("%s: got %q %v, want %q", q, got, ok, want)
		}
	}
	if _, ok := VariableExpr(`label_values(job)`); ok {
		t.Errorf("label_values(job) has no selector")
	}
}

func TestExpandGrafanaVars(t *testing.T) {
	vars := map[string]string{"job": "dramatiq", "instance": "127.0.0.1:1", "queue": ".+", "actor": ".+", "__rate_interval": "1m"}
	got, err := ExpandGrafanaVars(`sum(rate(m{job=~"$job",instance=~"${instance}",queue=~"$queue"}[$__rate_interval]))`, vars)
	if want := `sum(rate(m{job=~"dramatiq",instance=~"127.0.0.1:1",queue=~".+"}[1m]))`; err != nil || got != want {
		t.Errorf("got %q %v, want %q", got, err, want)
	}
	if _, err := ExpandGrafanaVars(`m{x=~"$unknown"}`, vars); err == nil {
		t.Error("unknown variable accepted")
	}
	// Every shipped dashboard query expands with the dashboards' variables.
	qs, err := Queries(testserver.RepoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if !q.Grafana {
			continue
		}
		if _, err := ExpandGrafanaVars(q.Expr, vars); err != nil {
			t.Errorf("%s: %v", q.Where, err)
		}
	}
}

// Queries on a small tree: rules of every file, panels inside collapsed
// rows, both forms of a variable query, and blank queries marked as such.
func TestQueries(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Queries(root); err == nil {
		t.Error("a tree without rule files accepted")
	}
	write("alerts/a.rules.yml", `groups:
- name: g1
  rules:
  - record: job:m:sum
    expr: sum(m)
- name: g2
  rules:
  - alert: A
    expr: m > 1
    for: 5m
    labels: {severity: warning}
`)
	write("alerts/b.rules.yml", "groups: [{name: g, rules: [{alert: B, expr: up == 0}]}]\n")
	if _, err := Queries(root); err == nil {
		t.Error("a tree without dashboards accepted")
	}
	write("dashboards/d.json", `{
  "panels": [
    {"title": "P", "targets": [{"refId": "A", "expr": "m{job=~\"$job\"}"}, {"refId": "B", "expr": ""}]},
    {"title": "Row", "type": "row", "panels": [{"title": "In row", "targets": [{"refId": "A", "expr": "n"}]}]}
  ],
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus"},
    {"name": "job", "type": "query", "query": "label_values(up, job)"},
    {"name": "instance", "type": "query", "query": {"query": "label_values(up{job=~\"$job\"}, instance)", "refId": "x"}},
    {"name": "label", "type": "query", "query": "label_values(job)"},
    {"name": "blank", "type": "query", "query": " "}
  ]}
}`)
	got, err := Queries(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Query{
		{Where: "alerts/a.rules.yml: job:m:sum", Expr: "sum(m)"},
		{Where: "alerts/a.rules.yml: A", Expr: "m > 1", Alert: "A"},
		{Where: "alerts/b.rules.yml: B", Expr: "up == 0", Alert: "B"},
		{Where: `dashboards/d.json: panel "P" A`, Expr: `m{job=~"$job"}`, Grafana: true},
		{Where: `dashboards/d.json: panel "P" B`, Grafana: true, Blank: true},
		{Where: `dashboards/d.json: panel "In row" A`, Expr: "n", Grafana: true},
		{Where: "dashboards/d.json: variable job", Expr: "up", Grafana: true, Variable: true},
		{Where: "dashboards/d.json: variable instance", Expr: `up{job=~"$job"}`, Grafana: true, Variable: true},
		{Where: "dashboards/d.json: variable blank", Grafana: true, Variable: true, Blank: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want))
	}
	rules, err := Rules(root)
	if err != nil || len(rules) != 3 || rules[1].For != "5m" || rules[1].Labels["severity"] != "warning" {
		t.Errorf("Rules = %+v, %v", rules, err)
	}
	if rec, err := RecordingRules(root); err != nil || !reflect.DeepEqual(rec, map[string]bool{"job:m:sum": true}) {
		t.Errorf("RecordingRules = %v, %v", rec, err)
	}

	write("dashboards/e.json", `{"panels": [{"title": 1}]}`)
	if _, err := Queries(root); err == nil {
		t.Error("a panel title of the wrong type accepted")
	}
}
