package collector

import (
	"context"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

func init() {
	Register("broker", true, "Dramatiq Redis broker: queues, processes and Redis itself.", func(s Sources) (Collector, error) {
		if s.Broker == nil {
			return nil, nil
		}
		return &brokerCollector{reader: s.Broker}, nil
	})
}

var (
	redisUpDesc = prometheus.NewDesc("dramatiq_redis_up",
		"1 when the broker's Redis answered this scrape, else 0. When 0, no queue or process series are emitted.", nil, nil)
	redisMemoryDesc = prometheus.NewDesc("dramatiq_redis_memory_used_bytes",
		"used_memory from Redis INFO memory.", nil, nil)
	redisClientsDesc = prometheus.NewDesc("dramatiq_redis_connected_clients",
		"connected_clients from Redis INFO clients.", nil, nil)
	queueReadyDesc = prometheus.NewDesc("dramatiq_queue_ready_messages",
		"Messages waiting to be fetched: LLEN of the queue list.", []string{"queue"}, nil)
	queueInflightDesc = prometheus.NewDesc("dramatiq_queue_inflight_messages",
		"Messages fetched by a worker and not yet acked, running or prefetched, including those held by dead workers: HLEN of queue.msgs minus LLEN of the queue (the sum of the queue's ack sets while the broker is consistent).", []string{"queue"}, nil)
	queueDelayedDesc = prometheus.NewDesc("dramatiq_queue_delayed_messages",
		"Delayed messages and retries in backoff, claimed by a worker or not: HLEN of queue.DQ.msgs.", []string{"queue"}, nil)
	queueDeadDesc = prometheus.NewDesc("dramatiq_queue_dead_letter_messages",
		"Dead-lettered messages: ZCARD of queue.XQ.", []string{"queue"}, nil)
	queueDeadLastDesc = prometheus.NewDesc("dramatiq_queue_dead_letter_last_timestamp_seconds",
		"Unix time of the newest dead-lettering (highest queue.XQ score, the nacking worker's clock). Absent when the dead-letter queue is empty.", []string{"queue"}, nil)
	queueOldestDesc = prometheus.NewDesc("dramatiq_queue_oldest_message_age_seconds",
		"Now minus message_timestamp (creation time) of the message at the head of the ready list; 0 when the list is empty, absent when the head cannot be decoded.", []string{"queue"}, nil)
	queueOrphanedDesc = prometheus.NewDesc("dramatiq_queue_orphaned_messages",
		"Messages of the queue or its delay queue held in ack sets of processes whose heartbeat is older than the heartbeat timeout or missing. Dramatiq returns them only through random maintenance. Ack sets are found by the periodic queue discovery (--dramatiq.discovery-interval).", []string{"queue"}, nil)
	processesDesc = prometheus.NewDesc("dramatiq_processes",
		"Members of the heartbeat set heard from within (alive) or before (stale) the heartbeat timeout. Producers heartbeat too: any process that enqueues counts.", []string{"state"}, nil)
	queuesDroppedDesc = prometheus.NewDesc("dramatiq_exporter_queues_dropped",
		"Queues found but not reported because of --dramatiq.max-queues.", nil, nil)
	anomaliesDesc = prometheus.NewDesc("dramatiq_exporter_broker_anomalies_total",
		"Odd broker data seen since start: keys of an unexpected type, undecodable head bodies, head ids missing from .msgs.", []string{"kind"}, nil)

	// Discovery runs in the background; these describe its latest
	// completed pass, not this scrape.
	discoveryCompleteDesc = prometheus.NewDesc("dramatiq_exporter_discovery_complete",
		"1 once a queue discovery pass has completed since start, else 0. Until then only --dramatiq.queues are reported and orphaned counts read 0.", nil, nil)
	discoveryLastDesc = prometheus.NewDesc("dramatiq_exporter_discovery_last_completed_timestamp_seconds",
		"Unix time the latest discovery pass completed. Queues and the ack sets behind orphaned counts are as fresh as this. Absent until the first pass completes.", nil, nil)
	discoveryPassesDesc = prometheus.NewDesc("dramatiq_exporter_discovery_passes_total",
		"Queue discovery passes (SCANs of the whole keyspace) completed since start.", nil, nil)
	discoveryDurationDesc = prometheus.NewDesc("dramatiq_exporter_discovery_duration_seconds",
		"Wall-clock time of the latest completed discovery pass, pacing and retries included.", nil, nil)
	discoveryRedisDesc = prometheus.NewDesc("dramatiq_exporter_discovery_redis_seconds",
		"Redis main-thread time the latest completed discovery pass cost (SCAN and TYPE usec from INFO commandstats, or the client's round trips when smaller or when INFO is refused).", nil, nil)
	discoveryKeysDesc = prometheus.NewDesc("dramatiq_exporter_discovery_keys",
		"Keys of the namespace the latest completed discovery pass returned.", nil, nil)
	discoveryScannedDesc = prometheus.NewDesc("dramatiq_exporter_discovery_scanned_keys",
		"Keys in the Redis database (DBSIZE) when the latest discovery pass started: SCAN walks all of them. Absent when DBSIZE is refused.", nil, nil)
	discoveryIntervalDesc = prometheus.NewDesc("dramatiq_exporter_discovery_interval_seconds",
		"Time between the starts of discovery passes: --dramatiq.discovery-interval, or longer so that discovery takes at most about 1% of Redis's time.", nil, nil)
)

type brokerCollector struct {
	reader *broker.Reader
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{redisUpDesc, redisMemoryDesc, redisClientsDesc, queueReadyDesc,
		queueInflightDesc, queueDelayedDesc, queueDeadDesc, queueDeadLastDesc, queueOldestDesc,
		queueOrphanedDesc, processesDesc, queuesDroppedDesc, anomaliesDesc,
		discoveryCompleteDesc, discoveryLastDesc, discoveryPassesDesc, discoveryDurationDesc, discoveryRedisDesc,
		discoveryKeysDesc, discoveryScannedDesc, discoveryIntervalDesc} {
		ch <- d
	}
}

func (c *brokerCollector) Update(ctx context.Context, ch chan<- prometheus.Metric) error {
	snap, err := c.reader.Snapshot(ctx)
	c.anomalies(ch)
	c.discovery(ch)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(redisUpDesc, prometheus.GaugeValue, 0)
		return err
	}
	emitSnapshot(snap, ch)
	return nil
}

