package alerts

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
)

// The rules of Grafana's dashboard-linter (github.com/grafana/dashboard-linter)
// that apply to these dashboards, as Go tests: the linter itself cannot be
// installed here. Each rule is named as in the linter, and each is also run
// against a copy of a shipped dashboard broken the way the rule forbids, so a
// rule that can no longer fail is noticed. PromQL validity (the linter's
// target-promql-rule) is TestDashboardQueriesParse, with promtool.

type linterRule struct {
	name  string
	check func(d map[string]any) []string
	// breakIt edits a copy of the Overview dashboard so that check must
	// report a problem.
	breakIt func(d map[string]any)
}

var (
	// rateFuncRE finds rate, irate and increase with their range.
	rateFuncRE = regexp.MustCompile(`\b(rate|irate|increase)\(([^\[]*)\[([^\]]*)\]`)
	counterRE  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*_total$`)
)

// linterUnits are the unit ids the shipped dashboards may use, all in the
// linter's list of valid units (Grafana's value formats).
var linterUnits = grafanaUnits

func varsOf(d map[string]any) []map[string]any {
	tmpl, _ := d["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	var out []map[string]any
	for _, v := range list {
		if m, ok := v.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// isDatasourceVar tells whether a datasource reference is the datasource
// variable, in any of the forms Grafana accepts.
func isDatasourceVar(v any) bool {
	switch v := v.(type) {
	case string:
		return v == "$datasource" || v == "${datasource}"
	case map[string]any:
		return isDatasourceVar(v["uid"])
	}
	return false
}

// targetsOf returns every panel's targets with the panel's title.
func targetsOf(d map[string]any) (out []struct {
	panel string
	t     map[string]any
}) {
	for _, p := range shipped.Panels(d) {
		ts, _ := p["targets"].([]any)
		for _, tg := range ts {
			if m, ok := tg.(map[string]any); ok {
				out = append(out, struct {
					panel string
					t     map[string]any
				}{fmt.Sprint(p["title"]), m})
			}
		}
	}
	return out
}

// checkTemplate is the linter's test of the job and instance variables.
func checkTemplate(d map[string]any, name string) []string {
	for _, v := range varsOf(d) {
		if v["name"] != name {
			continue
		}
		var p []string
		if !isDatasourceVar(v["datasource"]) {
			p = append(p, fmt.Sprintf("%s variable should use datasource $datasource, uses %v", name, v["datasource"]))
		}
		if v["type"] != "query" {
			p = append(p, fmt.Sprintf("%s variable should be a Prometheus query, is %v", name, v["type"]))
		}
		if v["label"] != name {
			p = append(p, fmt.Sprintf("%s variable should be labeled %q, is %v", name, name, v["label"]))
		}
		if v["multi"] != true {
			p = append(p, fmt.Sprintf("%s variable should be multi-select", name))
		}
		if v["includeAll"] != true {
			p = append(p, fmt.Sprintf("%s variable should offer All", name))
		}
		if v["allValue"] != ".+" {
			p = append(p, fmt.Sprintf("%s variable allValue should be \".+\", is %v", name, v["allValue"]))
		}
		return p
	}
	return []string{"no " + name + " variable"}
}

// targetMatcher requires label=~"$label" in every selector of every target.
func targetMatcher(label string) func(d map[string]any) []string {
	return func(d map[string]any) []string {
		var p []string
		for _, pt := range targetsOf(d) {
			expr, _ := pt.t["expr"].(string)
			sels, err := parseSelectors(expr)
			if err != nil {
				p = append(p, fmt.Sprintf("panel %q: %v", pt.panel, err))
				continue
			}
			for _, s := range sels {
				ms := s.Label(label)
				if len(ms) != 1 || ms[0].Op != "=~" || ms[0].Value != "$"+label {
					p = append(p, fmt.Sprintf("panel %q: selector %s lacks %s=~\"$%s\"", pt.panel, s, label, label))
				}
			}
		}
		return p
	}
}

var linterRules = []linterRule{
	{
		name: "template-datasource-rule",
		check: func(d map[string]any) []string {
			var ds []map[string]any
			for _, v := range varsOf(d) {
				if v["type"] == "datasource" {
					ds = append(ds, v)
				}
			}
			if len(ds) != 1 {
				return []string{fmt.Sprintf("%d datasource variables, want 1", len(ds))}
			}
			var p []string
			if ds[0]["name"] != "datasource" {
				p = append(p, fmt.Sprintf("datasource variable named %v, should be datasource", ds[0]["name"]))
			}
			if ds[0]["label"] != "Data source" {
				p = append(p, fmt.Sprintf("datasource variable labeled %v, should be \"Data source\"", ds[0]["label"]))
			}
			if ds[0]["query"] != "prometheus" {
				p = append(p, fmt.Sprintf("datasource variable of type %v, want prometheus", ds[0]["query"]))
			}
			return p
		},
		breakIt: func(d map[string]any) { varsOf(d)[0]["name"] = "ds" },
	},
	{
		name:    "template-job-rule",
		check:   func(d map[string]any) []string { return checkTemplate(d, "job") },
		breakIt: func(d map[string]any) { varsOf(d)[1]["multi"] = false },
	},
	{
		name:    "template-instance-rule",
		check:   func(d map[string]any) []string { return checkTemplate(d, "instance") },
		breakIt: func(d map[string]any) { delete(varsOf(d)[2], "allValue") },
	},
	{
		// Variables refresh on time range change, so new instances and
		// queues appear without reloading the dashboard.
		name: "template-on-time-change-reload-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, v := range varsOf(d) {
				if v["type"] == "query" && v["refresh"] != float64(2) {
					p = append(p, fmt.Sprintf("variable %v: refresh %v, want 2 (on time range change)", v["name"], v["refresh"]))
				}
			}
			return p
		},
		breakIt: func(d map[string]any) { varsOf(d)[2]["refresh"] = 1 },
	},
	{
		name: "panel-datasource-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, pn := range shipped.Panels(d) {
				if pn["type"] != "row" && !isDatasourceVar(pn["datasource"]) {
					p = append(p, fmt.Sprintf("panel %q: datasource %v, want $datasource", pn["title"], pn["datasource"]))
				}
			}
			return p
		},
		breakIt: func(d map[string]any) {
			shipped.Panels(d)[1]["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		},
	},
	{
		// Not a linter rule of its own, but what its datasource rules are
		// for: a dashboard imported into another Grafana works only when
		// no reference names one installation's datasource uid. The
		// built-in "-- Grafana --" annotation source exists everywhere.
		name: "no-hardcoded-datasource-uid",
		check: func(d map[string]any) []string {
			var p []string
			var walk func(path string, v any)
			walk = func(path string, v any) {
				switch v := v.(type) {
				case map[string]any:
					for k, x := range v {
						if k == "datasource" {
							m, _ := x.(map[string]any)
							builtin := m != nil && m["type"] == "grafana" && m["uid"] == "-- Grafana --"
							if !isDatasourceVar(x) && !builtin {
								p = append(p, fmt.Sprintf("%s.datasource = %v", path, x))
							}
						}
						walk(path+"."+k, x)
					}
				case []any:
					for i, x := range v {
						walk(fmt.Sprintf("%s[%d]", path, i), x)
					}
				}
			}
			walk("", d)
			return p
		},
		breakIt: func(d map[string]any) {
			targetsOf(d)[0].t["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		},
	},
	{
		name: "panel-units-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, pn := range shipped.Panels(d) {
				switch pn["type"] {
				case "stat", "singlestat", "graph", "table", "timeseries", "gauge", "bargauge":
				default:
					continue
				}
				fc, _ := pn["fieldConfig"].(map[string]any)
				defs, _ := fc["defaults"].(map[string]any)
				if u, _ := defs["unit"].(string); !linterUnits[u] {
					p = append(p, fmt.Sprintf("panel %q: no or invalid unit %q", pn["title"], u))
				}
				overrides, _ := fc["overrides"].([]any)
				for _, o := range overrides {
					props, _ := o.(map[string]any)["properties"].([]any)
					for _, pr := range props {
						prm, _ := pr.(map[string]any)
						if prm["id"] == "unit" {
							if u, _ := prm["value"].(string); !linterUnits[u] {
								p = append(p, fmt.Sprintf("panel %q: override with invalid unit %q", pn["title"], u))
							}
						}
					}
				}
			}
			return p
		},
		breakIt: func(d map[string]any) {
			for _, pn := range shipped.Panels(d) {
				if pn["type"] == "timeseries" {
					delete(pn["fieldConfig"].(map[string]any)["defaults"].(map[string]any), "unit")
					return
				}
			}
		},
	},
	{
		name: "panel-title-description-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, pn := range shipped.Panels(d) {
				if pn["type"] == "row" {
					continue
				}
				title, _ := pn["title"].(string)
				desc, _ := pn["description"].(string)
				if strings.TrimSpace(title) == "" || strings.TrimSpace(desc) == "" {
					p = append(p, fmt.Sprintf("panel %q: missing title or description", title))
				}
			}
			return p
		},
		breakIt: func(d map[string]any) { shipped.Panels(d)[1]["description"] = "" },
	},
	{
		name:  "target-job-rule",
		check: targetMatcher("job"),
		breakIt: func(d map[string]any) {
			tg := targetsOf(d)[0].t
			tg["expr"] = strings.Replace(tg["expr"].(string), `job=~"$job",`, "", 1)
		},
	},
	{
		name:  "target-instance-rule",
		check: targetMatcher("instance"),
		breakIt: func(d map[string]any) {
			tg := targetsOf(d)[0].t
			tg["expr"] = strings.Replace(tg["expr"].(string), `instance=~"$instance"`, `instance=~".+"`, 1)
		},
	},
	{
		name: "target-rate-interval-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, pt := range targetsOf(d) {
				expr, _ := pt.t["expr"].(string)
				for _, m := range rateFuncRE.FindAllStringSubmatch(expr, -1) {
					if m[3] != "$__rate_interval" {
						p = append(p, fmt.Sprintf("panel %q: %s over [%s], want [$__rate_interval]", pt.panel, m[1], m[3]))
					}
				}
			}
			return p
		},
		breakIt: func(d map[string]any) {
			for _, pt := range targetsOf(d) {
				if e, _ := pt.t["expr"].(string); rateFuncRE.MatchString(e) {
					pt.t["expr"] = strings.ReplaceAll(e, "$__rate_interval", "5m")
					return
				}
			}
		},
	},
	{
		// A counter is shown through rate, irate or increase, never raw.
		name: "target-counter-agg-rule",
		check: func(d map[string]any) []string {
			var p []string
			for _, pt := range targetsOf(d) {
				expr, _ := pt.t["expr"].(string)
				sels, err := parseSelectors(expr)
				if err != nil {
					p = append(p, fmt.Sprintf("panel %q: %v", pt.panel, err))
					continue
				}
				wrapped := 0
				for _, m := range rateFuncRE.FindAllStringSubmatch(expr, -1) {
					if counterRE.MatchString(strings.SplitN(strings.TrimSpace(m[2]), "{", 2)[0]) {
						wrapped++
					}
				}
				counters := 0
				for _, s := range sels {
					if counterRE.MatchString(s.Metric) {
						counters++
					}
				}
				if counters != wrapped {
					p = append(p, fmt.Sprintf("panel %q: %d counter selectors, %d inside rate/irate/increase: %s", pt.panel, counters, wrapped, expr))
				}
			}
			return p
		},
		breakIt: func(d map[string]any) {
			for _, pt := range targetsOf(d) {
				if e, _ := pt.t["expr"].(string); strings.Contains(e, "_total") {
					pt.t["expr"] = regexp.MustCompile(`rate\(([^\[]*)\[\$__rate_interval\]\)`).ReplaceAllString(e, "$1")
					return
				}
			}
		},
	},
	{
		// Dashboards are provisioned from these files; edits in the UI
		// would be lost on the next provisioning.
		name: "uneditable-dashboard",
		check: func(d map[string]any) []string {
			if d["editable"] != false {
				return []string{fmt.Sprintf("editable = %v, want false", d["editable"])}
			}
			return nil
		},
		breakIt: func(d map[string]any) { d["editable"] = true },
	},
}

func TestGrafanaDashboardLinterRules(t *testing.T) {
	files := dashboardFiles(t)
	for _, rule := range linterRules {
		t.Run(rule.name, func(t *testing.T) {
			for _, f := range files {
				d := must(shipped.ReadDashboard(f))(t)
				for _, p := range rule.check(d) {
					t.Errorf("%s: %s", filepath.Base(f), p)
				}
			}
			// The rule still catches what it is for.
			var overview string
			for _, f := range files {
				if filepath.Base(f) == "dramatiq-overview.json" {
					overview = f
				}
			}
			if overview == "" {
				t.Fatal("no dramatiq-overview.json")
			}
			broken := deepCopy(t, must(shipped.ReadDashboard(overview))(t))
			rule.breakIt(broken)
			if len(rule.check(broken)) == 0 {
				t.Errorf("%s accepts a dashboard broken against it", rule.name)
			}
		})
	}
}

func deepCopy(t *testing.T, d map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
