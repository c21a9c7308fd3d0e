package mixin

import "fmt"

// Dashboards returns the Grafana dashboards by file name.
func (c Config) Dashboards() map[string][]byte {
	return map[string][]byte{
		"dramatiq-overview.json": overview(c).render(c),
		"dramatiq-queue.json":    queueDetail(c).render(c),
		"dramatiq-database.json": database(c).render(c),
		"dramatiq-actors.json":   actors(c).render(c),
	}
}

func ts(title, unit, desc string, w int, targets ...target) panel {
	return panel{Type: "timeseries", Title: title, Unit: unit, Description: desc, W: w, H: 8, Targets: targets}
}

func stat(title, unit, desc string, w int, custom func(map[string]any), targets ...target) panel {
	return panel{Type: "stat", Title: title, Unit: unit, Description: desc, W: w, H: 4, Targets: targets, Custom: custom}
}

func overview(c Config) dashboard {
	s := dsel()
	q := func(metric string) string { return fmt.Sprintf("sum by (queue) (%s{%s})", metric, s) }
	queueCols := []struct{ metric, title, unit string }{
		{"dramatiq_queue_ready_messages", "Ready", "short"},
		{"dramatiq_queue_inflight_messages", "In flight", "short"},
		{"dramatiq_queue_delayed_messages", "Delayed", "short"},
		{"dramatiq_queue_dead_letter_messages", "Dead letters", "short"},
		{"dramatiq_queue_orphaned_messages", "Orphaned", "short"},
		{"dramatiq_queue_oldest_message_age_seconds", "Oldest message age", "s"},
		{"dramatiq_queue_consumers", "Consumers", "short"},
	}
	var tableTargets []target
	rename := map[string]any{"queue": "Queue"}
	index := map[string]any{"queue": 0}
	var overrides []any
	for i, col := range queueCols {
		expr := q(col.metric)
		if col.unit == "s" {
			expr = fmt.Sprintf("max by (queue) (%s{%s})", col.metric, s)
		}
		tableTargets = append(tableTargets, target{Expr: expr, Table: true})
		field := "Value #" + string(rune('A'+i))
		rename[field] = col.title
		index[field] = i + 1
		if col.unit != "short" {
			overrides = append(overrides, map[string]any{
				"matcher":    map[string]any{"id": "byName", "options": col.title},
				"properties": []any{map[string]any{"id": "unit", "value": col.unit}},
			})
		}
	}
	overrides = append(overrides, map[string]any{
		"matcher": map[string]any{"id": "byName", "options": "Queue"},
		"properties": []any{map[string]any{"id": "links", "value": []any{map[string]any{
			"title": "Queue detail",
			"url":   "/d/" + c.DashboardUIDs.Queue + "/dramatiq-queue?${datasource:queryparam}&${job:queryparam}&${instance:queryparam}&var-queue=${__value.raw}&${__url_time_range}",
		}}}},
	})
	queuesTable := panel{
		Type: "table", Title: "Queues", Unit: "short", W: 24, H: 10, Targets: tableTargets,
		Description: "Every queue the exporter reports, now. Click a queue for its detail dashboard. Orphaned and Oldest message age: Redis broker only; Consumers: RabbitMQ broker only (worker processes consuming the queue).",
		Custom: func(p map[string]any) {
			p["transformations"] = []any{
				map[string]any{"id": "merge", "options": map[string]any{}},
				map[string]any{"id": "organize", "options": map[string]any{
					"excludeByName": map[string]any{"Time": true},
					"renameByName":  rename,
					"indexByName":   index,
				}},
			}
			p["fieldConfig"].(map[string]any)["overrides"] = overrides
			p["options"].(map[string]any)["sortBy"] = []any{map[string]any{"displayName": "Ready", "desc": true}}
		},
	}

	return dashboard{
		UID: c.DashboardUIDs.Overview, Title: "Dramatiq / Overview",
		Description: "Health of the Dramatiq broker (Redis or RabbitMQ), its processes and queues, and the application database, from dramatiq_exporter. Panels fed by one broker only say so and show no data with the other (docs/dashboards.md).",
		Rows: []row{
			{Title: "Health", Panels: []panel{
				stat("Exporter", "none", "Whether Prometheus can scrape the exporter.", 3, upDown(),
					target{Expr: fmt.Sprintf("up{%s}", s), Legend: "{{instance}}"}),
				// One panel for either broker: each exporter serves the
				// up series of the broker it reads, the other is absent.
				stat("Broker", "none", "Whether the exporter could read its broker in its last scrape: Redis (dramatiq_redis_up), or RabbitMQ's management API (dramatiq_rabbitmq_up).", 3, upDown(),
					target{Expr: fmt.Sprintf("dramatiq_redis_up{%s}", s), Legend: "Redis {{instance}}"},
					target{Expr: fmt.Sprintf("dramatiq_rabbitmq_up{%s}", s), Legend: "RabbitMQ {{instance}}"}),
				stat("Database", "none", "Whether the exporter could query the application database. No data: the database collector is not configured.", 3, upDown(),
					target{Expr: fmt.Sprintf("dramatiq_database_up{%s}", s), Legend: "{{instance}}"}),
				stat("Alive processes", "short", "Workers and producers whose heartbeat is within the heartbeat timeout. RabbitMQ has no heartbeats: see Consumers."+redisOnly, 3, thresholds("red", 1, "green"),
					target{Expr: fmt.Sprintf(`sum(dramatiq_processes{%s})`, dsel(`state="alive"`))}),
				stat("Stale processes", "short", "Heartbeat entries past the timeout: dead or stopped processes Dramatiq has not cleaned up yet."+redisOnly, 3, thresholds("green", 1, "yellow"),
					target{Expr: fmt.Sprintf(`sum(dramatiq_processes{%s})`, dsel(`state="stale"`))}),
				stat("Consumers", "short", "Consumers of the queues: each worker process consumes every queue it serves, so this is worker processes times queues. 0 means no worker runs."+rabbitMQOnly, 3, thresholds("red", 1, "green"),
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_consumers{%s})", s)}),
				stat("Dead letters", "short", "Messages in the dead-letter queues.", 3, thresholds("green", 1, "yellow"),
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_dead_letter_messages{%s})", s)}),
				stat("Orphaned", "short", "Messages held by processes whose heartbeat is stale: not running, not yet requeued. RabbitMQ requeues a dead consumer's messages itself, so it has none."+redisOnly, 3, thresholds("green", 1, "red"),
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_orphaned_messages{%s})", s)}),
			}},
			{Title: "Messages and processes", Panels: []panel{
				ts("Messages by state", "short", "All queues together. orphaned: Redis broker only. held delayed (the part of delayed that worker processes hold until due): RabbitMQ broker only.", 12,
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_ready_messages{%s})", s), Legend: "ready"},
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_inflight_messages{%s})", s), Legend: "in flight"},
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_delayed_messages{%s})", s), Legend: "delayed"},
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_dead_letter_messages{%s})", s), Legend: "dead letters"},
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_orphaned_messages{%s})", s), Legend: "orphaned"},
					target{Expr: fmt.Sprintf("sum(dramatiq_queue_delayed_held_messages{%s})", s), Legend: "held delayed"},
				),
				ts("Processes", "short", "Heartbeat entries by state. Producers heartbeat too, so alive is not a worker count."+redisOnly, 12,
					target{Expr: fmt.Sprintf("sum by (state) (dramatiq_processes{%s})", s), Legend: "{{state}}"}),
				queuesTable,
				ts("Ready messages by queue", "short", "Messages waiting in each queue's list to be fetched by a worker.", 12,
					target{Expr: q("dramatiq_queue_ready_messages"), Legend: "{{queue}}"}),
				ts("Oldest message age by queue", "s", "Age of the message at the head of each queue, from its creation time (retries and delays keep it). RabbitMQ messages carry no timestamp, and reading a body means consuming it."+redisOnly, 12,
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_oldest_message_age_seconds{%s})", s), Legend: "{{queue}}"}),
				ts("Dead letters by queue", "short", "Messages in each dead-letter queue. A rise is a new failure; a drop is expiry or cleanup.", 12,
					target{Expr: q("dramatiq_queue_dead_letter_messages"), Legend: "{{queue}}"}),
				ts("Orphaned messages by queue", "short", "Messages held by dead processes, waiting for Dramatiq's maintenance to requeue them."+redisOnly, 12,
					target{Expr: q("dramatiq_queue_orphaned_messages"), Legend: "{{queue}}"}),
				ts("Consumers by queue", "short", "Worker processes consuming each queue. 0 while messages are ready fires DramatiqRabbitMQQueueNoConsumers."+rabbitMQOnly, 12,
					target{Expr: q("dramatiq_queue_consumers"), Legend: "{{queue}}"}),
				ts("Delay queue redeliveries by queue", "mps", "Messages of each delay queue (q.DQ) that RabbitMQ redelivered a second: after a worker's channel closed, its crash, or consumer_timeout on a delayed message held too long (DramatiqRabbitMQDelayRedeliveries)."+rabbitMQOnly, 12,
					target{Expr: fmt.Sprintf("sum by (queue) (rate(dramatiq_queue_delay_redeliveries_total{%s}[$__rate_interval]))", s), Legend: "{{queue}}"}),
			}},
			workersRow(),
			{Title: "Exporter and broker", Panels: []panel{
				ts("Collector success", "none", "1 when the collector read its source without error.", 8,
					target{Expr: fmt.Sprintf("min by (collector) (dramatiq_exporter_collector_success{%s})", s), Legend: "{{collector}}"}),
				ts("Collector duration", "s", "Time each collector spent reading its source in the last scrape.", 8,
					target{Expr: fmt.Sprintf("max by (collector) (dramatiq_exporter_collector_duration_seconds{%s})", s), Legend: "{{collector}}"}),
				ts("Discovery passes", "cps", "Queue discovery passes (SCANs of the whole keyspace) completed per second; it slows down on a large keyspace to stay near 1% of Redis's time."+redisOnly, 8,
					target{Expr: fmt.Sprintf("rate(dramatiq_exporter_discovery_passes_total{%s}[$__rate_interval])", s), Legend: "{{instance}}"}),
				ts("Broker anomalies", "short", "Odd broker data the latest read skipped, by kind (the most any exporter replica saw)."+redisOnly, 8,
					target{Expr: fmt.Sprintf("max by (kind) (dramatiq_exporter_broker_anomalies{%s})", s), Legend: "{{kind}}"}),
				ts("Redis memory", "bytes", "Memory used by the broker's Redis (used_memory)."+redisOnly, 8,
					target{Expr: fmt.Sprintf("dramatiq_redis_memory_used_bytes{%s}", s), Legend: "{{instance}}"}),
				ts("Redis clients", "short", "Clients connected to the broker's Redis: workers, producers and exporters."+redisOnly, 8,
					target{Expr: fmt.Sprintf("dramatiq_redis_connected_clients{%s}", s), Legend: "{{instance}}"}),
				{Type: "table", Title: "Exporters", Unit: "none", W: 24, H: 5,
					Description: "Each exporter and what it watches: namespace and environment.",
					Targets:     []target{{Expr: fmt.Sprintf("dramatiq_exporter_info{%s}", s), Table: true}},
					Custom: func(p map[string]any) {
						p["transformations"] = []any{map[string]any{"id": "organize", "options": map[string]any{
							"excludeByName": map[string]any{"Time": true, "Value": true, "__name__": true},
						}}}
					}},
				ts("Queues dropped", "short", "Queues not reported because of --dramatiq.max-queues.", 8,
					target{Expr: fmt.Sprintf("dramatiq_exporter_queues_dropped{%s}", s), Legend: "{{instance}}"}),
				ts("Dead-letter actors", "short", "{queue, actor} pairs the exporter counts dead letters for, and its cap; at the cap, new actors are counted as (other)."+redisOnly, 8,
					target{Expr: fmt.Sprintf("dramatiq_exporter_dead_letter_actor_series{%s}", s), Legend: "{{instance}}"},
					target{Expr: fmt.Sprintf("max(dramatiq_exporter_dead_letter_actor_series_limit{%s})", s), Legend: "limit"}),
				ts("Queue layout problems", "short", "How the RabbitMQ queues of each Dramatiq queue differ from what Dramatiq declares (a missing queue or dead-letter route, foreign arguments); the status page lists them (DramatiqRabbitMQQueueLayout)."+rabbitMQOnly, 8,
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_rabbitmq_queue_layout_problems{%s})", s), Legend: "{{queue}}"}),
				ts("RabbitMQ queues in the vhost", "short", "RabbitMQ queues the vhost lists, by kind: dramatiq (q, q.DQ or q.XQ of a Dramatiq queue), ignored (another application's), invalid (a name that cannot be a label, skipped)."+rabbitMQOnly, 8,
					target{Expr: fmt.Sprintf("max by (kind) (dramatiq_rabbitmq_vhost_queues{%s})", s), Legend: "{{kind}}"}),
			}},
		},
	}
}

