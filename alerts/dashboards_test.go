package alerts

import (
	"fmt"
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// Grafana unit ids the dashboards may use; a typo would show raw numbers.
var grafanaUnits = map[string]bool{
	"none": true, "short": true, "s": true, "bytes": true, "percentunit": true,
	"mps": true, "cps": true, "dateTimeFromNow": true,
}

var (
	uidRE   = regexp.MustCompile(`^[a-z0-9-]{1,40}$`)
	rangeRE = regexp.MustCompile(`\[([^\]]*)\]`)
)

func dsUID(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["uid"].(string)
	return s
}

// The mixin conventions for dashboards: datasource, job and instance variables
// used everywhere, a unit on every panel, a fixed uid and tags, no leftovers
// of a UI export.
func TestDashboardLint(t *testing.T) {
	uids := map[string]string{}
	for _, f := range dashboardFiles(t) {
		name := filepath.Base(f)
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, leftover := range []string{"${DS_", "DS_PROMETHEUS", `"__inputs"`, `"__requires"`, `"__elements"`} {
			if strings.Contains(string(raw), leftover) {
				t.Errorf("%s: UI-export leftover %s", name, leftover)
			}
		}
		d := must(shipped.ReadDashboard(f))(t)
		for _, k := range []string{"id", "iteration", "version"} {
			if _, ok := d[k]; ok {
				t.Errorf("%s: top-level %q is set by Grafana, not shipped", name, k)
			}
		}
		uid, _ := d["uid"].(string)
		if !uidRE.MatchString(uid) {
			t.Errorf("%s: uid %q is not a fixed short slug", name, uid)
		}
		if other, dup := uids[uid]; dup {
			t.Errorf("%s and %s share uid %q", name, other, uid)
		}
		uids[uid] = name
		if title, _ := d["title"].(string); title == "" {
			t.Errorf("%s: no title", name)
		}
		tags, _ := d["tags"].([]any)
		if !containsAny(tags, "dramatiq") {
			t.Errorf("%s: tags %v lack dramatiq", name, tags)
		}

		vars := templatingVars(d)
		if v := vars["datasource"]; v == nil || v["type"] != "datasource" || v["query"] != "prometheus" {
			t.Errorf("%s: no Prometheus datasource variable named datasource", name)
		}
		for _, v := range []string{"job", "instance"} {
			if vars[v] == nil || vars[v]["type"] != "query" {
				t.Errorf("%s: no %s query variable", name, v)
			}
		}
		for vn, v := range vars {
			if v["type"] == "query" && dsUID(v["datasource"]) != "${datasource}" {
				t.Errorf("%s: variable %s does not query ${datasource}", name, vn)
			}
		}

		var occupied [][24]bool
		for _, p := range shipped.Panels(d) {
			title, _ := p["title"].(string)
			where := fmt.Sprintf("%s: panel %q", name, title)
			if _, ok := p["id"]; ok {
				t.Errorf("%s: has an id; Grafana assigns them", where)
			}
			gp, _ := p["gridPos"].(map[string]any)
			x, y, w, h := intOf(gp["x"]), intOf(gp["y"]), intOf(gp["w"]), intOf(gp["h"])
			if w <= 0 || h <= 0 || x < 0 || x+w > 24 {
				t.Errorf("%s: bad gridPos %v", where, gp)
			} else {
				for len(occupied) < y+h {
					occupied = append(occupied, [24]bool{})
				}
				for r := y; r < y+h; r++ {
					for col := x; col < x+w; col++ {
						if occupied[r][col] {
							t.Errorf("%s: overlaps another panel at (%d,%d)", where, col, r)
						}
						occupied[r][col] = true
					}
				}
			}
			if p["type"] == "row" {
				continue
			}
			if title == "" {
				t.Errorf("%s: panel without title", name)
			}
			fc, _ := p["fieldConfig"].(map[string]any)
			defs, _ := fc["defaults"].(map[string]any)
			if unit, _ := defs["unit"].(string); !grafanaUnits[unit] {
				t.Errorf("%s: unit %q is missing or unknown", where, unit)
			}
			if dsUID(p["datasource"]) != "${datasource}" {
				t.Errorf("%s: datasource is not ${datasource}", where)
			}
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				if dsUID(tm["datasource"]) != "${datasource}" {
					t.Errorf("%s: query %v does not use ${datasource}", where, tm["refId"])
				}
			}
		}
	}
	if len(uids) < 4 {
		t.Errorf("%d dashboards, want overview, queue, database and actors", len(uids))
	}
}

