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
