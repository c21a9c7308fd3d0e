package status_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// samples projects st into metrics, keyed by name and label values.
func samples(t *testing.T, exp *collector.Exporter, st *collector.State) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1024)
	exp.Collect(st, ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		// A Desc exposes its name only in its String: Desc{fqName: "…", …}.
		name := strings.TrimPrefix(m.Desc().String(), `Desc{fqName: "`)
		name = name[:strings.IndexByte(name, '"')]
		for _, l := range pb.GetLabel() {
			name += "|" + l.GetValue()
		}
		out[name] = pb.GetGauge().GetValue() + pb.GetCounter().GetValue()
	}
	return out
}

// The status and the metrics of one State agree on every number they
// share, for every queue: the guarantee behind "the views never disagree".
func TestStatusAndMetricsOfOneStateAgree(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	alive, dead := testserver.UUID(), testserver.UUID()
	b.Enqueue("default", 7, now.Add(-90*time.Second))
	b.Fetch(alive, "default", 2, now)
	b.Fetch(dead, "default", 1, now)
	b.Heartbeat(alive, now)
	b.Heartbeat(dead, now.Add(-10*time.Minute))
	b.Enqueue("default.DQ", 3, now)
	b.DeadLetter("default", now.Add(-time.Hour), nil)
	b.DeadLetter("default", now.Add(-time.Minute), nil)
	b.Enqueue("emails", 1, now.Add(-5*time.Second))

	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq"})
	if err := reader.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "test", Namespace: "dramatiq"},
		collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := exp.Read(ctx, collector.ReadOptions{RecentDeadLetters: true})
	m := samples(t, exp, st)
	s := status.From(st, status.Options{Thresholds: status.DefaultThresholds(), RecentDeadLetters: true})

	check := func(key string, want float64) {
		t.Helper()
		got, ok := m[key]
		if !ok {
			t.Errorf("/metrics has no %s (status says %v)", key, want)
		} else if got != want {
			t.Errorf("%s: metrics %v, status %v", key, got, want)
		}
	}
	if len(s.Queues) != 2 {
		t.Fatalf("status queues = %v", s.Queues)
	}
	for _, q := range s.Queues {
		check("dramatiq_queue_ready_messages|"+q.Name, float64(q.Ready))
		check("dramatiq_queue_inflight_messages|"+q.Name, float64(q.InFlight))
		check("dramatiq_queue_delayed_messages|"+q.Name, float64(q.Delayed))
		check("dramatiq_queue_dead_letter_messages|"+q.Name, float64(q.DeadLetter))
		check("dramatiq_queue_orphaned_messages|"+q.Name, float64(q.Orphaned))
		if q.OldestMessageAgeSeconds != nil {
			check("dramatiq_queue_oldest_message_age_seconds|"+q.Name, *q.OldestMessageAgeSeconds)
		} else if _, ok := m["dramatiq_queue_oldest_message_age_seconds|"+q.Name]; ok {
			t.Errorf("%s: metrics know the oldest age, status does not", q.Name)
		}
		if q.DeadLetterLast != nil {
			check("dramatiq_queue_dead_letter_last_timestamp_seconds|"+q.Name, float64(q.DeadLetterLast.UnixMilli())/1000)
		} else if _, ok := m["dramatiq_queue_dead_letter_last_timestamp_seconds|"+q.Name]; ok {
			t.Errorf("%s: metrics know the last dead letter, status does not", q.Name)
		}
	}
	check("dramatiq_processes|alive", float64(s.ProcessesAlive))
	check("dramatiq_processes|stale", float64(s.ProcessesStale))
	check("dramatiq_exporter_queues_dropped", float64(s.QueuesDropped))
	up := 0.0
	if s.Components.Redis.Up {
		up = 1
	}
	check("dramatiq_redis_up", up)
	for _, c := range s.Collectors {
		ok := 0.0
		if c.Success {
			ok = 1
		}
		check("dramatiq_exporter_collector_success|"+c.Name, ok)
		check("dramatiq_exporter_collector_duration_seconds|"+c.Name, c.DurationSeconds)
	}
	// And the numbers are the broker's, not just equal to each other.
	for _, q := range s.Queues {
		if q.Name == "default" && (q.Ready != 4 || q.InFlight != 3 || q.Delayed != 3 || q.DeadLetter != 2 || q.Orphaned != 1) {
			t.Errorf("default = %+v", q)
		}
		if q.Name == "default" && len(q.RecentDeadLetters) != 2 {
			t.Errorf("recent dead letters = %v", q.RecentDeadLetters)
		}
	}
	if s.ProcessesAlive != 1 || s.ProcessesStale != 1 {
		t.Errorf("processes = %d alive, %d stale", s.ProcessesAlive, s.ProcessesStale)
	}
}