func queueDetail(c Config) dashboard {
	s := dsel(`queue=~"$queue"`)
	sum := func(metric string) string { return fmt.Sprintf("sum by (queue) (%s{%s})", metric, s) }
	total := func(metric string) string { return fmt.Sprintf("sum(%s{%s})", metric, s) }
	return dashboard{
		UID: c.DashboardUIDs.Queue, Title: "Dramatiq / Queue",
		Description: "One or more Dramatiq queues in detail, from dramatiq_exporter, on Redis or RabbitMQ. Panels fed by one broker only say so and show no data with the other (docs/dashboards.md).",
		ExtraVars: []map[string]any{
			queryVar("queue", fmt.Sprintf("label_values(dramatiq_queue_ready_messages{%s}, queue)", dsel()), true),
		},
		Rows: []row{
			{Title: "Now", Panels: []panel{
				stat("Ready", "short", "Messages waiting to be fetched.", 3, nil, target{Expr: total("dramatiq_queue_ready_messages")}),
				stat("In flight", "short", "Fetched by a worker and not yet acknowledged: running or prefetched.", 3, nil, target{Expr: total("dramatiq_queue_inflight_messages")}),
				stat("Delayed", "short", "Delayed messages and retries in backoff.", 3, nil, target{Expr: total("dramatiq_queue_delayed_messages")}),
				stat("Held delayed", "short", "The part of Delayed that worker processes hold in memory, unacknowledged, until due."+rabbitMQOnly, 3, nil, target{Expr: total("dramatiq_queue_delayed_held_messages")}),
				stat("Dead letters", "short", "Messages in the dead-letter queues of the selected queues.", 3, thresholds("green", 1, "yellow"), target{Expr: total("dramatiq_queue_dead_letter_messages")}),
				stat("Consumers", "short", "Worker processes consuming the selected queues."+rabbitMQOnly, 3, thresholds("red", 1, "green"), target{Expr: total("dramatiq_queue_consumers")}),
				stat("Oldest message age", "s", "Age of the oldest message at the head of the selected queues, from its creation time."+redisOnly, 3, thresholds("green", float64(c.QueueLatencyThreshold.Seconds()), "red"),
					target{Expr: fmt.Sprintf("max(dramatiq_queue_oldest_message_age_seconds{%s})", s)}),
				stat("Orphaned", "short", "Held by dead processes, not yet requeued."+redisOnly, 3, thresholds("green", 1, "red"), target{Expr: total("dramatiq_queue_orphaned_messages")}),
			}},
			{Title: "Over time", Panels: []panel{
				ts("Ready", "short", "Messages waiting to be fetched.", 12, target{Expr: sum("dramatiq_queue_ready_messages"), Legend: "{{queue}}"}),
				ts("Ready by actor", "short", "Ready messages by actor: where the backlog comes from. Exact up to --dramatiq.backlog-by-actor-exact-limit ready messages, estimated from a sample above (docs/backlog-by-actor.md); the sum over estimate keeps one line when a queue crosses the limit. Empty unless the exporter runs with --dramatiq.backlog-by-actor."+redisOnly, 12,
					target{Expr: fmt.Sprintf("sum by (queue, actor) (dramatiq_queue_ready_messages_by_actor{%s})", s), Legend: "{{queue}} {{actor}}"}),
				ts("In flight", "short", "In flight minus orphaned is what live workers hold; when it stays 0 while messages are ready, DramatiqQueueNotConsumed fires. The held-by-live-workers line is Redis broker only: on RabbitMQ nothing is orphaned, so all of in flight is held by live workers.", 12,
					target{Expr: sum("dramatiq_queue_inflight_messages"), Legend: "{{queue}} in flight"},
					target{Expr: fmt.Sprintf("sum by (queue) (dramatiq_queue_inflight_messages{%s} - dramatiq_queue_orphaned_messages{%s})", s, s), Legend: "{{queue}} held by live workers"}),
				ts("Drain trend", "mps", "Net change of ready messages per second (least-squares fit). Below zero the queue drains; above zero it grows.", 12,
					target{Expr: fmt.Sprintf("sum by (queue) (deriv(dramatiq_queue_ready_messages{%s}[$__rate_interval]))", s), Legend: "{{queue}}"}),
				ts("Time to drain", "s", "Ready messages divided by the current drain rate; empty while the queue is not draining.", 12,
					target{Expr: fmt.Sprintf("%s\n/\n(sum by (queue) (-deriv(dramatiq_queue_ready_messages{%s}[$__rate_interval])) > 0)",
						sum("dramatiq_queue_ready_messages"), s), Legend: "{{queue}}"}),
				ts("Delayed", "short", "Delayed messages and retries in backoff. Only a running worker moves them to the ready list when due.", 12, target{Expr: sum("dramatiq_queue_delayed_messages"), Legend: "{{queue}}"}),
				ts("Held delayed", "short", "Delayed messages that worker processes hold unacknowledged until due (q.DQ unacknowledged); the rest of Delayed waits in q.DQ. A dead worker's part returns to waiting."+rabbitMQOnly, 12,
					target{Expr: sum("dramatiq_queue_delayed_held_messages"), Legend: "{{queue}}"}),
				ts("Consumers", "short", "Worker processes consuming each queue (q) and its delay queue (q.DQ). 0 on q while messages are ready fires DramatiqRabbitMQQueueNoConsumers."+rabbitMQOnly, 12,
					target{Expr: sum("dramatiq_queue_consumers"), Legend: "{{queue}}"},
					target{Expr: sum("dramatiq_queue_delay_consumers"), Legend: "{{queue}}.DQ"}),
				ts("Redeliveries", "mps", "Messages RabbitMQ redelivered a second: on q after a worker's channel closed; on q.DQ also after consumer_timeout hit a delayed message held too long (DramatiqRabbitMQDelayRedeliveries)."+rabbitMQOnly, 12,
					target{Expr: fmt.Sprintf("sum by (queue) (rate(dramatiq_queue_redeliveries_total{%s}[$__rate_interval]))", s), Legend: "{{queue}}"},
					target{Expr: fmt.Sprintf("sum by (queue) (rate(dramatiq_queue_delay_redeliveries_total{%s}[$__rate_interval]))", s), Legend: "{{queue}}.DQ"}),
				ts("Oldest message age", "s", "Age of the head message from its creation time."+redisOnly, 12,
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_oldest_message_age_seconds{%s})", s), Legend: "{{queue}}"}),
				ts("Orphaned", "short", "Messages held by dead processes, waiting for Dramatiq's maintenance to requeue them."+redisOnly, 12, target{Expr: sum("dramatiq_queue_orphaned_messages"), Legend: "{{queue}}"}),
				ts("Longest held by a live worker", "s", "How long the message a live worker has held longest (running or prefetched) has been in its ack set, from the first read that saw it; DramatiqMessageHeldTooLong fires above its threshold. The lower-bound line: already held when the exporter first read the set (after a restart), so held longer."+redisOnly, 12,
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_longest_held_message_seconds{%s})", s), Legend: "{{queue}}"},
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_longest_held_message_seconds{%s} and on (job, instance, queue) dramatiq_queue_longest_held_message_lower_bound{%s} == 1)", s, s), Legend: "{{queue}} (lower bound)"}),
				ts("Dead letters", "short", "Messages in each dead-letter queue. On RabbitMQ a rise fires DramatiqRabbitMQDeadLettersGrowing.", 12, target{Expr: sum("dramatiq_queue_dead_letter_messages"), Legend: "{{queue}}"}),
				ts("Dead-lettered", "mps", "Messages dead-lettered per second. Unlike the dead-letter queue's size it does not drop when Dramatiq prunes old dead letters."+redisOnly, 12,
					target{Expr: fmt.Sprintf("sum by (queue) (rate(dramatiq_queue_dead_lettered_total{%s}[$__rate_interval]))", s), Legend: "{{queue}}"}),
				ts("Dead-lettered by actor", "mps", "Messages dead-lettered per second by actor, from the exporter's counter of new dead letters (not the workers' metrics). (unknown): bodies that could not be read; (other): actors beyond the exporter's cap."+redisOnly, 12,
					target{Expr: fmt.Sprintf("sum by (queue, actor) (rate(dramatiq_actor_dead_lettered_total{%s}[$__rate_interval]))", s), Legend: "{{queue}} {{actor}}"}),
				{Type: "table", Title: "RabbitMQ queues", Unit: "none", W: 12, H: 8,
					Description: "The RabbitMQ queues behind each Dramatiq queue (main q, delay q.DQ, dead q.XQ) and their type. Dramatiq declares classic queues; quorum or stream members come from a vhost default or a policy (DramatiqRabbitMQQueueLayout)." + rabbitMQOnly,
					Targets:     []target{{Expr: fmt.Sprintf("max by (queue, member, type) (dramatiq_rabbitmq_queue_info{%s})", s), Table: true}},
					Custom: func(p map[string]any) {
						p["transformations"] = []any{map[string]any{"id": "organize", "options": map[string]any{
							"excludeByName": map[string]any{"Time": true, "Value": true},
							"renameByName":  map[string]any{"queue": "Queue", "member": "Member", "type": "Type"},
						}}}
					}},
				{Type: "table", Title: "Last dead letter", Unit: "dateTimeFromNow", W: 24, H: 6,
					Description: "When each queue last dead-lettered a message." + redisOnly,
					Targets:     []target{{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_dead_letter_last_timestamp_seconds{%s}) * 1000", s), Table: true}},
					Custom: func(p map[string]any) {
						p["transformations"] = []any{map[string]any{"id": "organize", "options": map[string]any{
							"excludeByName": map[string]any{"Time": true},
							"renameByName":  map[string]any{"queue": "Queue", "Value": "Last dead letter"},
						}}}
					}},
			}},
			stuckRow(c, s),
		},
	}
}

