package collector_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// modelReader hands the collector a fixed model read: the projection is
// under test here (the RabbitMQ reader's own tests, and the binary's,
// read a real RabbitMQ).
type modelReader struct {
	snap *broker.Snapshot
	err  error
}

func (m *modelReader) Kind() broker.Kind                  { return broker.RabbitMQ }
func (m *modelReader) Discovery() *broker.DiscoveryStatus { return nil }
func (m *modelReader) ReadSnapshot(context.Context, broker.ReadOptions) (*broker.Snapshot, error) {
	return m.snap, m.err
}

func rabbitSnapshot() *broker.Snapshot {
	return &broker.Snapshot{
		Broker: broker.RabbitMQ,
		Queues: []broker.Queue{
			{Name: "emails", Ready: broker.Known(5), InFlight: broker.Known(4), Delayed: broker.Known(3), DelayedHeld: broker.Known(2),
				DeadLetter: broker.Known(1), Consumers: broker.Known(2), DelayConsumers: broker.Known(2),
				Redeliveries: broker.Known(7), DelayRedeliveries: broker.Known(11),
				Members:        []broker.Member{{Role: broker.MemberMain, Type: "classic"}, {Role: broker.MemberDelay, Type: "classic"}, {Role: broker.MemberDead, Type: "quorum"}},
				LayoutProblems: []string{"emails.XQ: no x-message-ttl (dead letters are kept forever)"}, LayoutProblemCount: 1},
			// Statistics not collected yet: counts absent, never 0.
			{Name: "fresh", Members: []broker.Member{{Role: broker.MemberMain, Type: "classic"}}},
		},
		RabbitMQ: &broker.RabbitMQState{Vhost: "/", BrokerQueues: 5, Ignored: 1, ListingAge: 90 * time.Second},
	}
}

