package mixin

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Alert classes decide grouping in the rule file and inhibition in the
// Alertmanager example.
const (
	classExporterDown = "exporter-down" // the scrape itself fails
	classExporter     = "exporter"      // the exporter runs but misses data
	classSourceDown   = "source-down"   // the broker or the database is unreachable
	classWorkload     = "workload"      // queues and processes, read from the broker
	classBrokerSetup  = "broker-setup"  // how the broker's queues are declared: no outage causes it
	classDatabase     = "database"      // details of a reachable database
	classWorkers      = "workers"       // from the workers' own middleware metrics
)

// Alert is one alerting rule.
type Alert struct {
	Name        string
	Class       string
	Severity    string
	Expr        string
	For         time.Duration
	Summary     string
	Description string
	// Broker is the broker whose series the alert needs: BrokerRedis or
	// BrokerRabbitMQ, or "" when it works on both. On the other broker
	// its series are absent, so it stays silent there; the promtool
	// tests (alerts/tests/brokers.yml) and test/e2e check that.
	Broker string
}

// The brokers, as in --broker.
const (
	BrokerRedis    = "redis"
	BrokerRabbitMQ = "rabbitmq"
)

// RuleGroup is a named group of alerts in the rule file.
type RuleGroup struct {
	Name   string
	Alerts []Alert
}

// sel returns metric{<job selector>,extra...}.
func (c Config) sel(metric string, extra ...string) string {
	return metric + "{" + strings.Join(append([]string{c.Selector}, extra...), ",") + "}"
}

