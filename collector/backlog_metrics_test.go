package collector_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The backlog by actor is exported with its estimate label, passes a
// pedantic registry and the linter, and is absent while the option is off.
func TestBacklogByActorMetrics(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	for _, a := range []string{"a", "a", "b", "(unknown)"} {
		id := testserver.UUID()
		r.Admin.HSet(ctx, "dramatiq:q.msgs", id, testserver.Message{Queue: "q", Actor: a, ID: id, Created: time.Now()}.JSON(id))
		r.Admin.RPush(ctx, "dramatiq:q", id)
	}
	off := newFixture(t, r, r.URL(), broker.Options{Queues: []string{"q"}, SkipDiscovery: true})
	off.compare("", "dramatiq_queue_ready_messages_by_actor", "dramatiq_exporter_backlog_actor_series")

	on := newFixture(t, r, r.URL(), broker.Options{Queues: []string{"q"}, SkipDiscovery: true, BacklogByActor: true})
	reg, cancel := on.registry(10 * time.Second)
	defer cancel()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP dramatiq_exporter_backlog_actor_series {queue, actor} pairs of dramatiq_queue_ready_messages_by_actor, not counting actor="(unknown)" and "(other)"; at most 500, the rest going to actor="(other)".
# TYPE dramatiq_exporter_backlog_actor_series gauge
dramatiq_exporter_backlog_actor_series 3
`), "dramatiq_exporter_backlog_actor_series"); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg, "dramatiq_queue_ready_messages_by_actor")
	if err != nil || n != 3 {
		t.Fatalf("by-actor series: %d, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "dramatiq_queue_ready_messages_by_actor" {
			continue
		}
		for _, m := range mf.Metric {
			l := map[string]string{}
			for _, p := range m.Label {
				l[p.GetName()] = p.GetValue()
			}
			if l["estimate"] != "exact" {
				t.Errorf("estimate=%q for 4 messages", l["estimate"])
			}
			got[l["actor"]] = m.GetGauge().GetValue()
		}
	}
	// A producer's actor named "(unknown)" is escaped, never merged.
	if got["a"] != 2 || got["b"] != 1 || got["(unknown)_"] != 1 {
		t.Errorf("got %v", got)
	}
	if problems, err := testutil.GatherAndLint(reg, "dramatiq_queue_ready_messages_by_actor"); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
