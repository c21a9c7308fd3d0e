package redis

import (
	"math"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The model spells the actor labels itself (it imports no reader); they
// must stay the Redis reader's.
func TestModelActorLabels(t *testing.T) {
	if broker.ActorUnknown != ActorUnknown || broker.ActorOther != ActorOther {
		t.Fatalf("model %q/%q, reader %q/%q", broker.ActorUnknown, broker.ActorOther, ActorUnknown, ActorOther)
	}
}

// Every Redis number is present in the model, zeros included, and the
// anomalies keep every kind in order.
func TestToModel(t *testing.T) {
	an := newAnomalies()
	an.add(AnomalyWrongType, 2)
	last := time.UnixMilli(1_700_000_000_000)
	m := ToModel(&Snapshot{
		MemoryUsedBytes: math.NaN(), ConnectedClients: 3, ProcessesAlive: 2, ProcessesStale: 1, QueuesDropped: 4,
		Anomalies: an, DeadLetterActorSeries: 1,
		DeadLetteredByActor: []ActorDeadLetters{{Queue: "q", Actor: "a", Count: 5}},
		Queues: []QueueStats{{Name: "q", Ready: 1, InFlight: 0, Delayed: 3, DeadLetter: 4, Orphaned: 0,
			DeadLettered: 5, DeadLetterLast: last, OldestAge: time.Second, OldestAgeKnown: true}},
	})
	q := m.Queues[0]
	if m.Broker != broker.Redis || m.RabbitMQ != nil || m.QueuesDropped != 4 {
		t.Fatalf("%+v", m)
	}
	want := []broker.Count{broker.Known(1), broker.Known(0), broker.Known(3), broker.Known(4), broker.Known(0), broker.Known(5)}
	got := []broker.Count{q.Ready, q.InFlight, q.Delayed, q.DeadLetter, q.Orphaned, q.DeadLettered}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("count %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if q.Consumers.OK || q.DelayedHeld.OK || q.Redeliveries.OK || len(q.Members) != 0 {
		t.Errorf("RabbitMQ-only numbers present on Redis: %+v", q)
	}
	if !q.DeadLetterLast.Equal(last) || !q.OldestAgeKnown || q.OldestAge != time.Second {
		t.Errorf("%+v", q)
	}
	r := m.Redis
	if !math.IsNaN(r.MemoryUsedBytes) || r.ConnectedClients != 3 || r.ProcessesAlive != 2 || r.ProcessesStale != 1 ||
		r.ActorSeries != 1 || r.MaxActorSeries != MaxActorSeries || len(r.DeadLetteredByActor) != 1 {
		t.Errorf("%+v", r)
	}
	if len(r.Anomalies) != len(AnomalyKinds) {
		t.Fatalf("anomalies %+v", r.Anomalies)
	}
	for i, a := range r.Anomalies {
		if a.Kind != AnomalyKinds[i] || (a.Kind == AnomalyWrongType) != (a.N == 2) {
			t.Errorf("anomaly %d: %+v", i, a)
		}
	}
}
