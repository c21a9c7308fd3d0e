package collector_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// queueMetrics are the per-queue and process families, compared as text.
var queueMetrics = []string{
	"dramatiq_redis_up",
	"dramatiq_queue_ready_messages",
	"dramatiq_queue_inflight_messages",
	"dramatiq_queue_delayed_messages",
	"dramatiq_queue_dead_letter_messages",
	"dramatiq_queue_dead_letter_last_timestamp_seconds",
	"dramatiq_queue_oldest_message_age_seconds",
	"dramatiq_queue_orphaned_messages",
	"dramatiq_processes",
	"dramatiq_exporter_queues_dropped",
}

type fixture struct {
	t      *testing.T
	redis  *testserver.Redis
	reader *broker.Reader
	exp    *collector.Exporter
}

func newFixture(t *testing.T, r *testserver.Redis, url string, opts broker.Options) *fixture {
	t.Helper()
	client, err := broker.NewClient(broker.ClientOptions{URL: url, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, opts)
	return &fixture{t: t, redis: r, reader: reader, exp: newExporter(t, reader)}
}

func newExporter(t testing.TB, reader *broker.Reader) *collector.Exporter {
	t.Helper()
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "test", Namespace: "dramatiq"},
		collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

// registry binds the exporter to a fresh context in a pedantic registry,
// so Describe and Collect must agree.
func (f *fixture) registry(timeout time.Duration) (*prometheus.Registry, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.exp.Bind(ctx))
	return reg, cancel
}

