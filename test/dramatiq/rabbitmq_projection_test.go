package dramatiq_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// A scenario's expectation key -> the /metrics family that carries it on
// RabbitMQ. Keys with no family (dead_ttl, max_priority) are the reader's
// alone.
var rabbitFamilies = map[string]string{
	"ready":           "dramatiq_queue_ready_messages",
	"inflight":        "dramatiq_queue_inflight_messages",
	"delayed":         "dramatiq_queue_delayed_messages",
	"delayed_held":    "dramatiq_queue_delayed_held_messages",
	"dead_letter":     "dramatiq_queue_dead_letter_messages",
	"consumers":       "dramatiq_queue_consumers",
	"delay_consumers": "dramatiq_queue_delay_consumers",
	"problems":        "dramatiq_rabbitmq_queue_layout_problems",
}

// snapshotReader serves one read that already happened, so the collector
// projects exactly what the reader was checked against.
type snapshotReader struct{ s *broker.Snapshot }

func (r snapshotReader) Kind() broker.Kind                  { return broker.RabbitMQ }
func (r snapshotReader) Discovery() *broker.DiscoveryStatus { return nil }
func (r snapshotReader) ReadSnapshot(context.Context, broker.ReadOptions) (*broker.Snapshot, error) {
	return r.s, nil
}

// compareProjection checks the phase's expectations on the exporter's
// output: the read converted into the model and projected by the broker
// collector, as /metrics serves it.
func compareProjection(s *rabbitmq.Snapshot, p phase) []string {
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "test", Namespace: "dramatiq"},
		collector.Sources{Broker: snapshotReader{rabbitmq.ToModel(s)}})
	if err != nil {
		return []string{err.Error()}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp.Bind(context.Background()))
	mfs, err := reg.Gather()
	if err != nil {
		return []string{"gather: " + err.Error()}
	}
	got := map[string]map[string]float64{} // family -> queue -> value
	up := -1.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "dramatiq_rabbitmq_up" {
				up = m.GetGauge().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" {
					if got[mf.GetName()] == nil {
						got[mf.GetName()] = map[string]float64{}
					}
					v := m.GetGauge().GetValue()
					if m.GetCounter() != nil {
						v = m.GetCounter().GetValue()
					}
					got[mf.GetName()][l.GetValue()] = v
				}
			}
		}
	}
	var diffs []string
	if up != 1 {
		diffs = append(diffs, fmt.Sprintf("metrics: dramatiq_rabbitmq_up %v", up))
	}
	for _, absent := range []string{"dramatiq_redis_up", "dramatiq_queue_oldest_message_age_seconds", "dramatiq_queue_orphaned_messages", "dramatiq_processes"} {
		for _, mf := range mfs {
			if mf.GetName() == absent {
				diffs = append(diffs, "metrics: "+absent+" present on RabbitMQ")
			}
		}
	}
	names := make([]string, 0, len(p.Queues))
	for q := range p.Queues {
		names = append(names, q)
	}
	sort.Strings(names)
	for _, name := range names {
		for key, raw := range p.Queues[name] {
			fam, ok := rabbitFamilies[key]
			if !ok {
				continue
			}
			var want float64
			if err := json.Unmarshal(raw, &want); err != nil {
				continue // compareRabbit reports it
			}
			v, ok := got[fam][name]
			if !ok || v != want {
				diffs = append(diffs, fmt.Sprintf("metrics: %s{queue=%q} = %v (present %v), want %v", fam, name, v, ok, want))
			}
		}
	}
	for _, name := range p.AbsentQueues {
		if _, ok := got["dramatiq_queue_ready_messages"][name]; ok {
			diffs = append(diffs, fmt.Sprintf("metrics: queue %s exposed, want absent", name))
		}
	}
	return diffs
}
