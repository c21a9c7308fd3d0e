// Package rabbitmq reads the state of Dramatiq's RabbitMQ broker from
// RabbitMQ's management HTTP API, read-only, and folds each Dramatiq queue's
// three RabbitMQ queues (q, q.DQ, q.XQ) into one Queue. See
// docs/dramatiq-rabbitmq-layout.md for the layout it relies on.
//
// It only ever sends GET requests. It never declares, consumes, or calls
// POST .../get (which requeues messages and marks them redelivered).
package rabbitmq

import "time"

// Count is a number the broker may or may not be able to give. OK false
// means absent: the series must be left out, never reported as zero.
type Count struct {
	N  int64
	OK bool
}

func count(p *int64) Count {
	if p == nil {
		return Count{}
	}
	return Count{N: *p, OK: true}
}

func (c Count) plus(d Count) Count {
	if !c.OK || !d.OK {
		return Count{}
	}
	return Count{N: c.N + d.N, OK: true}
}

// Snapshot is one read of a vhost.
type Snapshot struct {
	Vhost string
	// Queues are the Dramatiq queues found, sorted by name.
	Queues []Queue
	// RabbitMQQueues is how many queues the vhost listed.
	RabbitMQQueues int
	// Ignored counts RabbitMQ queues that are not part of a Dramatiq queue
	// (see IsDramatiq).
	Ignored int
	// Anomalies counts queues skipped because their name cannot be a
	// label (not valid UTF-8, longer than MaxNameBytes) or was listed
	// twice.
	Anomalies int
	// ResponseBytes is the size of the answers read (after any
	// Content-Encoding was undone).
	ResponseBytes int64
	// DetailsAge, with Options.PrometheusURL, is the age of the listing
	// that types, arguments and redeliveries come from (the counts are
	// this read's); zero without it, when every read lists.
	DetailsAge time.Duration
}

// Queue is one Dramatiq queue, shaped like the broker-neutral model: the
// four backlog numbers with presence, then what only RabbitMQ tells.
//
// RabbitMQ cannot answer, read-only, the age of the oldest message (no
// timestamp property; bodies are readable only by consuming), orphaned
// messages (a closed connection's unacked messages go back to ready, so
// there are none), and dead letters per actor (in the bodies only). Those
// fields are absent here by construction; the model's projections must
// leave their series out.
type Queue struct {
	// Name is the canonical Dramatiq queue name (without .DQ/.XQ).
	Name string

	// Ready is q's messages_ready: waiting for a worker.
	Ready Count
	// InFlight is q's messages_unacknowledged: delivered to a worker and
	// not yet acked, running or prefetched.
	InFlight Count
	// Delayed is q.DQ's messages, ready plus unacknowledged: a worker holds
	// a delayed message unacked in memory until its eta.
	Delayed Count
	// DelayedHeld is the part of Delayed that workers hold (q.DQ
	// messages_unacknowledged).
	DelayedHeld Count
	// DeadLetters is q.XQ's messages.
	DeadLetters Count

	// Consumers is the consumer count of q (one per worker process
	// serving it), DelayConsumers that of q.DQ.
	Consumers, DelayConsumers Count
	// Redeliveries and DelayRedeliveries are message_stats.redeliver of q
	// and q.DQ since the queue process started: deliveries RabbitMQ made
	// again after a consumer went away, or after consumer_timeout closed
	// its channel. Absent when the API gives no message statistics for
	// the queue (none collected yet, or statistics switched off).
	Redeliveries, DelayRedeliveries Count

	// Main, Delay and Dead describe q, q.DQ and q.XQ as RabbitMQ declared
	// them; Exists is false for a member that is missing.
	Main, Delay, Dead Member

	// Problems lists how the three queues differ from what Dramatiq
	// declares (arguments, a missing member), in fixed short sentences
	// with clipped values. Empty when they match.
	Problems []string
}

// Member is one of the three RabbitMQ queues behind a Dramatiq queue.
type Member struct {
	Exists bool
	// Type is "classic", "quorum" or "stream" (as RabbitMQ says; clipped).
	Type string
	// State is RabbitMQ's queue state ("running", ...; clipped).
	State string
	// MaxPriority is x-max-priority, when set.
	MaxPriority Count
	// MessageTTL is x-message-ttl in ms, when set (Dramatiq sets it on
	// q.XQ only: how long dead letters are kept).
	MessageTTL Count
}
