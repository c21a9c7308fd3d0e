package mixin

import (
	"bytes"
	"encoding/json"
	"strings"
)

// A small model of the parts of Grafana's dashboard JSON the shipped
// dashboards use. Every panel is built through it, so every panel gets a unit,
// the datasource variable and a grid position.

const dsRef = "${datasource}"

var promDS = map[string]any{"type": "prometheus", "uid": dsRef}

type target struct {
	Expr   string
	Legend string
	// Table makes an instant query in table format, for table panels.
	Table bool
	// Instant makes an instant query, for stats that must show "now".
	Instant bool
}

type panel struct {
	Type        string // stat, timeseries, table
	Title       string
	Description string
	Unit        string
	W, H        int
	Targets     []target
	// Custom edits the rendered panel for what the common fields don't cover.
	Custom func(p map[string]any)
}

type row struct {
	Title  string
	Panels []panel
}

type dashboard struct {
	UID, Title, Description string
	ExtraVars               []map[string]any
	Rows                    []row
}

func (t target) render(refID string) map[string]any {
	m := map[string]any{
		"datasource":   promDS,
		"expr":         t.Expr,
		"legendFormat": t.Legend,
		"refId":        refID,
	}
	switch {
	case t.Table:
		m["format"], m["instant"], m["range"] = "table", true, false
	case t.Instant:
		m["instant"], m["range"] = true, false
	default:
		m["range"] = true
	}
	if t.Legend == "" {
		m["legendFormat"] = "__auto"
	}
	return m
}

func (p panel) render(x, y int) map[string]any {
	var targets []any
	for i, t := range p.Targets {
		targets = append(targets, t.render(string(rune('A'+i))))
	}
	m := map[string]any{
		"type":        p.Type,
		"title":       p.Title,
		"description": p.Description,
		"datasource":  promDS,
		"gridPos":     map[string]any{"x": x, "y": y, "w": p.W, "h": p.H},
		"targets":     targets,
		"fieldConfig": map[string]any{
			"defaults": map[string]any{
				"unit": p.Unit,
				"thresholds": map[string]any{"mode": "absolute", "steps": []any{
					map[string]any{"color": "green", "value": nil},
				}},
				"color": map[string]any{"mode": "palette-classic"},
			},
			"overrides": []any{},
		},
	}
	switch p.Type {
	case "timeseries":
		m["options"] = map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []any{}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		}
		defaults(m)["custom"] = map[string]any{
			"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false,
		}
	case "stat":
		m["options"] = map[string]any{
			"reduceOptions": map[string]any{"calcs": []any{"lastNotNull"}, "fields": "", "values": false},
			"colorMode":     "value", "graphMode": "area", "justifyMode": "auto",
			"orientation": "auto", "textMode": "auto",
		}
		defaults(m)["color"] = map[string]any{"mode": "thresholds"}
	case "table":
		m["options"] = map[string]any{"showHeader": true, "cellHeight": "sm"}
	}
	if p.Custom != nil {
		p.Custom(m)
	}
	return m
}

func defaults(p map[string]any) map[string]any {
	return p["fieldConfig"].(map[string]any)["defaults"].(map[string]any)
}

// thresholds sets the colour steps of a panel: base colour, then (value,
// colour) pairs.
func thresholds(base string, steps ...any) func(map[string]any) {
	return func(p map[string]any) {
		s := []any{map[string]any{"color": base, "value": nil}}
		for i := 0; i+1 < len(steps); i += 2 {
			s = append(s, map[string]any{"value": steps[i], "color": steps[i+1]})
		}
		defaults(p)["thresholds"] = map[string]any{"mode": "absolute", "steps": s}
	}
}

// upDown maps 0/1 to DOWN/UP in red and green.
func upDown() func(map[string]any) {
	return chain(thresholds("red", 1, "green"), valueMap("DOWN", "red", "UP", "green"))
}

