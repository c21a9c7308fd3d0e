package collector

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The RabbitMQ projection. The four backlog families keep their names and
// meanings; their HELP says where RabbitMQ's numbers come from. A collector
// describes only its own broker's families, so the two HELP texts never
// meet in one registry. What RabbitMQ cannot give read-only (oldest age,
// orphans, per-actor dead letters, heartbeats) has no series here at all.
var (
	rabbitmqUpDesc = prometheus.NewDesc("dramatiq_rabbitmq_up",
		"1 when RabbitMQ's management API answered this scrape with the vhost's queues, else 0. When 0, no queue series are emitted.", nil, nil)
	rabbitmqQueueInfoDesc = prometheus.NewDesc("dramatiq_rabbitmq_queue_info",
		"1 for each RabbitMQ queue behind a Dramatiq queue that exists: member main (q), delay (q.DQ) or dead (q.XQ), with RabbitMQ's queue type.", []string{"queue", "member", "type"}, nil)
	rabbitmqListingAgeDesc = prometheus.NewDesc("dramatiq_rabbitmq_listing_age_seconds",
		"How old the management API listing was that this read's queue types, arguments and redeliveries came from: 0 when the read listed (always, without --rabbitmq.prometheus-url); with it, the listing is redone every 5 minutes. The counts are this read's. The API gives no age for its own statistics, which lag by up to its collect_statistics_interval (5 s by default).", nil, nil)
	rabbitmqQueuesDesc = prometheus.NewDesc("dramatiq_rabbitmq_vhost_queues",
		"RabbitMQ queues the vhost listed, by whether they belong to a Dramatiq queue (dramatiq), to none (ignored), or were skipped because the name cannot be a label (invalid).", []string{"kind"}, nil)

	rmqQueueReady = NewQueueFamily("dramatiq_queue_ready_messages",
		"Messages waiting to be fetched: messages_ready of RabbitMQ queue q.", prometheus.GaugeValue)
	rmqQueueInflight = NewQueueFamily("dramatiq_queue_inflight_messages",
		"Messages delivered to a worker and not yet acked, running or prefetched: messages_unacknowledged of RabbitMQ queue q.", prometheus.GaugeValue)
	rmqQueueDelayed = NewQueueFamily("dramatiq_queue_delayed_messages",
		"Delayed messages and retries in backoff, waiting or held by a worker until their eta: messages_ready plus messages_unacknowledged of q.DQ.", prometheus.GaugeValue)
	rmqQueueDead = NewQueueFamily("dramatiq_queue_dead_letter_messages",
		"Dead-lettered messages: messages of RabbitMQ queue q.XQ.", prometheus.GaugeValue)
	rmqQueueDelayedHeld = NewQueueFamily("dramatiq_queue_delayed_held_messages",
		"The part of dramatiq_queue_delayed_messages that workers hold in memory until their eta: messages_unacknowledged of q.DQ (RabbitMQ only).", prometheus.GaugeValue)
	rmqQueueConsumers = NewQueueFamily("dramatiq_queue_consumers",
		"Consumers of RabbitMQ queue q: one per worker process serving the queue (RabbitMQ only).", prometheus.GaugeValue)
	rmqQueueDelayConsumers = NewQueueFamily("dramatiq_queue_delay_consumers",
		"Consumers of RabbitMQ queue q.DQ: one per worker process serving the queue (RabbitMQ only).", prometheus.GaugeValue)
	rmqQueueRedeliveries = NewQueueFamily("dramatiq_queue_redeliveries_total",
		"message_stats.redeliver of RabbitMQ queue q: deliveries made again after a consumer went away. Resets when the queue's process restarts (RabbitMQ only).", prometheus.CounterValue)
	rmqQueueDelayRedeliveries = NewQueueFamily("dramatiq_queue_delay_redeliveries_total",
		"message_stats.redeliver of RabbitMQ queue q.DQ: delayed messages delivered again, typically after consumer_timeout closed the channel of a worker holding them. Resets when the queue's process restarts (RabbitMQ only).", prometheus.CounterValue)
	rmqQueueLayoutProblems = NewQueueFamily("dramatiq_rabbitmq_queue_layout_problems",
		"Ways the RabbitMQ queues q, q.DQ and q.XQ differ from what Dramatiq declares (a missing queue, a missing dead-letter route, an unexpected argument...); 0 when they match. The status page lists them.", prometheus.GaugeValue)
)

var rabbitmqQueueFamilies = []*QueueFamily{rmqQueueReady, rmqQueueInflight, rmqQueueDelayed, rmqQueueDead,
	rmqQueueDelayedHeld, rmqQueueConsumers, rmqQueueDelayConsumers, rmqQueueRedeliveries, rmqQueueDelayRedeliveries, rmqQueueLayoutProblems}

// rabbitmqCollector projects a RabbitMQ read.
type rabbitmqCollector struct {
	reader broker.Reader
	labels queueLabels
}

func (c *rabbitmqCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{rabbitmqUpDesc, rabbitmqQueueInfoDesc, rabbitmqListingAgeDesc, rabbitmqQueuesDesc, queuesDroppedDesc} {
		ch <- d
	}
	for _, f := range rabbitmqQueueFamilies {
		ch <- f.Desc()
	}
}

func (c *rabbitmqCollector) Read(ctx context.Context, st *State, o ReadOptions) error {
	return readBroker(ctx, c.reader, st, o)
}

func (c *rabbitmqCollector) Collect(st *State, m *Metrics) {
	part := st.Broker
	if part == nil || part.Snapshot == nil || part.Snapshot.RabbitMQ == nil {
		m.Gauge(rabbitmqUpDesc, 0)
		return
	}
	snap := part.Snapshot
	rs := snap.RabbitMQ
	m.Gauge(rabbitmqUpDesc, 1)
	m.Gauge(rabbitmqListingAgeDesc, rs.ListingAge.Seconds())
	// Queues past --dramatiq.max-queues are Dramatiq's too.
	m.Gauge(rabbitmqQueuesDesc, float64(max(rs.BrokerQueues-rs.Ignored-rs.Anomalies, 0)), "dramatiq")
	m.Gauge(rabbitmqQueuesDesc, float64(rs.Ignored), "ignored")
	m.Gauge(rabbitmqQueuesDesc, float64(rs.Anomalies), "invalid")
	m.Gauge(queuesDroppedDesc, float64(snap.QueuesDropped))
	names := make([]string, len(snap.Queues))
	for i, q := range snap.Queues {
		names[i] = q.Name
	}
	m.queueRows(&c.labels, names)
	for i, q := range snap.Queues {
		sampleCount(m, rmqQueueReady, i, q.Ready)
		sampleCount(m, rmqQueueInflight, i, q.InFlight)
		sampleCount(m, rmqQueueDelayed, i, q.Delayed)
		sampleCount(m, rmqQueueDead, i, q.DeadLetter)
		sampleCount(m, rmqQueueDelayedHeld, i, q.DelayedHeld)
		sampleCount(m, rmqQueueConsumers, i, q.Consumers)
		sampleCount(m, rmqQueueDelayConsumers, i, q.DelayConsumers)
		sampleCount(m, rmqQueueRedeliveries, i, q.Redeliveries)
		sampleCount(m, rmqQueueDelayRedeliveries, i, q.DelayRedeliveries)
		m.queueSample(rmqQueueLayoutProblems, i, float64(q.LayoutProblemCount))
		for _, mem := range q.Members {
			m.Gauge(rabbitmqQueueInfoDesc, 1, q.Name, mem.Role, mem.Type)
		}
	}
}
