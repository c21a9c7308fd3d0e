package mixin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-jsonnet"
	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// rendered is what a jsonnet-bundler user gets from mixin/: the rule groups
// (recording first, as in the shipped file) and the dashboards by file name.
type rendered struct {
	Groups     []any          `json:"groups"`
	Dashboards map[string]any `json:"dashboards"`
}

// renderMixin evaluates mixin/mixin.libsonnet from dir with go-jsonnet,
// with overrides (a jsonnet object, or "") added to _config.
func renderMixin(t *testing.T, dir, overrides string) rendered {
	t.Helper()
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{dir}})
	if overrides == "" {
		overrides = "{}"
	}
	out, err := vm.EvaluateAnonymousSnippet("render.jsonnet", `
local mixin = (import 'mixin/mixin.libsonnet') + { _config+:: `+overrides+` };
{
  groups: mixin.prometheusRules.groups + mixin.prometheusAlerts.groups,
  dashboards: mixin.grafanaDashboards,
}`)
	if err != nil {
		t.Fatalf("go-jsonnet: %v", err)
	}
	var r rendered
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// normalize turns decoded YAML or JSON into what encoding/json decodes, so
// two documents compare with reflect.DeepEqual.
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func rulesGroups(t *testing.T, b []byte) any {
	t.Helper()
	var rf map[string]any
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	return normalize(t, rf["groups"])
}

func jsonDoc(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// firstDifference names the first path where got and want differ.
func firstDifference(path string, got, want any) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %T, want an object", path, got)
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			if d := firstDifference(path+"."+k, g[k], w[k]); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: got %v, want %v", path, got, want)
		}
		for i := range w {
			if d := firstDifference(fmt.Sprintf("%s[%d]", path, i), g[i], w[i]); d != "" {
				return d
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(got, want) {
			return fmt.Sprintf("%s:\n  got  %#v\n  want %#v", path, got, want)
		}
		return ""
	}
}

func assertSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := firstDifference("", got, want); d != "" {
		t.Errorf("%s differs from the mixin's rendering at %s", what, d)
	}
}

