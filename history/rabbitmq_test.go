package history

import (
	"math"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// A RabbitMQ read: counts present are kept; the oldest age RabbitMQ cannot
// give, and a count it left out, have no value (never 0).
func TestRabbitMQReadHasNoAgeAndNoZeros(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(&collector.State{Time: c.t, Broker: &collector.BrokerState{Kind: broker.RabbitMQ, Snapshot: &broker.Snapshot{
		Broker: broker.RabbitMQ, RabbitMQ: &broker.RabbitMQState{},
		Queues: []broker.Queue{
			{Name: "emails", Ready: broker.Known(7), DeadLetter: broker.Known(2)},
			{Name: "fresh"}, // statistics not collected yet
		}}}})
	r, d, a, read := last(t, h, "emails")
	if r != 7 || d != 2 || !math.IsNaN(float64(a)) || read != ReadOK {
		t.Errorf("emails: ready %d dead %d age %g read %v, want 7 2 NaN ok", r, d, a, read)
	}
	if r, d, a, _ := last(t, h, "fresh"); r != -1 || d != -1 || !math.IsNaN(float64(a)) {
		t.Errorf("fresh: ready %d dead %d age %g, want no values", r, d, a)
	}
}
