package redis

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// recorder counts the commands a client sends, by name.
type recorder struct {
	mu    sync.Mutex
	names map[string]int
	trips int
}

func (h *recorder) reset() { h.mu.Lock(); h.names = map[string]int{}; h.trips = 0; h.mu.Unlock() }
func (h *recorder) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.names[name]
}
func (h *recorder) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *recorder) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.mu.Lock()
		h.names[cmd.Name()]++
		h.trips++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (h *recorder) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.mu.Lock()
		for _, c := range cmds {
			h.names[c.Name()]++
		}
		h.trips++
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// A head body is read at most once per message id, only when it is small,
// and an oversize head is counted, with its queue's age absent.
func TestHeadBodiesBoundedAndRemembered(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("small", 2, now.Add(-30*time.Second))
	big := `{"queue_name":"big","actor_name":"upload","args":["` + strings.Repeat("x", MaxHeadBodyBytes) + `"],"kwargs":{},"options":{},"message_id":"m","message_timestamp":` +
		formatFloat(float64(now.Add(-time.Hour).UnixMilli())) + `}`
	r.Admin.HSet(ctx, "dramatiq:big.msgs", "big-head", big)
	r.Admin.RPush(ctx, "dramatiq:big", "big-head")

	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	reader := NewReader(client, Options{Now: func() time.Time { return now }})
	if err := reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}

	read := func() *Snapshot {
		t.Helper()
		rec.reset()
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	check := func(snap *Snapshot) {
		t.Helper()
		byName := map[string]QueueStats{}
		for _, q := range snap.Queues {
			byName[q.Name] = q
		}
		if q := byName["small"]; !q.OldestAgeKnown || q.OldestAge != 30*time.Second {
			t.Fatalf("small: %+v", q)
		}
		if q := byName["big"]; q.OldestAgeKnown || q.Ready != 1 {
			t.Fatalf("big: %+v", q)
		}
		if snap.Anomalies[AnomalyOversizeBody] != 1 {
			t.Fatalf("anomalies %v", snap.Anomalies)
		}
	}
	snap := read()
	check(snap)
	if rec.count("hget") != 1 || rec.count("hstrlen") != 3 /* two ids of small, one of big */ {
		t.Fatalf("first read: %v", rec.names)
	}
	// Heads unchanged: no body, no size, and at most two round trips.
	for i := 0; i < 3; i++ {
		snap = read()
		check(snap)
		if rec.count("hget") != 0 || rec.count("hstrlen") != 0 || rec.count("hmget") != 0 || rec.trips > 2 {
			t.Fatalf("read %d: %v in %d round trips", i, rec.names, rec.trips)
		}
	}
	// A new head (the old one fetched and acked) is read once.
	wid := testserver.UUID()
	for _, id := range b.Fetch(wid, "small", 1, now) {
		b.Ack(wid, "small", id)
	}
	snap = read()
	check(snap)
	if rec.count("hget") != 1 {
		t.Fatalf("after a new head: %v", rec.names)
	}
	// Memory follows the reported queues: a queue that leaves the list
	// leaves the cache.
	b.Purge("small")
	r.Admin.Del(ctx, "dramatiq:big", "dramatiq:big.msgs")
	read()
	reader.headsMu.Lock()
	n := len(reader.heads)
	reader.headsMu.Unlock()
	if n != 0 {
		t.Fatalf("%d heads remembered for empty queues", n)
	}
}
