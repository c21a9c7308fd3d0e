package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// Hung workers and the ack sets found without SCAN (broker/redis/acktrack.go,
// docs/stuck-work.md).
var (
	queueLongestHeld = NewQueueFamily("dramatiq_queue_longest_held_message_seconds",
		"How long the message held longest by a live worker (heartbeat within the timeout) has been in that worker's ack set, running or prefetched, counted from the first read that saw it there; 0 when live workers hold none. Redis does not record fetch times, so this is a lower bound: see dramatiq_queue_longest_held_message_lower_bound.", prometheus.GaugeValue)
	queueLongestHeldLowerBound = NewQueueFamily("dramatiq_queue_longest_held_message_lower_bound",
		"1 when the message behind dramatiq_queue_longest_held_message_seconds was already held when the exporter first read its worker's ack set (after the exporter started, or when it first found the set), so it has been held longer than the gauge says; else 0.", prometheus.GaugeValue)
	ackSetsTrackedDesc = prometheus.NewDesc("dramatiq_exporter_ack_sets_tracked",
		"Ack sets the latest read counted one by one (known from discovery or from probing the heartbeat set's workers against the queues) plus those it probed.", nil, nil)
	ackSetsUntrackedDesc = prometheus.NewDesc("dramatiq_exporter_ack_sets_untracked",
		"Ack sets the latest read found but could not remember under the exporter's cap; their orphans show only after the next discovery pass.", nil, nil)
	ackProbesDesc = prometheus.NewDesc("dramatiq_exporter_ack_set_probes",
		"Ack sets the latest read probed for (SCARD of a worker and active queue pair it did not know of).", nil, nil)
	heldUntrackedDesc = prometheus.NewDesc("dramatiq_exporter_held_messages_untracked",
		"Messages held by live workers whose holding time the latest read did not track (an ack set over 256 ids, or the exporter's cap reached): dramatiq_queue_longest_held_message_seconds may understate them.", nil, nil)
	discoveryNamespaceRatioDesc = prometheus.NewDesc("dramatiq_exporter_discovery_namespace_ratio",
		"Keys of the namespace over keys in the database (DBSIZE) at the latest discovery pass. Discovery's SCAN walks the whole database, so a small ratio means it spends most of its time on other keys: give Dramatiq a Redis database of its own. Absent when DBSIZE is refused or the database is empty.", nil, nil)
)

var stuckDescs = []*prometheus.Desc{ackSetsTrackedDesc, ackSetsUntrackedDesc, ackProbesDesc, heldUntrackedDesc, discoveryNamespaceRatioDesc}

func collectStuck(snap *broker.RedisState, m *Metrics) {
	m.Gauge(ackSetsTrackedDesc, float64(snap.AckSetsTracked))
	m.Gauge(ackSetsUntrackedDesc, float64(snap.AckSetsUntracked))
	m.Gauge(ackProbesDesc, float64(snap.AckProbes))
	m.Gauge(heldUntrackedDesc, float64(snap.HeldUntracked))
}

func collectStuckQueue(q *broker.Queue, i int, m *Metrics) {
	m.queueSample(queueLongestHeld, i, q.LongestHeld.Seconds())
	lb := 0.0
	if q.LongestHeldLowerBound {
		lb = 1
	}
	m.queueSample(queueLongestHeldLowerBound, i, lb)
}

func collectNamespaceRatio(st *broker.DiscoveryStatus, m *Metrics) {
	if st.Keyspace > 0 {
		m.Gauge(discoveryNamespaceRatioDesc, float64(st.Keys)/float64(st.Keyspace))
	}
}
