package mixin

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Inhibition says which alerts a source alert silences on the same target.
type Inhibition struct {
	Source  string
	Targets []string
	// Matchers narrow the targets further, e.g. to one collector.
	Matchers []string
}

// The collectors that read Redis and PostgreSQL. A failing collector is a
// symptom of its own server's outage only: the database collectors keep
// failing while Redis is down for reasons of their own, and the other way
// round.
const (
	BrokerCollectors   = "broker"
	DatabaseCollectors = "database|database_activity"
)

// Inhibitions lists the inhibit rules of the Alertmanager example. They are
// derived from the alert classes so that a new alert is covered by adding it
// to Groups only.
func (c Config) Inhibitions() []Inhibition {
	byClass := map[string][]string{}
	for _, a := range c.Alerts() {
		byClass[a.Class] = append(byClass[a.Class], a.Name)
	}
	var all []string
	for _, a := range c.Alerts() {
		if a.Name != "DramatiqExporterDown" {
			all = append(all, a.Name)
		}
	}
	cat := func(lists ...[]string) []string {
		var out []string
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	collector := []string{"DramatiqExporterCollectorFailing"}
	return []Inhibition{
		// Without a scrape every other signal is stale or absent.
		{Source: "DramatiqExporterDown", Targets: all},
		// Queue and process series vanish or freeze while Redis is down.
		{Source: "DramatiqRedisDown", Targets: byClass[classWorkload]},
		// The broker collector fails with it; the database ones must not be
		// hidden by it.
		{Source: "DramatiqRedisDown", Targets: collector, Matchers: []string{`collector=~"` + BrokerCollectors + `"`}},
		// The same for RabbitMQ: without its management API the queue
		// series are absent, and consumers vanish if RabbitMQ is down.
		{Source: "DramatiqRabbitMQDown", Targets: byClass[classWorkload]},
		{Source: "DramatiqRabbitMQDown", Targets: collector, Matchers: []string{`collector=~"` + BrokerCollectors + `"`}},
		// Workers fail or stall without their database, so queue alerts are
		// symptoms of it; the database details are unknown.
		{Source: "DramatiqDatabaseDown", Targets: cat(byClass[classWorkload], byClass[classDatabase])},
		{Source: "DramatiqDatabaseDown", Targets: collector, Matchers: []string{`collector=~"` + DatabaseCollectors + `"`}},
	}
}

// Receivers in the example, by severity.
// The webhook URLs are loopback placeholders, like Alertmanager's own example,
// so that an Alertmanager started on this file never reaches the network.
var severityReceivers = []struct{ Severity, Receiver, URL, Comment string }{
	{"critical", "dramatiq-pager", "http://127.0.0.1:5001/dramatiq/page", "Pages someone: replace with pagerduty_configs, opsgenie_configs, ..."},
	{"warning", "dramatiq-chat", "http://127.0.0.1:5001/dramatiq/chat", "Posts to the team's channel: replace with slack_configs, msteams_configs, email_configs, ..."},
	{"info", "dramatiq-info", "", "No integration: info alerts are context, visible in the Alertmanager UI only."},
}

// AlertmanagerYAML renders the example Alertmanager configuration.
func (c Config) AlertmanagerYAML() []byte {
	var routes []*yaml.Node
	for _, s := range severityReceivers {
		kv := []any{"matchers", yflow(`severity="` + s.Severity + `"`), "receiver", s.Receiver}
		if s.Severity == "critical" {
			kv = append(kv, "repeat_interval", "1h")
		}
		routes = append(routes, ymap(kv...))
	}
	route := ymap(
		"receiver", "default",
		"group_by", yflow("alertname", "job", "instance"),
		"group_wait", "30s",
		"group_interval", "5m",
		"repeat_interval", "4h",
		"routes", yseq(routes...),
	)

	var inhibits []*yaml.Node
	for _, in := range c.Inhibitions() {
		matchers := []string{`alertname=~"` + strings.Join(in.Targets, "|") + `"`}
		if len(in.Targets) == 1 {
			matchers[0] = `alertname="` + in.Targets[0] + `"`
		}
		if in.Source == "DramatiqExporterDown" {
			// Every alert of this target, including ones added later.
			matchers = []string{`alertname=~"Dramatiq.+"`, `alertname!="DramatiqExporterDown"`}
		}
		targets := yflow(append(matchers, in.Matchers...)...)
		inhibits = append(inhibits, ymap(
			"source_matchers", yflow(`alertname="`+in.Source+`"`),
			"target_matchers", targets,
			"equal", yflow("job", "instance"),
		))
	}

	receivers := []*yaml.Node{ymap("name", "default", "webhook_configs", yseq(ymap("url", "http://127.0.0.1:5001/default")))}
	for _, s := range severityReceivers {
		var r *yaml.Node
		if s.URL == "" {
			r = ymap("name", s.Receiver)
		} else {
			r = ymap("name", s.Receiver, "webhook_configs", yseq(ymap("url", s.URL, "send_resolved", ybool(true))))
		}
		r.HeadComment = s.Comment
		receivers = append(receivers, r)
	}

	return encodeYAML("Example Alertmanager configuration for the dramatiq_exporter alerts: routes by\n"+
		"severity and silences symptoms while the exporter, the broker or the database\n"+
		"is down. Copy it and replace the receivers with your own integrations.\n"+generatedNote,
		ymap("route", route, "inhibit_rules", yseq(inhibits...), "receivers", yseq(receivers...)))
}

func ybool(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}
