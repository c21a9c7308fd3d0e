package redis

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// clock is a settable Options.Now.
type clock struct{ ms atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ms.Store(t.UnixMilli())
	return c
}
func (c *clock) now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *clock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func queueStats(t *testing.T, snap *Snapshot, name string) QueueStats {
	t.Helper()
	for _, q := range snap.Queues {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("queue %q not reported", name)
	return QueueStats{}
}

func mustSnapshot(t *testing.T, r *Reader) *Snapshot {
	t.Helper()
	snap, err := r.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// A crashed worker's orphans show in the first read after its heartbeat
// goes stale, with no discovery pass at all (SkipDiscovery: no SCAN ever)
// and a million unrelated keys: its ack sets are found from the heartbeat
// set and the queue names, in the read's one round trip.
func TestOrphansFoundWithoutScan(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := context.Background()
	if err := srv.Admin.Do(ctx, "DEBUG", "POPULATE", 1_000_000, "django.cache:").Err(); err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	queues := make([]string, 50)
	for i := range queues {
		queues[i] = fmt.Sprintf("q%02d", i)
		b.Enqueue(queues[i], 2, clk.now())
	}
	crashed, healthy := testserver.UUID(), testserver.UUID()
	b.Fetch(crashed, "q07", 2, clk.now())
	b.Fetch(healthy, "q31", 1, clk.now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Queues: queues, SkipDiscovery: true, Now: clk.now, HeartbeatTimeout: 60 * time.Second})

	// Scrapes every 15 s; the healthy worker keeps heartbeating, the other
	// one stopped at the start.
	staleAt := clk.now().Add(60 * time.Second)
	var found time.Time
	for i := 0; i < 10 && found.IsZero(); i++ {
		snap := mustSnapshot(t, r)
		q := queueStats(t, snap, "q07")
		if !clk.now().After(staleAt) && q.Orphaned != 0 {
			t.Fatalf("read %d at +%s: %d orphans before the heartbeat went stale", i, clk.now().Sub(staleAt), q.Orphaned)
		}
		if q.Orphaned == 2 {
			found = clk.now()
		}
		if o := queueStats(t, snap, "q31").Orphaned; o != 0 {
			t.Fatalf("a live worker's message counted as orphaned: %d", o)
		}
		clk.advance(15 * time.Second)
		b.Heartbeat(healthy, clk.now())
	}
	if found.IsZero() {
		t.Fatal("the crashed worker's orphans were never reported")
	}
	if lag := found.Sub(staleAt); lag > 15*time.Second {
		t.Fatalf("orphans reported %s after the heartbeat went stale, want within one scrape (15s)", lag)
	}
	t.Logf("orphans reported %s after the heartbeat went stale", found.Sub(staleAt))
}

// A worker that goes from fresh to stale between two reads (reads further
// apart than the timeout) is found in that read too.
func TestOrphansFoundAcrossALongGap(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("a", 3, clk.now())
	b.Enqueue("b", 1, clk.now())
	w := testserver.UUID()
	b.Fetch(w, "a", 3, clk.now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Queues: []string{"a", "b"}, SkipDiscovery: true, Now: clk.now})
	mustSnapshot(t, r) // learns the worker and that "a" has messages in flight
	clk.advance(2 * time.Minute)
	snap := mustSnapshot(t, r)
	if o := queueStats(t, snap, "a").Orphaned; o != 3 {
		t.Fatalf("orphaned %d, want 3", o)
	}
	// Once known, a dead worker's set costs one SCARD and no probe.
	snap = mustSnapshot(t, r)
	if o := queueStats(t, snap, "a").Orphaned; o != 3 || snap.AckProbes != 0 {
		t.Fatalf("orphaned %d with %d probes, want 3 with 0", o, snap.AckProbes)
	}
}

// Holding times: ids seen at the first read of a set count from then and
// say so (lower bound); an id fetched later counts from the read that
// first saw it; a stale worker's holdings are not "held by a live
// worker"; DQ sets never count.
func TestLongestHeld(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("q", 5, clk.now())
	w := testserver.UUID()
	first := b.Fetch(w, "q", 2, clk.now())
	// A delayed message held until its eta is not a hang.
	srv.Admin.SAdd(context.Background(), "dramatiq:__acks__."+w+".q.DQ", "d1")
	srv.Admin.HSet(context.Background(), "dramatiq:q.DQ.msgs", "d1", "{}")
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Now: clk.now})
	if err := r.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := queueStats(t, mustSnapshot(t, r), "q")
	if q.LongestHeld != 0 || !q.LongestHeldLowerBound {
		t.Fatalf("first read: held %s lower bound %v, want 0 and true", q.LongestHeld, q.LongestHeldLowerBound)
	}
	step := func(d time.Duration) QueueStats {
		clk.advance(d)
		b.Heartbeat(w, clk.now())
		return queueStats(t, mustSnapshot(t, r), "q")
	}
	q = step(30 * time.Second)
	if q.LongestHeld != 30*time.Second || !q.LongestHeldLowerBound {
		t.Fatalf("held %s lower bound %v, want 30s and true", q.LongestHeld, q.LongestHeldLowerBound)
	}
	b.Fetch(w, "q", 1, clk.now())
	q = step(10 * time.Second)
	if q.LongestHeld != 40*time.Second {
		t.Fatalf("held %s, want 40s", q.LongestHeld)
	}
	for _, id := range first {
		b.Ack(w, "q", id)
	}
	q = step(10 * time.Second)
	// The read 10 s after the fetch was the first to see the new id.
	if q.LongestHeld != 10*time.Second || q.LongestHeldLowerBound {
		t.Fatalf("after the old ones were acked: held %s lower bound %v, want 10s and false", q.LongestHeld, q.LongestHeldLowerBound)
	}
	// The worker stops: what it holds is orphaned, not held.
	clk.advance(2 * time.Minute)
	q = queueStats(t, mustSnapshot(t, r), "q")
	if q.LongestHeld != 0 || q.Orphaned != 2 {
		t.Fatalf("stale worker: held %s orphaned %d, want 0 and 2 (its own set and its .DQ set)", q.LongestHeld, q.Orphaned)
	}
}

