// Package shipped reads what the repository ships for Prometheus and
// Grafana, the rule files alerts/*.rules.yml and the dashboards
// dashboards/*.json, for the tests that check them: the static checks in
// alerts/, the generator's tests in alerts/mixin and the end-to-end test
// against a real Prometheus in test/e2e. The exporter does not use it.
package shipped

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Rule is one alerting or recording rule of a Prometheus rule file.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// Query is one PromQL expression shipped in alerts/ or dashboards/.
type Query struct {
	Where string // file and rule, panel or variable, for messages
	Expr  string
	Alert string // the alert's name, for alerting rules
	// Grafana marks queries that are written with dashboard variables.
	Grafana bool
	// Variable marks the PromQL of a dashboard variable's label_values.
	Variable bool
	// Blank marks a panel target or variable without any query text; its
	// Expr is empty. Static checks report it; Prometheus cannot run it.
	Blank bool
}

// RuleFiles returns the shipped rule files, the ones a deployment loads as
// alerts/*.rules.yml.
func RuleFiles(root string) ([]string, error) {
	return glob(root, "alerts", "*.rules.yml")
}

// DashboardFiles returns the shipped Grafana dashboards.
func DashboardFiles(root string) ([]string, error) {
	return glob(root, "dashboards", "*.json")
}

// glob returns the files matching pattern in root/dir, in lexical order;
// none is an error.
func glob(root, dir, pattern string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(root, dir, pattern))
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no files in %s", root)
	}
	if err != nil {
		return nil, fmt.Errorf("no %s/%s: %w", dir, pattern, err)
	}
	return files, nil
}

// ParseRules returns the rules of a rule file, group after group.
func ParseRules(b []byte) ([]Rule, error) {
	var rf struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []Rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		return nil, err
	}
	var out []Rule
	for _, g := range rf.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// ReadRules reads the rules of the rule file at path.
func ReadRules(path string) ([]Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rules, err := ParseRules(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rules, nil
}

// readAll returns what read returns for each file that list finds in root,
// file after file; rel is the file's path relative to root, for messages.
func readAll[T any](root string, list func(root string) ([]string, error), read func(path, rel string) ([]T, error)) ([]T, error) {
	files, err := list(root)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		items, err := read(f, rel)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
	}
	return out, nil
}

// Rules returns every rule of every shipped rule file.
func Rules(root string) ([]Rule, error) {
	return readAll(root, RuleFiles, func(path, _ string) ([]Rule, error) { return ReadRules(path) })
}

// RecordingRules returns the names of the shipped recording rules.
func RecordingRules(root string) (map[string]bool, error) {
	rules, err := Rules(root)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, r := range rules {
		if r.Record != "" {
			out[r.Record] = true
		}
	}
	return out, nil
}

// RuleQueries returns the expressions of rules, each named after file (as
// messages should show it) and the rule.
func RuleQueries(rules []Rule, file string) []Query {
	var out []Query
	for _, r := range rules {
		out = append(out, Query{Where: file + ": " + r.Alert + r.Record, Alert: r.Alert, Expr: r.Expr})
	}
	return out
}

// ReadDashboard reads a dashboard as generic JSON, for checks of any field.
func ReadDashboard(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// Panels flattens the panels of a dashboard read by ReadDashboard,
// including those inside collapsed rows.
func Panels(d map[string]any) []map[string]any {
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

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// DashboardQueries returns every query of the shipped dashboards, file after
// file: panel targets (also inside collapsed rows), then the PromQL of query
// variables (label_values(<selector>, label) is answered from that
// selector). They are written with Grafana variables; see ExpandGrafanaVars.
func DashboardQueries(root string) ([]Query, error) {
	return readAll(root, DashboardFiles, dashboardQueries)
}

func dashboardQueries(path, rel string) ([]Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Typed, so that a field of an unexpected type is an error rather
	// than a query silently missed.
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
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	var out []Query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, Query{Where: fmt.Sprintf("%s: panel %q %s", rel, p.Title, tg.RefID), Expr: tg.Expr,
					Grafana: true, Blank: tg.Expr == ""})
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
		if expr, ok := VariableExpr(q); ok {
			out = append(out, Query{Where: fmt.Sprintf("%s: variable %s", rel, v.Name), Expr: expr,
				Grafana: true, Variable: true, Blank: strings.TrimSpace(q) == ""})
		}
	}
	return out, nil
}

// Queries returns every PromQL expression in alerts/*.rules.yml and
// dashboards/*.json: rule expressions, then panel targets and the selectors
// of dashboard variables.
func Queries(root string) ([]Query, error) {
	rules, err := readAll(root, RuleFiles, func(path, rel string) ([]Query, error) {
		rules, err := ReadRules(path)
		return RuleQueries(rules, rel), err
	})
	if err != nil {
		return nil, err
	}
	dash, err := DashboardQueries(root)
	if err != nil {
		return nil, err
	}
	return append(rules, dash...), nil
}