func (f *fixture) compare(expected string, names ...string) {
	f.t.Helper()
	reg, cancel := f.registry(5 * time.Second)
	defer cancel()
	if len(names) == 0 {
		names = queueMetrics
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), names...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) discover() {
	f.t.Helper()
	if err := f.reader.Discover(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func fixedClock() (time.Time, func() time.Time) {
	now := time.UnixMilli(time.Now().UnixMilli()).Truncate(time.Second)
	return now, func() time.Time { return now }
}

const header = `
# HELP dramatiq_redis_up 1 when the broker's Redis answered this scrape, else 0. When 0, no queue or process series are emitted.
# TYPE dramatiq_redis_up gauge
# HELP dramatiq_queue_ready_messages Messages waiting to be fetched: LLEN of the queue list.
# TYPE dramatiq_queue_ready_messages gauge
# HELP dramatiq_queue_inflight_messages Messages fetched by a worker and not yet acked, running or prefetched, including those held by dead workers: HLEN of queue.msgs minus LLEN of the queue (the sum of the queue's ack sets while the broker is consistent).
# TYPE dramatiq_queue_inflight_messages gauge
# HELP dramatiq_queue_delayed_messages Delayed messages and retries in backoff, claimed by a worker or not: HLEN of queue.DQ.msgs.
# TYPE dramatiq_queue_delayed_messages gauge
# HELP dramatiq_queue_dead_letter_messages Dead-lettered messages: ZCARD of queue.XQ.
# TYPE dramatiq_queue_dead_letter_messages gauge
# HELP dramatiq_queue_dead_letter_last_timestamp_seconds Unix time of the newest dead-lettering (highest queue.XQ score, the nacking worker's clock). Absent when the dead-letter queue is empty.
# TYPE dramatiq_queue_dead_letter_last_timestamp_seconds gauge
# HELP dramatiq_queue_oldest_message_age_seconds Now minus message_timestamp (creation time) of the message at the head of the ready list; 0 when the list is empty, absent when the head cannot be decoded.
# TYPE dramatiq_queue_oldest_message_age_seconds gauge
# HELP dramatiq_queue_orphaned_messages Messages of the queue or its delay queue held in ack sets of processes whose heartbeat is older than the heartbeat timeout or missing. Dramatiq returns them only through random maintenance. Ack sets are found from the heartbeat set's workers and the known queues on every read, and by queue discovery.
# TYPE dramatiq_queue_orphaned_messages gauge
# HELP dramatiq_processes Members of the heartbeat set heard from within (alive) or before (stale) the heartbeat timeout. Producers heartbeat too: any process that enqueues counts.
# TYPE dramatiq_processes gauge
# HELP dramatiq_exporter_queues_dropped Queues found but not reported because of --dramatiq.max-queues.
# TYPE dramatiq_exporter_queues_dropped gauge
`

func TestBrokerEveryMetric(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	workerA, workerB, workerC, producer := testserver.UUID(), testserver.UUID(), testserver.UUID(), testserver.UUID()

	b.Enqueue("default", 5, now.Add(-90*time.Second))
	b.Fetch(workerA, "default", 2, now.Add(-time.Second))
	b.Fetch(workerB, "default", 1, now.Add(-2*time.Minute)) // stale: orphaned
	b.Enqueue("default.DQ", 3, now.Add(-10*time.Second))
	b.Fetch(workerA, "default.DQ", 1, now.Add(-time.Second))
	b.Fetch(workerC, "default.DQ", 1, now.Add(-time.Second))
	// C never made it into the heartbeat set (or was removed): what it
	// holds is orphaned too.
	r.Admin.ZRem(context.Background(), "dramatiq:__heartbeats__", workerC)
	b.DeadLetter("default", now.Add(-time.Hour), nil)
	b.DeadLetter("default", now.Add(-time.Minute), nil)
	b.Heartbeat(producer, now.Add(-5*time.Second))
	b.Enqueue("app.emails.v2", 1, now.Add(-30*time.Second))
	// Another app's keys in the same Redis are not ours.
	r.NewBroker(t, "other").Enqueue("default", 7, now)

	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "dramatiq", Now: clock})
	f.compare(header + fmt.Sprintf(`
dramatiq_redis_up 1
dramatiq_queue_ready_messages{queue="app.emails.v2"} 1
dramatiq_queue_ready_messages{queue="default"} 2
dramatiq_queue_inflight_messages{queue="app.emails.v2"} 0
dramatiq_queue_inflight_messages{queue="default"} 3
dramatiq_queue_delayed_messages{queue="app.emails.v2"} 0
dramatiq_queue_delayed_messages{queue="default"} 3
dramatiq_queue_dead_letter_messages{queue="app.emails.v2"} 0
dramatiq_queue_dead_letter_messages{queue="default"} 2
dramatiq_queue_dead_letter_last_timestamp_seconds{queue="default"} %d
dramatiq_queue_oldest_message_age_seconds{queue="app.emails.v2"} 30
dramatiq_queue_oldest_message_age_seconds{queue="default"} 90
dramatiq_queue_orphaned_messages{queue="app.emails.v2"} 0
dramatiq_queue_orphaned_messages{queue="default"} 2
dramatiq_processes{state="alive"} 2
dramatiq_processes{state="stale"} 1
dramatiq_exporter_queues_dropped 0
`, now.Add(-time.Minute).Unix()))

	reg, cancel := f.registry(5 * time.Second)
	defer cancel()
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// The in-flight number relies on HLEN q.msgs − LLEN q equalling the sum of
// the queue's ack sets. Prove it on a broker moved through every command.
func TestInflightEqualsAckSets(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	w1, w2 := testserver.UUID(), testserver.UUID()
	b.Enqueue("q", 20, now)
	got1 := b.Fetch(w1, "q", 6, now)
	b.Fetch(w2, "q", 4, now)
	b.Ack(w1, "q", got1[0])
	b.Ack(w1, "q", got1[1])
	b.Enqueue("q", 3, now)

	ctx := context.Background()
	sum := r.Admin.SCard(ctx, "dramatiq:__acks__."+w1+".q").Val() + r.Admin.SCard(ctx, "dramatiq:__acks__."+w2+".q").Val()
	if sum != 8 {
		t.Fatalf("ack sets hold %d, want 8", sum)
	}
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	snap, err := f.reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q := snap.Queues[0]; q.InFlight != sum || q.Ready != 13 {
		t.Fatalf("got %v, want inflight %d ready 13", q, sum)
	}
}

func TestEmptiedQueuesKeepReportingZero(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("a", 2, now)
	b.Enqueue("b", 1, now)
	b.DeadLetter("b", now, nil)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, Queues: []string{"configured"}})
	f.compare(header+`
dramatiq_queue_ready_messages{queue="a"} 2
dramatiq_queue_ready_messages{queue="b"} 1
dramatiq_queue_ready_messages{queue="configured"} 0
`, "dramatiq_queue_ready_messages")

	b.Purge("a")
	b.Purge("b")
	f.discover()
	f.compare(header+`
dramatiq_redis_up 1
dramatiq_queue_ready_messages{queue="a"} 0
dramatiq_queue_ready_messages{queue="b"} 0
dramatiq_queue_ready_messages{queue="configured"} 0
dramatiq_queue_dead_letter_messages{queue="a"} 0
dramatiq_queue_dead_letter_messages{queue="b"} 0
dramatiq_queue_dead_letter_messages{queue="configured"} 0
dramatiq_queue_oldest_message_age_seconds{queue="a"} 0
dramatiq_queue_oldest_message_age_seconds{queue="b"} 0
dramatiq_queue_oldest_message_age_seconds{queue="configured"} 0
`, "dramatiq_redis_up", "dramatiq_queue_ready_messages", "dramatiq_queue_dead_letter_messages",
		"dramatiq_queue_oldest_message_age_seconds", "dramatiq_queue_dead_letter_last_timestamp_seconds")
}

