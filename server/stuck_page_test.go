package server

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	brokermodel "github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// The page says what is stuck where it is: a live worker's longest hold
// under In flight, overdue and unclaimed delayed messages under Delayed,
// each only past a minute (a worker claims delayed messages within about a
// second, and most actors run for seconds), and a queue with overdue
// messages ranks with orphaned ones, above a queue with only dead letters.
func TestStatusPageShowsWhatIsStuck(t *testing.T) {
	q := func(name string, held time.Duration, lower bool, unclaimed time.Duration, overdue int64) brokermodel.Queue {
		return brokermodel.Queue{
			Name: name, Ready: brokermodel.Known(1), InFlight: brokermodel.Known(2), Delayed: brokermodel.Known(overdue),
			DeadLetter: brokermodel.Known(0), Orphaned: brokermodel.Known(0), OldestAgeKnown: true,
			LongestHeld: held, LongestHeldLowerBound: lower,
			DelayedUnclaimedAge: unclaimed, DelayedUnclaimedAgeKnown: true, DelayedOverdue: brokermodel.Known(overdue),
		}
	}
	dead := q("dead", 0, false, 0, 0)
	dead.DeadLetter = brokermodel.Known(4)
	snap := &brokermodel.Snapshot{Broker: brokermodel.Redis, Redis: &brokermodel.RedisState{}, Queues: []brokermodel.Queue{
		dead,
		q("hung", 2*time.Hour+5*time.Minute, true, 0, 0),
		q("busy", 59*time.Second, false, 59*time.Second, 0),
		q("late", 0, false, 5*time.Minute+3*time.Second, 3),
	}}
	st := status.From(&collector.State{
		Time: time.Unix(1_800_000_000, 0), Collectors: []string{"broker"},
		Outcomes: []collector.Outcome{{Name: "broker", Success: true}},
		Broker:   &collector.BrokerState{Snapshot: snap},
	}, status.Options{Thresholds: status.DefaultThresholds()})
	var buf bytes.Buffer
	if err := renderPage(&buf, st); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	sub := func(queue, field string) string {
		row := regexp.MustCompile(`(?s)<tr data-queue="` + queue + `".*?</tr>`).FindString(page)
		m := regexp.MustCompile(`data-field="` + field + `"[^>]*>([^<]*)<`).FindStringSubmatch(row)
		if m == nil {
			return ""
		}
		return m[1]
	}
	for _, c := range []struct{ queue, field, want string }{
		{"hung", "held", "held 2h 5m+"},
		{"late", "overdue", "3 overdue"},
		{"late", "unclaimed", "unclaimed 5m 3s"},
		{"busy", "held", ""},
		{"busy", "unclaimed", ""},
		{"dead", "overdue", ""},
	} {
		if got := sub(c.queue, c.field); got != c.want {
			t.Errorf("%s %s = %q, want %q", c.queue, c.field, got, c.want)
		}
	}
	if !regexp.MustCompile(`<td class="n bad" data-label="Delayed" data-field="delayed">3`).MatchString(page) {
		t.Error("the overdue queue's Delayed cell is not marked")
	}
	var order []string
	for _, m := range regexp.MustCompile(`<tr data-queue="([^"]+)"`).FindAllStringSubmatch(page, -1) {
		order = append(order, m[1])
	}
	if strings.Join(order, ",") != "late,dead,busy,hung" {
		t.Errorf("rows %v, want late (overdue) before dead (dead letters), then by backlog and name", order)
	}
}
