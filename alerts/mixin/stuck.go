package mixin

import (
	"fmt"
	"strconv"
	"time"
)

// Delayed work that does not come back, the flow recording rules and the
// queue latency objective (docs/stuck-work-delayed.md).

// FlowRecordingGroupName is the group of the time-to-drain rules.
const FlowRecordingGroupName = "dramatiq-flow"

// LatencyRecordingGroupName is the group of the latency objective's
// violation ratios; the burn-rate alerts read them.
const LatencyRecordingGroupName = "dramatiq-latency-objective-rates"

// The burn-rate windows of the SRE workbook's multi-window alerts (chapter
// "Alerting on SLOs"): a long window that says the budget is burning, a
// short one that says it still is, so the alert resolves soon after the
// queue recovers.
var latencyWindows = []time.Duration{5 * time.Minute, 30 * time.Minute, time.Hour, 6 * time.Hour}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// latencyRatio is the recorded share of the window during which the queue
// was outside the objective.
func (c Config) latencyRatio(w time.Duration) string {
	return "queue:dramatiq_queue_latency_objective_violation:ratio_avg" + promDuration(w)
}

// FlowRecordings are the time-to-drain rules, in file order.
func (c Config) FlowRecordings() []Recording {
	ready := "max without (" + haLabels + ") (" + c.sel("dramatiq_queue_ready_messages") + ")"
	return []Recording{
		{
			// Messages the workers finish a second, per queue, from their
			// middleware (docs/worker-metrics.md); failed attempts count,
			// as they leave the ready list too. The middleware labels the
			// queue queue_name; the exporter, queue.
			Record: "queue:dramatiq_messages_finished:rate5m",
			Expr: "sum by (job, queue) (\n  label_replace(\n    rate(" + c.wsel("dramatiq_messages_total") + "[5m]),\n" +
				`    "queue", "$1", "queue_name", "(.+)"` + "\n  )\n)",
		},
		{
			// Seconds until the ready list is empty at the rate workers
			// finish messages now: from the middleware where it reports the
			// queue, else the broker's own estimate, the net drain rate of
			// the ready list (finishes minus arrivals) over 10m, absent
			// while the list does not shrink. 0 for an empty list.
			Record: "queue:dramatiq_queue_time_to_drain:seconds",
			Expr: "(\n  " + ready + "\n  / on (queue) group_left ()\n  (queue:dramatiq_messages_finished:rate5m{" + c.WorkersSelector + "} > 0)\n)\nor\n(\n  " +
				ready + "\n  /\n  (max without (" + haLabels + ") (-deriv(" + c.sel("dramatiq_queue_ready_messages") + "[10m])) > 0)\n)\nor\n(\n  " +
				ready + " == 0\n)",
		},
	}
}

// LatencyRecordings are the latency objective's rules, in file order.
func (c Config) LatencyRecordings() []Recording {
	out := []Recording{{
		// 1 while the queue's oldest ready message is older than the
		// objective, 0 while it is not; absent while the age is unknown
		// (no sample, neither good nor bad).
		Record: "queue:dramatiq_queue_latency_objective_violation:max",
		Expr: "max without (" + haLabels + ") (\n  " + c.sel("dramatiq_queue_oldest_message_age_seconds") +
			" > bool " + secs(c.QueueLatencyObjectiveAge) + "\n)",
	}}
	for _, w := range latencyWindows {
		out = append(out, Recording{
			Record: c.latencyRatio(w),
			Expr:   "avg_over_time(queue:dramatiq_queue_latency_objective_violation:max{" + c.Selector + "}[" + promDuration(w) + "])",
		})
	}
	return out
}