func rabbitExporter(t *testing.T, r broker.Reader) *collector.Exporter {
	t.Helper()
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "test", Namespace: "dramatiq"}, collector.Sources{Broker: r})
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func TestRabbitMQProjection(t *testing.T) {
	exp := rabbitExporter(t, &modelReader{snap: rabbitSnapshot()})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp.Bind(context.Background()))
	want := `
# HELP dramatiq_queue_consumers Consumers of RabbitMQ queue q: one per worker process serving the queue (RabbitMQ only).
# TYPE dramatiq_queue_consumers gauge
dramatiq_queue_consumers{queue="emails"} 2
# HELP dramatiq_queue_dead_letter_messages Dead-lettered messages: messages of RabbitMQ queue q.XQ.
# TYPE dramatiq_queue_dead_letter_messages gauge
dramatiq_queue_dead_letter_messages{queue="emails"} 1
# HELP dramatiq_queue_delay_consumers Consumers of RabbitMQ queue q.DQ: one per worker process serving the queue (RabbitMQ only).
# TYPE dramatiq_queue_delay_consumers gauge
dramatiq_queue_delay_consumers{queue="emails"} 2
# HELP dramatiq_queue_delay_redeliveries_total message_stats.redeliver of RabbitMQ queue q.DQ: delayed messages delivered again, typically after consumer_timeout closed the channel of a worker holding them. Resets when the queue's process restarts (RabbitMQ only).
# TYPE dramatiq_queue_delay_redeliveries_total counter
dramatiq_queue_delay_redeliveries_total{queue="emails"} 11
# HELP dramatiq_queue_delayed_held_messages The part of dramatiq_queue_delayed_messages that workers hold in memory until their eta: messages_unacknowledged of q.DQ (RabbitMQ only).
# TYPE dramatiq_queue_delayed_held_messages gauge
dramatiq_queue_delayed_held_messages{queue="emails"} 2
# HELP dramatiq_queue_delayed_messages Delayed messages and retries in backoff, waiting or held by a worker until their eta: messages_ready plus messages_unacknowledged of q.DQ.
# TYPE dramatiq_queue_delayed_messages gauge
dramatiq_queue_delayed_messages{queue="emails"} 3
# HELP dramatiq_queue_inflight_messages Messages delivered to a worker and not yet acked, running or prefetched: messages_unacknowledged of RabbitMQ queue q.
# TYPE dramatiq_queue_inflight_messages gauge
dramatiq_queue_inflight_messages{queue="emails"} 4
# HELP dramatiq_queue_ready_messages Messages waiting to be fetched: messages_ready of RabbitMQ queue q.
# TYPE dramatiq_queue_ready_messages gauge
dramatiq_queue_ready_messages{queue="emails"} 5
# HELP dramatiq_queue_redeliveries_total message_stats.redeliver of RabbitMQ queue q: deliveries made again after a consumer went away. Resets when the queue's process restarts (RabbitMQ only).
# TYPE dramatiq_queue_redeliveries_total counter
dramatiq_queue_redeliveries_total{queue="emails"} 7
# HELP dramatiq_rabbitmq_queue_info 1 for each RabbitMQ queue behind a Dramatiq queue that exists: member main (q), delay (q.DQ) or dead (q.XQ), with RabbitMQ's queue type.
# TYPE dramatiq_rabbitmq_queue_info gauge
dramatiq_rabbitmq_queue_info{member="dead",queue="emails",type="quorum"} 1
dramatiq_rabbitmq_queue_info{member="delay",queue="emails",type="classic"} 1
dramatiq_rabbitmq_queue_info{member="main",queue="emails",type="classic"} 1
dramatiq_rabbitmq_queue_info{member="main",queue="fresh",type="classic"} 1
# HELP dramatiq_rabbitmq_queue_layout_problems Ways the RabbitMQ queues q, q.DQ and q.XQ differ from what Dramatiq declares (a missing queue, a missing dead-letter route, an unexpected argument...); 0 when they match. The status page lists them.
# TYPE dramatiq_rabbitmq_queue_layout_problems gauge
dramatiq_rabbitmq_queue_layout_problems{queue="emails"} 1
dramatiq_rabbitmq_queue_layout_problems{queue="fresh"} 0
# HELP dramatiq_rabbitmq_listing_age_seconds How old the management API listing was that this read's queue types, arguments and redeliveries came from: 0 when the read listed (always, without --rabbitmq.prometheus-url); with it, the listing is redone every 5 minutes. The counts are this read's. The API gives no age for its own statistics, which lag by up to its collect_statistics_interval (5 s by default).
# TYPE dramatiq_rabbitmq_listing_age_seconds gauge
dramatiq_rabbitmq_listing_age_seconds 90
# HELP dramatiq_rabbitmq_up 1 when RabbitMQ's management API answered this scrape with the vhost's queues, else 0. When 0, no queue series are emitted.
# TYPE dramatiq_rabbitmq_up gauge
dramatiq_rabbitmq_up 1
# HELP dramatiq_rabbitmq_vhost_queues RabbitMQ queues the vhost listed, by whether they belong to a Dramatiq queue (dramatiq), to none (ignored), or were skipped because the name cannot be a label (invalid).
# TYPE dramatiq_rabbitmq_vhost_queues gauge
dramatiq_rabbitmq_vhost_queues{kind="dramatiq"} 4
dramatiq_rabbitmq_vhost_queues{kind="ignored"} 1
dramatiq_rabbitmq_vhost_queues{kind="invalid"} 0
`
	names := []string{"dramatiq_rabbitmq_up", "dramatiq_queue_ready_messages", "dramatiq_queue_inflight_messages", "dramatiq_queue_delayed_messages",
		"dramatiq_queue_dead_letter_messages", "dramatiq_queue_delayed_held_messages", "dramatiq_queue_consumers", "dramatiq_queue_delay_consumers",
		"dramatiq_queue_redeliveries_total", "dramatiq_queue_delay_redeliveries_total", "dramatiq_rabbitmq_queue_info",
		"dramatiq_rabbitmq_queue_layout_problems", "dramatiq_rabbitmq_vhost_queues", "dramatiq_rabbitmq_listing_age_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Absent on RabbitMQ: the Redis-only families and the other broker's up.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch n := mf.GetName(); {
		case n == "dramatiq_redis_up", n == "dramatiq_queue_oldest_message_age_seconds", n == "dramatiq_queue_orphaned_messages",
			n == "dramatiq_processes", n == "dramatiq_queue_dead_lettered_total", n == "dramatiq_actor_dead_lettered_total",
			n == "dramatiq_queue_dead_letter_last_timestamp_seconds", strings.HasPrefix(n, "dramatiq_exporter_discovery_"),
			n == "dramatiq_exporter_broker_anomalies":
			t.Errorf("%s present on RabbitMQ", n)
		}
	}
	problems, err := testutil.CollectAndLint(exp.Bind(context.Background()))
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// A failed read is up 0 and no queue series at all, never zeros.
func TestRabbitMQProjectionDown(t *testing.T) {
	exp := rabbitExporter(t, &modelReader{err: errors.New("GET /api/queues/%2F: 401 Unauthorized")})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp.Bind(context.Background()))
	want := `
# HELP dramatiq_rabbitmq_up 1 when RabbitMQ's management API answered this scrape with the vhost's queues, else 0. When 0, no queue series are emitted.
# TYPE dramatiq_rabbitmq_up gauge
dramatiq_rabbitmq_up 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dramatiq_rabbitmq_up", "dramatiq_redis_up", "dramatiq_queue_ready_messages", "dramatiq_queue_consumers"); err != nil {
		t.Fatal(err)
	}
}
