package rabbitmq

import (
	"context"
	"fmt"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The Reader is one of the model's readers; this file is the only place
// where the RabbitMQ reader's own types turn into the model's.
var _ broker.Reader = (*Reader)(nil)

// Kind is broker.RabbitMQ.
func (r *Reader) Kind() broker.Kind { return broker.RabbitMQ }

// Discovery is nil: every read lists the vhost's queues.
func (r *Reader) Discovery() *broker.DiscoveryStatus { return nil }

// ReadSnapshot reads the vhost into the model. Recent dead letters are
// never read: their bodies are readable only by consuming.
func (r *Reader) ReadSnapshot(ctx context.Context, _ broker.ReadOptions) (*broker.Snapshot, error) {
	s, err := r.Read(ctx)
	if err != nil {
		return nil, err
	}
	return ToModel(s), nil
}

// ToModel converts a RabbitMQ snapshot. What RabbitMQ cannot answer
// read-only (oldest age, orphans, per-actor dead letters, heartbeats) is
// absent, and the Redis part is nil.
func ToModel(s *Snapshot) *broker.Snapshot {
	out := &broker.Snapshot{
		Broker: broker.RabbitMQ,
		Queues: make([]broker.Queue, len(s.Queues)),
		RabbitMQ: &broker.RabbitMQState{
			Vhost: s.Vhost, BrokerQueues: s.RabbitMQQueues, Ignored: s.Ignored,
			Anomalies: s.Anomalies, ResponseBytes: s.ResponseBytes,
			ListingAge: s.DetailsAge,
		},
	}
	for i, q := range s.Queues {
		m := broker.Queue{
			Name:  q.Name,
			Ready: model(q.Ready), InFlight: model(q.InFlight), Delayed: model(q.Delayed), DeadLetter: model(q.DeadLetters),
			DelayedHeld: model(q.DelayedHeld), Consumers: model(q.Consumers), DelayConsumers: model(q.DelayConsumers),
			Redeliveries: model(q.Redeliveries), DelayRedeliveries: model(q.DelayRedeliveries),
			LayoutProblems: q.Problems, LayoutProblemCount: problemCount(q.Problems),
		}
		for _, x := range []struct {
			role string
			m    Member
		}{{broker.MemberMain, q.Main}, {broker.MemberDelay, q.Delay}, {broker.MemberDead, q.Dead}} {
			if x.m.Exists {
				typ := x.m.Type
				if typ == "" {
					typ = "unknown"
				}
				m.Members = append(m.Members, broker.Member{Role: x.role, Type: typ, State: x.m.State})
			}
		}
		out.Queues[i] = m
	}
	return out
}

func model(c Count) broker.Count { return broker.Count{N: c.N, OK: c.OK} }

// problemCount undoes the list's bound: past 16 sentences, problems ends
// with "and N more".
func problemCount(p []string) int {
	if len(p) == 0 {
		return 0
	}
	var more int
	if _, err := fmt.Sscanf(p[len(p)-1], "and %d more", &more); err == nil && more > 0 {
		return len(p) - 1 + more
	}
	return len(p)
}

// Limit returns the reader with at most max Dramatiq queues reported per
// read (0: no limit), the first by name; the others are counted in
// Snapshot.QueuesDropped (--dramatiq.max-queues bounds the series).
func (r *Reader) Limit(max int) broker.Reader {
	if max <= 0 {
		return r
	}
	return limited{r, max}
}

type limited struct {
	*Reader
	max int
}

func (l limited) ReadSnapshot(ctx context.Context, o broker.ReadOptions) (*broker.Snapshot, error) {
	s, err := l.Reader.ReadSnapshot(ctx, o)
	if err != nil || len(s.Queues) <= l.max {
		return s, err
	}
	s.QueuesDropped = len(s.Queues) - l.max
	s.Queues = s.Queues[:l.max]
	return s, nil
}