// stuckGroups are the alert groups of delayed work and the latency
// objective.
func (c Config) stuckGroups() []RuleGroup {
	count := `{{ $value | printf "%.0f" }}`
	f := func(d time.Duration) string { return promDuration(c.forDuration(d)) }
	budget := "(1 - " + num(c.QueueLatencyObjectiveTarget) + ")"
	burn := func(long, short time.Duration, factor float64) string {
		th := num(factor) + " * " + budget
		return c.latencyRatio(long) + "{" + c.Selector + "} > " + th + "\nand\n" +
			c.latencyRatio(short) + "{" + c.Selector + "} > " + th
	}
	objective := "its oldest ready message older than " + promDuration(c.QueueLatencyObjectiveAge)
	return []RuleGroup{
		{Name: "dramatiq-delayed", Alerts: []Alert{
			{
				Name: "DramatiqDelayedMessagesUnclaimed", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr:        c.sel("dramatiq_queue_delayed_unclaimed_oldest_seconds") + " > " + secs(c.DelayedUnclaimedAge),
				For:         c.DelayedUnclaimedFor,
				Summary:     "Delayed Dramatiq messages wait for a worker to claim them.",
				Description: "The oldest delayed message of queue {{ $labels.queue }} on {{ $labels.instance }} has waited {{ $value | humanizeDuration }} in the delay queue unclaimed; no live worker consumes it, so its delayed messages and retries will not run when due.",
			},
			{
				Name: "DramatiqDelayedMessagesOverdue", Broker: BrokerRedis, Class: classWorkload, Severity: "warning",
				Expr:        c.sel("dramatiq_queue_delayed_overdue_messages") + " > 0",
				For:         c.DelayedOverdueFor,
				Summary:     "Delayed Dramatiq messages are held past their due time.",
				Description: count + " delayed messages of queue {{ $labels.queue }} on {{ $labels.instance }} have been held by a worker past their eta for " + f(c.DelayedOverdueFor) + "; their holder is hung or dead.",
			},
		}},
		{Name: "dramatiq-latency-objective", Alerts: []Alert{
			{
				Name: "DramatiqQueueLatencyBudgetBurnFast", Class: classWorkload, Severity: "critical",
				Expr:        burn(time.Hour, 5*time.Minute, c.QueueLatencyBurnFast),
				For:         2 * time.Minute,
				Summary:     "A Dramatiq queue burns its latency error budget fast.",
				Description: "Queue {{ $labels.queue }} of job {{ $labels.job }} has had " + objective + " over " + num(c.QueueLatencyBurnFast) + " times as often as its objective of " + num(c.QueueLatencyObjectiveTarget) + " allows, over the last hour and the last 5 minutes; at that rate a 30-day error budget lasts about two days.",
			},
			{
				Name: "DramatiqQueueLatencyBudgetBurnSlow", Class: classWorkload, Severity: "warning",
				Expr:        burn(6*time.Hour, 30*time.Minute, c.QueueLatencyBurnSlow),
				For:         15 * time.Minute,
				Summary:     "A Dramatiq queue burns its latency error budget.",
				Description: "Queue {{ $labels.queue }} of job {{ $labels.job }} has had " + objective + " over " + num(c.QueueLatencyBurnSlow) + " times as often as its objective of " + num(c.QueueLatencyObjectiveTarget) + " allows, over the last 6 hours and the last 30 minutes; at that rate a 30-day error budget lasts about five days.",
			},
		}},
	}
}

// stuckRow is the Queue dashboard's row for delayed work that does not come
// back and for the latency objective; s selects the dashboard's queues.
func stuckRow(c Config, s string) row {
	return row{Title: "Stuck work and the latency objective", Panels: []panel{
		ts("Delayed messages waiting unclaimed", "s", "How long the oldest delayed message of the delay list has waited for a worker to claim it. A live worker claims them within a second; DramatiqDelayedMessagesUnclaimed fires above the threshold."+redisOnly, 8,
			target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_delayed_unclaimed_oldest_seconds{%s})", s), Legend: "{{queue}}"}),
		ts("Delayed messages overdue", "short", "Delayed messages held by a worker more than a minute past their eta: the holder is hung or dead (DramatiqDelayedMessagesOverdue)."+redisOnly, 8,
			target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_delayed_overdue_messages{%s})", s), Legend: "{{queue}}"}),
		ts("Oldest message age against the latency objective", "none", "The oldest ready message's age divided by the latency objective's age: above 1 the queue is outside its objective, and each such minute spends error budget. The burn-rate alerts fire when that happens more than 14.4 (1h and 5m) or 6 (6h and 30m) times as often as the objective allows; the recorded ratios are queue:dramatiq_queue_latency_objective_violation:ratio_avg*. Needs the oldest-message age."+redisOnly, 8,
			target{Expr: fmt.Sprintf("max by (queue) (dramatiq_queue_oldest_message_age_seconds{%s}) / %s", s, secs(c.QueueLatencyObjectiveAge)), Legend: "{{queue}}"}),
	}}
}