// valueMap shows 0 and 1 as texts in the given colours.
func valueMap(zero, zeroColor, one, oneColor string) func(map[string]any) {
	return func(p map[string]any) {
		defaults(p)["mappings"] = []any{map[string]any{"type": "value", "options": map[string]any{
			"0": map[string]any{"text": zero, "color": zeroColor, "index": 0},
			"1": map[string]any{"text": one, "color": oneColor, "index": 1},
		}}}
		p["options"].(map[string]any)["graphMode"] = "none"
	}
}

func chain(fs ...func(map[string]any)) func(map[string]any) {
	return func(p map[string]any) {
		for _, f := range fs {
			f(p)
		}
	}
}

// queryVar is a variable filled by a PromQL query. Its label is its name, and
// a multi-select one matches "All" with allValue ".+" rather than a regex of
// every value, as Grafana's dashboard linter asks: the query stays short
// however many instances or queues there are, and a new one shows at once.
func queryVar(name, query string, multi bool) map[string]any {
	v := map[string]any{
		"type":       "query",
		"name":       name,
		"label":      name,
		"datasource": promDS,
		"definition": query,
		"query":      query,
		"refresh":    2, // on time range change, so new instances and queues appear
		"regex":      "",
		"sort":       1,
		"multi":      multi,
		"includeAll": multi,
		"hide":       0,
		"options":    []any{},
	}
	if multi {
		v["allValue"] = ".+"
	}
	return v
}

func (d dashboard) render(c Config) []byte {
	vars := []any{
		map[string]any{
			"type": "datasource", "name": "datasource", "label": "Data source",
			"query": "prometheus", "regex": "", "refresh": 1, "hide": 0, "options": []any{},
		},
		// From up rather than dramatiq_exporter_info: the workers' own
		// middleware metrics (docs/worker-metrics.md) come from another
		// scrape job, and the same two variables select both.
		queryVar("job", "label_values(up, job)", true),
		queryVar("instance", `label_values(up{job=~"$job"}, instance)`, true),
	}
	for _, v := range d.ExtraVars {
		vars = append(vars, v)
	}

	var panels []any
	y := 0
	for _, r := range d.Rows {
		panels = append(panels, map[string]any{
			"type": "row", "title": r.Title, "collapsed": false, "panels": []any{},
			"gridPos": map[string]any{"x": 0, "y": y, "w": 24, "h": 1},
		})
		y++
		x, lineH := 0, 0
		for _, p := range r.Panels {
			if x+p.W > 24 {
				x, y, lineH = 0, y+lineH, 0
			}
			panels = append(panels, p.render(x, y))
			x += p.W
			lineH = max(lineH, p.H)
		}
		y += lineH
	}

	m := map[string]any{
		"uid":           d.UID,
		"title":         d.Title,
		"description":   d.Description,
		"tags":          anys(c.DashboardTags),
		"editable":      false, // provisioned from files: UI edits would be lost
		"graphTooltip":  1,
		"schemaVersion": 39,
		"refresh":       "30s",
		"time":          map[string]any{"from": "now-6h", "to": "now"},
		"timepicker":    map[string]any{},
		"timezone":      "",
		"annotations": map[string]any{"list": []any{map[string]any{
			"builtIn": 1, "datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"},
			"enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)",
			"name": "Annotations & Alerts", "type": "dashboard",
		}}},
		"links": []any{map[string]any{
			"title": "Dramatiq", "type": "dashboards", "tags": []any{c.DashboardTags[0]},
			"asDropdown": true, "includeVars": true, "keepTime": true,
		}},
		"templating": map[string]any{"list": vars},
		"panels":     panels,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// PromQL is full of < > &; keep it readable in the file.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		panic("mixin: encode dashboard: " + err.Error())
	}
	return buf.Bytes()
}

// selector builds the matchers every dashboard query carries.
func dsel(extra ...string) string {
	return strings.Join(append([]string{`job=~"$job"`, `instance=~"$instance"`}, extra...), ",")
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