// Reads further apart than the heartbeat timeout (Prometheus's default 1m
// scrape interval with Dramatiq's default 60 s timeout) still time what a
// live worker holds: its liveness at the previous read is judged by that
// read's clock. And a worker taken for dead at one read and alive at the
// next keeps its times: the held message does not look new.
func TestLongestHeldAcrossReadsFurtherApartThanTheTimeout(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("q", 2, clk.now())
	w := testserver.UUID()
	b.Fetch(w, "q", 1, clk.now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true, Now: clk.now, HeartbeatTimeout: time.Minute})
	mustSnapshot(t, r)
	step := func(d time.Duration, beat bool) QueueStats {
		clk.advance(d)
		if beat {
			b.Heartbeat(w, clk.now().Add(-2*time.Second))
		}
		return queueStats(t, mustSnapshot(t, r), "q")
	}
	// The first read learns that q has messages in sets it does not know;
	// the second probes the worker's set and starts timing (a lower bound:
	// the message was held before).
	q := step(time.Second, true)
	if q.LongestHeld != 0 || !q.LongestHeldLowerBound {
		t.Fatalf("second read: held %s lower bound %v, want 0 and true", q.LongestHeld, q.LongestHeldLowerBound)
	}
	for i := 1; i <= 3; i++ {
		if q = step(time.Minute, true); q.LongestHeld != time.Duration(i)*time.Minute || !q.LongestHeldLowerBound {
			t.Fatalf("read %d a minute apart: held %s lower bound %v, want %dm and true", i, q.LongestHeld, q.LongestHeldLowerBound, i)
		}
	}
	// Silent for a read: orphaned, not held.
	if q = step(2*time.Minute, false); q.LongestHeld != 0 || q.Orphaned != 1 {
		t.Fatalf("silent worker: held %s orphaned %d, want 0 and 1", q.LongestHeld, q.Orphaned)
	}
	// Back (a suspended process, a partition): held since the read that
	// first saw it, 6 minutes ago, not since now.
	if q = step(time.Minute, true); q.LongestHeld != 6*time.Minute || !q.LongestHeldLowerBound || q.Orphaned != 0 {
		t.Fatalf("worker back: held %s lower bound %v orphaned %d, want 6m, true and 0", q.LongestHeld, q.LongestHeldLowerBound, q.Orphaned)
	}
	if q = step(time.Minute, true); q.LongestHeld != 7*time.Minute {
		t.Fatalf("next read: held %s, want 7m", q.LongestHeld)
	}
}

// A set larger than heldSample is counted as untracked, not sampled.
func TestHeldSetOverSampleIsUntracked(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("q", heldSample+10, clk.now())
	w := testserver.UUID()
	b.Fetch(w, "q", heldSample+10, clk.now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Now: clk.now})
	if err := r.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := mustSnapshot(t, r)
	if snap.HeldUntracked != heldSample+10 {
		t.Fatalf("untracked %d, want %d", snap.HeldUntracked, heldSample+10)
	}
}

