package rabbitmq

import (
	"context"

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
		},
	}
	for i, q := range s.Queues {
		m := broker.Queue{
			Name:  q.Name,
			Ready: model(q.Ready), InFlight: model(q.InFlight), Delayed: model(q.Delayed), DeadLetter: model(q.DeadLetters),
			DelayedHeld: model(q.DelayedHeld), Consumers: model(q.Consumers), DelayConsumers: model(q.DelayConsumers),
			Redeliveries: model(q.Redeliveries), DelayRedeliveries: model(q.DelayRedeliveries),
			LayoutProblems: q.Problems,
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
