package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
)

// next moves the history's clock one slot on.
func (s *exporterServer) next() { s.skew.Add(int64(history.Resolution)) }

// Scrapes of /metrics, API calls and page views all feed the history,
// through the reads they make anyway: the history reads Redis no more.
// A failed read and a queue missing from a read are nulls, never zeros.
func TestHistoryFilledByScrapes(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	now := time.Now()
	b.Heartbeat(testserver.UUID(), now)
	b.Enqueue("default", 3, now.Add(-time.Minute))
	b.Enqueue("emails", 1, now)
	srv := startExporter(t, r, false, nil)
	if err := r.Admin.ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}

	get(t, srv.URL+"/metrics") // slot A: default 3
	srv.next()
	b.Enqueue("default", 2, now)
	b.DeadLetter("default", now, nil)
	get(t, srv.URL+"/metrics") // slot B: default 5, one dead letter
	srv.next()
	srv.next() // slot C: nobody looks
	srv.next()
	get(t, srv.URL+"/") // slot D: the page
	srv.next()
	b.Enqueue("default", 1, now)
	get(t, srv.URL+"/api/v1/status") // slot E
	// Four reads so far: two HLENs per queue and read (.msgs and
	// .DQ.msgs), none for the history. (LLEN is no proxy: a first read
	// also takes the delay list's length.)
	if n := r.CommandCalls(t, "hlen"); n != 2*2*4 {
		t.Errorf("HLEN ran %d times for 4 reads of 2 queues, want 16", n)
	}

	resp, body := get(t, srv.URL+"/api/v1/status?history=1") // slot E again: the latest read wins
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if n := strings.Count(body, "\n"); n != 1 {
		t.Errorf("an answer with a history spans %d lines, want compact JSON on one", n)
	}
	st := decode(t, body)
	checkKeys(t, "status", st, split(strings.Join(topKeys, " ")+" history"))
	h := st["history"].(map[string]any)
	checkKeys(t, "history", h, historyKeys)
	if h["resolution_seconds"] != 15.0 {
		t.Errorf("resolution = %v", h["resolution_seconds"])
	}
	start, err := time.Parse(time.RFC3339, h["start"].(string))
	if err != nil || start.Unix()%15 != 0 {
		t.Errorf("start = %v (%v)", h["start"], err)
	}
	reads := h["reads"].([]any)
	if len(reads) != history.Slots {
		t.Fatalf("%d reads, want %d", len(reads), history.Slots)
	}
	tail := func(list []any, n int) []any { return list[len(list)-n:] }
	if got := join(tail(reads, 7)); got != "none ok ok none none ok ok" {
		t.Errorf("reads = %s, want none ok ok none none ok ok", got)
	}
	def := queueOf(t, st, "default")
	dh := def["history"].(map[string]any)
	checkKeys(t, "queue history", dh, queueHistoryKeys)
	for field, want := range map[string]string{
		"ready":       "null 3 5 null null 5 6",
		"dead_letter": "null 0 1 null null 1 1",
	} {
		list := dh[field].([]any)
		if len(list) != history.Slots {
			t.Fatalf("%s has %d slots", field, len(list))
		}
		if got := join(tail(list, 7)); got != want {
			t.Errorf("default %s = %s, want %s", field, got, want)
		}
	}
	ages := tail(dh["oldest_message_age_seconds"].([]any), 6)
	if a, _ := ages[0].(float64); a < 59 || a > 120 || ages[2] != nil {
		t.Errorf("default ages = %v", ages)
	}
	if got := join(tail(queueOf(t, st, "emails")["history"].(map[string]any)["ready"].([]any), 7)); got != "null 1 1 null null 1 1" {
		t.Errorf("emails ready = %s", got)
	}

	// Redis gone: a failed slot, and no queue has a value in it.
	srv.next()
	r.Stop()
	_, body = get(t, srv.URL+"/api/v1/status?history=1")
	st = decode(t, body)
	if got := join(tail(st["history"].(map[string]any)["reads"].([]any), 2)); got != "ok failed" {
		t.Errorf("after Redis stopped, reads end in %s, want ok failed", got)
	}
	if qs := st["queues"].([]any); len(qs) != 0 {
		t.Errorf("queues while Redis is down: %v", qs)
	}
	tr := srv.history.Trend([]string{"default"})
	if d := tr.Queues["default"]; d == nil || d.Ready[history.Slots-1] != -1 || d.Ready[history.Slots-2] != 6 {
		t.Errorf("default's history after the failed read: %v", d)
	}

	// ?history= takes a boolean.
	if resp, _ := get(t, srv.URL+"/api/v1/status?history=maybe"); resp.StatusCode != 400 {
		t.Errorf("?history=maybe = %d, want 400", resp.StatusCode)
	}
	_, body = get(t, srv.URL+"/api/v1/status?history=0")
	if strings.Contains(body, `"history"`) {
		t.Error("?history=0 carries a history")
	}
}

func join(list []any) string {
	parts := make([]string, len(list))
	for i, v := range list {
		switch v := v.(type) {
		case nil:
			parts[i] = "null"
		case float64:
			parts[i] = formatNumber(v)
		default:
			parts[i] = v.(string)
		}
	}
	return strings.Join(parts, " ")
}

// One answer carries the history of at most MaxTrendQueues queues, the
// first by name, so an API call on a broker with 10,000 queues does not
// copy and encode 30 MB of trends; the page draws the lines of the
// PageQueues queues it shows.
func TestHistoryBoundedPerAnswer(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	pipe := r.Admin.Pipeline()
	n := server.MaxTrendQueues + 2
	for i := range n {
		pipe.RPush(ctx, fmt.Sprintf("dramatiq:q%05d", i), "m")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	srv := startExporter(t, r, false, nil)
	_, body := get(t, srv.URL+"/api/v1/status?history=1")
	st := decode(t, body)
	qs := st["queues"].([]any)
	if len(qs) != n {
		t.Fatalf("%d queues, want %d", len(qs), n)
	}
	for i, q := range qs {
		_, has := q.(map[string]any)["history"]
		if has != (i < server.MaxTrendQueues) {
			t.Fatalf("queue %d (%v) has history %v", i, q.(map[string]any)["name"], has)
		}
	}
	_, page := get(t, srv.URL+"/")
	if got := strings.Count(page, `<svg class="spark"`); got != 3*server.PageQueues {
		t.Errorf("the page draws %d sparklines, want %d", got, 3*server.PageQueues)
	}
}
