package status_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

func rabbitState(snap *broker.Snapshot, err error) *collector.State {
	return &collector.State{Time: time.Unix(1_800_000_000, 0), Collectors: []string{"broker"},
		Outcomes: []collector.Outcome{{Name: "broker", Success: err == nil}},
		Broker:   &collector.BrokerState{Kind: broker.RabbitMQ, Snapshot: snap, Err: err}}
}

// On RabbitMQ the processes are the consumers of the best-served queue,
// the numbers RabbitMQ cannot give are listed as unavailable (and judged
// by no threshold), and layout problems and idle backlogs are problems.
func TestRabbitMQStatus(t *testing.T) {
	snap := &broker.Snapshot{Broker: broker.RabbitMQ, RabbitMQ: &broker.RabbitMQState{Vhost: "/"}, Queues: []broker.Queue{
		{Name: "emails", Ready: broker.Known(7), InFlight: broker.Known(1), Delayed: broker.Known(2), DelayedHeld: broker.Known(2),
			DeadLetter: broker.Known(0), Consumers: broker.Known(3), DelayConsumers: broker.Known(3)},
		{Name: "reports", Ready: broker.Known(4), InFlight: broker.Known(0), Delayed: broker.Known(0), DeadLetter: broker.Known(1),
			Consumers: broker.Known(0), LayoutProblems: []string{"reports.XQ is missing"}},
	}}
	s := status.From(rabbitState(snap, nil), status.Options{Thresholds: status.Thresholds{MinProcesses: 4, MaxReady: map[string]int64{"emails": 5}}})
	if s.Broker != "rabbitmq" || s.Components.RabbitMQ == nil || !s.Components.RabbitMQ.Up || s.Components.Redis.Status != status.ComponentNotConfigured {
		t.Fatalf("components %+v", s.Components)
	}
	p := s.Components.Processes
	if p.Measure != status.MeasureConsumers || p.Alive != 3 || p.Status != status.ComponentFailing {
		t.Errorf("processes %+v", p)
	}
	var checks []string
	for _, f := range s.Failed {
		checks = append(checks, f.Check+":"+f.Queue)
	}
	if want := []string{"min_processes:", "max_ready:emails"}; !reflect.DeepEqual(checks, want) {
		t.Errorf("failed %v, want %v", checks, want)
	}
	if !strings.Contains(s.FailureSummary(), "at most 3 worker processes consuming a queue, at least 4 required") {
		t.Errorf("summary %q", s.FailureSummary())
	}
	em, rep := s.Queues[0], s.Queues[1]
	if *em.Consumers != 3 || *em.DelayedHeld != 2 || em.Unavailable[0] != "orphaned" {
		t.Errorf("emails %+v", em)
	}
	// What is stuck is Redis's: null here, and said to be unavailable.
	if em.LongestHeldSeconds != nil || em.DelayedUnclaimedOldestSeconds != nil || em.DelayedOverdue != nil ||
		!slices.Contains(em.Unavailable, "longest_held_seconds") || !slices.Contains(em.Unavailable, "delayed_overdue") {
		t.Errorf("emails stuck fields %v %v %v, unavailable %v", em.LongestHeldSeconds, em.DelayedUnclaimedOldestSeconds, em.DelayedOverdue, em.Unavailable)
	}
	// No oldest_age_unknown: the age is unavailable, not undecodable.
	if want := []string{"dead_letters", "layout", "no_consumer"}; !reflect.DeepEqual(rep.Problems, want) {
		t.Errorf("reports problems %v, want %v", rep.Problems, want)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"rabbitmq":{"status":"ok","up":true,"vhost":"/"}`) {
		t.Errorf("JSON %s", b)
	}
}

// RabbitMQ down, or a read that never finished: the rabbitmq check fails
// and the processes are unknown.
func TestRabbitMQStatusDown(t *testing.T) {
	for _, st := range []*collector.State{rabbitState(nil, errors.New("401")), {Time: time.Unix(1_800_000_000, 0)}} {
		s := status.From(st, status.Options{Thresholds: status.DefaultThresholds(), Broker: broker.RabbitMQ})
		if s.Status != status.StatusUnhealthy || len(s.Failed) == 0 || s.Failed[0].Check != status.CheckRabbitMQ ||
			s.Components.Processes.Status != status.ComponentUnknown || s.Components.RabbitMQ == nil || s.Components.RabbitMQ.Up {
			t.Errorf("%+v", s)
		}
	}
}
