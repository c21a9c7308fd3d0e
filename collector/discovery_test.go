package collector_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// gather scrapes the fixture once under timeout and returns its families
// by name, and how long the scrape took. The scrape's context carries
// scrapeMark, so a hook can tell the scrape's commands from discovery's.
func (f *fixture) gather(timeout time.Duration) (map[string]*dto.MetricFamily, time.Duration) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), scrapeMark{}, true), timeout)
	defer cancel()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.exp.Bind(ctx))
	begin := time.Now()
	mfs, err := reg.Gather()
	took := time.Since(begin)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, took
}

type scrapeMark struct{}

// scanInScrape counts SCANs sent under a scrape's context.
type scanInScrape struct{ n atomic.Int64 }

func (h *scanInScrape) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scanInScrape) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "scan" && ctx.Value(scrapeMark{}) != nil {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *scanInScrape) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// value is the one sample of a family with those labels; NaN-free tests
// read a missing sample as a failure.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("%s missing", name)
	}
	v := testserver.Samples(mf, labels)
	if len(v) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, labels, len(v))
	}
	return v[0]
}

// A Django-sized cache shares the database, so one discovery pass takes
// far longer than a scrape's deadline. Scrapes during the first pass must
// still answer in time, with Redis up and the configured queues, and say
// that discovery is not complete; discovered queues appear once it is.
func TestScrapesDuringTheFirstDiscoveryPass(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	// A pass over this many keys takes several hundred ms unpaced, and
	// seconds paced: scrapes run while it does.
	r.Populate(t, 500_000, "django.cache:")
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("emails", 3, now)
	b.Enqueue("reports", 2, now)
	b.Heartbeat(testserver.UUID(), now)
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, Queues: []string{"emails"}, DiscoveryInterval: 100 * time.Millisecond})
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	scans := &scanInScrape{}
	client.AddHook(scans)
	f.reader = broker.NewReader(client, f.reader.Options())
	f.exp = newExporter(t, f.reader)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	f.reader.Start(runCtx)

	const deadline = time.Second
	during := 0
	giveUp := time.Now().Add(2 * time.Minute)
	for f.reader.DiscoveryStatus().Passes == 0 {
		if time.Now().After(giveUp) {
			t.Fatal("the first discovery pass did not complete in 2 minutes")
		}
		mfs, took := f.gather(deadline)
		if took > 3*deadline {
			t.Fatalf("a scrape with a %s deadline took %s", deadline, took)
		}
		if up := value(t, mfs, "dramatiq_redis_up", nil); up != 1 {
			t.Fatalf("dramatiq_redis_up %v during the first discovery pass", up)
		}
		if value(t, mfs, "dramatiq_exporter_discovery_complete", nil) == 1 {
			break // the pass completed between the two checks
		}
		during++
		if v := value(t, mfs, "dramatiq_queue_ready_messages", map[string]string{"queue": "emails"}); v != 3 {
			t.Fatalf("configured queue emails: ready %v, want 3", v)
		}
		if v := value(t, mfs, "dramatiq_processes", map[string]string{"state": "alive"}); v != 1 {
			t.Fatalf("alive processes %v, want 1", v)
		}
		if got := testserver.Samples(mfs["dramatiq_queue_ready_messages"], map[string]string{"queue": "reports"}); len(got) != 0 {
			t.Fatal("queue reports reported before discovery found it")
		}
		if _, ok := mfs["dramatiq_exporter_discovery_last_completed_timestamp_seconds"]; ok {
			t.Fatal("last completed timestamp present before any pass completed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if during == 0 {
		t.Fatal("no scrape ran during the first pass: the test proves nothing")
	}
	if n := scans.n.Load(); n > 0 {
		t.Fatalf("scrapes sent %d SCANs: discovery ran on their deadline", n)
	}
	mfs, _ := f.gather(5 * time.Second)
	if v := value(t, mfs, "dramatiq_queue_ready_messages", map[string]string{"queue": "reports"}); v != 2 {
		t.Fatalf("discovered queue reports: ready %v, want 2", v)
	}
	t.Logf("%d scrapes during the first pass", during)
}

// The discovery metrics describe the latest pass truthfully, the pass is
// paced, and the interval stretches to keep Redis's share low.
func TestDiscoveryMetrics(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	r.Populate(t, 200_000, "django.cache:")
	now, clock := fixedClock()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("emails", 3, now)         // list + .msgs
	b.DeadLetter("emails", now, nil)    // .XQ + .XQ.msgs
	b.Heartbeat(testserver.UUID(), now) // __heartbeats__
	r.Admin.Set(ctx, "dramatiq:not a queue", "x", 0)
	const namespaceKeys = 6
	size, err := r.Admin.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	const interval = 100 * time.Millisecond
	f := newFixture(t, r, r.URL(), broker.Options{Now: clock, DiscoveryInterval: interval})

	begin := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	f.reader.Start(runCtx)
	for f.reader.DiscoveryStatus().Passes == 0 {
		if time.Since(begin) > 2*time.Minute {
			t.Fatal("no pass completed in 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Long enough for a second pass, had the interval not stretched.
	time.Sleep(time.Second)
	mfs, _ := f.gather(5 * time.Second)
	got := func(name string) float64 { return value(t, mfs, name, nil) }
	if got("dramatiq_exporter_discovery_complete") != 1 || got("dramatiq_exporter_discovery_passes_total") != 1 {
		t.Fatalf("complete %v, passes %v; want 1 and 1", got("dramatiq_exporter_discovery_complete"), got("dramatiq_exporter_discovery_passes_total"))
	}
	if v := got("dramatiq_exporter_discovery_keys"); v != namespaceKeys {
		t.Errorf("keys %v, want %d", v, namespaceKeys)
	}
	if v := got("dramatiq_exporter_discovery_scanned_keys"); v != float64(size) {
		t.Errorf("scanned keys %v, want DBSIZE %d", v, size)
	}
	last := got("dramatiq_exporter_discovery_last_completed_timestamp_seconds")
	if last < float64(begin.Unix()) || last > float64(time.Now().Unix()+1) {
		t.Errorf("last completed %v, not between %d and now", last, begin.Unix())
	}
	dur, redisTime, every := got("dramatiq_exporter_discovery_duration_seconds"), got("dramatiq_exporter_discovery_redis_seconds"), got("dramatiq_exporter_discovery_interval_seconds")
	t.Logf("pass %.3fs, Redis %.4fs, interval %.2fs", dur, redisTime, every)
	if redisTime <= 0 || redisTime > dur {
		t.Errorf("Redis time %v not in (0, duration %v]", redisTime, dur)
	}
	// Pacing: each page is followed by a sleep nine times its length.
	if dur < 5*redisTime {
		t.Errorf("pass of %vs for %vs of Redis time: pages are not paced", dur, redisTime)
	}
	// 200,000 keys cost Redis tens of ms: at 1% that is seconds apart.
	if every < 100*redisTime*0.99 || every <= interval.Seconds() {
		t.Errorf("interval %vs for a pass costing %vs: want at least 100 times that, above %s", every, redisTime, interval)
	}
	if f.reader.DiscoveryStatus().Passes != 1 {
		t.Error("a second pass started before the stretched interval")
	}
}