func (c *brokerCollector) anomalies(ch chan<- prometheus.Metric) {
	counts := c.reader.Anomalies()
	for _, kind := range broker.AnomalyKinds {
		ch <- prometheus.MustNewConstMetric(anomaliesDesc, prometheus.CounterValue, float64(counts[kind]), kind)
	}
}

// discovery reports the background discovery, whether or not Redis
// answered this scrape: it is the exporter's state, not the broker's.
func (c *brokerCollector) discovery(ch chan<- prometheus.Metric) {
	if !c.reader.DiscoveryEnabled() {
		return
	}
	st := c.reader.DiscoveryStatus()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	ch <- prometheus.MustNewConstMetric(discoveryPassesDesc, prometheus.CounterValue, float64(st.Passes))
	if st.Passes == 0 {
		gauge(discoveryCompleteDesc, 0)
		return
	}
	gauge(discoveryCompleteDesc, 1)
	gauge(discoveryLastDesc, float64(st.Completed.UnixMilli())/1000)
	gauge(discoveryDurationDesc, st.Duration.Seconds())
	gauge(discoveryRedisDesc, st.RedisTime.Seconds())
	gauge(discoveryKeysDesc, float64(st.Keys))
	if st.Keyspace >= 0 {
		gauge(discoveryScannedDesc, float64(st.Keyspace))
	}
	gauge(discoveryIntervalDesc, st.Interval.Seconds())
}

// emitSnapshot turns one broker read into metrics.
func emitSnapshot(snap *broker.Snapshot, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(redisUpDesc, 1)
	if !math.IsNaN(snap.MemoryUsedBytes) {
		gauge(redisMemoryDesc, snap.MemoryUsedBytes)
	}
	if !math.IsNaN(snap.ConnectedClients) {
		gauge(redisClientsDesc, snap.ConnectedClients)
	}
	gauge(processesDesc, float64(snap.ProcessesAlive), "alive")
	gauge(processesDesc, float64(snap.ProcessesStale), "stale")
	gauge(queuesDroppedDesc, float64(snap.QueuesDropped))
	for _, q := range snap.Queues {
		gauge(queueReadyDesc, float64(q.Ready), q.Name)
		gauge(queueInflightDesc, float64(q.InFlight), q.Name)
		gauge(queueDelayedDesc, float64(q.Delayed), q.Name)
		gauge(queueDeadDesc, float64(q.DeadLetter), q.Name)
		gauge(queueOrphanedDesc, float64(q.Orphaned), q.Name)
		if !q.DeadLetterLast.IsZero() {
			gauge(queueDeadLastDesc, float64(q.DeadLetterLast.UnixMilli())/1000, q.Name)
		}
		if q.OldestAgeKnown {
			gauge(queueOldestDesc, q.OldestAge.Seconds(), q.Name)
		}
	}
}
