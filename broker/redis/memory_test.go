package redis

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// heapInuse is the heap in use after two collections.
func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// plantHugeIDs writes a head id and a dead-letter member of n bytes, each
// with a small Dramatiq body under it, so that a reader that used them
// would fetch, decode and remember them. Built here so that the test keeps
// no reference to them.
func plantHugeIDs(t *testing.T, r *testserver.Redis, n int, now time.Time) {
	t.Helper()
	ctx := context.Background()
	head := strings.Repeat("h", n)
	dead := strings.Repeat("d", n)
	pipe := r.Admin.Pipeline()
	pipe.HSet(ctx, "dramatiq:bighead.msgs", head, testserver.Body("bighead", "rid", now.Add(-time.Hour), nil))
	pipe.LPush(ctx, "dramatiq:bighead", head) // the head
	pipe.ZAdd(ctx, "dramatiq:bigdead.XQ", goredis.Z{Score: float64(now.UnixMilli()), Member: dead})
	pipe.HSet(ctx, "dramatiq:bigdead.XQ.msgs", dead, testserver.Body("bigdead", "rid", now, nil))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// Ids Dramatiq never writes (a 12 MiB list element, a 12 MiB dead-letter
// member; past 16 MiB the RESP bound refuses the reply and the read fails) are counted as oversize_id, never sent back to Redis and never
// remembered: the heap after the reads is what it was before, and the
// other queues read as usual.
func TestOversizeIDsAreCountedAndNotKept(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("good", 2, now.Add(-30*time.Second))
	b.DeadLetter("good", now.Add(time.Second), nil)
	b.Enqueue("bighead", 1, now.Add(-time.Minute)) // behind the huge head

	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	reader := NewReader(client, Options{Now: func() time.Time { return now }})
	if _, err := reader.Snapshot(ctx); err != nil { // warm up: pool, discovery
		t.Fatal(err)
	}
	const huge = 12 << 20
	plantHugeIDs(t, r, huge, now.Add(2*time.Second))
	if err := reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	before := heapInuse()

	for read := 0; read < 3; read++ {
		rec.reset()
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := snap.Anomalies[AnomalyOversizeID]; n != 2 {
			t.Fatalf("read %d: oversize_id = %d, want 2 (the head and the newest dead letter): %v", read, n, snap.Anomalies)
		}
		byName := map[string]QueueStats{}
		for _, q := range snap.Queues {
			byName[q.Name] = q
		}
		if g := byName["good"]; g.Ready != 2 || !g.OldestAgeKnown || g.OldestAge != 30*time.Second || g.DeadLetter != 1 || g.DeadLettered != 1 {
			t.Fatalf("read %d: good = %+v", read, g)
		}
		if h := byName["bighead"]; h.Ready != 2 || h.OldestAgeKnown {
			t.Fatalf("read %d: bighead = %+v, want 2 ready and the age absent", read, h)
		}
		if d := byName["bigdead"]; d.DeadLetter != 1 || d.DeadLettered != 1 {
			t.Fatalf("read %d: bigdead = %+v, want its dead letter counted", read, d)
		}
		for _, a := range snap.DeadLetteredByActor {
			if a.Queue == "bigdead" && a.Actor != ActorUnknown {
				t.Fatalf("read %d: bigdead's dead letter counted under %q", read, a.Actor)
			}
		}
		// HSTRLEN and HGET of the good queue's head only, on the first read.
		if n := rec.count("hstrlen") + rec.count("hget") + rec.count("hmget"); read > 0 && n != 0 {
			t.Fatalf("read %d sent %d body commands; an oversize id must never be sent back", read, n)
		}
	}
	dl, err := reader.RecentDeadLetters(ctx, []string{"bigdead", "good"}, DeadLetterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dl["bigdead"]; len(got) != 1 || !got[0].Oversize || len(got[0].RedisID) > maxIDLen+len("…") {
		t.Fatalf("recent dead letters of bigdead = %+v", got)
	}
	if got := dl["good"]; len(got) != 1 || got[0].Oversize || got[0].Actor == "" {
		t.Fatalf("recent dead letters of good = %+v", got)
	}

	after := heapInuse()
	runtime.KeepAlive(reader)
	// A remembered id would hold at least 12 MiB for good.
	if after > before+huge*2/3 {
		t.Fatalf("heap in use grew from %d to %d bytes over the reads: an oversize id is kept", before, after)
	}
}

// A heartbeat set of 200,000 members scored in the future (a skewed or
// hostile client) costs a read no member: the counts are exact, the
// orphans of a dead process are still found, and the read allocates far
// less than the members would take.
func TestHeartbeatMembersAreNeverRead(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("q", 5, now.Add(-time.Minute))
	alive, dead := testserver.UUID(), testserver.UUID()
	b.Fetch(alive, "q", 1, now)
	b.Fetch(dead, "q", 2, now.Add(-time.Hour))
	const future = 200_000
	for start := 0; start < future; start += 10_000 {
		zs := make([]goredis.Z, 10_000)
		for i := range zs {
			zs[i] = goredis.Z{Score: float64(now.Add(time.Duration(start+i) * time.Hour).UnixMilli()), Member: testserver.UUID()}
		}
		if err := r.Admin.ZAdd(ctx, "dramatiq:__heartbeats__", zs...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	reader := NewReader(client, Options{Now: func() time.Time { return now }})
	if _, err := reader.Snapshot(ctx); err != nil { // discovery and warm-up
		t.Fatal(err)
	}
	rec.reset()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	snap, err := reader.Snapshot(ctx)
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	if snap.ProcessesAlive != future+1 || snap.ProcessesStale != 1 {
		t.Fatalf("processes alive %d, stale %d; want %d and 1", snap.ProcessesAlive, snap.ProcessesStale, future+1)
	}
	q := snap.Queues[0]
	if q.Ready != 2 || q.InFlight != 3 || q.Orphaned != 2 {
		t.Fatalf("queue = %+v, want 2 ready, 3 in flight, 2 orphaned", q)
	}
	for _, name := range []string{"zrange", "zrangebyscore", "zscan"} {
		if n := rec.count(name); n != 0 {
			t.Fatalf("the read sent %d %s: heartbeat members are read", n, name)
		}
	}
	// 200,000 uuids alone are 7 MB of reply, and more as strings.
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 2<<20 {
		t.Fatalf("one read allocated %d bytes over a heartbeat set of %d members", alloc, future)
	}
}