func TestQueueRetentionForgets(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	clock := func() time.Time { return now }
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("gone", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, QueueRetention: time.Hour, Queues: []string{"kept"}})
	f.discover()
	b.Purge("gone")
	now = now.Add(30 * time.Minute)
	f.discover()
	f.compare(header+`
dramatiq_queue_ready_messages{queue="gone"} 0
dramatiq_queue_ready_messages{queue="kept"} 0
`, "dramatiq_queue_ready_messages")
	now = now.Add(31 * time.Minute)
	f.discover()
	f.compare(header+`
dramatiq_queue_ready_messages{queue="kept"} 0
`, "dramatiq_queue_ready_messages")
}

func TestMaxQueuesReportsOverflow(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	for _, q := range []string{"a", "b", "c", "d"} {
		b.Enqueue(q, 1, now)
	}
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, MaxQueues: 2, Queues: []string{"z"}})
	f.compare(header+`
dramatiq_queue_ready_messages{queue="a"} 1
dramatiq_queue_ready_messages{queue="z"} 0
dramatiq_exporter_queues_dropped 3
`, "dramatiq_queue_ready_messages", "dramatiq_exporter_queues_dropped")
}

// A namespace with glob characters must be escaped in SCAN MATCH, or
// "app[1]:*" would also match keys of the namespace "app1".
func TestCustomNamespaceIsEscaped(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	r.NewBroker(t, "app[1]").Enqueue("jobs.high", 2, now)
	r.NewBroker(t, "app1").Enqueue("intruder", 9, now)
	r.NewBroker(t, "dramatiq").Enqueue("default", 9, now)
	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "app[1]", Now: clock})
	f.compare(header+`
dramatiq_queue_ready_messages{queue="jobs.high"} 2
`, "dramatiq_queue_ready_messages")
}

