package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// scanRecorder records the cursor of every SCAN the client sends, and can
// cancel a context right after the n-th SCAN returns.
type scanRecorder struct {
	mu       sync.Mutex
	cursors  []uint64
	cancelAt int
	cancel   context.CancelFunc
}

func (h *scanRecorder) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *scanRecorder) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "scan" {
			h.mu.Lock()
			h.cursors = append(h.cursors, uint64(cmd.Args()[1].(uint64)))
			if len(h.cursors) == h.cancelAt && h.cancel != nil {
				h.cancel()
			}
			h.mu.Unlock()
		}
		return err
	}
}

func (h *scanRecorder) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (h *scanRecorder) take() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cursors
	h.cursors = nil
	return c
}

func newTestReader(t *testing.T, r *testserver.Redis, opts Options) (*Reader, *scanRecorder) {
	t.Helper()
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	rec := &scanRecorder{}
	client.AddHook(rec)
	return NewReader(client, opts), rec
}

// A pass interrupted part-way (a deadline, an error) continues from its
// cursor: it does not start over, so a pass over any keyspace finishes
// however short the time it gets at once.
func TestDiscoveryResumesFromItsCursor(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	r.Populate(t, 20_000, "cache:")
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	for _, q := range []string{"a", "b", "c", "d"} {
		b.Enqueue(q, 1, now)
	}
	reader, rec := newTestReader(t, r, Options{})

	// One uninterrupted pass: the pages a whole pass takes.
	if err := reader.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	full := rec.take()
	if len(full) < 5 || full[0] != 0 {
		t.Fatalf("a pass over 20,000 keys took %d pages starting at %v", len(full), full)
	}

	// Cut the next pass off after its third page.
	cut, cancel := context.WithCancel(ctx)
	rec.mu.Lock()
	rec.cancelAt, rec.cancel = 3, cancel
	rec.mu.Unlock()
	if err := reader.Discover(cut); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pass: err %v, want context.Canceled", err)
	}
	first := rec.take()
	if reader.DiscoveryStatus().Passes != 1 {
		t.Fatalf("an interrupted pass counted as complete")
	}
	if err := reader.discoverUntil(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rest := rec.take()
	if len(rest) == 0 || rest[0] == 0 {
		t.Fatalf("the pass restarted from cursor 0 after an interruption: %v then %v", first, rest)
	}
	// The cut page is read again when the cancellation caught its TYPE
	// pipeline, and only then.
	if n := len(first) + len(rest); n > len(full)+1 || (n == len(full)+1) != (rest[0] == first[len(first)-1]) {
		t.Errorf("interrupted and resumed pass read pages %v then %v; an uninterrupted one %d pages", first, rest, len(full))
	}
	queues, _, _ := reader.queueList()
	if len(queues) != 4 {
		t.Errorf("resumed pass found %v, want a b c d", queues)
	}
}

// Waits on the scrape path end with the scrape's context: a read that has
// to discover (no background discovery) gives up when its deadline passes
// while another holds the discovery lock, and with background discovery a
// read never waits for it at all.
func TestReadsDoNotWaitPastTheirDeadlineForDiscovery(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("emails", 2, time.Now())

	oneShot, _ := newTestReader(t, r, Options{})
	if err := oneShot.lock(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	begin := time.Now()
	go func() { _, err := oneShot.Snapshot(short); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want the deadline", err)
		}
		if took := time.Since(begin); took > 3*time.Second {
			t.Errorf("a read with a 200ms deadline took %s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read waited on the discovery lock past its deadline")
	}
	oneShot.unlock()

	background, _ := newTestReader(t, r, Options{Queues: []string{"emails"}})
	background.background.Store(true) // as Start does, without its goroutine
	if err := background.lock(ctx); err != nil {
		t.Fatal(err)
	}
	defer background.unlock()
	short2, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	snap, err := background.Snapshot(short2)
	if err != nil {
		t.Fatalf("with background discovery holding its lock: %v", err)
	}
	if len(snap.Queues) != 1 || snap.Queues[0].Ready != 2 {
		t.Errorf("configured queue: %+v", snap.Queues)
	}
}

// The name check that spares foreign keys a TYPE (and counts them) must
// never refuse a key that classify accepts with some type.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"emails", "emails.DQ", "emails.msgs", "emails.DQ.msgs", "emails.XQ", "emails.XQ.msgs",
		"x.acks", "__acks__.0123456789abcdef0123456789abcdef0123.emails", "__heartbeats__", "not a queue", "9lives", "",
		"__acks__.short.q", "caf\xc3\xa9", "a\xffb.DQ", "q\xff.acks"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		if checkName(rest) == nameTyped {
			return
		}
		for _, typ := range []string{"list", "hash", "zset", "set", "string", "stream", "none"} {
			if c := classify(rest, typ); c.kind != kindUnknown && c.kind != kindHeartbeats {
				t.Fatalf("checkName(%q) = %d, but classify accepts it as a %s", rest, checkName(rest), typ)
			}
		}
	})
}

// A pass that resumes its cursor on a restarted Redis (or on the replica a
// failover promoted) walked two different tables and may have missed
// keys: it starts over rather than publish a partial view.
func TestDiscoveryStartsOverAfterARestart(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	r.Populate(t, 50_000, "cache:")
	reader, rec := newTestReader(t, r, Options{})
	for i := 0; i < 3; i++ {
		if _, done, err := reader.step(ctx); err != nil || done {
			t.Fatalf("page %d: done %v, err %v", i, done, err)
		}
	}
	r.Restart()
	b := r.NewBroker(t, "dramatiq")
	var want []string
	for i := 0; i < 40; i++ {
		q := fmt.Sprintf("after_%02d", i)
		want = append(want, q)
		b.Enqueue(q, 1, time.Now())
	}
	rec.take()
	var err error
	for try := 0; try < 5; try++ {
		// The first command on the old connection fails; the next redials.
		if err = reader.discoverUntil(ctx, 1); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	queues, _, _ := reader.queueList()
	if !slices.Equal(queues, want) {
		t.Errorf("after a restart mid-pass found %d queues %v, want the %d created after it", len(queues), queues, len(want))
	}
	if cursors := rec.take(); !slices.Contains(cursors, 0) {
		t.Errorf("the pass did not start over at cursor 0: %v", cursors)
	}
}

// Background discovery outlives a Redis that is down at start: failed
// pages are retried with backoff, and the first pass completes once Redis
// answers, with no restart of the exporter.
func TestBackgroundDiscoveryRecoversWhenRedisComesUp(t *testing.T) {
	r := testserver.StartRedis(t)
	r.Stop()
	reader, _ := newTestReader(t, r, Options{Queues: []string{"emails"}, DiscoveryInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reader.Start(ctx)
	time.Sleep(1500 * time.Millisecond) // at least one failed page and one retry
	if reader.DiscoveryStatus().Passes != 0 {
		t.Fatal("a pass completed with Redis down")
	}
	r.Restart()
	r.NewBroker(t, "dramatiq").Enqueue("reports", 1, time.Now())
	deadline := time.Now().Add(time.Minute)
	for reader.DiscoveryStatus().Passes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no pass completed within a minute of Redis coming up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	queues, _, _ := reader.queueList()
	if !slices.Equal(queues, []string{"emails", "reports"}) {
		t.Errorf("queues %v, want emails and reports", queues)
	}
}
