// Package broker is the broker-neutral model of a Dramatiq broker's state:
// what one read of the broker saw, whichever broker it was. Two readers
// fill it, each in its own package and each the only place that knows its
// broker's layout:
//
//   - broker/redis reads Dramatiq's Redis broker (docs/dramatiq-redis-layout.md);
//   - broker/rabbitmq reads RabbitMQ's management HTTP API
//     (docs/dramatiq-rabbitmq-layout.md).
//
// The collectors, the status model (page, API, `check`), the history and
// /probe consume this package only; no go-redis or RabbitMQ API type
// crosses it. docs/architecture.md draws the data flow.
//
// A number a broker cannot give is absent (Count.OK false, a nil part),
// never zero: the projections leave its series out and the page says it is
// not available.
package broker

import (
	"context"
	"encoding/json"
	"time"
)

// Kind names a broker, as --broker spells it.
type Kind string

// The brokers the exporter reads.
const (
	Redis    Kind = "redis"
	RabbitMQ Kind = "rabbitmq"
)

// Kinds lists the brokers, in --broker's help order.
var Kinds = []Kind{Redis, RabbitMQ}

// Count is a number the broker may or may not be able to give. OK false
// means absent: the series is left out, never reported as zero.
type Count struct {
	N  int64
	OK bool
}

// Known is a present count.
func Known(n int64) Count { return Count{N: n, OK: true} }

// Reader is what both readers offer the rest of the exporter. It is shared
// by every scrape and safe for concurrent use.
type Reader interface {
	// Kind is the broker read.
	Kind() Kind
	// ReadSnapshot reads the broker within ctx. An error means the broker
	// did not answer (or answered something unusable): no snapshot, never
	// zeros.
	ReadSnapshot(ctx context.Context, o ReadOptions) (*Snapshot, error)
	// Discovery is the background queue discovery's progress; nil when the
	// reader does not discover (RabbitMQ lists its queues in each read).
	Discovery() *DiscoveryStatus
}

// ReadOptions say what a read must include beyond what the metrics need.
type ReadOptions struct {
	// RecentDeadLetters reads the newest dead letters of every queue that
	// has any, for the API and the page (Redis only: RabbitMQ's bodies are
	// readable only by consuming).
	RecentDeadLetters bool
	// DeadLetterArgs includes their args and kwargs (user data).
	DeadLetterArgs bool
}

// Snapshot is one read of a broker. Exactly one of Redis and RabbitMQ is
// set, per Broker.
type Snapshot struct {
	Broker Kind
	// Queues are the Dramatiq queues reported, by canonical name.
	Queues []Queue
	// QueuesDropped counts queues found but not reported (--dramatiq.max-queues).
	QueuesDropped int

	// RecentDeadLetters holds the newest dead letters of each queue that
	// has any, when asked for and readable; RecentDeadLettersErr says why
	// not otherwise. Their failure does not fail the read.
	RecentDeadLetters    map[string][]DeadLetter
	RecentDeadLettersErr error

	Redis    *RedisState
	RabbitMQ *RabbitMQState
}

// Queue is one Dramatiq queue. The first four numbers mean the same on
// both brokers (docs/architecture.md); the rest is what one broker can
// tell and the other cannot, absent there.
type Queue struct {
	Name string
	// Ready: waiting for a worker.
	Ready Count
	// InFlight: delivered to a worker and not acked, running or prefetched.
	InFlight Count
	// Delayed: delayed messages and retries in backoff, held by a worker
	// until their eta or not.
	Delayed Count
	// DeadLetter: dead-lettered messages kept by the broker.
	DeadLetter Count

	// Redis only.
	//
	// Orphaned: messages held by processes whose heartbeat stopped.
	Orphaned Count
	// DeadLettered counts messages dead-lettered since the reader first
	// read the queue.
	DeadLettered Count
	// DeadLetterLast is when the newest message was dead-lettered; zero
	// when unknown.
	DeadLetterLast time.Time
	// OldestAge is the age of the head of the ready queue, when known.
	OldestAge      time.Duration
	OldestAgeKnown bool
	// DelayedUnclaimedAge is how long the head of the delay queue has
	// waited for a worker to claim it; 0 when it is empty.
	DelayedUnclaimedAge      time.Duration
	DelayedUnclaimedAgeKnown bool
	// DelayedOverdue counts delayed messages a worker holds more than
	// DelayedOverdueGrace past their eta.
	DelayedOverdue Count
	// LongestHeld is how long the message a live worker has held longest
	// has been held, as far as the reader saw (since the first read that
	// found it); LongestHeldLowerBound: it was already held then, so it
	// has been held longer.
	LongestHeld           time.Duration
	LongestHeldLowerBound bool

	// RabbitMQ only.
	//
	// DelayedHeld is the part of Delayed that workers hold (q.DQ unacked).
	DelayedHeld Count
	// Consumers of q (worker processes serving it), DelayConsumers of q.DQ.
	Consumers, DelayConsumers Count
	// Redeliveries and DelayRedeliveries count redeliveries of q and q.DQ
	// since the queue process started (counters).
	Redeliveries, DelayRedeliveries Count
	// Members are the broker's queues behind this one that exist.
	Members []Member
	// LayoutProblems lists how the broker's queues differ from what
	// Dramatiq declares, in short fixed sentences (a bounded list);
	// LayoutProblemCount counts them all. Nil and 0 when they match or the
	// broker has no such notion.
	LayoutProblems     []string
	LayoutProblemCount int
}

// Member roles.
const (
	MemberMain  = "main"
	MemberDelay = "delay"
	MemberDead  = "dead"
)

