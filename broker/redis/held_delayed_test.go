package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// holdDelayed puts delayed messages with the given etas in worker wid's
// .DQ ack set of q, their bodies in q.DQ.msgs, as Dramatiq's fetch on
// q.DQ leaves them.
func holdDelayed(t *testing.T, srv *testserver.Redis, wid, q string, etas ...time.Time) []string {
	t.Helper()
	ctx := context.Background()
	pipe := srv.Admin.Pipeline()
	ids := make([]string, len(etas))
	for i, eta := range etas {
		ids[i] = testserver.UUID()
		pipe.HSet(ctx, "dramatiq:"+q+".DQ.msgs", ids[i], testserver.Body(q+".DQ", ids[i], eta.Add(-time.Hour), map[string]any{"eta": eta.UnixMilli()}))
		pipe.SAdd(ctx, "dramatiq:__acks__."+wid+"."+q+".DQ", ids[i])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// A worker that appears after the Reader started, holding overdue delayed
// messages, with no discovery pass ever (SkipDiscovery: no SCAN): the
// read that first sees its heartbeat leaves the count absent (never 0),
// the next one has it right. Unclaimed ids in the list are not taken for
// a missing holder.
func TestOverdueFoundWithoutScan(t *testing.T) {
	srv := testserver.StartRedis(t)
	clk := newClock(time.Now())
	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true, Now: clk.now})
	if q := queueStats(t, mustSnapshot(t, r), "q"); !q.DelayedOverdueKnown || q.DelayedOverdue != 0 {
		t.Fatalf("nothing delayed: overdue %d known=%v, want a known 0", q.DelayedOverdue, q.DelayedOverdueKnown)
	}

	clk.advance(time.Second)
	now := clk.now()
	wid := testserver.UUID()
	holdDelayed(t, srv, wid, "q", now.Add(-5*time.Minute), now.Add(-3*time.Minute), now.Add(-2*time.Minute), now.Add(time.Hour), now.Add(2*time.Hour))
	b := srv.NewBroker(t, "dramatiq")
	b.Enqueue("q.DQ", 2, now) // unclaimed: in the list, held by nobody
	b.Heartbeat(wid, now)
	if q := queueStats(t, mustSnapshot(t, r), "q"); q.DelayedOverdueKnown {
		t.Fatalf("read that first sees the worker: overdue %d known, want absent", q.DelayedOverdue)
	}
	clk.advance(time.Second)
	b.Heartbeat(wid, clk.now())
	snap := mustSnapshot(t, r)
	if q := queueStats(t, snap, "q"); !q.DelayedOverdueKnown || q.DelayedOverdue != 3 {
		t.Fatalf("next read: overdue %d known=%v, want a known 3", q.DelayedOverdue, q.DelayedOverdueKnown)
	}
	if n := srv.CommandCalls(t, "scan"); n != 0 {
		t.Errorf("%d SCANs, want none", n)
	}
	// Every holder known: the list's unclaimed ids cause no probing.
	clk.advance(time.Second)
	b.Heartbeat(wid, clk.now())
	mustSnapshot(t, r)
	clk.advance(time.Second)
	b.Heartbeat(wid, clk.now())
	if snap := mustSnapshot(t, r); snap.AckProbes != 0 {
		t.Errorf("steady: %d probes, want 0", snap.AckProbes)
	}
}

// Workers holding delayed messages keep a steady read at one round trip:
// the .DQ sets' SCARDs are the tracker's, and a set is listed again only
// when it changed. An overdue id acked and replaced by a new one (the set
// keeps its size) is noticed by the next read all the same.
func TestSteadyStateReadIsOneRoundTripWithHeldDelayed(t *testing.T) {
	testSteadyHeldDelayed(t, testserver.StartRedis(t), 1)
}

// Before Redis 6.2 (no SMISMEMBER) the reads stay right and never fail: a
// set with due ids is listed again instead (a second round trip), and its
// id without a body is probed again (a third).
func TestHeldDelayedWithoutSMIsMember(t *testing.T) {
	testSteadyHeldDelayed(t, testserver.StartRedis(t, "--rename-command", "SMISMEMBER", ""), 3)
}

