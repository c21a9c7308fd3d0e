package redis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// deadFixture writes dead letters the way dispatch.lua's nack does (ZADD
// score, HSET body) and reads them through a Reader that counts commands.
type deadFixture struct {
	t      *testing.T
	r      *testserver.Redis
	reader *Reader
	rec    *recorder
}

func newDeadFixture(t *testing.T, queues ...string) *deadFixture {
	t.Helper()
	r := testserver.StartRedis(t)
	return newDeadFixtureOn(t, r, r.URL(), queues...)
}

func newDeadFixtureOn(t *testing.T, r *testserver.Redis, url string, queues ...string) *deadFixture {
	t.Helper()
	client, err := NewClient(ClientOptions{URL: url, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	return &deadFixture{t: t, r: r, rec: rec, reader: NewReader(client, Options{Queues: queues, SkipDiscovery: true})}
}

// deadBody is a body as Dramatiq's encoder writes it, its message id rid.
func deadBody(queue, actor, rid string) string {
	return testserver.Message{Queue: queue, Actor: actor, ID: rid, Args: []any{1}, Created: time.UnixMilli(1)}.JSON(rid)
}

// add dead-letters n messages of actor on queue at score ms.
func (f *deadFixture) add(queue, actor string, ms float64, n int) []string {
	f.t.Helper()
	ctx := context.Background()
	pipe := f.r.Admin.Pipeline()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = testserver.UUID()
		pipe.ZAdd(ctx, "dramatiq:"+queue+".XQ", goredis.Z{Score: ms, Member: ids[i]})
		pipe.HSet(ctx, "dramatiq:"+queue+".XQ.msgs", ids[i], deadBody(queue, actor, ids[i]))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		f.t.Fatal(err)
	}
	return ids
}

// prune removes the members scored at or below ms, as maintenance does.
func (f *deadFixture) prune(queue string, ms float64) {
	f.t.Helper()
	ctx := context.Background()
	ids, _ := f.r.Admin.Do(ctx, "zrangebyscore", "dramatiq:"+queue+".XQ", "0", fmt.Sprint(ms)).StringSlice()
	if len(ids) == 0 {
		return
	}
	f.r.Admin.ZRem(ctx, "dramatiq:"+queue+".XQ", ids)
	f.r.Admin.HDel(ctx, "dramatiq:"+queue+".XQ.msgs", ids...)
}

// deadCmds counts the commands the last read sent for dead-letter
// counting (heartbeats are read by ZCOUNT and ZSCORE, never by range).
func (f *deadFixture) deadCmds() int {
	return f.rec.count("zrangebyscore") + f.rec.count("hstrlen") + f.rec.count("hmget")
}

func (f *deadFixture) read() *Snapshot {
	f.t.Helper()
	f.rec.reset()
	snap, err := f.reader.Snapshot(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return snap
}

// counts returns queue → total and "queue/actor" → count.
func counts(snap *Snapshot) (map[string]uint64, map[string]uint64) {
	q := map[string]uint64{}
	for _, s := range snap.Queues {
		q[s.Name] = s.DeadLettered
	}
	a := map[string]uint64{}
	for _, x := range snap.DeadLetteredByActor {
		a[x.Queue+"/"+x.Actor] = x.Count
	}
	return q, a
}

func (f *deadFixture) expect(snap *Snapshot, queues map[string]uint64, actors map[string]uint64) {
	f.t.Helper()
	q, a := counts(snap)
	for k, v := range queues {
		if q[k] != v {
			f.t.Fatalf("queue %s: %d dead-lettered, want %d (all %v)", k, q[k], v, q)
		}
	}
	if actors != nil && fmt.Sprint(a) != fmt.Sprint(actors) {
		f.t.Fatalf("by actor %v, want %v", a, actors)
	}
}

// A dead-letter queue that already holds 100,000 messages costs nothing on
// the first read and nothing while unchanged; new messages are counted
// exactly, per queue and actor, across reads, whatever their number.
func TestDeadLettersCountedFromStart(t *testing.T) {
	f := newDeadFixture(t, "default", "other")
	ctx := context.Background()
	base := float64(time.Now().UnixMilli())
	// 100,000 existing, in batches.
	for i := 0; i < 100; i++ {
		f.add("default", "old", base-float64(100000-i*1000), 1000)
	}
	snap := f.read()
	f.expect(snap, map[string]uint64{"default": 0, "other": 0}, map[string]uint64{})
	if c := f.deadCmds(); c != 0 {
		t.Fatalf("first read sent %v", f.rec.names)
	}
	for i := 0; i < 3; i++ {
		f.read()
		if c := f.deadCmds(); c != 0 || f.rec.trips != 1 {
			t.Fatalf("steady read %d sent %v in %d round trips", i, f.rec.names, f.rec.trips)
		}
	}

	f.add("default", "send_email", base+1, 3)
	f.add("default", "resize", base+2, 2)
	f.add("other", "send_email", base+3, 1)
	snap = f.read()
	f.expect(snap, map[string]uint64{"default": 5, "other": 1},
		map[string]uint64{"default/send_email": 3, "default/resize": 2, "other/send_email": 1})
	if n := f.rec.count("hstrlen"); n != 6 {
		t.Fatalf("read the sizes of %d bodies for 6 new dead letters: %v", n, f.rec.names)
	}
	// Nothing new: no command beyond round trip 1 (and the unchanged
	// heads'), even though the look-back window holds remembered ids.
	f.read()
	f.rec.reset()
	snap = f.read()
	if c := f.deadCmds(); c != 0 {
		t.Fatalf("unchanged read sent %v", f.rec.names)
	}
	f.expect(snap, map[string]uint64{"default": 5, "other": 1}, nil)

	// Several reads, several messages each.
	for i := 0; i < 4; i++ {
		f.add("default", "resize", base+float64(10+i), 10)
		f.read()
	}
	snap = f.read()
	f.expect(snap, map[string]uint64{"default": 45, "other": 1},
		map[string]uint64{"default/send_email": 3, "default/resize": 42, "other/send_email": 1})
	if got := f.r.Admin.ZCard(ctx, "dramatiq:default.XQ").Val(); got != 100045 {
		t.Fatalf("fixture: %d members", got)
	}
}

// Members sharing one millisecond, skewed workers and pruning or requeues
// removing members in the same interval are each counted once.
func TestDeadLettersSameScoreSkewAndPruning(t *testing.T) {
	f := newDeadFixture(t, "q")
	// Scores from 10 s after the Reader started, so that skewed ones are
	// still after it.
	base := float64(time.Now().UnixMilli()) + 10000
	f.add("q", "a", base-60000, 10) // existing
	f.read()

	f.add("q", "a", base+1, 3)
	f.expect(f.read(), map[string]uint64{"q": 3}, nil)
	// More at the same millisecond as the remembered watermark.
	f.add("q", "a", base+1, 4)
	f.expect(f.read(), map[string]uint64{"q": 7}, nil)

	// A worker whose clock is 2 s behind: inside the look-back window.
	f.add("q", "b", base-2000+1, 2)
	f.add("q", "a", base+5, 1)
	f.expect(f.read(), map[string]uint64{"q": 10}, map[string]uint64{"q/a": 8, "q/b": 2})
	// Only behind, the newest unchanged: ZCARD tells.
	f.add("q", "b", base-1000, 1)
	f.expect(f.read(), map[string]uint64{"q": 11}, nil)

	// Pruning the old ones while as many new ones arrive: ZCARD is the
	// same, the newest differs.
	f.prune("q", base-50000)
	f.add("q", "c", base+100, 10)
	f.expect(f.read(), map[string]uint64{"q": 21}, map[string]uint64{"q/a": 8, "q/b": 3, "q/c": 10})

	// A manual requeue (ZREM + HDEL of a recent member) with one new one:
	// the count goes on, nothing is counted twice.
	ids := f.add("q", "d", base+200, 2)
	f.read()
	ctx := context.Background()
	f.r.Admin.ZRem(ctx, "dramatiq:q.XQ", ids[0])
	f.r.Admin.HDel(ctx, "dramatiq:q.XQ.msgs", ids[0])
	// (One millisecond later: in the same millisecond, a member ordered
	// before the newest by id would leave ZCARD and the newest unchanged,
	// and wait for the next change; see docs/dead-letter-counters.md.)
	f.add("q", "d", base+201, 1)
	f.expect(f.read(), map[string]uint64{"q": 24}, nil)
	// Everything pruned, then new ones.
	f.prune("q", base+1e6)
	f.read()
	f.add("q", "e", base+300, 2)
	f.expect(f.read(), map[string]uint64{"q": 26}, map[string]uint64{"q/a": 8, "q/b": 3, "q/c": 10, "q/d": 3, "q/e": 2})
	// Repeated reads change nothing.
	for i := 0; i < 3; i++ {
		f.expect(f.read(), map[string]uint64{"q": 26}, nil)
	}
}

// More new members than one read takes (even all in one millisecond) are
// counted by the following reads, oldest first, exactly.
func TestDeadLettersBeyondOneRead(t *testing.T) {
	f := newDeadFixture(t, "q")
	base := float64(time.Now().UnixMilli())
	f.read()
	f.add("q", "same", base, 2500)
	f.add("q", "later", base+1, 700)
	want := []uint64{1000, 2000, 3000, 3200, 3200}
	for i, w := range want {
		snap := f.read()
		f.expect(snap, map[string]uint64{"q": w}, nil)
		if n := f.rec.count("hstrlen"); n > MaxNewDeadLettersPerQueue {
			t.Fatalf("read %d sized %d bodies", i, n)
		}
	}
	f.expect(f.read(), map[string]uint64{"q": 3200}, map[string]uint64{"q/same": 2500, "q/later": 700})
}

// Bodies that cannot name an actor are counted under ActorUnknown; names
// become valid, bounded label values; the number of actors is capped.
func TestDeadLetterActors(t *testing.T) {
	f := newDeadFixture(t, "q", "r")
	ctx := context.Background()
	base := float64(time.Now().UnixMilli())
	f.read()
	put := func(id, body string, ms float64) {
		f.r.Admin.ZAdd(ctx, "dramatiq:q.XQ", goredis.Z{Score: ms, Member: id})
		if body != "" {
			f.r.Admin.HSet(ctx, "dramatiq:q.XQ.msgs", id, body)
		}
	}
	put("missing", "", base+1)
	put("garbage", "not json", base+2)
	put("numeric", `{"queue_name":"q","actor_name":7}`, base+3)
	put("big", `{"queue_name":"q","actor_name":"big","args":["`+strings.Repeat("x", MaxHeadBodyBytes)+`"]}`, base+4)
	put("bad-utf8", `{"actor_name":"caf`+"\xff"+`é"}`, base+5)
	put("long", `{"actor_name":"`+strings.Repeat("é", 200)+`"}`, base+6)
	// Names like the fixed values stay apart from them and from each other.
	put("dunder-other", `{"actor_name":"__other__"}`, base+7)
	put("dunder-unknown", `{"actor_name":"__unknown__"}`, base+7)
	put("fixed-other", `{"actor_name":"(other)"}`, base+7)
	put("fixed-other_", `{"actor_name":"(other)_"}`, base+7)
	put("fixed-unknown", `{"actor_name":"(unknown)"}`, base+7)
	put("infinite", `{"actor_name":"odd"}`, 1e300)
	snap := f.read()
	if f.rec.count("hmget") != 1 {
		t.Fatalf("commands: %v", f.rec.names)
	}
	_, a := counts(snap)
	long := strings.Repeat("é", 64) + "…"
	want := map[string]uint64{"q/(unknown)": 4, "q/caf\uFFFDé": 1, "q/" + long: 1, "q/odd": 1,
		"q/__other__": 1, "q/__unknown__": 1, "q/(other)_": 1, "q/(other)__": 1, "q/(unknown)_": 1}
	if fmt.Sprint(a) != fmt.Sprint(want) {
		t.Fatalf("by actor %v, want %v", a, want)
	}
	if snap.Anomalies[AnomalyOversizeBody] != 1 || snap.Anomalies[AnomalyUndecodableBody] != 2 || snap.Anomalies[AnomalyInvalidTime] < 1 {
		t.Fatalf("anomalies %v", snap.Anomalies)
	}
	f.expect(snap, map[string]uint64{"q": 12}, nil)

	// The cap: MaxActorSeries pairs, the rest under ActorOther, which real
	// actors named "__other__" and "(other)", counted before the cap was
	// reached, never join.
	f.r.Admin.Del(ctx, "dramatiq:q.XQ", "dramatiq:q.XQ.msgs")
	f.read()
	f.add("r", "__other__", base+8, 2)
	f.add("r", ActorOther, base+8, 1)
	have := f.read().DeadLetterActorSeries
	for i := 0; i < MaxActorSeries-have+7; i++ {
		f.add("r", fmt.Sprintf("actor_%03d", i), base+float64(10+i), 1)
	}
	f.add("r", "actor_000", base+5000, 2)
	f.add("r", "__other__", base+5000, 1)
	snap = f.read()
	_, a = counts(snap)
	if snap.DeadLetterActorSeries != MaxActorSeries || a["r/(other)"] != 7 || a["r/actor_000"] != 3 ||
		a["r/__other__"] != 3 || a["r/(other)_"] != 1 {
		t.Fatalf("series %d, by actor %v", snap.DeadLetterActorSeries, a)
	}
}

// A failed read counts nothing and loses nothing: the counters stay where
// they were, and the next good read counts what arrived meanwhile.
func TestDeadLetterErrorIsNotZero(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	url := r.ReadOnlyUser(t, "ro", "ro-secret")
	f := newDeadFixtureOn(t, r, url, "q")
	base := float64(time.Now().UnixMilli())
	f.add("q", "a", base-60000, 1)
	f.read()
	f.add("q", "a", base+1, 2)
	f.expect(f.read(), map[string]uint64{"q": 2}, nil)

	if err := r.Admin.Do(ctx, "ACL", "SETUSER", "ro", "-hmget").Err(); err != nil {
		t.Fatal(err)
	}
	f.add("q", "a", base+2, 3)
	if _, err := f.reader.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("read without HMGET: %v", err)
	}
	if err := r.Admin.Do(ctx, "ACL", "SETUSER", "ro", "+hmget").Err(); err != nil {
		t.Fatal(err)
	}
	f.expect(f.read(), map[string]uint64{"q": 5}, map[string]uint64{"q/a": 5})

	// A .XQ of the wrong type is an anomaly, never a failure or a count.
	r.Admin.Del(ctx, "dramatiq:q.XQ")
	r.Admin.Set(ctx, "dramatiq:q.XQ", "x", 0)
	snap := f.read()
	if snap.Anomalies[AnomalyWrongType] == 0 {
		t.Fatalf("anomalies %v", snap.Anomalies)
	}
	f.expect(snap, map[string]uint64{"q": 5}, nil)

	// A queue whose .XQ first has the wrong type, then becomes a sorted
	// set of 3,000: those are not counted, only what comes after.
	r.Admin.Set(ctx, "dramatiq:w.XQ", "x", 0)
	g := newDeadFixtureOn(t, r, r.URL(), "w")
	g.read()
	r.Admin.Del(ctx, "dramatiq:w.XQ")
	g.add("w", "a", base, 3000)
	g.expect(g.read(), map[string]uint64{"w": 0}, nil)
	g.add("w", "a", base+60000, 2)
	g.expect(g.read(), map[string]uint64{"w": 2}, nil)
	g.expect(g.read(), map[string]uint64{"w": 2}, map[string]uint64{"w/a": 2})
}

// A new Reader (an exporter restart) starts from zero and does not count
// what is already there.
func TestDeadLettersRestartFromZero(t *testing.T) {
	f := newDeadFixture(t, "q")
	base := float64(time.Now().UnixMilli())
	f.read()
	f.add("q", "a", base, 4)
	f.expect(f.read(), map[string]uint64{"q": 4}, nil)
	g := newDeadFixtureOn(t, f.r, f.r.URL(), "q")
	f.expect(g.read(), map[string]uint64{"q": 0}, map[string]uint64{})
	f.add("q", "a", base+60000, 1)
	f.expect(g.read(), map[string]uint64{"q": 1}, nil)
	f.expect(f.read(), map[string]uint64{"q": 5}, nil)
}

// Readers sharing one Reader concurrently count every message once.
func TestDeadLettersConcurrentReads(t *testing.T) {
	f := newDeadFixture(t, "q")
	base := float64(time.Now().UnixMilli())
	f.read()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.reader.Snapshot(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 50; i++ {
		f.add("q", "a", base+float64(i/3), 3)
	}
	close(stop)
	wg.Wait()
	f.expect(f.read(), map[string]uint64{"q": 150}, map[string]uint64{"q/a": 150})
}

// BenchmarkSnapshotDeadLetters measures a read of 100 queues whose
// dead-letter queues hold 100,000 messages in all, with no new dead letters
// and with 1,000 new ones per read (100 on each of 10 queues), against a
// real redis-server. cmds/op and trips/op are the Redis commands and round
// trips of one read. Run: go test ./broker -run '^$' -bench DeadLetters
func BenchmarkSnapshotDeadLetters(b *testing.B) {
	for _, fresh := range []int{0, 1000} {
		b.Run(fmt.Sprintf("new=%d", fresh), func(b *testing.B) {
			r := testserver.StartRedis(b)
			ctx := context.Background()
			queues := make([]string, 100)
			base := float64(time.Now().UnixMilli())
			for i := range queues {
				queues[i] = fmt.Sprintf("queue%03d", i)
				pipe := r.Admin.Pipeline()
				for j := 0; j < 1000; j++ {
					id := testserver.UUID()
					pipe.ZAdd(ctx, "dramatiq:"+queues[i]+".XQ", goredis.Z{Score: base - float64(j), Member: id})
					pipe.HSet(ctx, "dramatiq:"+queues[i]+".XQ.msgs", id, deadBody(queues[i], "old", id))
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			rec := &recorder{}
			rec.reset()
			client.AddHook(rec)
			reader := NewReader(client, Options{Queues: queues, SkipDiscovery: true})
			if _, err := reader.Snapshot(ctx); err != nil {
				b.Fatal(err)
			}
			cmds, trips := 0, 0
			var total uint64
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if fresh > 0 {
					b.StopTimer()
					pipe := r.Admin.Pipeline()
					for j := 0; j < fresh; j++ {
						q := queues[j%10]
						id := testserver.UUID()
						// One scrape interval (15 s) later each time, several
						// per millisecond.
						pipe.ZAdd(ctx, "dramatiq:"+q+".XQ", goredis.Z{Score: base + float64(15000*(i+1)+j%20), Member: id})
						pipe.HSet(ctx, "dramatiq:"+q+".XQ.msgs", id, deadBody(q, fmt.Sprintf("actor%d", j%7), id))
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
					rec.reset()
					b.StartTimer()
				} else {
					rec.reset()
				}
				snap, err := reader.Snapshot(ctx)
				if err != nil {
					b.Fatal(err)
				}
				rec.mu.Lock()
				for _, n := range rec.names {
					cmds += n
				}
				trips += rec.trips
				rec.mu.Unlock()
				total = 0
				for _, q := range snap.Queues {
					total += q.DeadLettered
				}
			}
			if total != uint64(fresh*b.N) {
				b.Fatalf("counted %d, want %d", total, fresh*b.N)
			}
			b.ReportMetric(float64(cmds)/float64(b.N), "cmds/op")
			b.ReportMetric(float64(trips)/float64(b.N), "trips/op")
		})
	}
}

// Dead letters scored after the Reader started count even when the queue is
// first read later (found by discovery after they died); those before it
// never do.
func TestDeadLettersOfALateQueue(t *testing.T) {
	r := testserver.StartRedis(t)
	before := float64(time.Now().Add(-time.Minute).UnixMilli())
	f := newDeadFixtureOn(t, r, r.URL(), "other")
	f.reader = NewReader(f.reader.client, Options{Queues: []string{"other"}})
	ctx := context.Background()
	if err := f.reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	f.read()
	f.add("late", "old", before, 3)
	f.add("late", "a", float64(time.Now().Add(time.Second).UnixMilli()), 2)
	if err := f.reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	snap := f.read()
	f.expect(snap, map[string]uint64{"late": 2, "other": 0}, map[string]uint64{"late/a": 2})
}

// Forgetting a queue frees its actors' share of the cap.
func TestDeadLetterActorCapFreedByForget(t *testing.T) {
	dc := newDeadCounter(time.Now())
	for i := 0; i < MaxActorSeries; i++ {
		dc.countActor("gone", fmt.Sprint("a", i))
	}
	dc.countActor("kept", "x")
	dc.countActor("kept", ActorUnknown)
	if dc.series() != MaxActorSeries || dc.actors[actorKey{"kept", ActorOther}] != 1 {
		t.Fatalf("series %d, actors %d", dc.series(), len(dc.actors))
	}
	dc.queues["kept"] = &deadWatch{}
	dc.forget([]string{"kept"})
	dc.countActor("kept", "x")
	if dc.series() != 1 || dc.actors[actorKey{"kept", "x"}] != 1 || len(dc.actors) != 3 {
		t.Fatalf("after forget: series %d, %v", dc.series(), dc.actors)
	}
}

// A score that is not a time counts once and does not hide later dead
// letters behind it.
func TestDeadLetterAbsurdScoreMovesNoWindow(t *testing.T) {
	f := newDeadFixture(t, "q")
	base := float64(time.Now().UnixMilli()) + 1000
	f.read()
	f.add("q", "odd", 1e300, 1)
	f.add("q", "a", base, 1)
	f.expect(f.read(), map[string]uint64{"q": 2}, nil)
	f.add("q", "a", base+10, 2)
	f.expect(f.read(), map[string]uint64{"q": 4}, map[string]uint64{"q/a": 3, "q/odd": 1})
	f.expect(f.read(), map[string]uint64{"q": 4}, nil)
}