// The first pass runs at its own pace until it completes; a namespace that
// is a tiny part of a large database is warned about once.
func TestDiscoveryPaceAndSmallNamespace(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := context.Background()
	if err := srv.Admin.Do(ctx, "DEBUG", "POPULATE", 200_000, "django.cache:").Err(); err != nil {
		t.Fatal(err)
	}
	srv.NewBroker(t, "dramatiq").Enqueue("q", 3, time.Now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var logs bytes.Buffer
	r := NewReader(client, Options{FirstPassDuty: 1, DiscoveryDuty: 0.5, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := r.pagePace(); got != 1 {
		t.Fatalf("first pass pace %v, want 1", got)
	}
	for i := 0; i < 2; i++ {
		if err := r.Discover(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.pagePace(); got != 0.5 {
		t.Fatalf("later passes' pace %v, want 0.5 (the cycle's duty, above pageDuty)", got)
	}
	st := r.DiscoveryStatus()
	if st.Keyspace < 200_000 || st.Keys != 2 {
		t.Fatalf("keyspace %d, namespace keys %d", st.Keyspace, st.Keys)
	}
	if n := strings.Count(logs.String(), "tiny part of this Redis database"); n != 1 {
		t.Fatalf("warned %d times, want once:\n%s", n, logs.String())
	}
	if d := NewReader(client, Options{}).Options(); d.DiscoveryDuty != DefaultDiscoveryDuty || d.FirstPassDuty != DefaultFirstPassDuty {
		t.Fatalf("defaults %v %v", d.DiscoveryDuty, d.FirstPassDuty)
	}
}

// After start-up, a set found by a probe is one a worker created since the
// previous probe cycle: its ids count from the read that saw them, not as
// lower bounds.
func TestHeldInANewSetIsNotALowerBound(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("q", 2, clk.now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true, Now: clk.now})
	w := testserver.UUID()
	b.Heartbeat(w, clk.now())
	mustSnapshot(t, r)
	mustSnapshot(t, r)
	b.Fetch(w, "q", 1, clk.now())
	var q QueueStats
	for i := 0; i < 4; i++ {
		clk.advance(5 * time.Second)
		b.Heartbeat(w, clk.now())
		q = queueStats(t, mustSnapshot(t, r), "q")
	}
	// Read 3 saw in flight, read 4 probed and listed the set.
	if q.LongestHeld != 10*time.Second || q.LongestHeldLowerBound {
		t.Fatalf("held %s lower bound %v, want 10s and false", q.LongestHeld, q.LongestHeldLowerBound)
	}
}

type tripHook struct{ trips atomic.Int64 }

func (h *tripHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *tripHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error { h.trips.Add(1); return next(ctx, cmd) }
}
func (h *tripHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error { h.trips.Add(1); return next(ctx, cmds) }
}

// Once every holder of in-flight messages is known, a read probes nothing
// and takes one round trip, stale workers' ack sets included (they used to
// cost a second one).
func TestSteadyStateReadIsOneRoundTrip(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	b := srv.NewBroker(t, "dramatiq")
	var queues []string
	for i := 0; i < 20; i++ {
		q := fmt.Sprintf("q%02d", i)
		queues = append(queues, q)
		b.Enqueue(q, 5, clk.now())
	}
	live := []string{testserver.UUID(), testserver.UUID(), testserver.UUID()}
	for i, w := range live {
		b.Fetch(w, queues[i], 2, clk.now())
		b.Fetch(w, queues[10+i], 1, clk.now())
	}
	dead := testserver.UUID()
	b.Fetch(dead, "q15", 3, clk.now().Add(-time.Hour))
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hook := &tripHook{}
	client.AddHook(hook)
	r := NewReader(client, Options{Queues: queues, SkipDiscovery: true, Now: clk.now})
	var snap *Snapshot
	for i := 0; i < 6; i++ {
		for _, w := range live {
			b.Heartbeat(w, clk.now())
		}
		snap = mustSnapshot(t, r)
		clk.advance(time.Second)
	}
	if snap.AckProbes != 0 || snap.AckSetsTracked != 7 {
		t.Fatalf("steady state: %d probes, %d sets counted; want 0 and 7", snap.AckProbes, snap.AckSetsTracked)
	}
	if o := queueStats(t, snap, "q15").Orphaned; o != 3 {
		t.Fatalf("orphaned %d, want 3", o)
	}
	hook.trips.Store(0)
	mustSnapshot(t, r)
	if n := hook.trips.Load(); n != 1 {
		t.Fatalf("a steady-state read took %d round trips, want 1", n)
	}
}

// Held ids stay under maxHeldIDs whatever live workers hold; the rest are
// counted.
func TestHeldIDsAreCapped(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.Now()
	const sets, per = 100, 250
	pipe := srv.Admin.Pipeline()
	for i := 0; i < sets; i++ {
		w := testserver.UUID()
		pipe.ZAdd(ctx, "dramatiq:__heartbeats__", goredis.Z{Score: float64(now.UnixMilli()), Member: w})
		ids := make([]any, per)
		for j := range ids {
			ids[j] = fmt.Sprintf("%08d-%04d-0000-0000-000000000000", i, j)
		}
		pipe.SAdd(ctx, "dramatiq:__acks__."+w+".q", ids...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Now: func() time.Time { return now }})
	if err := r.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	snap := mustSnapshot(t, r)
	r.acks.mu.Lock()
	n := 0
	for _, times := range r.acks.held.sets {
		n += len(times)
	}
	r.acks.mu.Unlock()
	if n != maxHeldIDs || snap.HeldUntracked != sets*per-maxHeldIDs {
		t.Fatalf("remembered %d, untracked %d; want %d and %d", n, snap.HeldUntracked, maxHeldIDs, sets*per-maxHeldIDs)
	}
}
