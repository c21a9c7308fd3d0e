package redis

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

type backlogFixture struct {
	t      *testing.T
	r      *testserver.Redis
	reader *Reader
	rec    *recorder
}

func newBacklogFixture(t *testing.T, exactLimit int, queues ...string) *backlogFixture {
	t.Helper()
	r := testserver.StartRedis(t)
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	reader := NewReader(client, Options{Queues: queues, SkipDiscovery: true, BacklogByActor: true, BacklogExactLimit: exactLimit})
	return &backlogFixture{t: t, r: r, reader: reader, rec: rec}
}

// enqueue writes ready messages as dispatch.lua's enqueue does (HSET the
// body, RPUSH the id), one actor per entry of actors, in order.
func (f *backlogFixture) enqueue(queue string, actors []string) {
	f.t.Helper()
	ctx := context.Background()
	const chunk = 5000
	for lo := 0; lo < len(actors); lo += chunk {
		pipe := f.r.Admin.Pipeline()
		for _, a := range actors[lo:min(lo+chunk, len(actors))] {
			id := testserver.UUID()
			pipe.HSet(ctx, "dramatiq:"+queue+".msgs", id, testserver.Message{Queue: queue, Actor: a, ID: testserver.UUID(), Args: []any{1}, Created: time.Now()}.JSON(id))
			pipe.RPush(ctx, "dramatiq:"+queue, id)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *backlogFixture) read() *Snapshot {
	f.t.Helper()
	f.rec.reset()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	snap, err := f.reader.Snapshot(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	if snap.Backlog == nil {
		f.t.Fatal("no backlog with BacklogByActor set")
	}
	return snap
}

func backlogOf(snap *Snapshot, queue string) map[string]ActorBacklog {
	out := map[string]ActorBacklog{}
	for _, a := range snap.Backlog.Actors {
		if a.Queue == queue {
			out[a.Actor] = a
		}
	}
	return out
}

// skewed returns n actor names, 90/9/1 over three actors, in bursts of
// burst messages of one actor (producers enqueue in bursts).
func skewed(n, burst int, seed int64) []string {
	rng := rand.New(rand.NewSource(seed))
	out := make([]string, 0, n)
	for len(out) < n {
		a := "send_email"
		switch x := rng.Float64(); {
		case x >= 0.99:
			a = "rebuild_index"
		case x >= 0.90:
			a = "resize_image"
		}
		for i := 0; i < burst && len(out) < n; i++ {
			out = append(out, a)
		}
	}
	return out
}

func countOf(actors []string) map[string]int {
	m := map[string]int{}
	for _, a := range actors {
		m[a]++
	}
	return m
}

// At or below the exact limit every id is read, the counts are the truth,
// and a second read of the same backlog reads no body.
func TestBacklogByActorExactAndRemembered(t *testing.T) {
	f := newBacklogFixture(t, 1005, "emails")
	actors := skewed(1000, 1, 1)
	f.enqueue("emails", actors)
	snap := f.read()
	got := backlogOf(snap, "emails")
	for a, n := range countOf(actors) {
		if got[a].Messages != float64(n) || got[a].Sampled {
			t.Errorf("%s: got %+v, want exactly %d", a, got[a], n)
		}
	}
	if len(got) != 3 {
		t.Errorf("got %d actors, want 3: %+v", len(got), got)
	}
	if n := snap.Backlog.BodiesRead; n != 1000 {
		t.Errorf("first read fetched %d bodies, want 1000", n)
	}
	f.read()
	if n := f.rec.count("hget") + f.rec.count("hmget") + f.rec.count("hstrlen"); n != 0 {
		t.Errorf("second read of an unchanged backlog sent %d body commands, want 0", n)
	}
	// Five more of a new actor: only their five bodies are read.
	f.enqueue("emails", []string{"a", "a", "a", "a", "a"})
	snap = f.read()
	if n := snap.Backlog.BodiesRead; n != 5 {
		t.Errorf("read after 5 new messages fetched %d bodies, want 5", n)
	}
	if a := backlogOf(snap, "emails")["a"]; a.Messages != 5 || a.Sampled {
		t.Errorf("new actor: %+v", a)
	}
	// 1010 ids > the limit of 1005: now an estimate.
	f.enqueue("emails", []string{"a", "a", "a", "a", "a"})
	snap = f.read()
	got = backlogOf(snap, "emails")
	if !got["send_email"].Sampled {
		t.Errorf("1010 ready with a limit of 1000 should be sampled: %+v", got)
	}
}

// Above the exact limit the counts are an estimate from a bounded sample:
// the error on a skewed, bursty backlog of 200,000 stays within a few
// points, and the read's commands do not grow with the backlog.
func TestBacklogByActorSampledSkewed(t *testing.T) {
	f := newBacklogFixture(t, 1000, "big")
	const n = 200_000
	actors := skewed(n, 20, 2)
	f.enqueue("big", actors)
	snap := f.read()
	got := backlogOf(snap, "big")
	truth := countOf(actors)
	for a, want := range truth {
		est := got[a]
		if !est.Sampled {
			t.Errorf("%s: not marked sampled", a)
		}
		errPts := math.Abs(est.Messages-float64(want)) / n * 100
		t.Logf("%s: true %d (%.2f%%), estimate %.0f, error %.2f points of the backlog", a, want, float64(want)/n*100, est.Messages, errPts)
		if errPts > 6 {
			t.Errorf("%s: estimate %.0f is %.2f points off the true %d", a, est.Messages, errPts, want)
		}
	}
	if lr := f.rec.count("lrange"); lr > BacklogSampleIDs/backlogWindowIDs+headProbe {
		t.Errorf("%d LRANGEs for one queue, want at most %d", lr, BacklogSampleIDs/backlogWindowIDs)
	}
	if h := snap.Backlog.BodiesRead; h > BacklogSampleIDs {
		t.Errorf("%d bodies read, want at most %d", h, BacklogSampleIDs)
	}
	if snap.Backlog.SampledIDs > BacklogSampleIDs {
		t.Errorf("sample of %d ids, want at most %d", snap.Backlog.SampledIDs, BacklogSampleIDs)
	}
}

// Hostile data: bodies that are not JSON, a body over MaxHeadBodyBytes,
// actor names that are not UTF-8 or are the fixed labels, ids with no body
// and oversize ids. The read does not fail, each such id counts under
// (unknown) or an escaped name, every label is valid UTF-8 and the
// anomalies are counted.
func TestBacklogByActorHostile(t *testing.T) {
	f := newBacklogFixture(t, 1000, "evil")
	ctx := context.Background()
	key, msgs := "dramatiq:evil", "dramatiq:evil.msgs"
	add := func(id, body string) {
		if body != "" {
			f.r.Admin.HSet(ctx, msgs, id, body)
		}
		f.r.Admin.RPush(ctx, key, id)
	}
	add("a1", "not json at all")
	add("a2", `{"queue_name":"evil","actor_name":"\xff\xfe`+"\x00"+`bad"}`)
	add("a3", `{"actor_name":"`+strings.Repeat("x", 1000)+`","queue_name":"evil"}`)
	add("a4", `{"queue_name":"evil","actor_name":"(other)"}`)
	add("a5", "") // no body
	add("a6", `{"queue_name":"evil","actor_name":42}`)
	add("a7", `{"queue_name":"evil","actor_name":"ok"}`)
	add("a8", "{"+strings.Repeat(`"k":"v",`, 1)+`"actor_name":"`+strings.Repeat("y", MaxHeadBodyBytes)+`"}`)
	add(strings.Repeat("z", MaxIDBytes+1), `{"actor_name":"ok"}`)
	add("a9", string([]byte{0xff, 0xfe, 0xfd}))
	snap := f.read()
	got := backlogOf(snap, "evil")
	total := 0.0
	for a, v := range got {
		if !utf8.ValidString(a) || len(a) > maxActorNameBytes+4 {
			t.Errorf("label %q is not a valid bounded label", a)
		}
		total += v.Messages
	}
	if total != 10 {
		t.Errorf("counted %.0f ids, want 10: %+v", total, got)
	}
	if got["ok"].Messages != 1 || got["(other)_"].Messages != 1 {
		t.Errorf("ok and the escaped (other)_ should count 1 each: %+v", got)
	}
	// a1, a6, a9 undecodable; a5 no body; a8 oversize; the long id.
	if got[ActorUnknown].Messages < 5 {
		t.Errorf("(unknown) = %.0f, want at least 5: %+v", got[ActorUnknown].Messages, got)
	}
	for _, kind := range []string{AnomalyOversizeBody, AnomalyOversizeID, AnomalyUndecodableBody} {
		if snap.Anomalies[kind] == 0 {
			t.Errorf("anomaly %s not counted: %v", kind, snap.Anomalies)
		}
	}
	// The oversize body is remembered by its size: never fetched.
	if n := f.read().Backlog.BodiesRead; n != 0 { // a5 has no body: probed again, never fetched
		t.Errorf("second read fetched %d bodies", n)
	}
}

// Beyond MaxActorSeries pairs the smallest new actors go under (other),
// whose count is the sum of theirs, and a pair that had a series keeps it.
func TestBacklogByActorSeriesCap(t *testing.T) {
	f := newBacklogFixture(t, 2000, "many")
	var actors []string
	for i := 0; i < MaxActorSeries+100; i++ {
		a := "actor_" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		actors = append(actors, a)
		if i < 10 {
			actors = append(actors, a) // ten actors with two messages
		}
	}
	f.enqueue("many", actors)
	snap := f.read()
	if snap.Backlog.Series != MaxActorSeries {
		t.Errorf("series = %d, want %d", snap.Backlog.Series, MaxActorSeries)
	}
	got := backlogOf(snap, "many")
	if got[ActorOther].Messages != 100 {
		t.Errorf("(other) = %v, want 100", got[ActorOther].Messages)
	}
	if got["actor_a"].Messages != 2 {
		t.Errorf("the largest actors keep their series: %+v", got["actor_a"])
	}
	sum := 0.0
	for _, v := range got {
		sum += v.Messages
	}
	if sum != float64(len(actors)) {
		t.Errorf("sum %v, want %d", sum, len(actors))
	}
	snap2 := f.read()
	if len(snap2.Backlog.Actors) != len(snap.Backlog.Actors) {
		t.Errorf("labels moved between two reads of the same backlog")
	}
}

// Off by default: no command beyond the usual read.
func TestBacklogByActorOffByDefault(t *testing.T) {
	r := testserver.StartRedis(t)
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r.Admin.RPush(context.Background(), "dramatiq:q", "x")
	snap, err := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true}).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Backlog != nil {
		t.Errorf("backlog read while off: %+v", snap.Backlog)
	}
}

// The windows cover the list from head to tail without leaving it.
func TestBacklogWindows(t *testing.T) {
	for _, n := range []int64{1, 10, 999, 1000, 1001, 5000, 1 << 30} {
		ws := backlogWindows(n, 1000)
		ids := int64(0)
		for _, w := range ws {
			if w[0] < 0 || (n > 1000 && w[1] >= n) {
				t.Errorf("n=%d: window %v leaves the list", n, w)
			}
			ids += w[1] - w[0] + 1
		}
		if n > 1000 && (ws[0][0] != 0 || ws[len(ws)-1][1] != n-1 || ids != 1000) {
			t.Errorf("n=%d: windows %v..%v, %d ids", n, ws[0], ws[len(ws)-1], ids)
		}
	}
}

// TestBacklogByActorEstimateError measures the estimate's error over many
// skewed backlogs (90/9/1), well mixed and in bursts, for the docs. It
// fails only on errors far above what the docs state.
func TestBacklogByActorEstimateError(t *testing.T) {
	f := newBacklogFixture(t, 1000, "m")
	const n, seeds = 50_000, 8
	for _, burst := range []int{1, 25, 200} {
		worst := map[string]float64{}
		sum := map[string]float64{}
		for seed := int64(0); seed < seeds; seed++ {
			f.r.Admin.Del(context.Background(), "dramatiq:m", "dramatiq:m.msgs")
			actors := skewed(n, burst, 100+seed)
			f.enqueue("m", actors)
			got := backlogOf(f.read(), "m")
			for a, want := range countOf(actors) {
				pts := math.Abs(got[a].Messages-float64(want)) / n * 100
				sum[a] += pts
				worst[a] = max(worst[a], pts)
			}
		}
		for _, a := range []string{"send_email", "resize_image", "rebuild_index"} {
			t.Logf("bursts of %d: %s mean error %.2f points, worst %.2f (of %d backlogs of %d)", burst, a, sum[a]/seeds, worst[a], seeds, n)
			if worst[a] > 15 {
				t.Errorf("bursts of %d: %s worst error %.2f points", burst, a, worst[a])
			}
		}
	}
}

// With more long queues than the per-read budget can sample, the longest
// are read and the others counted as skipped, never reported as zero.
func TestBacklogByActorBudget(t *testing.T) {
	n := maxBacklogIDsPerRead/minBacklogSampleIDs + 5
	names := make([]string, n)
	for i := range names {
		names[i] = "q" + strings.Repeat("x", i/26) + string(rune('a'+i%26))
	}
	f := newBacklogFixture(t, 1000, names...)
	for i, q := range names {
		k := 101
		if i == n-1 {
			k = 150 // the longest, last in name order
		}
		acts := make([]string, k)
		for j := range acts {
			acts[j] = "a"
		}
		f.enqueue(q, acts)
	}
	snap := f.read()
	if snap.Backlog.QueuesSkipped != 5 {
		t.Errorf("skipped %d queues, want 5", snap.Backlog.QueuesSkipped)
	}
	if snap.Backlog.SampledIDs > maxBacklogIDsPerRead {
		t.Errorf("read %d ids, budget %d", snap.Backlog.SampledIDs, maxBacklogIDsPerRead)
	}
	if a := backlogOf(snap, names[n-1])["a"]; a.Messages != 150 {
		t.Errorf("the longest queue: %+v", a)
	}
}

// Concurrent scrapes share the remembered actors: each read sees the
// whole backlog, whoever settled it.
func TestBacklogByActorConcurrentReads(t *testing.T) {
	f := newBacklogFixture(t, 1000, "c")
	actors := skewed(500, 1, 3)
	f.enqueue("c", actors)
	truth := countOf(actors)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			snap, err := f.reader.Snapshot(ctx)
			if err == nil {
				for _, a := range snap.Backlog.Actors {
					if a.Messages != float64(truth[a.Actor]) {
						err = fmt.Errorf("%s: %v, want %d", a.Actor, a.Messages, truth[a.Actor])
					}
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A ready list whose elements are far larger than ids (hostile pushes of
// MiB-sized elements) is never listed: MEMORY USAGE tells first, so the
// read stays small; the queue is counted as skipped, its series absent.
// The read works for the read-only ACL user the docs recommend.
func TestBacklogByActorHugeElementsNotListed(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		id := testserver.UUID()
		r.Admin.HSet(ctx, "dramatiq:huge.msgs", id, testserver.Message{Queue: "huge", Actor: "a", ID: id, Created: time.Now()}.JSON(id))
		r.Admin.RPush(ctx, "dramatiq:huge", id)
		id = testserver.UUID()
		r.Admin.HSet(ctx, "dramatiq:fine.msgs", id, testserver.Message{Queue: "fine", Actor: "b", ID: id, Created: time.Now()}.JSON(id))
		r.Admin.RPush(ctx, "dramatiq:fine", id)
	}
	big := strings.Repeat("x", 2<<20)
	for i := 0; i < 3; i++ {
		r.Admin.RPush(ctx, "dramatiq:huge", big+string(rune('a'+i)))
	}
	url := r.ReadOnlyUser(t, "ro", "ro-pass-Backlog-1")
	client, err := NewClient(ClientOptions{URL: url, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := &recorder{}
	rec.reset()
	client.AddHook(rec)
	reader := NewReader(client, Options{Queues: []string{"huge", "fine"}, SkipDiscovery: true, BacklogByActor: true})
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := backlogOf(snap, "huge"); len(got) != 0 {
		t.Errorf("huge listed: %+v", got)
	}
	if got := backlogOf(snap, "fine")["b"]; got.Messages != 100 || got.Sampled {
		t.Errorf("fine: %+v", got)
	}
	if snap.Backlog.QueuesSkipped != 1 || snap.Anomalies[AnomalyOversizeID] == 0 {
		t.Errorf("skipped %d, anomalies %v", snap.Backlog.QueuesSkipped, snap.Anomalies)
	}
	// One LRANGE per queue for the heads, one per queue for the delay
	// queue's head (a first read has not seen them empty yet, delayed.go),
	// and one for fine's backlog: none for huge's.
	if n := rec.count("lrange"); n != 5 {
		t.Errorf("%d LRANGEs, want 5", n)
	}
}
