package redis

import (
	"context"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The Reader is one of the model's readers; this file is the only place
// where the Redis reader's own types turn into the model's.
var _ broker.Reader = (*Reader)(nil)

// Kind is broker.Redis.
func (r *Reader) Kind() broker.Kind { return broker.Redis }

// Discovery is the background discovery's progress, nil when the reader
// reads its configured queues only.
func (r *Reader) Discovery() *broker.DiscoveryStatus {
	if !r.DiscoveryEnabled() {
		return nil
	}
	d := r.DiscoveryStatus()
	return &broker.DiscoveryStatus{
		Passes: d.Passes, Started: d.Started, Completed: d.Completed, Duration: d.Duration,
		BrokerTime: d.RedisTime, Keys: d.Keys, Keyspace: d.Keyspace, Interval: d.Interval,
	}
}

// ReadSnapshot reads the broker (Snapshot) and, when asked, the recent
// dead letters of the queues that have any, into the model.
func (r *Reader) ReadSnapshot(ctx context.Context, o broker.ReadOptions) (*broker.Snapshot, error) {
	snap, err := r.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := ToModel(snap)
	if o.RecentDeadLetters {
		var withDead []string
		for _, q := range snap.Queues {
			if q.DeadLetter > 0 {
				withDead = append(withDead, q.Name)
			}
		}
		if len(withDead) > 0 {
			dl, err := r.RecentDeadLetters(ctx, withDead, DeadLetterOptions{WithArgs: o.DeadLetterArgs})
			out.RecentDeadLettersErr = err
			if dl != nil {
				out.RecentDeadLetters = make(map[string][]broker.DeadLetter, len(dl))
				for q, list := range dl {
					out.RecentDeadLetters[q] = DeadLettersToModel(list)
				}
			}
		}
	}
	return out, nil
}

// ToModel converts a Redis snapshot. Every number Redis gives is present.
func ToModel(s *Snapshot) *broker.Snapshot {
	out := &broker.Snapshot{
		Broker:        broker.Redis,
		QueuesDropped: s.QueuesDropped,
		Queues:        make([]broker.Queue, len(s.Queues)),
		Redis: &broker.RedisState{
			MemoryUsedBytes: s.MemoryUsedBytes, ConnectedClients: s.ConnectedClients,
			ProcessesAlive: s.ProcessesAlive, ProcessesStale: s.ProcessesStale,
			ActorSeries: s.DeadLetterActorSeries, MaxActorSeries: MaxActorSeries,
			AckSetsTracked: s.AckSetsTracked, AckSetsUntracked: s.AckSetsUntracked, AckProbes: s.AckProbes,
			HeldUntracked: s.HeldUntracked,
		},
	}
	if b := s.Backlog; b != nil {
		mb := &broker.BacklogByActor{Series: b.Series, SampledIDs: b.SampledIDs, BodiesRead: b.BodiesRead, QueuesSkipped: b.QueuesSkipped,
			Actors: make([]broker.ActorBacklog, len(b.Actors))}
		for i, a := range b.Actors {
			mb.Actors[i] = broker.ActorBacklog{Queue: a.Queue, Actor: a.Actor, Messages: a.Messages, Sampled: a.Sampled}
		}
		out.Redis.Backlog = mb
	}
	for _, k := range AnomalyKinds {
		out.Redis.Anomalies = append(out.Redis.Anomalies, broker.Anomaly{Kind: k, N: s.Anomalies[k]})
	}
	if len(s.DeadLetteredByActor) > 0 {
		out.Redis.DeadLetteredByActor = make([]broker.ActorDeadLetters, len(s.DeadLetteredByActor))
		for i, a := range s.DeadLetteredByActor {
			out.Redis.DeadLetteredByActor[i] = broker.ActorDeadLetters{Queue: a.Queue, Actor: a.Actor, Count: a.Count}
		}
	}
	for i, q := range s.Queues {
		out.Queues[i] = broker.Queue{
			Name:  q.Name,
			Ready: broker.Known(q.Ready), InFlight: broker.Known(q.InFlight),
			Delayed: broker.Known(q.Delayed), DeadLetter: broker.Known(q.DeadLetter),
			Orphaned:       broker.Known(q.Orphaned),
			DeadLettered:   broker.Known(int64(min(q.DeadLettered, 1<<62))),
			DeadLetterLast: q.DeadLetterLast,
			OldestAge:      q.OldestAge, OldestAgeKnown: q.OldestAgeKnown,
			DelayedUnclaimedAge: q.DelayedUnclaimedAge, DelayedUnclaimedAgeKnown: q.DelayedUnclaimedAgeKnown,
			LongestHeld: q.LongestHeld, LongestHeldLowerBound: q.LongestHeldLowerBound,
		}
		if q.DelayedOverdueKnown {
			out.Queues[i].DelayedOverdue = broker.Known(q.DelayedOverdue)
		}
	}
	return out
}

// DeadLettersToModel converts recent dead letters.
func DeadLettersToModel(list []DeadLetter) []broker.DeadLetter {
	out := make([]broker.DeadLetter, len(list))
	for i, d := range list {
		out[i] = broker.DeadLetter{
			MessageID: d.MessageID, Actor: d.Actor, DeadLetteredAt: d.DeadLetteredAt, Retries: d.Retries,
			TracebackLast: d.TracebackLast, Args: d.Args, Kwargs: d.Kwargs, Undecodable: d.Undecodable, Oversize: d.Oversize,
		}
	}
	return out
}