func testSteadyHeldDelayed(t *testing.T, srv *testserver.Redis, steadyTrips int64) {
	ctx := context.Background()
	clk := newClock(time.Now())
	now := clk.now()
	b := srv.NewBroker(t, "dramatiq")
	var queues []string
	for i := 0; i < 20; i++ {
		q := fmt.Sprintf("q%02d", i)
		queues = append(queues, q)
		b.Enqueue(q, 5, now)
	}
	live := []string{testserver.UUID(), testserver.UUID(), testserver.UUID()}
	for i, w := range live {
		b.Fetch(w, queues[i], 2, now)
		holdDelayed(t, srv, w, queues[i], now.Add(time.Hour), now.Add(2*time.Hour))
		holdDelayed(t, srv, w, queues[10+i], now.Add(time.Hour))
	}
	// An id left dangling by a purge (no body) in a live worker's set.
	dangling := testserver.UUID()
	srv.Admin.SAdd(ctx, "dramatiq:__acks__."+live[2]+".q12.DQ", dangling)
	// A hung live worker holds two overdue messages and a future one.
	hung := testserver.UUID()
	hungIDs := holdDelayed(t, srv, hung, "q05", now.Add(-10*time.Minute), now.Add(-5*time.Minute), now.Add(time.Hour))
	// A dead one holds an overdue one.
	dead := testserver.UUID()
	holdDelayed(t, srv, dead, "q15", now.Add(-time.Hour))
	b.Heartbeat(dead, now.Add(-time.Hour))

	client, err := NewClient(ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hook := &tripHook{}
	client.AddHook(hook)
	r := NewReader(client, Options{Queues: queues, SkipDiscovery: true, Now: clk.now})
	read := func() *Snapshot {
		t.Helper()
		for _, w := range append([]string{hung}, live...) {
			b.Heartbeat(w, clk.now())
		}
		hook.trips.Store(0)
		snap := mustSnapshot(t, r)
		clk.advance(time.Second)
		return snap
	}
	var snap *Snapshot
	for i := 0; i < 6; i++ {
		snap = read()
	}
	if snap.AckProbes != 0 || snap.AckSetsTracked != 11 {
		t.Fatalf("steady state: %d probes, %d sets counted; want 0 and 11", snap.AckProbes, snap.AckSetsTracked)
	}
	want := map[string]int64{"q05": 2, "q15": 1}
	check := func(snap *Snapshot, want map[string]int64) {
		t.Helper()
		for _, q := range queues {
			s := queueStats(t, snap, q)
			if !s.DelayedOverdueKnown || s.DelayedOverdue != want[q] {
				t.Errorf("%s: overdue %d known=%v, want a known %d", q, s.DelayedOverdue, s.DelayedOverdueKnown, want[q])
			}
		}
	}
	check(snap, want)
	snap = read()
	if n := hook.trips.Load(); n != steadyTrips {
		t.Fatalf("a steady-state read with held delayed messages took %d round trips, want %d", n, steadyTrips)
	}
	check(snap, want)

	// The hung worker wakes: it promotes the older overdue message and
	// claims a new one, so its set keeps its size.
	set := "dramatiq:__acks__." + hung + ".q05.DQ"
	srv.Admin.SRem(ctx, set, hungIDs[0])
	srv.Admin.HDel(ctx, "dramatiq:q05.DQ.msgs", hungIDs[0])
	holdDelayed(t, srv, hung, "q05", clk.now().Add(time.Hour))
	if c := srv.Admin.SCard(ctx, set).Val(); c != 3 {
		t.Fatalf("set size %d, want 3", c)
	}
	want["q05"] = 1
	check(read(), want)
	snap = read()
	if n := hook.trips.Load(); n != steadyTrips {
		t.Errorf("steady again: %d round trips, want %d", n, steadyTrips)
	}
	check(snap, want)

	// The dangling id leaves (its holder acks it at its eta) as the
	// worker claims an overdue message: same size, a new id.
	srv.Admin.SRem(ctx, "dramatiq:__acks__."+live[2]+".q12.DQ", dangling)
	holdDelayed(t, srv, live[2], "q12", clk.now().Add(-10*time.Minute))
	want["q12"] = 1
	check(read(), want)
	if n := srv.CommandCalls(t, "scan"); n != 0 {
		t.Errorf("%d SCANs, want none", n)
	}
}
