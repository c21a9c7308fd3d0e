package mixin

import "fmt"

// The panels on the workers' own view come from Dramatiq's Prometheus
// middleware (docs/worker-metrics.md), scraped from the worker processes.
// Without it they show "No data" and nothing else breaks: every query selects
// series that are then simply absent.

const noMiddleware = " Empty when Prometheus does not scrape the workers' Prometheus middleware (see docs/worker-metrics.md)."

// actorRate is the per-actor rate of a middleware counter, as in the
// recording rules but over Grafana's interval.
func actorRate(metric, sel string) string {
	return fmt.Sprintf("sum by (queue_name, actor_name) (rate(%s{%s}[$__rate_interval]))", metric, sel)
}

// retryRate counts each retry once: the middleware counts it on the delay
// queue when scheduled (queue_name "<queue>.DQ", which sel must select) and
// again on the queue when it is due. The legend shows the delay queue.
func retryRate(sel string) string {
	return actorRate("dramatiq_message_retries_total", sel)
}

// errorRatio is 0, not absent, for an actor that never failed: the
// middleware creates its error series at the first error.
func errorRatio(sel string) string {
	m := actorRate("dramatiq_messages_total", sel)
	return fmt.Sprintf("(\n  %s\n  or\n  %s * 0\n)\n/\n(%s > 0)", actorRate("dramatiq_message_errors_total", sel), m, m)
}

func durationQuantile(q float64, sel string) string {
	return fmt.Sprintf("histogram_quantile(%g, sum by (queue_name, actor_name, le) (rate(dramatiq_message_duration_milliseconds_bucket{%s}[$__rate_interval]))) / 1000", q, sel)
}

// workersRow is the workers' view in the Overview, next to the broker's.
func workersRow() row {
	s := dsel()
	return row{Title: "Workers (Dramatiq's Prometheus middleware)", Panels: []panel{
		ts("Throughput by actor", "cps", "Messages processed a second, failed attempts included."+noMiddleware, 6,
			target{Expr: actorRate("dramatiq_messages_total", s), Legend: "{{queue_name}} {{actor_name}}"}),
		ts("Error ratio by actor", "percentunit", "Share of attempts that raised, retried ones included."+noMiddleware, 6,
			target{Expr: errorRatio(s), Legend: "{{queue_name}} {{actor_name}}"}),
		ts("Retries by actor", "cps", "Retries scheduled a second (each counted once)."+noMiddleware, 6,
			target{Expr: retryRate(dsel(`queue_name=~".+\\.DQ"`)), Legend: "{{queue_name}} {{actor_name}}"}),
		ts("Duration p95 by actor", "s", "95th percentile of the time spent processing a message."+noMiddleware, 6,
			target{Expr: durationQuantile(0.95, s), Legend: "{{queue_name}} {{actor_name}}"}),
	}}
}

func actors(c Config) dashboard {
	s := dsel(`queue_name=~"$queue"`, `actor_name=~"$actor"`)
	dq := dsel(`queue_name=~"($queue)\\.DQ"`, `actor_name=~"$actor"`)
	q := dsel(`queue=~"$queue"`)
	legend := "{{queue_name}} {{actor_name}}"
	return dashboard{
		UID: c.DashboardUIDs.Actors, Title: "Dramatiq / Actors",
		Description: "Throughput, errors, retries and durations per actor from the workers' own Prometheus middleware (dramatiq.middleware.prometheus), next to the broker's queues from dramatiq_exporter.",
		ExtraVars: []map[string]any{
			queryVar("queue", fmt.Sprintf("label_values(dramatiq_queue_ready_messages{%s}, queue)", dsel()), true),
			queryVar("actor", fmt.Sprintf("label_values(dramatiq_messages_total{%s}, actor_name)", dsel(`queue_name=~"$queue"`)), true),
		},
		Rows: []row{
			{Title: "Now", Panels: []panel{
				stat("Throughput", "cps", "Messages processed a second by the selected actors."+noMiddleware, 6, nil,
					target{Expr: fmt.Sprintf("sum(rate(dramatiq_messages_total{%s}[$__rate_interval]))", s)}),
				stat("Error ratio", "percentunit", "Share of attempts that raised."+noMiddleware, 6, thresholds("green", c.ActorErrorRatio, "red"),
					target{Expr: fmt.Sprintf("(sum(rate(dramatiq_message_errors_total{%s}[$__rate_interval])) or vector(0))\n/\n(sum(rate(dramatiq_messages_total{%s}[$__rate_interval])) > 0)", s, s)}),
				stat("In progress", "short", "Messages the workers are processing now."+noMiddleware, 6, nil,
					target{Expr: fmt.Sprintf("sum(dramatiq_messages_inprogress{%s})", s)}),
				stat("Dead-lettered", "cps", "Messages the workers dead-lettered a second: out of retries, or failed permanently."+noMiddleware, 6, thresholds("green", 0.001, "yellow"),
					target{Expr: fmt.Sprintf("sum(rate(dramatiq_message_rejects_total{%s}[$__rate_interval]))", s)}),
			}},
			{Title: "Per actor", Panels: []panel{
				ts("Throughput", "cps", "Messages processed a second, failed attempts included: every attempt of a retried message counts."+noMiddleware, 12,
					target{Expr: actorRate("dramatiq_messages_total", s), Legend: legend}),
				ts("Error ratio", "percentunit", "Errors divided by messages processed. DramatiqActorErrorRatioHigh fires above the red line."+noMiddleware, 12,
					target{Expr: errorRatio(s), Legend: legend}),
				ts("Errors", "cps", "Attempts that raised, a second."+noMiddleware, 8,
					target{Expr: actorRate("dramatiq_message_errors_total", s), Legend: legend}),
				ts("Retries", "cps", "Retries scheduled a second (counted once, when put on the delay queue)."+noMiddleware, 8,
					target{Expr: retryRate(dq), Legend: legend}),
				ts("Dead-lettered", "cps", "Messages dead-lettered a second: out of retries, or failed permanently."+noMiddleware, 8,
					target{Expr: actorRate("dramatiq_message_rejects_total", s), Legend: legend}),
				ts("Duration p50", "s", "Median time spent processing a message."+noMiddleware, 8,
					target{Expr: durationQuantile(0.5, s), Legend: legend}),
				ts("Duration p95", "s", "95th percentile of the processing time."+noMiddleware, 8,
					target{Expr: durationQuantile(0.95, s), Legend: legend}),
				ts("Duration p99", "s", "99th percentile of the processing time."+noMiddleware, 8,
					target{Expr: durationQuantile(0.99, s), Legend: legend}),
				ts("In progress", "short", "Messages being processed now, per actor."+noMiddleware, 24,
					target{Expr: fmt.Sprintf("sum by (queue_name, actor_name) (dramatiq_messages_inprogress{%s})", s), Legend: legend}),
			}},
			{Title: "Queues (broker, from the exporter)", Panels: []panel{
				ts("Ready messages", "short", "Messages waiting in each queue: if throughput falls while this grows, workers are short.", 12,
					target{Expr: fmt.Sprintf("sum by (queue) (dramatiq_queue_ready_messages{%s})", q), Legend: "{{queue}}"}),
				ts("Oldest message age", "s", "Age of the message at the head of each queue: the latency a new message will see."+redisOnly, 12,
					target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_oldest_message_age_seconds{%s})", q), Legend: "{{queue}}"}),
			}},
		},
	}
}
