package mixin

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
			// difference is clamped at 0.
			Record: "queue:dramatiq_queue_workload_messages:max",
			Expr: "max without (" + haLabels + ") (\n  " +
				c.sel("dramatiq_queue_ready_messages") + "\n  +\n  clamp_min(\n    " +
				c.sel("dramatiq_queue_inflight_messages") + "\n    -\n    " +
				c.sel("dramatiq_queue_orphaned_messages") + ",\n    0\n  )\n)",
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
