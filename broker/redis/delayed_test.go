package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func TestDecodeDelayed(t *testing.T) {
	cases := []struct {
		name     string
		body     string
		enqueued int64
		eta      int64
		hasEta   bool
		outcome  headOutcome
	}{
		{"dramatiq delayed send", `{"queue_name":"q.DQ","options":{"redis_message_id":"x","eta":1795727938797},"message_timestamp":1795727878797}`, 1795727878797, 1795727938797, true, headOK},
		{"retry: requeue_timestamp is the enqueue", `{"options":{"eta":1700000060000,"requeue_timestamp":1700000000000,"retries":1},"message_timestamp":1600000000000}`, 1700000000000, 1700000060000, true, headOK},
		{"eta not a number", `{"options":{"eta":"soon"},"message_timestamp":1700000000000}`, 1700000000000, 0, false, headOK},
		{"eta out of range", `{"options":{"eta":1e300},"message_timestamp":1700000000000}`, 1700000000000, 0, false, headOK},
		{"no times at all", `{"options":{}}`, 0, 0, false, headInvalidTime},
		{"options not an object", `{"options":[1],"message_timestamp":1}`, 0, 0, false, headUndecodable},
		{"pickle", "\x80\x04\x95pickle", 0, 0, false, headUndecodable},
		{"negative timestamp", `{"options":{"eta":1700000000000},"message_timestamp":-5}`, 0, 1700000000000, true, headOK},
	}
	for _, tc := range cases {
		got := decodeDelayed(tc.body)
		if got.outcome != tc.outcome || got.enqueued != tc.enqueued || got.eta != tc.eta || got.hasEta != tc.hasEta {
			t.Errorf("%s: got %+v", tc.name, got)
		}
	}
}

func FuzzDecodeDelayed(f *testing.F) {
	f.Add(`{"options":{"eta":1700000060000,"requeue_timestamp":1700000000000},"message_timestamp":1600000000000}`)
	f.Add(`{"options":{"eta":NaN}}`)
	f.Fuzz(func(t *testing.T, body string) {
		d := decodeDelayed(body)
		if d.hasEta && (d.eta < minMillis || d.eta > maxMillis) {
			t.Fatalf("eta %d accepted", d.eta)
		}
	})
}

