package mixin

import "strings"

// Recording is one recording rule.
type Recording struct {
	Record string
	Expr   string
}

// The labels that tell the exporters of one HA pair apart. A queue's numbers
// come from the same Redis through every exporter of the pair, so they are
// combined with max (sum would double them); every other label, namespace and
// cluster included, is kept.
const haLabels = "instance, pod"

// RecordingGroupName is the name of the recording rules' group in the rule
// file.
const RecordingGroupName = "dramatiq-autoscaling"

// Recordings returns the recording rules, in file order. docs/autoscaling.md
// says what each one means and why; its numbers are tested in
// alerts/tests/recording.yml and against real Dramatiq in test/e2e.
func (c Config) Recordings() []Recording {
	return []Recording{
		{
			// Work that needs a live worker now: the ready list plus what
			// live workers hold (running and prefetched). Messages held by
			// dead workers are subtracted: no live worker works on them, and
			// counting them would keep replicas for work nobody does.
			// dramatiq_queue_orphaned_messages also counts delayed messages
			// that dead workers held, which are not in in-flight, so the
			// difference is clamped at 0. RabbitMQ has no orphans and no
			// such series: 0 is subtracted there, not an absent series that
			// would empty the rule.
			Record: "queue:dramatiq_queue_workload_messages:max",
			Expr: "max without (" + haLabels + ") (\n  " +
				c.sel("dramatiq_queue_ready_messages") + "\n  +\n  clamp_min(\n    " +
				c.sel("dramatiq_queue_inflight_messages") + "\n    -\n    (" +
				c.sel("dramatiq_queue_orphaned_messages") + " or " + c.sel("dramatiq_queue_inflight_messages") + " * 0),\n    0\n  )\n)",
		},
		{
			// Every message the broker stores for the queue apart from dead
			// letters: ready, in flight (live or orphaned) and delayed. Only
			// a running worker moves due delayed messages and retries to the
			// ready list and requeues orphaned messages, so with zero workers
			// these are stranded: this is the scale-from-zero signal.
			Record: "queue:dramatiq_queue_unfinished_messages:max",
			Expr: "max without (" + haLabels + ") (\n  " +
				c.sel("dramatiq_queue_ready_messages") + "\n  +\n  " +
				c.sel("dramatiq_queue_inflight_messages") + "\n  +\n  " +
				c.sel("dramatiq_queue_delayed_messages") + "\n)",
		},
	}
}

// ActorsRecordingGroupName is the name of the group of the per-actor
// recording rules, computed from Dramatiq's own Prometheus middleware.
const ActorsRecordingGroupName = "dramatiq-actors-rates"

// MiddlewareMetrics are the series of dramatiq.middleware.prometheus that the
// rules and dashboards use. The worker processes export them, not
// dramatiq_exporter; docs/worker-metrics.md says what each one counts in
// Dramatiq 1.2 and 2.x. The rules and panels use them through
// WorkersSelector.
var MiddlewareMetrics = []string{
	"dramatiq_messages_total",
	"dramatiq_message_errors_total",
	"dramatiq_message_retries_total",
	"dramatiq_message_rejects_total",
	"dramatiq_messages_inprogress",
	"dramatiq_message_duration_milliseconds_bucket",
	"dramatiq_message_duration_milliseconds_sum",
	"dramatiq_message_duration_milliseconds_count",
}

// wsel returns metric{<workers selector>,extra...}.
func (c Config) wsel(metric string, extra ...string) string {
	return metric + "{" + strings.Join(append([]string{c.WorkersSelector}, extra...), ",") + "}"
}

// actorRate is the 5-minute rate of a middleware counter, summed over the
// worker pods.
func (c Config) actorRate(metric string) string {
	return "sum without (" + workerLabels + ") (rate(" + c.wsel(metric) + "[5m]))"
}

// The labels that tell worker processes (pods) apart. The middleware already
// sums the processes of one pod (multi-process mode); the rules sum the pods.
const workerLabels = "instance, pod"

// ActorRecordings returns the per-actor recording rules, in file order.
// docs/worker-metrics.md says what each one means; alerts/tests/actors.yml
// tests their numbers.
func (c Config) ActorRecordings() []Recording {
	sum := func(expr string) string { return "sum without (" + workerLabels + ") (\n  " + expr + "\n)" }
	return []Recording{
		{
			// Messages processed a second, failed attempts included: every
			// attempt of a retried message is one more.
			Record: "queue_actor:dramatiq_messages:rate5m",
			Expr:   sum("rate(" + c.wsel("dramatiq_messages_total") + "[5m])"),
		},
		{
			Record: "queue_actor:dramatiq_message_errors:rate5m",
			Expr:   sum("rate(" + c.wsel("dramatiq_message_errors_total") + "[5m])"),
		},
		{
			// The share of attempts that raised. The middleware creates an
			// actor's error series at its first error, so an actor that never
			// failed has none: it is 0 then. Absent (not 0/0) while the actor
			// processes nothing.
			Record: "queue_actor:dramatiq_message_errors:ratio_rate5m",
			Expr: "(\n  queue_actor:dramatiq_message_errors:rate5m{" + c.WorkersSelector + "}\n  or\n  " +
				"queue_actor:dramatiq_messages:rate5m{" + c.WorkersSelector + "} * 0\n)\n/\n" +
				"(queue_actor:dramatiq_messages:rate5m{" + c.WorkersSelector + "} > 0)",
		},
		{
			// The middleware counts a retry twice: once when Retries puts it
			// on the delay queue (queue_name "<queue>.DQ") and again when a
			// worker moves it back to the queue once due (queue_name
			// "<queue>"). Only the first is kept, renamed to the queue.
			Record: "queue_actor:dramatiq_message_retries:rate5m",
			Expr: sum("label_replace(\n    rate(" + c.wsel("dramatiq_message_retries_total", `queue_name=~".+\\.DQ"`) + "[5m]),\n" +
				`    "queue_name", "$1", "queue_name", "(.+)\\.DQ"` + "\n  )"),
		},
		{
			// Messages dead-lettered by the workers (the middleware's
			// "rejects": a nack after the last retry or on a permanent
			// failure).
			Record: "queue_actor:dramatiq_message_rejects:rate5m",
			Expr:   sum("rate(" + c.wsel("dramatiq_message_rejects_total") + "[5m])"),
		},
	}
}