// Every selector in every dashboard query and variable is limited to the
// chosen job and instance (and queue, where the dashboard has that
// variable), and every range is $__rate_interval.
func TestDashboardQueriesUseVariables(t *testing.T) {
	queueDashboards := map[string]bool{}
	for _, f := range dashboardFiles(t) {
		if templatingVars(must(shipped.ReadDashboard(f))(t))["queue"] != nil {
			queueDashboards[filepath.Base(f)] = true
		}
	}
	if len(queueDashboards) == 0 {
		t.Error("no dashboard has a queue variable")
	}
	n := 0
	for _, q := range shippedQueries(t) {
		if !q.Grafana {
			continue
		}
		n++
		sels, err := parseSelectors(q.Expr)
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		if len(sels) == 0 {
			t.Errorf("%s: no selector in %q", q.Where, q.Expr)
		}
		file := strings.SplitN(q.Where, ":", 2)[0]
		for _, s := range sels {
			need := map[string]string{"job": "$job", "instance": "$instance"}
			switch {
			case q.Variable && strings.HasSuffix(q.Where, "variable job"):
				need = nil // the job variable lists the jobs
			case q.Variable && strings.HasSuffix(q.Where, "variable instance"):
				need = map[string]string{"job": "$job"}
			case !q.Variable && queueDashboards[filepath.Base(file)] && strings.HasPrefix(s.Metric, "dramatiq_queue_"):
				need["queue"] = "$queue"
			}
			for label, v := range need {
				ms := s.Label(label)
				if len(ms) != 1 || ms[0].Op != "=~" || ms[0].Value != v {
					t.Errorf("%s: selector %s lacks %s=~%q", q.Where, s, label, v)
				}
			}
		}
		for _, m := range rangeRE.FindAllStringSubmatch(q.Expr, -1) {
			if m[1] != "$__rate_interval" {
				t.Errorf("%s: range [%s], want [$__rate_interval]", q.Where, m[1])
			}
		}
	}
	if n < 40 {
		t.Errorf("found only %d dashboard queries", n)
	}
}

// promtool parses every dashboard query with Prometheus's own PromQL parser.
func TestDashboardQueriesParse(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel testserver.PromRelease) {
		bin := rel.Promtool
		var rules []map[string]string
		var where []string
		for _, q := range shippedQueries(t) {
			if !q.Grafana {
				continue
			}
			expr := strings.ReplaceAll(q.Expr, "$__rate_interval", "1m")
			rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query_%d:check", len(rules)), "expr": expr})
			where = append(where, fmt.Sprintf("query_%d: %s", len(rules)-1, q.Where))
		}
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "dashboards.rules.yml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, t.TempDir(), bin, "check", "rules", path)
		if err != nil || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(rules))) {
			t.Fatalf("promtool rejects dashboard queries: %v\n%s\nwhere\n  %s", err, out, strings.Join(where, "\n  "))
		}
	})
}

// The panels the issue asks for are there.
func TestDashboardContents(t *testing.T) {
	want := map[string][]string{
		"dramatiq-overview": {"up", "dramatiq_redis_up", "dramatiq_database_up", "dramatiq_processes",
			"dramatiq_queue_ready_messages", "dramatiq_queue_inflight_messages", "dramatiq_queue_delayed_messages",
			"dramatiq_queue_dead_letter_messages", "dramatiq_queue_orphaned_messages", "dramatiq_queue_oldest_message_age_seconds"},
		"dramatiq-queue": {"dramatiq_queue_ready_messages", "dramatiq_queue_inflight_messages", "dramatiq_queue_delayed_messages",
			"dramatiq_queue_dead_letter_messages", "dramatiq_queue_oldest_message_age_seconds", "dramatiq_queue_orphaned_messages",
			"dramatiq_queue_dead_letter_last_timestamp_seconds"},
		"dramatiq-database": {"dramatiq_database_up", "dramatiq_database_connections", "dramatiq_database_max_connections",
			"dramatiq_database_oldest_transaction_age_seconds", "dramatiq_database_blocked_connections",
			"dramatiq_database_in_recovery", "dramatiq_database_replication_lag_seconds", "dramatiq_database_size_bytes",
			"dramatiq_database_ping_duration_seconds", "dramatiq_database_info"},
		// The workers' own view beside the broker's queues.
		"dramatiq-actors": append([]string{"dramatiq_queue_ready_messages", "dramatiq_queue_oldest_message_age_seconds"},
			mixin.MiddlewareMetrics[:len(mixin.MiddlewareMetrics)-2]...),
	}
	for _, f := range dashboardFiles(t) {
		d := must(shipped.ReadDashboard(f))(t)
		uid, _ := d["uid"].(string)
		used := map[string]bool{}
		var types []string
		var exprs []string
		for _, p := range shipped.Panels(d) {
			types = append(types, fmt.Sprint(p["type"]))
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				e, _ := tg.(map[string]any)["expr"].(string)
				exprs = append(exprs, e)
				sels, err := parseSelectors(e)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range sels {
					used[s.Metric] = true
				}
			}
		}
		for _, m := range want[uid] {
			if !used[m] {
				t.Errorf("%s: no panel shows %s", uid, m)
			}
		}
		delete(want, uid)
		switch uid {
		case "dramatiq-overview":
			if !containsAny(anySlice(types), "table") {
				t.Errorf("%s: no queues table", uid)
			}
		case "dramatiq-queue":
			if !strings.Contains(strings.Join(exprs, "\n"), "deriv(dramatiq_queue_ready_messages") {
				t.Errorf("%s: no drain trend", uid)
			}
		}
	}
	for uid := range want {
		t.Errorf("dashboard %s is missing", uid)
	}
}

// dashboardFiles returns the shipped dashboards.
func dashboardFiles(t testing.TB) []string {
	return must(shipped.DashboardFiles(testserver.RepoRoot(t)))(t)
}

func templatingVars(d map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	tmpl, _ := d["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	for _, v := range list {
		vm, _ := v.(map[string]any)
		if n, _ := vm["name"].(string); n != "" {
			out[n] = vm
		}
	}
	return out
}

func containsAny(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func intOf(v any) int {
	f, _ := v.(float64)
	return int(f)
}