// A queue may be named like one of another queue's keys ("foo.msgs"); the
// key's type tells them apart.
func TestQueueNamedLikeASuffix(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("foo.msgs", 2, now)
	b.Enqueue("bar.XQ", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	f.compare(header+`
dramatiq_queue_ready_messages{queue="bar.XQ"} 1
dramatiq_queue_ready_messages{queue="foo.msgs"} 2
`, "dramatiq_queue_ready_messages")
}

func TestNewQueueAppearsAfterDiscovery(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("first", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, DiscoveryInterval: 100 * time.Millisecond})
	f.compare(header+`
dramatiq_queue_ready_messages{queue="first"} 1
`, "dramatiq_queue_ready_messages")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.reader.Run(ctx)
	b.Enqueue("second", 4, now)
	deadline := time.Now().Add(60 * time.Second)
	for {
		snap, err := f.reader.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Queues) == 2 && snap.Queues[1].Ready == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue 'second' not discovered: %+v", snap.Queues)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMalformedDataDoesNotBreakTheScrape(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	ctx := context.Background()
	b := r.NewBroker(t, "dramatiq")
	// A pickled body at the head of one queue, a dangling id in another,
	// and a queue whose .msgs key is a plain string.
	r.Admin.RPush(ctx, "dramatiq:pickled", "id1")
	r.Admin.HSet(ctx, "dramatiq:pickled.msgs", "id1", "\x80\x04\x95not json")
	r.Admin.RPush(ctx, "dramatiq:dangling", "nope")
	r.Admin.RPush(ctx, "dramatiq:typed", "x")
	r.Admin.HSet(ctx, "dramatiq:typed.msgs", "x", testserver.Body("typed", "x", now.Add(-time.Second), nil))
	r.Admin.Set(ctx, "dramatiq:typed.DQ.msgs", "a string", 0)
	// Keys in the namespace that are nothing of Dramatiq's: one a queue
	// could own (its type says otherwise), one no queue can own (an ack
	// set with no worker id: invalid_queue_name).
	r.Admin.Set(ctx, "dramatiq:some-cache-entry", "v", 0)
	r.Admin.SAdd(ctx, "dramatiq:__acks__.short.q", "x")
	b.Enqueue("fine", 1, now.Add(-7*time.Second))

	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	f.compare(header+`
dramatiq_redis_up 1
dramatiq_queue_ready_messages{queue="dangling"} 1
dramatiq_queue_ready_messages{queue="fine"} 1
dramatiq_queue_ready_messages{queue="pickled"} 1
dramatiq_queue_ready_messages{queue="typed"} 1
dramatiq_queue_delayed_messages{queue="dangling"} 0
dramatiq_queue_delayed_messages{queue="fine"} 0
dramatiq_queue_delayed_messages{queue="pickled"} 0
dramatiq_queue_delayed_messages{queue="typed"} 0
dramatiq_queue_oldest_message_age_seconds{queue="fine"} 7
dramatiq_queue_oldest_message_age_seconds{queue="typed"} 1
`, "dramatiq_redis_up", "dramatiq_queue_ready_messages", "dramatiq_queue_delayed_messages", "dramatiq_queue_oldest_message_age_seconds")
	// A gauge of the latest read: the same value however often it is read.
	for i := 0; i < 3; i++ {
		f.compare(`
# HELP dramatiq_exporter_broker_anomalies Odd broker data the latest read met and skipped, by kind (docs/metrics.md lists them; invalid_queue_name comes from the latest discovery pass). Its value does not depend on how many clients scrape. Absent when Redis did not answer.
# TYPE dramatiq_exporter_broker_anomalies gauge
dramatiq_exporter_broker_anomalies{kind="invalid_queue_name"} 1
dramatiq_exporter_broker_anomalies{kind="invalid_time"} 0
dramatiq_exporter_broker_anomalies{kind="missing_head"} 1
dramatiq_exporter_broker_anomalies{kind="oversize_body"} 0
dramatiq_exporter_broker_anomalies{kind="oversize_id"} 0
dramatiq_exporter_broker_anomalies{kind="undecodable_body"} 1
dramatiq_exporter_broker_anomalies{kind="wrong_type"} 1
`, "dramatiq_exporter_broker_anomalies")
	}
}