// delayedReader is a Reader over r with a settable clock, discovery done.
func delayedReader(t *testing.T, r *testserver.Redis, now *time.Time, queues ...string) *Reader {
	t.Helper()
	client, err := NewClient(ClientOptions{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := NewReader(client, Options{Queues: queues, Now: func() time.Time { return *now }})
	if err := reader.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	return reader
}

func queueOf(t *testing.T, snap *Snapshot, q string) QueueStats {
	t.Helper()
	for _, s := range snap.Queues {
		if s.Name == q {
			return s
		}
	}
	t.Fatalf("queue %s not reported", q)
	return QueueStats{}
}

func commandCalls(t *testing.T, r *testserver.Redis, cmd string) int {
	t.Helper()
	info, err := r.Admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

// Held delayed messages past their eta by more than the grace are
// overdue; each body is read once, however many reads follow, and odd
// bodies are counted as anomalies, never as overdue.
func TestDelayedOverdueReadsEachEtaOnce(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	wid := testserver.UUID()
	acks := "dramatiq:__acks__." + wid + ".q.DQ"
	body := func(rid string, eta time.Time) string {
		return testserver.Body("q.DQ", rid, now.Add(-time.Hour), map[string]any{"eta": eta.UnixMilli()})
	}
	etas := []time.Duration{-2 * time.Minute, -90 * time.Second, -30 * time.Second, time.Hour}
	for _, d := range etas {
		id := testserver.UUID()
		r.Admin.HSet(ctx, "dramatiq:q.DQ.msgs", id, body(id, now.Add(d)))
		r.Admin.SAdd(ctx, acks, id)
	}
	odd := testserver.UUID()
	r.Admin.HSet(ctx, "dramatiq:q.DQ.msgs", odd, "\x80pickle")
	r.Admin.SAdd(ctx, acks, odd)
	// An id whose body is gone (acked a moment ago) holds nothing.
	r.Admin.SAdd(ctx, acks, testserver.UUID())
	r.Admin.ZAdd(ctx, "dramatiq:__heartbeats__", goredis.Z{Score: float64(now.UnixMilli()), Member: wid})

	reader := delayedReader(t, r, &now)
	r.Admin.ConfigResetStat(ctx)
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q := queueOf(t, snap, "q")
	if !q.DelayedOverdueKnown || q.DelayedOverdue != 2 {
		t.Fatalf("overdue %d known=%v, want 2 (2m and 90s past, grace 1m)", q.DelayedOverdue, q.DelayedOverdueKnown)
	}
	if snap.Anomalies[AnomalyUndecodableBody] != 1 {
		t.Errorf("undecodable = %d, want 1", snap.Anomalies[AnomalyUndecodableBody])
	}
	first := commandCalls(t, r, "hget")
	if first != len(etas)+1 {
		t.Errorf("first read: %d HGETs, want %d", first, len(etas)+1)
	}
	// 40 s later the 30-s-late one is overdue too: without reading again.
	now = now.Add(40 * time.Second)
	for i := 0; i < 3; i++ {
		if snap, err = reader.Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	q = queueOf(t, snap, "q")
	if q.DelayedOverdue != 3 || snap.Anomalies[AnomalyUndecodableBody] != 1 {
		t.Errorf("later: overdue %d, undecodable %d; want 3 and 1", q.DelayedOverdue, snap.Anomalies[AnomalyUndecodableBody])
	}
	if n := commandCalls(t, r, "hget"); n != first {
		t.Errorf("later reads fetched %d more bodies, want 0", n-first)
	}
	// The holder acks everything: nothing overdue, nothing remembered.
	r.Admin.Del(ctx, acks)
	if snap, err = reader.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if q = queueOf(t, snap, "q"); !q.DelayedOverdueKnown || q.DelayedOverdue != 0 {
		t.Errorf("after ack: overdue %d known=%v, want a known 0", q.DelayedOverdue, q.DelayedOverdueKnown)
	}
	reader.delayed.mu.Lock()
	held := len(reader.delayed.queues["q"].held)
	reader.delayed.mu.Unlock()
	if held != 0 {
		t.Errorf("%d held ids still remembered", held)
	}
}

// While the known ack sets do not hold every delayed message outside the
// list (here no holder at all: a body without a set) the count is
// unknown, not 0;
// a set over the per-read cap leaves its queue's count unknown and is
// never listed.
func TestDelayedOverdueUnknownNotZero(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	client, err := NewClient(ClientOptions{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r.Admin.HSet(ctx, "dramatiq:q.DQ.msgs", "x", `{}`)
	reader := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true, Now: func() time.Time { return now }})
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q := queueOf(t, snap, "q"); q.DelayedOverdueKnown {
		t.Errorf("no holder known: overdue known (%d)", q.DelayedOverdue)
	}

	big := "dramatiq:__acks__." + testserver.UUID() + ".big.DQ"
	for start := 0; start <= MaxHeldDelayedPerRead; start += 10000 {
		members := make([]any, 0, 10000)
		for i := start; i < start+10000 && i <= MaxHeldDelayedPerRead; i++ {
			members = append(members, strconv.Itoa(i))
		}
		r.Admin.SAdd(ctx, big, members...)
	}
	r.Admin.HSet(ctx, "dramatiq:big.DQ.msgs", "0", `{}`)
	reader = delayedReader(t, r, &now)
	r.Admin.ConfigResetStat(ctx)
	if snap, err = reader.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if q := queueOf(t, snap, "big"); q.DelayedOverdueKnown {
		t.Errorf("over the cap: overdue known (%d)", q.DelayedOverdue)
	}
	if n := commandCalls(t, r, "smembers"); n != 0 {
		t.Errorf("%d SMEMBERS of a set over the cap", n)
	}
}

// The unclaimed age runs from the head's enqueue time, but never from
// before the list was last seen empty or the Reader started.
func TestDelayedUnclaimedAge(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	reader := delayedReader(t, r, &now, "q")
	push := func(created time.Time, opts map[string]any) string {
		id := testserver.UUID()
		r.Admin.HSet(ctx, "dramatiq:q.DQ.msgs", id, testserver.Body("q.DQ", id, created, opts))
		r.Admin.RPush(ctx, "dramatiq:q.DQ", id)
		return id
	}
	age := func() (time.Duration, bool) {
		t.Helper()
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		q := queueOf(t, snap, "q")
		return q.DelayedUnclaimedAge, q.DelayedUnclaimedAgeKnown
	}
	// Created an hour before the Reader started: pushed back by a stopping
	// worker, say. The age counts from the Reader's start.
	id := push(now.Add(-time.Hour), map[string]any{"eta": now.Add(time.Hour).UnixMilli()})
	now = now.Add(30 * time.Second)
	if a, ok := age(); !ok || a != 30*time.Second {
		t.Fatalf("age %s known=%v, want 30s (since the Reader started)", a, ok)
	}
	// Claimed: the list is empty, age 0.
	r.Admin.LRem(ctx, "dramatiq:q.DQ", 0, id)
	now = now.Add(10 * time.Second)
	if a, ok := age(); !ok || a != 0 {
		t.Fatalf("empty list: age %s known=%v, want 0", a, ok)
	}
	// A retry enqueued 5 s later waits from its requeue_timestamp.
	push(now.Add(-2*time.Hour), map[string]any{"requeue_timestamp": now.Add(5 * time.Second).UnixMilli(), "eta": now.Add(time.Minute).UnixMilli()})
	now = now.Add(25 * time.Second)
	if a, ok := age(); !ok || a != 20*time.Second {
		t.Fatalf("retry: age %s known=%v, want 20s", a, ok)
	}
	// An oversize head id leaves the age absent.
	r.Admin.LPush(ctx, "dramatiq:q.DQ", strings.Repeat("x", MaxIDBytes+1))
	if _, ok := age(); ok {
		t.Error("oversize head id: age known")
	}
}

// An idle queue's delay list is not read; when delayed messages appear the
// age is unknown for one read, then bounded by the last read that saw none.
func TestDelayedHeadSkippedWhileIdle(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	start := time.UnixMilli(time.Now().UnixMilli())
	now := start
	reader := delayedReader(t, r, &now, "q")
	read := func() QueueStats {
		t.Helper()
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return queueOf(t, snap, "q")
	}
	read()
	now = start.Add(time.Second)
	r.Admin.ConfigResetStat(ctx)
	if q := read(); !q.DelayedUnclaimedAgeKnown || q.DelayedUnclaimedAge != 0 {
		t.Fatalf("idle: age %s known=%v, want 0", q.DelayedUnclaimedAge, q.DelayedUnclaimedAgeKnown)
	}
	if n := commandCalls(t, r, "lrange"); n != 1 {
		t.Errorf("idle read: %d LRANGEs, want 1 (the ready list's head only)", n)
	}
	id := testserver.UUID()
	r.Admin.HSet(ctx, "dramatiq:q.DQ.msgs", id, testserver.Body("q.DQ", id, start.Add(-time.Hour), map[string]any{"eta": start.Add(time.Hour).UnixMilli()}))
	r.Admin.RPush(ctx, "dramatiq:q.DQ", id)
	now = start.Add(2 * time.Second)
	if q := read(); q.DelayedUnclaimedAgeKnown {
		t.Errorf("first read with delayed messages: age %s known, want unknown", q.DelayedUnclaimedAge)
	}
	now = start.Add(12 * time.Second)
	if q := read(); !q.DelayedUnclaimedAgeKnown || q.DelayedUnclaimedAge != 11*time.Second {
		t.Errorf("age %s known=%v, want 11s (since the read at 1s found none)", q.DelayedUnclaimedAge, q.DelayedUnclaimedAgeKnown)
	}
}

// The held etas a Reader remembers at the id cap stay well under the
// chart's 128 MiB, and are all forgotten once the ids are no longer held.
func TestHeldDelayedMemoryAtTheCap(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	// Ten workers, each holding a tenth of the cap, in ten queues.
	for w := 0; w < 10; w++ {
		q := "q" + strconv.Itoa(w)
		set := "dramatiq:__acks__." + testserver.UUID() + "." + q + ".DQ"
		for start := 0; start < MaxHeldDelayedPerRead/10; start += 2000 {
			pipe := r.Admin.Pipeline()
			for i := start; i < start+2000; i++ {
				id := testserver.UUID()
				pipe.HSet(ctx, "dramatiq:"+q+".DQ.msgs", id, testserver.Body(q+".DQ", id, now, map[string]any{"eta": now.Add(-time.Hour).UnixMilli()}))
				pipe.SAdd(ctx, set, id)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	reader := delayedReader(t, r, &now)
	before := heapInuse()
	// The bodies (about 280 bytes each) exceed one read's 16 MiB budget:
	// the first read leaves some queues unknown, the next reads the rest.
	reads := 0
	for {
		reads++
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var overdue int64
		known := 0
		for _, q := range snap.Queues {
			if q.DelayedOverdueKnown {
				known++
				overdue += q.DelayedOverdue
			}
		}
		if known == 10 {
			if overdue != MaxHeldDelayedPerRead {
				t.Fatalf("overdue %d, want %d", overdue, MaxHeldDelayedPerRead)
			}
			break
		}
		if reads == 5 {
			t.Fatalf("after %d reads only %d of 10 queues known", reads, known)
		}
	}
	t.Logf("%d reads to read every eta", reads)
	t0 := time.Now()
	if _, err := reader.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("a steady read (SCARD and SMEMBERS of the 10 sets, no body) took %s", time.Since(t0).Round(time.Millisecond))
	held := heapInuse() - before
	t.Logf("%d held ids remembered in %.1f MiB", MaxHeldDelayedPerRead, float64(held)/(1<<20))
	if held > 40<<20 {
		t.Errorf("%d held ids take %d MiB", MaxHeldDelayedPerRead, held>>20)
	}
	if err := r.Admin.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if after := heapInuse(); after > before+(4<<20) {
		t.Errorf("after the ids are gone the heap is %d MiB over the start", (after-before)>>20)
	}
}
