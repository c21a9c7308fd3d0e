package collector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The backlog by actor is opt-in (--dramatiq.backlog-by-actor): with it
// off, none of these series exists, which says "not read", not zero.
var (
	backlogByActorDesc = prometheus.NewDesc("dramatiq_queue_ready_messages_by_actor",
		fmt.Sprintf("Ready messages (dramatiq_queue_ready_messages) by the actor_name of their bodies. estimate=\"exact\": every id of the ready list was read (at most --dramatiq.backlog-by-actor.exact-limit); estimate=\"sampled\": each actor's share of %d ids in evenly spaced windows of the list, times its length (docs/backlog-by-actor.md gives the error). actor=%q: no body, over 1 MiB or not Dramatiq JSON; actor=%q: actors beyond the first %d {queue, actor} pairs. Absent unless --dramatiq.backlog-by-actor.", broker.BacklogSampleIDs, broker.ActorUnknown, broker.ActorOther, broker.MaxActorSeries),
		[]string{"queue", "actor", "estimate"}, nil)
	backlogSeriesDesc = prometheus.NewDesc("dramatiq_exporter_backlog_actor_series",
		fmt.Sprintf("{queue, actor} pairs of dramatiq_queue_ready_messages_by_actor, not counting actor=%q and %q; at most %d, the rest going to actor=%q.", broker.ActorUnknown, broker.ActorOther, broker.MaxActorSeries, broker.ActorOther), nil, nil)
	backlogSampledDesc = prometheus.NewDesc("dramatiq_exporter_backlog_read_ids",
		"Ready-list ids the latest read of the backlog by actor used, over all queues: its cost, bounded whatever the backlog.", nil, nil)
	backlogSkippedDesc = prometheus.NewDesc("dramatiq_exporter_backlog_queues_skipped",
		"Queues with ready messages that have no dramatiq_queue_ready_messages_by_actor series in this scrape: the read's id budget went to longer queues.", nil, nil)
)

func describeBacklog(ch chan<- *prometheus.Desc) {
	ch <- backlogByActorDesc
	ch <- backlogSeriesDesc
	ch <- backlogSampledDesc
	ch <- backlogSkippedDesc
}

func collectBacklog(snap *broker.RedisState, m *Metrics) {
	b := snap.Backlog
	if b == nil {
		return
	}
	m.Gauge(backlogSeriesDesc, float64(b.Series))
	m.Gauge(backlogSampledDesc, float64(b.SampledIDs))
	m.Gauge(backlogSkippedDesc, float64(b.QueuesSkipped))
	for _, a := range b.Actors {
		estimate := "exact"
		if a.Sampled {
			estimate = "sampled"
		}
		m.Gauge(backlogByActorDesc, a.Messages, a.Queue, a.Actor, estimate)
	}
}