func database(c Config) dashboard {
	s := dsel()
	ratio := fmt.Sprintf("sum without (state) (dramatiq_database_connections{%s})\n/\ndramatiq_database_max_connections{%s}", s, s)
	return dashboard{
		UID: c.DashboardUIDs.Database, Title: "Dramatiq / Database",
		Description: "Health of the application database the Dramatiq workers use, from dramatiq_exporter's database collectors.",
		Rows: []row{
			{Title: "Now", Panels: []panel{
				stat("Database", "none", "Whether the exporter could query the application database in its last scrape.", 4, upDown(), target{Expr: fmt.Sprintf("dramatiq_database_up{%s}", s), Legend: "{{instance}}"}),
				stat("Server version", "none", "PostgreSQL version and database name.", 4, func(p map[string]any) {
					p["options"].(map[string]any)["textMode"] = "name"
					p["options"].(map[string]any)["graphMode"] = "none"
				}, target{Expr: fmt.Sprintf("dramatiq_database_info{%s}", s), Legend: "{{server_version}} ({{database}})", Instant: true}),
				stat("Role", "none", "Primary, or replica (in recovery).", 4, valueMap("primary", "blue", "replica", "purple"), target{Expr: fmt.Sprintf("dramatiq_database_in_recovery{%s}", s), Legend: "{{instance}}"}),
				stat("Connections used", "percentunit", "Backends of this database as a share of the server's max_connections.", 4,
					thresholds("green", c.DatabaseConnectionsRatio, "red"), target{Expr: ratio, Legend: "{{instance}}"}),
				stat("Ping", "s", "Round trip of SELECT 1.", 4, nil, target{Expr: fmt.Sprintf("dramatiq_database_ping_duration_seconds{%s}", s), Legend: "{{instance}}"}),
				stat("Size", "bytes", "Size of the application database on disk.", 4, nil, target{Expr: fmt.Sprintf("dramatiq_database_size_bytes{%s}", s), Legend: "{{instance}}"}),
			}},
			{Title: "Over time", Panels: []panel{
				ts("Connections by state", "short", "Backends of this database by pg_stat_activity state, and the server's limit.", 12,
					target{Expr: fmt.Sprintf("sum by (state) (dramatiq_database_connections{%s})", s), Legend: "{{state}}"},
					target{Expr: fmt.Sprintf("max(dramatiq_database_max_connections{%s})", s), Legend: "max_connections"}),
				ts("Connections used", "percentunit", "Backends of this database as a share of the server's max_connections.", 12, target{Expr: ratio, Legend: "{{instance}}"}),
				ts("Oldest open transaction", "s", "Long transactions hold locks and block workers.", 12,
					target{Expr: fmt.Sprintf("dramatiq_database_oldest_transaction_age_seconds{%s}", s), Legend: "{{instance}}"}),
				ts("Blocked connections", "short", "Backends waiting on a lock.", 12,
					target{Expr: fmt.Sprintf("dramatiq_database_blocked_connections{%s}", s), Legend: "{{instance}}"}),
				ts("Ping duration", "s", "Round trip of SELECT 1.", 8,
					target{Expr: fmt.Sprintf("dramatiq_database_ping_duration_seconds{%s}", s), Legend: "{{instance}}"}),
				ts("Replication lag", "s", "Reported by replicas only.", 8,
					target{Expr: fmt.Sprintf("dramatiq_database_replication_lag_seconds{%s}", s), Legend: "{{instance}}"}),
				ts("Database size", "bytes", "Size of the application database on disk.", 8,
					target{Expr: fmt.Sprintf("dramatiq_database_size_bytes{%s}", s), Legend: "{{instance}}"}),
			}},
		},
	}
}
