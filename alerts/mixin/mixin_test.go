package mixin

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The committed rules, Alertmanager example and dashboards are exactly what
// the generator writes with the default configuration.
func TestCommittedFilesUpToDate(t *testing.T) {
	root := testserver.RepoRoot(t)
	dir := t.TempDir()
	paths, err := DefaultConfig().Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Rules, Alertmanager example, 4 dashboards, the chart's copies of the
	// rules and dashboards, and the 7 files of the jsonnet mixin.
	if len(paths) != 18 {
		t.Fatalf("generator wrote %d files, want 18: %v", len(paths), paths)
	}
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("%s: %v (run `go run ./alerts/gen`)", rel, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date: run `go run ./alerts/gen` and commit the result\n%s", rel, firstDiff(got, want))
		}
	}
}

func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n  committed: " + gl + "\n  generated: " + wl
		}
	}
	return ""
}

func parseRules(t *testing.T, b []byte) []shipped.Rule {
	t.Helper()
	rules, err := shipped.ParseRules(b)
	if err != nil {
		t.Fatalf("generated rules are not YAML: %v", err)
	}
	return rules
}

// A copy for live tests shortens every for: and says so in its descriptions,
// and keeps every alert.
func TestForScale(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ForScale = 0.01
	short := parseRules(t, cfg.RulesYAML())
	full := parseRules(t, DefaultConfig().RulesYAML())

	fors := map[string]string{}
	for _, r := range full {
		if r.Record != "" {
			continue
		}
		fors[r.Alert] = r.For
	}
	n := 0
	for _, r := range short {
		if r.Record != "" {
			continue
		}
		n++
		switch {
		case fors[r.Alert] == "" && r.For != "":
			t.Errorf("%s: for %q appeared", r.Alert, r.For)
		case fors[r.Alert] == "":
		default:
			d, err := time.ParseDuration(r.For)
			if err != nil || d < time.Second || d > 10*time.Second {
				t.Errorf("%s: scaled for = %q, want between 1s and 10s", r.Alert, r.For)
			}
		}
	}
	if n != len(fors) || n != len(cfg.Alerts()) {
		t.Errorf("scaled copy has %d alerts, full has %d", n, len(fors))
	}
	want := map[string]string{"DramatiqQueueNotConsumed": "6s", "DramatiqRedisDown": "1s", "DramatiqExporterDown": "3s"}
	for _, r := range short {
		if w, ok := want[r.Alert]; ok {
			if r.For != w {
				t.Errorf("%s: for = %q, want %q", r.Alert, r.For, w)
			}
			if !strings.Contains(r.Annotations["description"], " "+w) {
				t.Errorf("%s: description %q does not give the scaled duration %s", r.Alert, r.Annotations["description"], w)
			}
		}
	}
}

// Every expression carries the configured selector, in every series
// selector, so changing it in one place moves every rule.
func TestSelectorEverywhere(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Selector = `job="dramatiq-prod",env="prod"`
	cfg.WorkersSelector = `job="dramatiq-prod-workers",env="prod"`
	rf := parseRules(t, cfg.RulesYAML())
	selectorRE := regexp.MustCompile(`[a-z_:]+\{([^}]*)\}`)
	for _, r := range rf {
		ms := selectorRE.FindAllStringSubmatch(r.Expr, -1)
		if len(ms) == 0 {
			t.Errorf("%s: no selector in %q", r.Alert, r.Expr)
		}
		for _, m := range ms {
			if !strings.HasPrefix(m[1], cfg.Selector) && !strings.HasPrefix(m[1], cfg.WorkersSelector) {
				t.Errorf("%s: selector {%s} lacks %s", r.Alert, m[1], cfg.Selector)
			}
		}
		if strings.Contains(r.Expr, `job="dramatiq"`) || strings.Contains(r.Expr, `job="dramatiq-workers"`) {
			t.Errorf("%s: default job selector left in %q", r.Alert, r.Expr)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"empty selector": func(c *Config) { c.Selector = " " },
		"braces":         func(c *Config) { c.Selector = `{job="x"}` },
		"zero scale":     func(c *Config) { c.ForScale = 0 },
		"negative scale": func(c *Config) { c.ForScale = -1 },
		"no runbook":     func(c *Config) { c.RunbookURL = "" },
		"no workers":     func(c *Config) { c.WorkersSelector = "" },
	} {
		c := DefaultConfig()
		mod(&c)
		if _, err := c.Files(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config rejected: %v", err)
	}
}

func TestPromDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", time.Second: "1s", 90 * time.Second: "1m30s", 2 * time.Hour: "2h",
		26*time.Hour + time.Minute: "1d2h1m",
	} {
		if got := promDuration(d); got != want {
			t.Errorf("promDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// Inhibition lists name only alerts that exist, and each source alert
// exists.
func TestInhibitionsNameRealAlerts(t *testing.T) {
	cfg := DefaultConfig()
	names := map[string]bool{}
	for _, a := range cfg.Alerts() {
		if names[a.Name] {
			t.Errorf("duplicate alert %s", a.Name)
		}
		names[a.Name] = true
	}
	for _, in := range cfg.Inhibitions() {
		if !names[in.Source] {
			t.Errorf("inhibition source %s is not an alert", in.Source)
		}
		for _, tg := range in.Targets {
			if !names[tg] {
				t.Errorf("inhibition target %s is not an alert", tg)
			}
			if tg == in.Source {
				t.Errorf("%s inhibits itself", tg)
			}
		}
		if len(in.Targets) == 0 {
			t.Errorf("%s inhibits nothing", in.Source)
		}
	}
}

// A failing collector is inhibited only by the outage of the server it
// reads: Redis down must not hide a failing database collector.
func TestCollectorFailingInhibitedOnlyByItsServer(t *testing.T) {
	var am struct {
		InhibitRules []struct {
			Source []string `yaml:"source_matchers"`
			Target []string `yaml:"target_matchers"`
		} `yaml:"inhibit_rules"`
	}
	if err := yaml.Unmarshal(DefaultConfig().AlertmanagerYAML(), &am); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		`alertname="DramatiqRedisDown"`:    `collector=~"broker"`,
		`alertname="DramatiqDatabaseDown"`: `collector=~"database|database_activity"`,
	}
	seen := map[string]bool{}
	for _, r := range am.InhibitRules {
		src := strings.Join(r.Source, ",")
		collectorMatcher, ok := want[src]
		if !ok {
			continue
		}
		targets := strings.Join(r.Target, ",")
		if !strings.Contains(targets, "DramatiqExporterCollectorFailing") && !strings.Contains(targets, `"Dramatiq.+"`) {
			continue
		}
		seen[src] = true
		if !slices.Contains(r.Target, collectorMatcher) {
			t.Errorf("%s inhibits DramatiqExporterCollectorFailing with %v, want it limited by %s", src, r.Target, collectorMatcher)
		}
	}
	for src := range want {
		if !seen[src] {
			t.Errorf("%s no longer inhibits its own failing collector", src)
		}
	}
}
