package status_test

import (
	"context"
	"slices"
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

// What is stuck reaches the status as the metrics say it: how long a live
// worker has held its oldest message, how long the oldest delayed message
// has waited unclaimed, and the delayed messages held past their eta,
// which are a problem of the queue. On RabbitMQ the same fields are null
// and listed as unavailable (TestRabbitMQStatus).
func TestStuckWorkInStatus(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	start := time.UnixMilli(time.Now().UnixMilli())
	clock := start
	b := r.NewBroker(t, "dramatiq")
	wid := testserver.UUID()
	b.Enqueue("default", 2, start)
	b.Fetch(wid, "default", 1, start)
	b.Enqueue("default.DQ", 1, start)
	// A delayed message the worker claimed and holds 5 minutes past its eta.
	held := testserver.UUID()
	r.Admin.HSet(ctx, "dramatiq:default.DQ.msgs", held, testserver.Body("default.DQ", held, start.Add(-time.Hour), map[string]any{"eta": start.Add(-5 * time.Minute).UnixMilli()}))
	r.Admin.SAdd(ctx, "dramatiq:__acks__."+wid+".default.DQ", held)

	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq", Now: func() time.Time { return clock }})
	if err := reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "test", Namespace: "dramatiq"}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	read := func() (*status.Status, map[string]float64) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st := exp.Read(rctx, collector.ReadOptions{})
		return status.From(st, status.Options{Thresholds: status.DefaultThresholds()}), samples(t, exp, st)
	}
	read()
	clock = start.Add(2 * time.Minute)
	b.Heartbeat(wid, clock)
	s, m := read()

	var q *status.QueueStatus
	for i := range s.Queues {
		if s.Queues[i].Name == "default" {
			q = &s.Queues[i]
		}
	}
	if q == nil || q.LongestHeldSeconds == nil || q.DelayedUnclaimedOldestSeconds == nil || q.DelayedOverdue == nil {
		t.Fatalf("default = %+v", q)
	}
	for key, got := range map[string]float64{
		"dramatiq_queue_longest_held_message_seconds":     *q.LongestHeldSeconds,
		"dramatiq_queue_delayed_unclaimed_oldest_seconds": *q.DelayedUnclaimedOldestSeconds,
		"dramatiq_queue_delayed_overdue_messages":         float64(*q.DelayedOverdue),
	} {
		if want, ok := m[key+"|default"]; !ok || want != got {
			t.Errorf("%s: metrics %v (%v), status %v", key, want, ok, got)
		}
	}
	// Held since before the exporter's first read, so a lower bound.
	if *q.LongestHeldSeconds != 120 || !q.LongestHeldLowerBound || m["dramatiq_queue_longest_held_message_lower_bound|default"] != 1 {
		t.Errorf("held %v lower bound %v", *q.LongestHeldSeconds, q.LongestHeldLowerBound)
	}
	if *q.DelayedUnclaimedOldestSeconds != 120 || *q.DelayedOverdue != 1 {
		t.Errorf("unclaimed %v, overdue %v", *q.DelayedUnclaimedOldestSeconds, *q.DelayedOverdue)
	}
	if !slices.Contains(q.Problems, status.ProblemDelayedOverdue) {
		t.Errorf("problems %v lack %s", q.Problems, status.ProblemDelayedOverdue)
	}
	if s.Status != status.StatusHealthy {
		t.Errorf("a problem is not a failed check: status %s, failed %v", s.Status, s.Failed)
	}
}
