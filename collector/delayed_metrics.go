package collector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// Delayed work that does not come back (broker/redis/delayed.go,
// docs/stuck-work-delayed.md).
var (
	queueDelayedUnclaimedOldest = NewQueueFamily("dramatiq_queue_delayed_unclaimed_oldest_seconds",
		"How long the oldest delayed message in the queue.DQ list has waited for a worker to claim it: now minus the later of its enqueue time (options.requeue_timestamp, else message_timestamp) and the last read that found the list empty (or the exporter's start). 0 when the list is empty; absent when its head cannot be read. A live worker claims delayed messages within about a second.", prometheus.GaugeValue)
	queueDelayedOverdue = NewQueueFamily("dramatiq_queue_delayed_overdue_messages",
		fmt.Sprintf("Delayed messages claimed by a worker (in a queue.DQ ack set) whose options.eta passed more than %s ago: their holder is hung or dead. Absent while a holder's ack set is not found yet (two reads in a row), and when they exceed %d ids in one read.", broker.DelayedOverdueGrace, broker.MaxHeldDelayedPerRead), prometheus.GaugeValue)
)

// delayedFamilies are appended to the broker's per-queue families.
var delayedFamilies = []*QueueFamily{queueDelayedUnclaimedOldest, queueDelayedOverdue}

// collectDelayed writes queue i's delayed-work samples, absent when unknown.
func collectDelayed(m *Metrics, i int, q *broker.Queue) {
	if q.DelayedUnclaimedAgeKnown {
		m.queueSample(queueDelayedUnclaimedOldest, i, q.DelayedUnclaimedAge.Seconds())
	}
	sampleCount(m, queueDelayedOverdue, i, q.DelayedOverdue)
}