// The mixin, rendered by go-jsonnet with its default _config, gives the
// shipped rule file and dashboards (semantically: the YAML's comments, key
// order and block style are the Go writer's).
func TestMixinRendersShippedFiles(t *testing.T) {
	root := testserver.RepoRoot(t)
	r := renderMixin(t, root, "")

	shippedRules, err := os.ReadFile(filepath.Join(root, "alerts", "dramatiq.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, "alerts/dramatiq.rules.yml", normalize(t, r.Groups), rulesGroups(t, shippedRules))

	files, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	if err != nil || len(files) != 4 {
		t.Fatalf("dashboards/*.json: %v %v", files, err)
	}
	if len(r.Dashboards) != len(files) {
		t.Errorf("the mixin has %d dashboards, dashboards/ has %d", len(r.Dashboards), len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		got, ok := r.Dashboards[name]
		if !ok {
			t.Errorf("the mixin has no dashboard %s", name)
			continue
		}
		assertSame(t, "dashboards/"+name, normalize(t, got), jsonDoc(t, b))
	}
}

// mixinOverrides set every kind of _config field to other values, and
// overridden is the same configuration in Go.
const mixinOverrides = `{
  selector: 'job="dramatiq-prod",env="prod"',
  workersSelector: 'job="dramatiq-prod-workers"',
  runbookURL: 'https://runbooks.example.org/dramatiq.md',
  exporterDownFor: '1m30s',
  queueLatencyThreshold: '20m',
  backlogGrowthWindow: '1h',
  backlogGrowthMin: 500,
  deadLettersWindow: '2h',
  databaseTransactionAge: '1d2h',
  actorErrorRatio: 0.6,
  actorErrorMinRate: 0.5,
  databaseConnectionsRatio: 0.95,
  dashboardTags: ['team-a'],
  dashboardUIDs+: { queue: 'team-a-queue' },
}`

func overridden() Config {
	c := DefaultConfig()
	c.Selector = `job="dramatiq-prod",env="prod"`
	c.WorkersSelector = `job="dramatiq-prod-workers"`
	c.RunbookURL = "https://runbooks.example.org/dramatiq.md"
	c.ExporterDownFor = 90 * time.Second
	c.QueueLatencyThreshold = 20 * time.Minute
	c.BacklogGrowthWindow = time.Hour
	c.BacklogGrowthMin = 500
	c.DeadLettersWindow = 2 * time.Hour
	c.DatabaseTransactionAge = 26 * time.Hour
	c.ActorErrorRatio = 0.6
	c.ActorErrorMinRate = 0.5
	c.DatabaseConnectionsRatio = 0.95
	c.DashboardTags = []string{"team-a"}
	c.DashboardUIDs.Queue = "team-a-queue"
	return c
}

// Another _config renders rules that promtool accepts, with the overrides
// in them, and the same rules and dashboards as the Go source with that
// configuration: no value is hard-coded in the mixin.
func TestMixinOverriddenConfig(t *testing.T) {
	root := testserver.RepoRoot(t)
	r := renderMixin(t, root, mixinOverrides)
	cfg := overridden()

	assertSame(t, "Go rules for the same config", normalize(t, r.Groups), rulesGroups(t, cfg.RulesYAML()))
	for name, b := range cfg.Dashboards() {
		assertSame(t, "Go dashboard "+name+" for the same config", normalize(t, r.Dashboards[name]), jsonDoc(t, b))
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // PromQL's > and < as written
	if err := enc.Encode(map[string]any{"groups": r.Groups}); err != nil {
		t.Fatal(err)
	}
	rules := buf.Bytes()
	text := string(rules)
	for _, want := range []string{
		`up{job=\"dramatiq-prod\",env=\"prod\"} == 0`,
		`{job=\"dramatiq-prod-workers\"}`,
		`dramatiq_queue_oldest_message_age_seconds{job=\"dramatiq-prod\",env=\"prod\"} > 1200`,
		`[1h]) * 3600 > 500`,
		`< 7200`,
		`> 93600`,
		`) > 0.6`,
		`> 0.5000`,
		`> 0.95`,
		`"for":"1m30s"`,
		`https://runbooks.example.org/dramatiq.md#dramatiqexporterdown`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("overridden rules lack %s", want)
		}
	}
	if regexp.MustCompile(`job=\\"dramatiq(-workers)?\\"`).MatchString(text) {
		t.Error("a default job selector is left in the overridden rules")
	}
	ov, _ := json.Marshal(r.Dashboards["dramatiq-overview.json"])
	for _, want := range []string{`"tags":["team-a"]`, `/d/team-a-queue/`} {
		if !strings.Contains(string(ov), want) {
			t.Errorf("overridden overview dashboard lacks %s", want)
		}
	}

	file := filepath.Join(t.TempDir(), "overridden.rules.json")
	if err := os.WriteFile(file, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{testserver.Tool(t, "promtool").Path, testserver.LookPath(t, "promtool", "/usr/bin")} {
		out, err := exec.Command(bin, "check", "rules", file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("%s check rules on the overridden mixin's rules: %v\n%s", bin, err, out)
		}
	}
}

// A _config that is not a Prometheus duration fails the rendering with a
// message, rather than giving rules with a wrong number.
func TestMixinRejectsBadDuration(t *testing.T) {
	root := testserver.RepoRoot(t)
	for _, d := range []string{"10", "", "5x", "1.5h", "m"} {
		vm := jsonnet.MakeVM()
		vm.Importer(&jsonnet.FileImporter{JPaths: []string{root}})
		_, err := vm.EvaluateAnonymousSnippet("bad.jsonnet",
			`((import 'mixin/mixin.libsonnet') + { _config+:: { queueLatencyThreshold: '`+d+`' } }).prometheusAlerts`)
		if err == nil || !strings.Contains(err.Error(), "Prometheus duration") {
			t.Errorf("queueLatencyThreshold %q: err = %v, want a duration error", d, err)
		}
	}
}

// Each emitted number helper agrees with the Go formatting it stands for.
func TestMixinNumberHelpers(t *testing.T) {
	root := testserver.RepoRoot(t)
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{root}})
	out, err := vm.EvaluateAnonymousSnippet("num.jsonnet", `local u = import 'mixin/lib/utils.libsonnet';
{ nums: [u.num(x) for x in [0.8, 0.25, 0.95, 1, 0.1234, 3.5, 0.001]],
  secs: [u.seconds(d) for d in ['1s', '90s', '1m30s', '10m', '2h', '1d2h1m', '7000d1s']] }`)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Nums []string
		Secs []int64
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"0.8", "0.25", "0.95", "1", "0.1234", "3.5", "0.001"}
	if !reflect.DeepEqual(got.Nums, want) {
		t.Errorf("u.num = %v, want %v", got.Nums, want)
	}
	ws := []int64{1, 90, 90, 600, 7200, 93660, 7000*86400 + 1}
	if !reflect.DeepEqual(got.Secs, ws) {
		t.Errorf("u.seconds = %v, want %v", got.Secs, ws)
	}
}

// maxGroupRules caps a rule group's size: Prometheus evaluates a group's
// rules one after the other, so a huge group delays its last rules.
const maxGroupRules = 20

var (
	camelCaseRE  = regexp.MustCompile(`^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$`)
	recordNameRE = regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$`)
)

// lintRules applies the guideline checks of mixtool's lint to rule groups
// (mixtool is not available here): group names, group sizes, alert names,
// severity, summary, description and runbook_url.
func lintRules(groups []any) []string {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	seenGroups := map[string]bool{}
	seenAlerts := map[string]bool{}
	for i, g := range groups {
		gm, _ := g.(map[string]any)
		name, _ := gm["name"].(string)
		rules, _ := gm["rules"].([]any)
		switch {
		case strings.TrimSpace(name) == "":
			bad("group %d: no name", i)
		case seenGroups[name]:
			bad("group %s: name used twice", name)
		}
		seenGroups[name] = true
		if len(rules) == 0 || len(rules) > maxGroupRules {
			bad("group %s: %d rules, want 1 to %d", name, len(rules), maxGroupRules)
		}
		for _, r := range rules {
			rm, _ := r.(map[string]any)
			alert, _ := rm["alert"].(string)
			record, _ := rm["record"].(string)
			if expr, _ := rm["expr"].(string); strings.TrimSpace(expr) == "" {
				bad("group %s: rule %s%s has no expr", name, alert, record)
			}
			if record != "" {
				if alert != "" {
					bad("group %s: rule is both alert %s and record %s", name, alert, record)
				}
				if !recordNameRE.MatchString(record) {
					bad("recording rule %s: not named level:metric:operations", record)
				}
				continue
			}
			if !camelCaseRE.MatchString(alert) {
				bad("alert %q: name not in CamelCase", alert)
			}
			if seenAlerts[alert] {
				bad("alert %s: defined twice", alert)
			}
			seenAlerts[alert] = true
			labels, _ := rm["labels"].(map[string]any)
			if sev, _ := labels["severity"].(string); sev != "critical" && sev != "warning" && sev != "info" {
				bad("alert %s: severity %q, want critical, warning or info", alert, sev)
			}
			ann, _ := rm["annotations"].(map[string]any)
			summary, _ := ann["summary"].(string)
			switch {
			case strings.TrimSpace(summary) == "":
				bad("alert %s: no summary", alert)
			case strings.Contains(summary, "{{"):
				bad("alert %s: summary %q is templated; it must be a static sentence", alert, summary)
			case !strings.HasSuffix(summary, "."):
				bad("alert %s: summary %q is not a sentence ending in a period", alert, summary)
			}
			if d, _ := ann["description"].(string); !strings.Contains(d, "{{") {
				bad("alert %s: description %q is not templated", alert, d)
			}
			if u, _ := ann["runbook_url"].(string); !strings.HasPrefix(u, "http") {
				bad("alert %s: runbook_url %q missing or not a URL", alert, u)
			}
		}
	}
	return problems
}

// The mixin's rules pass mixtool's lint guidelines, with the default and
// with another _config.
func TestMixinLint(t *testing.T) {
	root := testserver.RepoRoot(t)
	for name, overrides := range map[string]string{"default": "", "overridden": mixinOverrides} {
		r := renderMixin(t, root, overrides)
		if len(r.Groups) < 3 {
			t.Fatalf("%s: %d rule groups rendered", name, len(r.Groups))
		}
		for _, p := range lintRules(normalize(t, r.Groups).([]any)) {
			t.Errorf("%s: %s", name, p)
		}
	}
}

// The lint finds each kind of violation.
func TestLintRulesFindsViolations(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{
			"alert": "DramatiqThingBroken", "expr": "up == 0",
			"labels": map[string]any{"severity": "warning"},
			"annotations": map[string]any{
				"summary":     "A thing is broken.",
				"description": "Thing {{ $labels.instance }} is broken.",
				"runbook_url": "https://example.org/runbook#dramatiqthingbroken",
			},
		}
	}
	group := func(name string, rules ...any) any { return map[string]any{"name": name, "rules": rules} }
	if p := lintRules([]any{group("g", good())}); len(p) != 0 {
		t.Fatalf("a good rule is reported: %v", p)
	}
	edit := func(f func(r map[string]any)) any { r := good(); f(r); return r }
	ann := func(r map[string]any) map[string]any { return r["annotations"].(map[string]any) }
	many := make([]any, maxGroupRules+1)
	for i := range many {
		many[i] = edit(func(r map[string]any) { r["alert"] = fmt.Sprintf("DramatiqThing%c", 'A'+i) })
	}
	for name, groups := range map[string][]any{
		"lower-case name":     {group("g", edit(func(r map[string]any) { r["alert"] = "dramatiq_thing_broken" }))},
		"one-word name":       {group("g", edit(func(r map[string]any) { r["alert"] = "Broken" }))},
		"severity page":       {group("g", edit(func(r map[string]any) { r["labels"] = map[string]any{"severity": "page"} }))},
		"no severity":         {group("g", edit(func(r map[string]any) { delete(r, "labels") }))},
		"templated summary":   {group("g", edit(func(r map[string]any) { ann(r)["summary"] = "{{ $labels.queue }} is broken." }))},
		"summary no sentence": {group("g", edit(func(r map[string]any) { ann(r)["summary"] = "broken" }))},
		"static description":  {group("g", edit(func(r map[string]any) { ann(r)["description"] = "Broken." }))},
		"no runbook":          {group("g", edit(func(r map[string]any) { delete(ann(r), "runbook_url") }))},
		"no group name":       {group("", good())},
		"duplicate group":     {group("g", good()), group("g", edit(func(r map[string]any) { r["alert"] = "DramatiqOtherThing" }))},
		"duplicate alert":     {group("g", good()), group("h", good())},
		"empty group":         {group("g")},
		"huge group":          {group("g", many...)},
		"bad record name":     {group("g", map[string]any{"record": "dramatiq_workload", "expr": "1"})},
	} {
		if p := lintRules(groups); len(p) == 0 {
			t.Errorf("%s: not reported", name)
		}
	}
}

// `jb install <module>/mixin` puts mixin/ alone under
// vendor/<module>/mixin: it renders from there (no import leaves mixin/),
// under the module path of go.mod, the repository's address.
func TestMixinVendored(t *testing.T) {
	root := testserver.RepoRoot(t)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no module line")
	}
	module := string(m[1])
	vendor := filepath.Join(t.TempDir(), "vendor")
	for rel, b := range DefaultConfig().MixinFiles() {
		p := filepath.Join(vendor, filepath.FromSlash(module), filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{vendor}})
	out, err := vm.EvaluateAnonymousSnippet("user.jsonnet", `
local dramatiq = (import '`+module+`/mixin/mixin.libsonnet') + { _config+:: { selector: 'job="mine"' } };
{
  alerts: std.length(dramatiq.prometheusAlerts.groups),
  rules: std.length(dramatiq.prometheusRules.groups),
  dashboards: std.objectFields(dramatiq.grafanaDashboards),
  expr: dramatiq.prometheusAlerts.groups[0].rules[0].expr,
}`)
	if err != nil {
		t.Fatalf("rendering the vendored mixin: %v", err)
	}
	var got struct {
		Alerts, Rules int
		Dashboards    []string
		Expr          string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Alerts != 7 || got.Rules != 4 || len(got.Dashboards) != 4 || got.Expr != `up{job="mine"} == 0` {
		t.Errorf("vendored mixin rendered %+v", got)
	}
}
