package e2e_test

import (
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
)

// grafanaVars are the values Grafana would substitute with job set to the
// test's two jobs (the exporter and the workers' middleware) and every other
// variable set to All (the dashboards' allValue, ".+"); $__rate_interval is
// what Grafana computes for a 1s scrape interval and a short time range.
var grafanaVars = map[string]string{
	"job":             "(dramatiq|dramatiq-workers)",
	"instance":        ".+",
	"queue":           ".+",
	"actor":           ".+",
	"__rate_interval": "1m",
}

// parseRules returns the rule expressions of a rule file's text, named
// after file.
func parseRules(t *testing.T, b []byte, file string) []shipped.Query {
	t.Helper()
	rules, err := shipped.ParseRules(b)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	return shipped.RuleQueries(rules, file)
}

// dashboardQueries returns every query of the shipped dashboards, with the
// Grafana variables expanded as Grafana would: what Prometheus gets asked.
// Blank ones are left out, as Grafana sends nothing for them.
func dashboardQueries(t *testing.T, root string) []shipped.Query {
	t.Helper()
	qs, err := shipped.DashboardQueries(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []shipped.Query
	for _, q := range qs {
		if q.Blank {
			continue
		}
		e, err := shipped.ExpandGrafanaVars(q.Expr, grafanaVars)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		q.Expr = e
		out = append(out, q)
	}
	return out
}

func TestExpandGrafanaVars(t *testing.T) {
	got, err := shipped.ExpandGrafanaVars(`sum(rate(m{job=~"$job",instance=~"${instance}",queue=~"${queue:regex}"}[$__rate_interval]))`, grafanaVars)
	if want := `sum(rate(m{job=~"(dramatiq|dramatiq-workers)",instance=~".+",queue=~".+"}[1m]))`; err != nil || got != want {
		t.Errorf("got %q %v, want %q", got, err, want)
	}
	if _, err := shipped.ExpandGrafanaVars(`m{x=~"$unknown"}`, grafanaVars); err == nil {
		t.Error("unknown variable accepted")
	}
}
