package mixin

import (
	"regexp"
	"slices"
)

// An exporter reads one broker (--broker). The queue families
// (dramatiq_queue_ready_messages, _inflight_, _delayed_, _dead_letter_)
// come from both; the series below from one only, and are absent, never
// zero, on the other (docs/dramatiq-rabbitmq-layout.md says why). The rules
// and dashboards therefore keep working on either broker: an expression on
// another broker's series stays empty, and a panel says which broker feeds
// it (docs/dashboards.md).

// RedisOnlyMetrics are read from Redis keys or message bodies that RabbitMQ
// cannot show without consuming: heartbeats, ack sets, head bodies and the
// dead-letter sorted set.
var RedisOnlyMetrics = []string{
	"dramatiq_redis_up",
	"dramatiq_redis_memory_used_bytes",
	"dramatiq_redis_connected_clients",
	"dramatiq_queue_oldest_message_age_seconds",
	"dramatiq_queue_orphaned_messages",
	"dramatiq_queue_dead_letter_last_timestamp_seconds",
	"dramatiq_queue_dead_lettered_total",
	"dramatiq_actor_dead_lettered_total",
	"dramatiq_exporter_dead_letter_actor_series",
	"dramatiq_exporter_dead_letter_actor_series_limit",
	"dramatiq_processes",
	"dramatiq_exporter_broker_anomalies",
	"dramatiq_exporter_discovery_passes_total",
	"dramatiq_queue_delayed_unclaimed_oldest_seconds",
	"dramatiq_queue_delayed_overdue_messages",
	"dramatiq_queue_longest_held_message_seconds",
	"dramatiq_queue_longest_held_message_lower_bound",
	"dramatiq_queue_ready_messages_by_actor",
}

// RabbitMQOnlyMetrics come from the management API's queue list.
var RabbitMQOnlyMetrics = []string{
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

// MetricBroker is the broker that serves metric, or "" when both do (or it
// is not the exporter's).
func MetricBroker(metric string) string {
	switch {
	case slices.Contains(RedisOnlyMetrics, metric):
		return BrokerRedis
	case slices.Contains(RabbitMQOnlyMetrics, metric):
		return BrokerRabbitMQ
	}
	return ""
}

var metricNameRE = regexp.MustCompile(`\bdramatiq_[a-z0-9_]+\b`)

// QueryBroker is the broker a dashboard query needs to return data: the
// broker of the broker-specific metrics it names, "" when it names none.
// A query naming both brokers' metrics is "both", which the dashboards
// never need (a panel has one target per broker instead). Rules are
// classified by Alert.Broker, not by this: an alert may name another
// broker's series only to fall back on its absence.
func QueryBroker(expr string) string {
	b := ""
	for _, m := range metricNameRE.FindAllString(expr, -1) {
		switch mb := MetricBroker(m); {
		case mb == "" || mb == b:
		case b == "":
			b = mb
		default:
			return "both"
		}
	}
	return b
}

// Description marks of the panels fed by one broker only; docs/dashboards.md
// lists those panels.
const (
	redisOnly    = " Redis broker only: no data with --broker=rabbitmq."
	rabbitMQOnly = " RabbitMQ broker only: no data with --broker=redis."
)

// BrokerMark is the sentence that ends the description of a panel whose
// queries all need broker b.
func BrokerMark(b string) string {
	switch b {
	case BrokerRedis:
		return redisOnly[1:]
	case BrokerRabbitMQ:
		return rabbitMQOnly[1:]
	}
	return ""
}
