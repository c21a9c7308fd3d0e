package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// query is one PromQL expression of the product: a rule's expression or a
// dashboard's query, ready to send to Prometheus.
type query struct {
	where string // file and rule, panel or variable, for messages
	alert string // the alert's name, for rule expressions
	expr  string // Grafana variables already expanded
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
			For    string `yaml:"for"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func parseRules(t *testing.T, b []byte) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("rules: %v", err)
	}
	return rf
}

// ruleQueries returns the expressions of a rule file, by rule name.
func ruleQueries(rf ruleFile, file string) []query {
	var out []query
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, query{where: file + ": " + r.Alert + r.Record, alert: r.Alert, expr: r.Expr})
		}
	}
	return out
}

// grafanaVars are the values Grafana would substitute with every variable
// set to All; $__rate_interval is what Grafana computes for a 1s scrape
// interval and a short time range.
var grafanaVars = map[string]string{
	"job":             "dramatiq",
	"instance":        ".*",
	"queue":           ".*",
	"__rate_interval": "1m",
}

var grafanaVarRE = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// expandGrafanaVars replaces dashboard variables the way Grafana does before
// it sends a query. A variable with no value here is an error: the test
// would otherwise send Prometheus something Grafana never would.
func expandGrafanaVars(expr string) (string, error) {
	var missing []string
	out := grafanaVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sm := grafanaVarRE.FindStringSubmatch(m)
		v, ok := grafanaVars[sm[1]+sm[2]]
		if !ok {
			missing = append(missing, m)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// dashboardQueries returns every query of the shipped dashboards: panel
// targets (also inside collapsed rows) and the selectors of query variables
// (label_values(<selector>, label) is answered from that selector).
func dashboardQueries(t *testing.T, root string) []query {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards/*.json: %v", err)
	}
	sort.Strings(files)
	var out []query
	add := func(where, expr string) {
		e, err := expandGrafanaVars(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return
		}
		out = append(out, query{where: where, expr: e})
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for _, tg := range p.Targets {
					if tg.Expr != "" {
						add(fmt.Sprintf("%s: panel %q %s", rel, p.Title, tg.RefID), tg.Expr)
					}
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			if sel, ok := labelValuesSelector(q); ok {
				add(fmt.Sprintf("%s: variable %s", rel, v.Name), sel)
			}
		}
	}
	return out
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// labelValuesSelector returns the PromQL inside a Grafana variable query:
// the selector of label_values(<selector>, <label>), or the query itself
// when it is plain PromQL. label_values(<label>) has none.
func labelValuesSelector(q string) (string, bool) {
	q = strings.TrimSpace(q)
	if q == "" {
		return "", false
	}
	if !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ")") {
		return q, true
	}
	inner := q[len("label_values(") : len(q)-1]
	depth := 0
	for i := len(inner) - 1; i >= 0; i-- {
		switch inner[i] {
		case ')', '}', ']':
			depth++
		case '(', '{', '[':
			depth--
		case ',':
			if depth == 0 {
				return strings.TrimSpace(inner[:i]), true
			}
		}
	}
	return "", false
}

func TestExpandGrafanaVars(t *testing.T) {
	got, err := expandGrafanaVars(`sum(rate(m{job=~"$job",instance=~"${instance}",queue=~"${queue:regex}"}[$__rate_interval]))`)
	if want := `sum(rate(m{job=~"dramatiq",instance=~".*",queue=~".*"}[1m]))`; err != nil || got != want {
		t.Errorf("got %q %v, want %q", got, err, want)
	}
	if _, err := expandGrafanaVars(`m{x=~"$unknown"}`); err == nil {
		t.Error("unknown variable accepted")
	}
	for q, want := range map[string]string{
		`label_values(dramatiq_exporter_info, job)`:            `dramatiq_exporter_info`,
		`label_values(m{job=~"$job",x="a,b"}, instance)`:       `m{job=~"$job",x="a,b"}`,
		`label_values(sum by (queue) (m{job=~"$job"}), queue)`: `sum by (queue) (m{job=~"$job"})`,
		` label_values(m{instance=~"$instance"}, queue) `:      `m{instance=~"$instance"}`,
		`up{job="a"}`: `up{job="a"}`,
	} {
		if got, ok := labelValuesSelector(q); !ok || got != want {
			t.Errorf("%s: got %q %v, want %q", q, got, ok, want)
		}
	}
	if _, ok := labelValuesSelector(`label_values(job)`); ok {
		t.Error("label_values(job) has no selector")
	}
}