// Member is one broker queue behind a Dramatiq queue (RabbitMQ: q, q.DQ,
// q.XQ).
type Member struct {
	Role string // MemberMain, MemberDelay or MemberDead
	// Type is the broker's queue type ("classic", "quorum", "stream").
	Type string
	// State is the broker's queue state ("running", ...).
	State string
}

// RedisState is what only a Redis read gives.
type RedisState struct {
	// MemoryUsedBytes and ConnectedClients are NaN when INFO is refused.
	MemoryUsedBytes  float64
	ConnectedClients float64
	// ProcessesAlive and ProcessesStale count heartbeats.
	ProcessesAlive, ProcessesStale int
	// Anomalies are the odd data this read met, every kind, in a stable
	// order.
	Anomalies []Anomaly
	// DeadLetteredByActor splits DeadLettered per actor, sorted by queue
	// and actor. ActorSeries is how many pairs count towards
	// MaxActorSeries.
	DeadLetteredByActor []ActorDeadLetters
	ActorSeries         int
	MaxActorSeries      int
	// AckSetsTracked is how many ack sets the read counted one by one,
	// AckSetsUntracked how many it found but could not remember under its
	// cap, AckProbes how many unknown (worker, queue) pairs it probed.
	AckSetsTracked, AckSetsUntracked, AckProbes int
	// HeldUntracked counts ids held by live workers whose holding time is
	// not tracked: Queue.LongestHeld may understate them.
	HeldUntracked int
	// Backlog is the ready messages by actor, when the reader was asked to
	// count them (--dramatiq.backlog-by-actor); nil otherwise.
	Backlog *BacklogByActor
}

// BacklogByActor is one read's ready messages by actor.
type BacklogByActor struct {
	// Actors are sorted by queue, then largest first.
	Actors []ActorBacklog
	// Series is how many pairs count towards MaxActorSeries.
	Series int
	// SampledIDs is how many ids the read used (exact or sampled), and
	// BodiesRead how many bodies it fetched.
	SampledIDs, BodiesRead int
	// QueuesSkipped counts queues with ready messages left out.
	QueuesSkipped int
}

// ActorBacklog is one actor's ready messages in one queue: exact, or an
// estimate from a sample when Sampled.
type ActorBacklog struct {
	Queue, Actor string
	Messages     float64
	Sampled      bool
}

// Bounds of the Redis reader's per-actor series, here so that the HELP
// texts can name them without importing the reader.
const (
	// MaxActorSeries caps the {queue, actor} pairs of each per-actor
	// family; the rest go to ActorOther.
	MaxActorSeries = 500
	// BacklogSampleIDs is how many ids a sampled backlog estimate reads.
	BacklogSampleIDs = 1000
)

// Anomaly is one kind of odd data and how often a read met it.
type Anomaly struct {
	Kind string
	N    int
}

// Actor labels that are not actors (the Redis reader's dead-letter counters).
const (
	ActorUnknown = "(unknown)"
	ActorOther   = "(other)"
)

// ActorDeadLetters is one actor's dead letters in one queue.
type ActorDeadLetters struct {
	Queue, Actor string
	Count        uint64
}

// RabbitMQState is what only a RabbitMQ read gives.
type RabbitMQState struct {
	Vhost string
	// BrokerQueues is how many queues the vhost listed; Ignored how many
	// of them belong to no Dramatiq queue; Anomalies how many were skipped
	// because their name cannot be a label.
	BrokerQueues, Ignored, Anomalies int
	// ResponseBytes is the size of the answer read.
	ResponseBytes int64
	// ListingAge is how old the management API listing was that queue
	// types, arguments and redeliveries came from: 0 when this read listed
	// (the counts are always this read's). The management API gives no age
	// for its own statistics, so none is reported.
	ListingAge time.Duration
}

// DeadLetter is one recently dead-lettered message.
type DeadLetter struct {
	MessageID      string
	Actor          string
	DeadLetteredAt time.Time
	// Retries is nil when unknown.
	Retries       *int
	TracebackLast string
	// Args and Kwargs are user data: filled only when asked for.
	Args, Kwargs json.RawMessage
	Undecodable  bool
	Oversize     bool
}

// DiscoveryStatus describes the latest completed background discovery
// pass (Redis: SCANs of the namespace).
type DiscoveryStatus struct {
	Passes             uint64
	Started, Completed time.Time
	Duration           time.Duration
	// BrokerTime estimates the time the broker spent on the pass.
	BrokerTime time.Duration
	Keys       int
	// Keyspace is the keys the pass walked; -1 when unknown.
	Keyspace int64
	Interval time.Duration
}

// MaxConsumers is the largest consumer count of a queue's main member:
// on RabbitMQ each worker process holds one consumer on every queue it
// serves, so this is how many processes serve the best-served queue, the
// stand-in for alive processes where there are no heartbeats. ok is false
// when no queue gives the number.
func (s *Snapshot) MaxConsumers() (n int64, ok bool) {
	for _, q := range s.Queues {
		if q.Consumers.OK {
			n = max(n, q.Consumers.N)
			ok = true
		}
	}
	return n, ok
}

// Bounds of the Redis reader's delayed-work judgement (broker/redis/delayed.go).
const (
	// DelayedOverdueGrace is how long past its eta a held delayed message
	// may stay in its ack set before it counts as overdue. A live worker
	// promotes it within about a second (worker_timeout); the rest is room
	// for the clock skew between the producer that set the eta and the
	// exporter.
	DelayedOverdueGrace = time.Minute
	// MaxHeldDelayedPerRead caps the held delayed ids one read lists
	// (SMEMBERS) and so the ids a Reader remembers. Dramatiq's delay
	// prefetch is threads × 1000 per process, so 100,000 covers a dozen
	// 8-thread processes holding full prefetches. A queue whose sets do not
	// fit has its overdue count absent.
	MaxHeldDelayedPerRead = 100_000
)
