package alerts

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

var brokerNames = map[string]string{mixin.BrokerRedis: "Redis", mixin.BrokerRabbitMQ: "RabbitMQ"}

// Every metric is either served by both brokers or listed for exactly one,
// and the lists name only metrics of the contract.
func TestBrokerMetricLists(t *testing.T) {
	contract := map[string]bool{}
	for _, m := range contractMetrics {
		contract[m] = true
	}
	for _, l := range [][]string{mixin.RedisOnlyMetrics, mixin.RabbitMQOnlyMetrics} {
		for _, m := range l {
			if !contract[m] {
				t.Errorf("%s is listed for one broker but is not a contract metric", m)
			}
			if slices.Contains(mixin.RedisOnlyMetrics, m) && slices.Contains(mixin.RabbitMQOnlyMetrics, m) {
				t.Errorf("%s is listed for both brokers", m)
			}
		}
	}
	for expr, want := range map[string]string{
		`sum(dramatiq_queue_ready_messages{job=~"$job"})`:                              "",
		`sum by (queue) (dramatiq_queue_orphaned_messages{job=~"$job"})`:               mixin.BrokerRedis,
		`rate(dramatiq_queue_delay_redeliveries_total{job=~"$job"}[$__rate_interval])`: mixin.BrokerRabbitMQ,
		`dramatiq_queue_ready_messages - dramatiq_queue_orphaned_messages`:             mixin.BrokerRedis,
		`dramatiq_redis_up or dramatiq_rabbitmq_up`:                                    "both",
	} {
		if got := mixin.QueryBroker(expr); got != want {
			t.Errorf("QueryBroker(%s) = %q, want %q", expr, got, want)
		}
	}
}

// Every dashboard panel fed by one broker says which, so that "No data" on
// the other broker is explained: a panel whose queries all need one broker
// ends with its mark, one with some such queries names the broker, and
// docs/dashboards.md lists it.
func TestDashboardPanelsNameTheirBroker(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "docs", "dashboards.md"))
	if err != nil {
		t.Fatal(err)
	}
	specific := 0
	for _, f := range dashboardFiles(t) {
		d := must(shipped.ReadDashboard(f))(t)
		title, _ := d["title"].(string)
		for _, p := range shipped.Panels(d) {
			ptitle, _ := p["title"].(string)
			desc, _ := p["description"].(string)
			where := filepath.Base(f) + ": panel " + ptitle
			needs := map[string]int{}
			targets, _ := p["targets"].([]any)
			for _, tg := range targets {
				e, _ := tg.(map[string]any)["expr"].(string)
				b := mixin.QueryBroker(e)
				if b == "both" {
					t.Errorf("%s: query %q needs both brokers' series, so it is empty on either", where, e)
				}
				needs[b]++
			}
			for b, name := range brokerNames {
				if needs[b] == 0 {
					continue
				}
				specific++
				if needs[b] == len(targets) && !strings.HasSuffix(desc, mixin.BrokerMark(b)) {
					t.Errorf("%s: every query needs %s, but the description does not end with %q: %q", where, name, mixin.BrokerMark(b), desc)
				}
				if !strings.Contains(desc, name) {
					t.Errorf("%s: %d queries need %s, but the description does not say so: %q", where, needs[b], name, desc)
				}
				if !docMentionsPanel(string(doc), title, ptitle, name) {
					t.Errorf("%s: docs/dashboards.md has no line naming %q under %q with %s", where, ptitle, title, name)
				}
			}
		}
	}
	if specific < 10 {
		t.Errorf("only %d broker-specific panels found: the metric lists or the reader are wrong", specific)
	}
}

// docMentionsPanel reports whether a table row of the section of dashboard
// title in the doc names the panel and the broker.
func docMentionsPanel(doc, title, panel, broker string) bool {
	i := strings.Index(doc, "## "+title)
	if i < 0 {
		return false
	}
	sec := doc[i+3:]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	for _, l := range strings.Split(sec, "\n") {
		if strings.HasPrefix(l, "|") && strings.Contains(l, "| "+panel+" |") && strings.Contains(l, broker) {
			return true
		}
	}
	return false
}

type brokerRuleTest struct {
	Tests []struct {
		Name          string                    `yaml:"name"`
		InputSeries   []struct{ Series string } `yaml:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

var seriesNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)

// alerts/tests/brokers.yml has, for each broker, a series set of that
// broker only in which every alert of the other broker is asserted silent:
// a new alert for one broker cannot be forgotten there.
func TestEveryBrokerAlertIsSilentOnTheOther(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "alerts", "tests", "brokers.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var tf brokerRuleTest
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	silentOn := map[string]map[string]bool{mixin.BrokerRedis: {}, mixin.BrokerRabbitMQ: {}}
	for _, tc := range tf.Tests {
		seen := map[string]bool{}
		for _, s := range tc.InputSeries {
			if mb := mixin.MetricBroker(seriesNameRE.FindString(s.Series)); mb != "" {
				seen[mb] = true
			}
		}
		if len(seen) != 1 {
			t.Errorf("brokers.yml %q: series of %d brokers, want one", tc.Name, len(seen))
			continue
		}
		var broker string
		for k := range seen {
			broker = k
		}
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) == 0 {
				silentOn[broker][a.Alertname] = true
			}
		}
	}
	n := 0
	for _, a := range mixin.DefaultConfig().Alerts() {
		if a.Broker == "" {
			continue
		}
		n++
		for other := range silentOn {
			if other != a.Broker && !silentOn[other][a.Name] {
				t.Errorf("%s needs %s: brokers.yml asserts no silent case on a %s-only series set", a.Name, brokerNames[a.Broker], brokerNames[other])
			}
		}
		// Silent because its series are absent on the other broker: its
		// expression names a metric only its broker serves.
		uses := false
		for _, s := range must(parseSelectors(a.Expr))(t) {
			uses = uses || mixin.MetricBroker(s.Metric) == a.Broker
		}
		if !uses {
			t.Errorf("%s is marked %s but queries no metric only %s serves", a.Name, brokerNames[a.Broker], brokerNames[a.Broker])
		}
	}
	if n < 10 {
		t.Errorf("only %d broker-specific alerts", n)
	}
}
