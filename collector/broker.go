package collector

import (
	"context"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

func init() {
	Register("broker", true, "Dramatiq broker (Redis or RabbitMQ): queues, workers and the broker itself.", func(s Sources) (Collector, error) {
		if s.Broker == nil {
			return nil, nil
		}
		if s.Broker.Kind() == broker.RabbitMQ {
			return &rabbitmqCollector{reader: s.Broker}, nil
		}
		return &brokerCollector{reader: s.Broker}, nil
	})
}

// maxActorSeries is the cap the HELP text names; the model holds the
// value the Redis reader applies.
const maxActorSeries = broker.MaxActorSeries

var (
	redisUpDesc = prometheus.NewDesc("dramatiq_redis_up",
		"1 when the broker's Redis answered this scrape, else 0. When 0, no queue or process series are emitted.", nil, nil)
	redisMemoryDesc = prometheus.NewDesc("dramatiq_redis_memory_used_bytes",
		"used_memory from Redis INFO memory.", nil, nil)
	redisClientsDesc = prometheus.NewDesc("dramatiq_redis_connected_clients",
		"connected_clients from Redis INFO clients.", nil, nil)
	queueReady = NewQueueFamily("dramatiq_queue_ready_messages",
		"Messages waiting to be fetched: LLEN of the queue list.", prometheus.GaugeValue)
	queueInflight = NewQueueFamily("dramatiq_queue_inflight_messages",
		"Messages fetched by a worker and not yet acked, running or prefetched, including those held by dead workers: HLEN of queue.msgs minus LLEN of the queue (the sum of the queue's ack sets while the broker is consistent).", prometheus.GaugeValue)
	queueDelayed = NewQueueFamily("dramatiq_queue_delayed_messages",
		"Delayed messages and retries in backoff, claimed by a worker or not: HLEN of queue.DQ.msgs.", prometheus.GaugeValue)
	queueDead = NewQueueFamily("dramatiq_queue_dead_letter_messages",
		"Dead-lettered messages: ZCARD of queue.XQ.", prometheus.GaugeValue)
	queueDeadLast = NewQueueFamily("dramatiq_queue_dead_letter_last_timestamp_seconds",
		"Unix time of the newest dead-lettering (highest queue.XQ score, the nacking worker's clock). Absent when the dead-letter queue is empty.", prometheus.GaugeValue)
	queueDeadLettered = NewQueueFamily("dramatiq_queue_dead_lettered_total",
		"Messages dead-lettered since the exporter started (or first reported the queue): members of queue.XQ newer than those it had seen. Unlike dramatiq_queue_dead_letter_messages it does not drop when Dramatiq prunes or someone requeues dead letters; use rate() or increase(). docs/dead-letter-counters.md gives its limits.", prometheus.CounterValue)
	actorDeadLetteredDesc = prometheus.NewDesc("dramatiq_actor_dead_lettered_total",
		fmt.Sprintf("dramatiq_queue_dead_lettered_total by the actor_name of each new dead letter's body. actor=%q: the body was gone, over 1 MiB or not Dramatiq JSON; actor=%q: actors beyond the first %d {queue, actor} pairs.", broker.ActorUnknown, broker.ActorOther, maxActorSeries), []string{"queue", "actor"}, nil)
	actorSeriesDesc = prometheus.NewDesc("dramatiq_exporter_dead_letter_actor_series",
		fmt.Sprintf("{queue, actor} pairs of dramatiq_actor_dead_lettered_total, not counting actor=%q and %q. Once it reaches dramatiq_exporter_dead_letter_actor_series_limit, new actors are counted under actor=%q.", broker.ActorUnknown, broker.ActorOther, broker.ActorOther), nil, nil)
	actorSeriesLimitDesc = prometheus.NewDesc("dramatiq_exporter_dead_letter_actor_series_limit",
		"The cap on dramatiq_exporter_dead_letter_actor_series.", nil, nil)
	queueOldest = NewQueueFamily("dramatiq_queue_oldest_message_age_seconds",
		"Now minus message_timestamp (creation time) of the message at the head of the ready list; 0 when the list is empty, absent when the head cannot be decoded.", prometheus.GaugeValue)
	queueOrphaned = NewQueueFamily("dramatiq_queue_orphaned_messages",
		"Messages of the queue or its delay queue held in ack sets of processes whose heartbeat is older than the heartbeat timeout or missing. Dramatiq returns them only through random maintenance. Ack sets are found from the heartbeat set's workers and the known queues on every read, and by queue discovery.", prometheus.GaugeValue)
	processesDesc = prometheus.NewDesc("dramatiq_processes",
		"Members of the heartbeat set heard from within (alive) or before (stale) the heartbeat timeout. Producers heartbeat too: any process that enqueues counts.", []string{"state"}, nil)
	queuesDroppedDesc = prometheus.NewDesc("dramatiq_exporter_queues_dropped",
		"Queues found but not reported because of --dramatiq.max-queues.", nil, nil)
	anomaliesDesc = prometheus.NewDesc("dramatiq_exporter_broker_anomalies",
		"Odd broker data the latest read met and skipped, by kind (docs/metrics.md lists them; invalid_queue_name comes from the latest discovery pass). Its value does not depend on how many clients scrape. Absent when Redis did not answer.", []string{"kind"}, nil)

	// Discovery runs in the background; these describe its latest
	// completed pass, not this scrape.
	discoveryCompleteDesc = prometheus.NewDesc("dramatiq_exporter_discovery_complete",
		"1 once a queue discovery pass has completed since start, else 0. Until then only --dramatiq.queues are reported (their orphans are found without it).", nil, nil)
	discoveryLastDesc = prometheus.NewDesc("dramatiq_exporter_discovery_last_completed_timestamp_seconds",
		"Unix time the latest discovery pass completed. Queues and the ack sets that no read has probed yet are as fresh as this. Absent until the first pass completes.", nil, nil)
	discoveryPassesDesc = prometheus.NewDesc("dramatiq_exporter_discovery_passes_total",
		"Queue discovery passes (SCANs of the whole keyspace) completed since start.", nil, nil)
	discoveryDurationDesc = prometheus.NewDesc("dramatiq_exporter_discovery_duration_seconds",
		"Wall-clock time of the latest completed discovery pass, pacing and retries included.", nil, nil)
	discoveryRedisDesc = prometheus.NewDesc("dramatiq_exporter_discovery_redis_seconds",
		"Redis main-thread time the latest completed discovery pass cost (SCAN and TYPE usec from INFO commandstats, capped by the client's round trips; when INFO is refused, the round trips less a PING floor).", nil, nil)
	discoveryKeysDesc = prometheus.NewDesc("dramatiq_exporter_discovery_keys",
		"Keys of the namespace the latest completed discovery pass returned.", nil, nil)
	discoveryScannedDesc = prometheus.NewDesc("dramatiq_exporter_discovery_scanned_keys",
		"Keys in the Redis database (DBSIZE) when the latest discovery pass started: SCAN walks all of them. Absent when DBSIZE is refused.", nil, nil)
	discoveryIntervalDesc = prometheus.NewDesc("dramatiq_exporter_discovery_interval_seconds",
		"Time between the starts of discovery passes: --dramatiq.discovery-interval, or longer so that discovery takes at most about 1% of Redis's time.", nil, nil)
)

// brokerCollector projects a Redis read: the model's Redis part and the
// numbers Redis gives for every queue.
type brokerCollector struct {
	reader broker.Reader
	labels queueLabels // kept across scrapes
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{redisUpDesc, redisMemoryDesc, redisClientsDesc,
		actorDeadLetteredDesc, actorSeriesDesc, actorSeriesLimitDesc, processesDesc, queuesDroppedDesc, anomaliesDesc,
		discoveryCompleteDesc, discoveryLastDesc, discoveryPassesDesc, discoveryDurationDesc, discoveryRedisDesc,
		discoveryKeysDesc, discoveryScannedDesc, discoveryIntervalDesc} {
		ch <- d
	}
	for _, d := range stuckDescs {
		ch <- d
	}
	describeBacklog(ch)
	for _, f := range queueFamilies {
		ch <- f.Desc()
	}
}

// queueFamilies are the broker's per-queue families.
var queueFamilies = append([]*QueueFamily{queueReady, queueInflight, queueDelayed, queueDead, queueDeadLast, queueOldest, queueOrphaned, queueDeadLettered,
	queueLongestHeld, queueLongestHeldLowerBound}, delayedFamilies...)

func (c *brokerCollector) Read(ctx context.Context, st *State, o ReadOptions) error {
	return readBroker(ctx, c.reader, st, o)
}

// readBroker reads either broker into the State's broker part.
func readBroker(ctx context.Context, reader broker.Reader, st *State, o ReadOptions) error {
	part := &BrokerState{Kind: reader.Kind()}
	// Whatever was read before a failure (or a panic) is kept.
	defer func() { st.Broker = part }()
	part.Snapshot, part.Err = reader.ReadSnapshot(ctx, broker.ReadOptions{RecentDeadLetters: o.RecentDeadLetters, DeadLetterArgs: o.DeadLetterArgs})
	part.Discovery = reader.Discovery()
	if part.Err != nil {
		part.Snapshot = nil
		return part.Err
	}
	part.RecentDeadLetters, part.DeadLettersErr = part.Snapshot.RecentDeadLetters, part.Snapshot.RecentDeadLettersErr
	return nil
}

func (c *brokerCollector) Collect(st *State, m *Metrics) {
	part := st.Broker
	if part == nil {
		m.Gauge(redisUpDesc, 0)
		return
	}
	collectDiscovery(part.Discovery, m)
	snap := part.Snapshot
	if snap == nil || snap.Redis == nil {
		m.Gauge(redisUpDesc, 0)
		return
	}
	rs := snap.Redis
	m.Gauge(redisUpDesc, 1)
	if !math.IsNaN(rs.MemoryUsedBytes) {
		m.Gauge(redisMemoryDesc, rs.MemoryUsedBytes)
	}
	if !math.IsNaN(rs.ConnectedClients) {
		m.Gauge(redisClientsDesc, rs.ConnectedClients)
	}
	m.Gauge(processesDesc, float64(rs.ProcessesAlive), "alive")
	m.Gauge(processesDesc, float64(rs.ProcessesStale), "stale")
	m.Gauge(queuesDroppedDesc, float64(snap.QueuesDropped))
	for _, a := range rs.Anomalies {
		m.Gauge(anomaliesDesc, float64(a.N), a.Kind)
	}
	collectActors(rs, m)
	collectStuck(rs, m)
	collectBacklog(rs, m)
	names := make([]string, len(snap.Queues))
	for i, q := range snap.Queues {
		names[i] = q.Name
	}
	m.queueRows(&c.labels, names)
	for i, q := range snap.Queues {
		sampleCount(m, queueReady, i, q.Ready)
		sampleCount(m, queueInflight, i, q.InFlight)
		sampleCount(m, queueDelayed, i, q.Delayed)
		sampleCount(m, queueDead, i, q.DeadLetter)
		sampleCount(m, queueOrphaned, i, q.Orphaned)
		sampleCount(m, queueDeadLettered, i, q.DeadLettered)
		if !q.DeadLetterLast.IsZero() {
			m.queueSample(queueDeadLast, i, float64(q.DeadLetterLast.UnixMilli())/1000)
		}
		if q.OldestAgeKnown {
			m.queueSample(queueOldest, i, q.OldestAge.Seconds())
		}
		collectDelayed(m, i, &snap.Queues[i])
		collectStuckQueue(&snap.Queues[i], i, m)
	}
}

// sampleCount adds a present count; an absent one is left out.
func sampleCount(m *Metrics, f *QueueFamily, i int, c broker.Count) {
	if c.OK {
		m.queueSample(f, i, float64(c.N))
	}
}

// collectActors reports the dead-letter counters by actor.
func collectActors(rs *broker.RedisState, m *Metrics) {
	m.Gauge(actorSeriesDesc, float64(rs.ActorSeries))
	m.Gauge(actorSeriesLimitDesc, float64(rs.MaxActorSeries))
	for _, a := range rs.DeadLetteredByActor {
		m.Counter(actorDeadLetteredDesc, float64(a.Count), a.Queue, a.Actor)
	}
}

// collectDiscovery reports the background discovery, whether or not Redis
// answered this scrape: it is the exporter's state, not the broker's.
func collectDiscovery(st *broker.DiscoveryStatus, m *Metrics) {
	if st == nil {
		return
	}
	m.Counter(discoveryPassesDesc, float64(st.Passes))
	if st.Passes == 0 {
		m.Gauge(discoveryCompleteDesc, 0)
		return
	}
	m.Gauge(discoveryCompleteDesc, 1)
	m.Gauge(discoveryLastDesc, float64(st.Completed.UnixMilli())/1000)
	m.Gauge(discoveryDurationDesc, st.Duration.Seconds())
	m.Gauge(discoveryRedisDesc, st.BrokerTime.Seconds())
	m.Gauge(discoveryKeysDesc, float64(st.Keys))
	if st.Keyspace >= 0 {
		m.Gauge(discoveryScannedDesc, float64(st.Keyspace))
	}
	m.Gauge(discoveryIntervalDesc, st.Interval.Seconds())
	collectNamespaceRatio(st, m)
}