// Groups returns every alert, grouped as in the rule file.
func (c Config) Groups() []RuleGroup {
	count := `{{ $value | printf "%.0f" }}`
	f := func(d time.Duration) string { return promDuration(c.forDuration(d)) }
	return append([]RuleGroup{
		{Name: "dramatiq-exporter", Alerts: []Alert{
			{
				Name: "DramatiqExporterDown", Class: classExporterDown, Severity: "critical",
				Expr:        c.sel("up") + " == 0",
				For:         c.ExporterDownFor,
				Summary:     "The Dramatiq exporter cannot be scraped.",
				Description: "Prometheus has failed to scrape the Dramatiq exporter {{ $labels.instance }} of job {{ $labels.job }} for " + f(c.ExporterDownFor) + "; every other Dramatiq alert for it is blind.",
			},
			{
				Name: "DramatiqExporterCollectorFailing", Class: classExporter, Severity: "warning",
				Expr:        c.sel("dramatiq_exporter_collector_success") + " == 0",
				For:         c.CollectorFailingFor,
				Summary:     "A collector of the Dramatiq exporter keeps failing.",
				Description: "Collector {{ $labels.collector }} of the Dramatiq exporter {{ $labels.instance }} has failed on every scrape for " + f(c.CollectorFailingFor) + "; its metrics are missing or incomplete.",
			},
			{
				Name: "DramatiqExporterQueuesDropped", Class: classExporter, Severity: "info",
				Expr:        c.sel("dramatiq_exporter_queues_dropped") + " > 0",
				For:         c.QueuesDroppedFor,
				Summary:     "The Dramatiq exporter ignores queues because of its queue cap.",
				Description: "The Dramatiq exporter {{ $labels.instance }} found " + count + " queues more than --dramatiq.max-queues allows; those queues are not monitored.",
			},
		}},
		{Name: "dramatiq-broker", Alerts: []Alert{
			{
				Name: "DramatiqRedisDown", Broker: BrokerRedis, Class: classSourceDown, Severity: "critical",
				Expr:        c.sel("dramatiq_redis_up") + " == 0",
				For:         c.RedisDownFor,
				Summary:     "The Redis server of the Dramatiq broker is unreachable.",
				Description: "The Dramatiq exporter {{ $labels.instance }} has not been able to read the broker's Redis for " + f(c.RedisDownFor) + "; workers and producers are probably failing too.",
			},
			{
				Name: "DramatiqRabbitMQDown", Broker: BrokerRabbitMQ, Class: classSourceDown, Severity: "critical",
				Expr:        c.sel("dramatiq_rabbitmq_up") + " == 0",
				For:         c.RabbitMQDownFor,
				Summary:     "The RabbitMQ management API of the Dramatiq broker does not answer.",
				Description: "The Dramatiq exporter {{ $labels.instance }} has not been able to read RabbitMQ's management API for " + f(c.RabbitMQDownFor) + "; if RabbitMQ itself is down, workers and producers are failing too.",
			},
			{
				Name: "DramatiqNoAliveProcesses", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr:        c.sel("dramatiq_processes", `state="alive"`) + " == 0",
				For:         c.NoAliveProcessesFor,
				Summary:     "No Dramatiq process sends heartbeats to the broker.",
				Description: "No Dramatiq worker or producer has sent a heartbeat to the broker read by {{ $labels.instance }} for " + f(c.NoAliveProcessesFor) + ".",
			},
			{
				Name: "DramatiqWorkersDying", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr: fmt.Sprintf("delta(%s[%s]) >= %d",
					c.sel("dramatiq_processes", `state="stale"`), promDuration(c.WorkersDyingWindow), c.WorkersDyingMinIncrease),
				For:         c.WorkersDyingFor,
				Summary:     "Dramatiq processes keep dying or restarting.",
				Description: "The number of Dramatiq processes with a stale heartbeat on {{ $labels.instance }} rose by " + count + " over the last " + promDuration(c.WorkersDyingWindow) + ", and it has kept rising for " + f(c.WorkersDyingFor) + ".",
			},
		}},
		{Name: "dramatiq-queues", Alerts: []Alert{
			{
				Name: "DramatiqQueueNotConsumed", Class: classWorkload, Severity: "critical",
				// In-flight counts messages held by dead workers too, so
				// subtract the orphaned ones: a queue whose only consumer
				// died holding messages is not being consumed. RabbitMQ has
				// no orphans (it requeues a dead consumer's messages) and
				// the series is absent there: subtract 0 then, or the
				// difference, and the alert, would be empty. A queue with
				// no consumer at all is DramatiqRabbitMQQueueNoConsumers'
				// (consumers are absent on Redis, so unless keeps all).
				Expr: c.sel("dramatiq_queue_ready_messages") + " > 0\nand\n(\n  " +
					c.sel("dramatiq_queue_inflight_messages") + "\n  -\n  (" +
					c.sel("dramatiq_queue_orphaned_messages") + " or " + c.sel("dramatiq_queue_inflight_messages") + " * 0)" +
					"\n) <= 0\nunless\n" + c.sel("dramatiq_queue_consumers") + " == 0",
				For:         c.QueueNotConsumedFor,
				Summary:     "A Dramatiq queue has ready messages that no live worker takes.",
				Description: "Queue {{ $labels.queue }} on {{ $labels.instance }} has " + count + " ready messages, and no live worker has held any of its messages for " + f(c.QueueNotConsumedFor) + ".",
			},
			{
				Name: "DramatiqQueueLatencyHigh", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr:        c.sel("dramatiq_queue_oldest_message_age_seconds") + " > " + secs(c.QueueLatencyThreshold),
				For:         c.QueueLatencyFor,
				Summary:     "Messages wait too long in a Dramatiq queue.",
				Description: "The oldest ready message of queue {{ $labels.queue }} on {{ $labels.instance }} was created {{ $value | humanizeDuration }} ago, more than " + promDuration(c.QueueLatencyThreshold) + ".",
			},
			{
				Name: "DramatiqQueueBacklogGrowing", Class: classWorkload, Severity: "warning",
				// deriv is a least-squares fit, so a single burst moves it
				// less than delta's two end points would.
				Expr: fmt.Sprintf("deriv(%s[%s]) * %s > %d",
					c.sel("dramatiq_queue_ready_messages"), promDuration(c.BacklogGrowthWindow),
					secs(c.BacklogGrowthWindow), c.BacklogGrowthMin),
				For:         c.BacklogGrowthFor,
				Summary:     "The backlog of a Dramatiq queue keeps growing.",
				Description: "Queue {{ $labels.queue }} on {{ $labels.instance }} gained about " + count + " ready messages over the last " + promDuration(c.BacklogGrowthWindow) + "; its workers do not keep up.",
			},
			{
				Name: "DramatiqOrphanedMessages", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr:        c.sel("dramatiq_queue_orphaned_messages") + " > 0",
				For:         c.OrphanedFor,
				Summary:     "Dead Dramatiq workers hold messages that have not been recovered.",
				Description: count + " messages of queue {{ $labels.queue }} on {{ $labels.instance }} have been held by workers with a stale heartbeat for " + f(c.OrphanedFor) + "; Dramatiq has not requeued them yet.",
			},
			{
				Name: "DramatiqMessageHeldTooLong", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				// A live worker, not a dead one (that is DramatiqOrphanedMessages):
				// its heartbeat is fresh while a message stays in its ack set.
				Expr:        c.sel("dramatiq_queue_longest_held_message_seconds") + " > " + secs(c.HeldMessageThreshold),
				For:         c.HeldMessageFor,
				Summary:     "A live Dramatiq worker has held a message for too long.",
				Description: "A message of queue {{ $labels.queue }} on {{ $labels.instance }} has been held by a worker that still heartbeats for at least {{ $value | humanizeDuration }}, more than " + promDuration(c.HeldMessageThreshold) + "; the worker thread running it may be hung.",
			},
			{
				Name: "DramatiqDeadLetters", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				// The timestamp, not the count: the count also moves when
				// old dead letters expire or are deleted, and a timestamp
				// that stays old never fires again.
				Expr:        "time() - " + c.sel("dramatiq_queue_dead_letter_last_timestamp_seconds") + " < " + secs(c.DeadLettersWindow),
				Summary:     "A Dramatiq queue dead-lettered messages.",
				Description: "Queue {{ $labels.queue }} on {{ $labels.instance }} moved a message to its dead-letter queue {{ $value | humanizeDuration }} ago.",
			},
			{
				Name: "DramatiqActorDeadLettersHigh", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				// The exporter's counter, not the workers' middleware: it
				// counts messages that died for good, whatever the workers
				// export. A series appears with the first dead letter of its
				// actor, already above 0, where increase() sees nothing. So
				// a series absent one window ago counts whole (the exporter
				// counts every actor from 0), if its queue's counter was
				// there then: after an outage of the exporter or of Redis
				// longer than the window, reappearing series are not new.
				Expr: "(\n  (\n    (\n      " + c.sel("dramatiq_actor_dead_lettered_total") + "\n        unless\n      " + c.sel("dramatiq_actor_dead_lettered_total") +
					" offset " + promDuration(c.ActorDeadLettersWindow) + "\n    )\n    and on (job, instance, queue)\n    " +
					c.sel("dramatiq_queue_dead_lettered_total") + " offset " + promDuration(c.ActorDeadLettersWindow) +
					"\n  )\n  or\n  increase(" + c.sel("dramatiq_actor_dead_lettered_total") +
					"[" + promDuration(c.ActorDeadLettersWindow) + "])\n) >= " + strconv.Itoa(c.ActorDeadLettersMin),
				Summary:     "A Dramatiq actor dead-letters many messages.",
				Description: "About " + count + " messages of actor {{ $labels.actor }} on queue {{ $labels.queue }} (exporter {{ $labels.instance }}) were dead-lettered in the last " + promDuration(c.ActorDeadLettersWindow) + ".",
			},
			{
				Name: "DramatiqRabbitMQQueueNoConsumers", Broker: BrokerRabbitMQ, Class: classWorkload, Severity: "critical",
				// Consumers of q count worker processes serving the queue
				// (docs/dramatiq-rabbitmq-layout.md).
				Expr:        c.sel("dramatiq_queue_ready_messages") + " > 0\nand\n" + c.sel("dramatiq_queue_consumers") + " == 0",
				For:         c.QueueNoConsumersFor,
				Summary:     "A Dramatiq queue on RabbitMQ has ready messages and no consumer.",
				Description: "Queue {{ $labels.queue }} on {{ $labels.instance }} has " + count + " ready messages, and no worker process has consumed it for " + f(c.QueueNoConsumersFor) + ".",
			},
			{
				Name: "DramatiqRabbitMQDelayRedeliveries", Broker: BrokerRabbitMQ, Class: classWorkload, Severity: "warning",
				// Redeliveries in the last window and in the one before:
				// consumer_timeout churn comes back once per timeout, a
				// worker restart redelivers once, and two disjoint windows
				// never both hold one burst. A counter RabbitMQ resets when
				// it restarts the queue; increase() takes resets.
				Expr: fmt.Sprintf("increase(%s[%s]) > 0\nand\nincrease(%s[%s] offset %s) > 0",
					c.sel("dramatiq_queue_delay_redeliveries_total"), promDuration(c.DelayRedeliveriesWindow),
					c.sel("dramatiq_queue_delay_redeliveries_total"), promDuration(c.DelayRedeliveriesWindow), promDuration(c.DelayRedeliveriesWindow)),
				For:         c.DelayRedeliveriesFor,
				Summary:     "RabbitMQ keeps redelivering the delayed messages of a Dramatiq queue.",
				Description: "RabbitMQ redelivered about " + count + " messages of {{ $labels.queue }}.DQ on {{ $labels.instance }} over the last " + promDuration(c.DelayRedeliveriesWindow) + ", and more in the " + promDuration(c.DelayRedeliveriesWindow) + " before, for " + f(c.DelayRedeliveriesFor) + "; workers holding delayed messages probably run into consumer_timeout.",
			},
			{
				Name: "DramatiqRabbitMQDeadLettersGrowing", Broker: BrokerRabbitMQ, Class: classWorkload, Severity: "warning",
				// RabbitMQ gives no dead-letter timestamp and no counter of
				// dead letters (those come from the bodies on Redis), only
				// the size of q.XQ. delta, not increase: the size drops when
				// dead letters expire, and increase() would read each drop
				// as a counter reset and count the whole queue. The
				// rabbitmq_up gate keeps it off Redis, where
				// DramatiqDeadLetters says the same from the timestamp.
				Expr: fmt.Sprintf("delta(%s[%s]) > 0\nand on (job, instance)\n%s",
					c.sel("dramatiq_queue_dead_letter_messages"), promDuration(c.DeadLettersWindow), c.sel("dramatiq_rabbitmq_up")),
				Summary:     "A Dramatiq queue on RabbitMQ dead-lettered messages.",
				Description: "The dead-letter queue {{ $labels.queue }}.XQ on {{ $labels.instance }} grew by about " + count + " messages over the last " + promDuration(c.DeadLettersWindow) + ".",
			},
			{
				Name: "DramatiqRabbitMQQueueLayout", Broker: BrokerRabbitMQ, Class: classBrokerSetup, Severity: "warning",
				// Quorum and stream queues come from a vhost default or a
				// policy, never from Dramatiq, which declares classic
				// queues and relies on their behaviour (priorities,
				// unlimited redeliveries of held delayed messages).
				Expr: c.sel("dramatiq_rabbitmq_queue_layout_problems") + " > 0\nor\ncount without (member, type) (" +
					c.sel("dramatiq_rabbitmq_queue_info", `type=~"quorum|stream"`) + ")",
				For:         c.LayoutProblemsFor,
				Summary:     "The RabbitMQ queues of a Dramatiq queue are not declared the way Dramatiq declares them.",
				Description: "Queue {{ $labels.queue }} on {{ $labels.instance }} has had " + count + " layout problems (missing queues, dead-letter routes, arguments, or quorum or stream members) for " + f(c.LayoutProblemsFor) + "; the exporter's status page lists them.",
			},
		}},
		{Name: "dramatiq-actors", Alerts: []Alert{
			{
				Name: "DramatiqActorErrorRatioHigh", Class: classWorkers, Severity: "warning",
				// From the workers' middleware, not the exporter: it needs
				// the workers scraped (docs/worker-metrics.md). The minimum
				// rate keeps one failure of a rarely used actor quiet. The
				// same expressions as the queue_actor: recording rules, but
				// on the raw series: an alert reading rules of another group
				// lags them by an evaluation on some Prometheus versions and
				// not on others.
				Expr: "(\n  " + c.actorRate("dramatiq_message_errors_total") + "\n  /\n  (" + c.actorRate("dramatiq_messages_total") + " > 0)\n) > " +
					strconv.FormatFloat(c.ActorErrorRatio, 'f', -1, 64) +
					"\nand\n" + c.actorRate("dramatiq_messages_total") + " > " + strconv.FormatFloat(c.ActorErrorMinRate, 'f', 4, 64),
				For:         c.ActorErrorFor,
				Summary:     "A Dramatiq actor fails a high share of its messages.",
				Description: "Actor {{ $labels.actor_name }} on queue {{ $labels.queue_name }} (workers of job {{ $labels.job }}) raised on {{ $value | humanizePercentage }} of its attempts over 5 minutes, for " + f(c.ActorErrorFor) + "; retries and dead letters follow.",
			},
		}},
		{Name: "dramatiq-database", Alerts: []Alert{
			{
				Name: "DramatiqDatabaseDown", Class: classSourceDown, Severity: "critical",
				Expr:        c.sel("dramatiq_database_up") + " == 0",
				For:         c.DatabaseDownFor,
				Summary:     "The application database is unreachable.",
				Description: "The Dramatiq exporter {{ $labels.instance }} has not been able to run a query on the application database for " + f(c.DatabaseDownFor) + ".",
			},
			{
				Name: "DramatiqDatabaseConnectionsNearLimit", Class: classDatabase, Severity: "warning",
				Expr: "sum without (state) (" + c.sel("dramatiq_database_connections") + ")\n/\n" +
					c.sel("dramatiq_database_max_connections") + "\n> " + strconv.FormatFloat(c.DatabaseConnectionsRatio, 'f', -1, 64),
				For:         c.DatabaseConnectionsFor,
				Summary:     "The application database is close to max_connections.",
				Description: "Backends of the database watched by {{ $labels.instance }} use {{ $value | humanizePercentage }} of max_connections.",
			},
			{
				Name: "DramatiqDatabaseLongTransaction", Class: classDatabase, Severity: "warning",
				Expr:        c.sel("dramatiq_database_oldest_transaction_age_seconds") + " > " + secs(c.DatabaseTransactionAge),
				For:         c.DatabaseTransactionFor,
				Summary:     "A transaction has been open in the application database for too long.",
				Description: "The oldest open transaction in the database watched by {{ $labels.instance }} started {{ $value | humanizeDuration }} ago; it may hold locks that block workers.",
			},
			{
				Name: "DramatiqDatabaseBlockedConnections", Class: classDatabase, Severity: "warning",
				Expr:        c.sel("dramatiq_database_blocked_connections") + " > 0",
				For:         c.DatabaseBlockedFor,
				Summary:     "Backends of the application database are waiting on locks.",
				Description: count + " backends of the database watched by {{ $labels.instance }} are waiting on a lock, and some backend has been waiting at every check for " + f(c.DatabaseBlockedFor) + ".",
			},
		}},
	}, c.stuckGroups()...)
}

// Alerts returns every alert in file order.
func (c Config) Alerts() []Alert {
	var out []Alert
	for _, g := range c.Groups() {
		out = append(out, g.Alerts...)
	}
	return out
}

// RunbookAnchor is the GitHub anchor of the alert's section in RUNBOOK.md,
// whose headings are the alert names.
func RunbookAnchor(name string) string { return strings.ToLower(name) }

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
