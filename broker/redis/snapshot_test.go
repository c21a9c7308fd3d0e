package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func TestMessageTimestamp(t *testing.T) {
	cases := []struct {
		body string
		ms   int64
		ok   bool
	}{
		// Dramatiq's own encoding: message_timestamp is the last key.
		{`{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"message_id":"x","message_timestamp":1795727878791}`, 1795727878791, true},
		// Another producer's key order.
		{`{"message_timestamp":1700000000000,"queue_name":"q","args":["x"]}`, 1700000000000, true},
		// User data that contains the key must not fool the fast path.
		{`{"args":[",\"message_timestamp\":1}"],"message_timestamp":1700000000001}`, 1700000000001, true},
		{`{"args":["a"],"kwargs":{"k":",\"message_timestamp\":5}"}}`, 0, false},
		{`{"message_timestamp":1.7e12}`, 1700000000000, true},
		{"\x80\x04\x95pickle", 0, false},
		{`{"queue_name":"q"}`, 0, false},
		{``, 0, false},
	}
	for _, tc := range cases {
		ts, ok := messageTimestamp(tc.body)
		if ok != tc.ok || (ok && int64(ts) != tc.ms) {
			t.Errorf("messageTimestamp(%q) = %v %v, want %d %v", tc.body, ts, ok, tc.ms, tc.ok)
		}
	}
}

// When the head is acked between the two round trips, the next ids give
// the age, and nothing counts as an anomaly.
func TestOldestAgeSurvivesAHeadRace(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	ctx := context.Background()
	// The list names an id whose body is gone (acked an instant ago), then
	// a real message.
	r.Admin.RPush(ctx, "dramatiq:q", "acked-id")
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("q", 1, now.Add(-42*time.Second))
	client, err := NewClient(ClientOptions{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader := NewReader(client, Options{Now: func() time.Time { return now }})
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q := snap.Queues[0]
	if !q.OldestAgeKnown || q.OldestAge != 42*time.Second {
		t.Fatalf("age %s known=%v, want 42s", q.OldestAge, q.OldestAgeKnown)
	}
	for kind, n := range snap.Anomalies {
		if n != 0 {
			t.Errorf("anomaly %s = %d", kind, n)
		}
	}
}

// Ephemeral queues (one per tenant or per day, say) must not make the
// exporter remember names forever once the cap is reached.
func TestSeenQueuesStayBoundedUnderTheCap(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	client, err := NewClient(ClientOptions{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader := NewReader(client, Options{MaxQueues: 10, Now: func() time.Time { return now }})
	ctx := context.Background()
	for round := 0; round < 5; round++ {
		var names []string
		for i := 0; i < 8; i++ {
			q := fmt.Sprintf("tenant_%d_%d", round, i)
			names = append(names, q)
			b.Enqueue(q, 1, now)
		}
		now = now.Add(time.Minute)
		if err := reader.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		for _, q := range names {
			b.Purge(q)
		}
	}
	if err := reader.lock(ctx); err != nil {
		t.Fatal(err)
	}
	n := len(reader.seen)
	reader.unlock()
	if n > 10 {
		t.Fatalf("remembers %d queues with a cap of 10", n)
	}
}

// The per-queue commands are generic, so their replies are parsed here, not
// by go-redis: both protocols must give the same snapshot (RESP3 sends the
// dead-letter score as a double in a pair, RESP2 as a string).
func TestSnapshotSameInBothProtocols(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	ctx := context.Background()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("q", 3, now.Add(-7*time.Second))
	b.DeadLetter("q", now.Add(-time.Minute), nil)
	b.Enqueue("empty", 1, now)
	b.Purge("empty")
	r.Admin.Set(ctx, "dramatiq:wrong.msgs", "a string", 0)
	r.Admin.RPush(ctx, "dramatiq:wrong", "id")
	var snaps []*Snapshot
	for _, proto := range []int{2, 3} {
		client := goredis.NewClient(&goredis.Options{Addr: r.Addr, Protocol: proto, MaxRetries: -1})
		defer client.Close()
		snap, err := NewReader(client, Options{Now: func() time.Time { return now }}).Snapshot(ctx)
		if err != nil {
			t.Fatalf("RESP%d: %v", proto, err)
		}
		snaps = append(snaps, snap)
	}
	for _, snap := range snaps {
		byName := map[string]QueueStats{}
		for _, q := range snap.Queues {
			byName[q.Name] = q
		}
		q := byName["q"]
		if q.Ready != 3 || q.DeadLetter != 1 || !q.DeadLetterLast.Equal(now.Add(-time.Minute)) || !q.OldestAgeKnown || q.OldestAge != 7*time.Second {
			t.Errorf("q = %+v", q)
		}
		// HLEN and the head's HGET both meet the string.
		if snap.Anomalies[AnomalyWrongType] != 2 {
			t.Errorf("wrong_type anomalies = %d, want 2", snap.Anomalies[AnomalyWrongType])
		}
	}
	if fmt.Sprint(snaps[0].Queues) != fmt.Sprint(snaps[1].Queues) {
		t.Errorf("RESP2 %v != RESP3 %v", snaps[0].Queues, snaps[1].Queues)
	}
}
