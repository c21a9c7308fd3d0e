package alerts

import (
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// must returns what a reader of alerts/shipped returned, ending the test on
// its error: must(shipped.Rules(root))(t).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// shippedRules returns every rule of alerts/*.rules.yml.
func shippedRules(t testing.TB) []shipped.Rule {
	return must(shipped.Rules(testserver.RepoRoot(t)))(t)
}

// shippedQueries returns every PromQL expression of the shipped rules and
// dashboards.
func shippedQueries(t testing.TB) []shipped.Query {
	return must(shipped.Queries(testserver.RepoRoot(t)))(t)
}

// ReferencedMetrics returns every metric name that the shipped rules and
// dashboards query, each with the places that use it. An end-to-end test
// compares its keys with the metric names of a real exporter's /metrics
// (plus the recording rules and Prometheus's own "up").
func ReferencedMetrics(t testing.TB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, q := range shippedQueries(t) {
		sels, err := parseSelectors(q.Expr)
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		for _, s := range sels {
			if s.Metric == "" {
				t.Errorf("%s: selector %s has no metric name", q.Where, s)
				continue
			}
			out[s.Metric] = append(out[s.Metric], q.Where)
		}
	}
	return out
}

// contractMetrics is the metric contract of the exporter (the README's
// metric tables). Tests here check the shipped queries against it; the
// end-to-end test checks them against a real exporter.
var contractMetrics = []string{
	"dramatiq_redis_up",
	"dramatiq_redis_memory_used_bytes",
	"dramatiq_redis_connected_clients",
	"dramatiq_queue_ready_messages",
	"dramatiq_queue_inflight_messages",
	"dramatiq_queue_delayed_messages",
	"dramatiq_queue_dead_letter_messages",
	"dramatiq_queue_dead_letter_last_timestamp_seconds",
	"dramatiq_queue_oldest_message_age_seconds",
	"dramatiq_queue_orphaned_messages",
	"dramatiq_queue_delayed_unclaimed_oldest_seconds",
	"dramatiq_queue_delayed_overdue_messages",
	"dramatiq_queue_longest_held_message_seconds",
	"dramatiq_queue_longest_held_message_lower_bound",
	"dramatiq_queue_dead_lettered_total",
	"dramatiq_actor_dead_lettered_total",
	"dramatiq_exporter_dead_letter_actor_series",
	"dramatiq_exporter_dead_letter_actor_series_limit",
	"dramatiq_queue_ready_messages_by_actor", // with --dramatiq.backlog-by-actor
	"dramatiq_processes",
	"dramatiq_exporter_queues_dropped",
	"dramatiq_exporter_broker_anomalies",
	"dramatiq_exporter_discovery_passes_total",
	"dramatiq_exporter_collector_success",
	"dramatiq_exporter_collector_duration_seconds",
	"dramatiq_exporter_build_info",
	"dramatiq_exporter_info",
	"dramatiq_database_up",
	"dramatiq_database_ping_duration_seconds",
	"dramatiq_database_info",
	"dramatiq_database_connections",
	"dramatiq_database_max_connections",
	"dramatiq_database_oldest_transaction_age_seconds",
	"dramatiq_database_blocked_connections",
	"dramatiq_database_in_recovery",
	"dramatiq_database_replication_lag_seconds",
	"dramatiq_database_size_bytes",
	// --broker=rabbitmq (mixin.RabbitMQOnlyMetrics).
	"dramatiq_rabbitmq_up",
	"dramatiq_queue_delayed_held_messages",
	"dramatiq_queue_consumers",
	"dramatiq_queue_delay_consumers",
	"dramatiq_queue_redeliveries_total",
	"dramatiq_queue_delay_redeliveries_total",
	"dramatiq_rabbitmq_queue_info",
	"dramatiq_rabbitmq_queue_layout_problems",
	"dramatiq_rabbitmq_vhost_queues",
}

// Every metric a rule or panel queries is one the exporter promises, a
// recording rule of ours, or Prometheus's own up.
func TestReferencedMetricsAreInContract(t *testing.T) {
	known := map[string]bool{"up": true}
	for _, m := range contractMetrics {
		known[m] = true
	}
	for m := range must(shipped.RecordingRules(testserver.RepoRoot(t)))(t) {
		known[m] = true
	}
	// Dramatiq's own middleware, scraped from the workers.
	for _, m := range mixin.MiddlewareMetrics {
		known[m] = true
	}
	refs := ReferencedMetrics(t)
	if len(refs) < 20 {
		t.Fatalf("found only %d metrics in alerts and dashboards: the reader is missing selectors", len(refs))
	}
	var names []string
	for m := range refs {
		names = append(names, m)
		if !known[m] {
			t.Errorf("%s is not a metric the exporter emits; used by %s", m, strings.Join(refs[m], "; "))
		}
	}
	sort.Strings(names)
	t.Logf("%d metrics referenced: %s", len(names), strings.Join(names, " "))
	// Every broker and database metric with an operational meaning is shown
	// somewhere; build_info is the only one left to Prometheus's own UI.
	for _, m := range contractMetrics {
		if _, ok := refs[m]; !ok && m != "dramatiq_exporter_build_info" {
			t.Errorf("contract metric %s is used by no rule or dashboard", m)
		}
	}
}

func TestParseSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string // selector strings
	}{
		{`up{job="dramatiq"} == 0`, []string{`up{job="dramatiq"}`}},
		{`sum by (queue, state) (rate(foo_total{a="b"}[5m])) > 0`, []string{`foo_total{a="b"}`}},
		{`sum(rate(foo_total[$__rate_interval])) without (instance)`, []string{`foo_total{}`}},
		{`a / on (job, instance) group_left (version) b_info{x=~"y|z"}`, []string{`a{}`, `b_info{x=~"y|z"}`}},
		{`a unless ignoring(queue) b`, []string{`a{}`, `b{}`}},
		{`a > bool 1 and b offset 5m`, []string{`a{}`, `b{}`}},
		{`time() - ts{q="x"} < 900`, []string{`ts{q="x"}`}},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []string{`m{}`}},
		{`{__name__="via_name", job="j"}`, []string{`via_name{__name__="via_name",job="j"}`}},
		{`max_over_time(deriv(x{job=~"$job"}[10m:1m])[1h:]) * 1e-3`, []string{`x{job=~"$job"}`}},
		{`count_values("v", build_info) > Inf or nan_metric`, []string{`build_info{}`, `nan_metric{}`}},
		{"x # comment with y_metric\n+ z", []string{`x{}`, `z{}`}},
		{`level:metric:rate5m{job="a"} @ start()`, []string{`level:metric:rate5m{job="a"}`}},
		{`topk(5, sum by (kind) (m{s="a,b}c"}))`, []string{`m{s="a,b}c"}`}},
		{`quantile(0.9, m) + avg without(x)(n)`, []string{`m{}`, `n{}`}},
		{`a{l!="1",k!~"2"} - 3`, []string{`a{l!="1",k!~"2"}`}},
	} {
		sels, err := parseSelectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.String())
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got  %q\n want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`a{job="x}`, `sum(a`, `a{job}`, `a{job="x" b}`} {
		if _, err := parseSelectors(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