func TestRedisDownThenRecovers(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	r.NewBroker(t, "dramatiq").Enqueue("q", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	f.compare(header+"dramatiq_redis_up 1\n", "dramatiq_redis_up")

	r.Stop()
	begin := time.Now()
	f.compare(header + `
dramatiq_redis_up 0
`)
	if took := time.Since(begin); took > time.Second {
		t.Errorf("scrape against a closed port took %s", took)
	}
	f.compare(`
# HELP dramatiq_exporter_collector_success 1 when the collector read its source without error in this scrape, else 0.
# TYPE dramatiq_exporter_collector_success gauge
dramatiq_exporter_collector_success{collector="broker"} 0
`, "dramatiq_exporter_collector_success")

	r.Restart()
	r.NewBroker(t, "dramatiq").Enqueue("q", 3, now)
	f.compare(header+`
dramatiq_redis_up 1
dramatiq_queue_ready_messages{queue="q"} 3
`, "dramatiq_redis_up", "dramatiq_queue_ready_messages")
}

// A Redis that accepts connections but never answers (SIGSTOP, like a
// long DEBUG SLEEP or a stuck host) cannot hold a scrape past its deadline.
func TestHungRedisRespectsDeadline(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	r.NewBroker(t, "dramatiq").Enqueue("q", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	f.compare(header+"dramatiq_redis_up 1\n", "dramatiq_redis_up")

	r.Freeze()
	reg, cancel := f.registry(500 * time.Millisecond)
	begin := time.Now()
	err := testutil.GatherAndCompare(reg, strings.NewReader(header+"dramatiq_redis_up 0\n"), "dramatiq_redis_up", "dramatiq_queue_ready_messages")
	took := time.Since(begin)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("scrape took %s with a 500ms deadline", took)
	}
	r.Thaw()
	f.compare(header+"dramatiq_redis_up 1\n", "dramatiq_redis_up")
}

// The exporter must work as a Redis user that may only read, and must not
// be able to call KEYS: that proves it never writes, never runs Dramatiq's
// Lua script and never blocks Redis with KEYS.
func TestReadOnlyACLUser(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	w := testserver.UUID()
	b.Enqueue("q", 3, now.Add(-4*time.Second))
	b.Fetch(w, "q", 1, now.Add(-time.Hour))
	b.DeadLetter("q", now, nil)
	url := r.ReadOnlyUser(t, "exporter", "s3cret-pw")

	ctx := context.Background()
	r.Admin.Do(ctx, "ACL", "LOG", "RESET")
	f := newFixture(t, r, url, broker.Options{Now: clock})
	f.discover()
	f.compare(header+`
dramatiq_redis_up 1
dramatiq_queue_ready_messages{queue="q"} 2
dramatiq_queue_inflight_messages{queue="q"} 1
dramatiq_queue_orphaned_messages{queue="q"} 1
dramatiq_queue_oldest_message_age_seconds{queue="q"} 4
`, "dramatiq_redis_up", "dramatiq_queue_ready_messages", "dramatiq_queue_inflight_messages",
		"dramatiq_queue_orphaned_messages", "dramatiq_queue_oldest_message_age_seconds")
	if log := r.Admin.Do(ctx, "ACL", "LOG").Val(); log != nil && len(log.([]any)) > 0 {
		t.Fatalf("the exporter ran a command its read-only user may not: %v", log)
	}
}

func TestConcurrentScrapes(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	for i := 0; i < 20; i++ {
		b.Enqueue(fmt.Sprintf("q%02d", i), i+1, now)
	}
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reg, cancel := f.registry(5 * time.Second)
			defer cancel()
			mfs, err := reg.Gather()
			if err != nil {
				errs <- err
				return
			}
			for _, mf := range mfs {
				if mf.GetName() == "dramatiq_queue_ready_messages" && len(mf.GetMetric()) != 20 {
					errs <- fmt.Errorf("got %d queues", len(mf.GetMetric()))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// CLIENT PAUSE makes Redis hold every client's commands: the scrape must
// give up at its deadline and the next one after the pause must succeed.
func TestPausedRedisRespectsDeadline(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	r.NewBroker(t, "dramatiq").Enqueue("q", 1, now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock})
	f.compare(header+"dramatiq_redis_up 1\n", "dramatiq_redis_up")

	if err := r.Admin.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	reg, cancel := f.registry(300 * time.Millisecond)
	begin := time.Now()
	err := testutil.GatherAndCompare(reg, strings.NewReader(header+"dramatiq_redis_up 0\n"), "dramatiq_redis_up")
	took := time.Since(begin)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if took > time.Second {
		t.Fatalf("scrape took %s with a 300ms deadline", took)
	}
	time.Sleep(1300 * time.Millisecond)
	f.compare(header+"dramatiq_redis_up 1\n", "dramatiq_redis_up")
}

// Under the cap, queues that exist now win over queues that only report
// zeros, and the gone ones beyond the cap are forgotten, so memory stays
// bounded by the cap while real overflow is still counted.
func TestMaxQueuesPrefersLiveQueues(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	clock := func() time.Time { return now }
	b := r.NewBroker(t, "dramatiq")
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, MaxQueues: 2})
	step := func(purge []string, enqueue []string, want string) {
		t.Helper()
		for _, q := range purge {
			b.Purge(q)
		}
		for _, q := range enqueue {
			b.Enqueue(q, 1, now)
		}
		now = now.Add(time.Minute)
		f.discover()
		f.compare(header+want, "dramatiq_queue_ready_messages", "dramatiq_exporter_queues_dropped")
	}
	step(nil, []string{"a", "b"}, `
dramatiq_queue_ready_messages{queue="a"} 1
dramatiq_queue_ready_messages{queue="b"} 1
dramatiq_exporter_queues_dropped 0
`)
	step([]string{"a", "b"}, []string{"c"}, `
dramatiq_queue_ready_messages{queue="a"} 0
dramatiq_queue_ready_messages{queue="c"} 1
dramatiq_exporter_queues_dropped 0
`)
	step([]string{"c"}, []string{"d", "e"}, `
dramatiq_queue_ready_messages{queue="d"} 1
dramatiq_queue_ready_messages{queue="e"} 1
dramatiq_exporter_queues_dropped 0
`)
	step([]string{"d", "e"}, []string{"f", "g", "h"}, `
dramatiq_queue_ready_messages{queue="f"} 1
dramatiq_queue_ready_messages{queue="g"} 1
dramatiq_exporter_queues_dropped 1
`)
}

// The dead-letter counters are counters of the scrape's families, with the
// actors' series next to them, and Redis down leaves them out rather than
// reporting zeros.
func TestDeadLetterCounterSeries(t *testing.T) {
	r := testserver.StartRedis(t)
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.DeadLetter("q", now.Add(-time.Hour), nil) // there before the exporter: not counted
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, Queues: []string{"q"}, SkipDiscovery: true})
	names := []string{"dramatiq_queue_dead_lettered_total", "dramatiq_actor_dead_lettered_total",
		"dramatiq_exporter_dead_letter_actor_series", "dramatiq_exporter_dead_letter_actor_series_limit"}
	const help = `
# HELP dramatiq_queue_dead_lettered_total Messages dead-lettered since the exporter started (or first reported the queue): members of queue.XQ newer than those it had seen. Unlike dramatiq_queue_dead_letter_messages it does not drop when Dramatiq prunes or someone requeues dead letters; use rate() or increase(). docs/dead-letter-counters.md gives its limits.
# TYPE dramatiq_queue_dead_lettered_total counter
# HELP dramatiq_actor_dead_lettered_total dramatiq_queue_dead_lettered_total by the actor_name of each new dead letter's body. actor="(unknown)": the body was gone, over 1 MiB or not Dramatiq JSON; actor="(other)": actors beyond the first 500 {queue, actor} pairs.
# TYPE dramatiq_actor_dead_lettered_total counter
# HELP dramatiq_exporter_dead_letter_actor_series {queue, actor} pairs of dramatiq_actor_dead_lettered_total, not counting actor="(unknown)" and "(other)". Once it reaches dramatiq_exporter_dead_letter_actor_series_limit, new actors are counted under actor="(other)".
# TYPE dramatiq_exporter_dead_letter_actor_series gauge
# HELP dramatiq_exporter_dead_letter_actor_series_limit The cap on dramatiq_exporter_dead_letter_actor_series.
# TYPE dramatiq_exporter_dead_letter_actor_series_limit gauge
`
	f.compare(help+`
dramatiq_queue_dead_lettered_total{queue="q"} 0
dramatiq_exporter_dead_letter_actor_series 0
dramatiq_exporter_dead_letter_actor_series_limit 500
`, names...)
	b.DeadLetter("q", now, nil)
	b.DeadLetter("q", now, nil)
	f.compare(help+`
dramatiq_queue_dead_lettered_total{queue="q"} 2
dramatiq_actor_dead_lettered_total{actor="task",queue="q"} 2
dramatiq_exporter_dead_letter_actor_series 1
dramatiq_exporter_dead_letter_actor_series_limit 500
`, names...)
	r.Stop()
	f.compare(help, names...)
}
