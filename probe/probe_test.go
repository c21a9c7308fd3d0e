package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
)

// build is main's buildProbeTarget without the database: the real client,
// reader, collectors and /metrics handler.
func build(base *config.Config) BuildFunc {
	return func(ctx context.Context, m *config.Module, target string, dial DialFunc) (*Target, error) {
		cfg := base.ForProbe(m, target)
		client, err := broker.NewClient(broker.ClientOptions{URL: cfg.RedisURL, Password: cfg.RedisPassword, Timeout: cfg.ScrapeTimeout,
			TLS: broker.TLSOptions(cfg.RedisTLS), NetDial: dial})
		if err != nil {
			return nil, err
		}
		reader := broker.NewReader(client, broker.Options{
			Namespace: cfg.Namespace, HeartbeatTimeout: cfg.HeartbeatTimeout, Queues: cfg.Queues,
			DiscoveryInterval: cfg.DiscoveryInterval, MaxQueues: cfg.MaxQueues,
		})
		exp, err := collector.NewExporter(collector.ExporterOptions{Enabled: map[string]bool{}, Environment: "test", Namespace: cfg.Namespace},
			collector.Sources{Broker: reader})
		if err != nil {
			client.Close()
			return nil, err
		}
		h := server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{
			Timeout: cfg.ScrapeTimeout, TimeoutOffset: cfg.TimeoutOffset, Logger: testLogger(),
		})
		return &Target{Handler: FirstAlone(h, func() { reader.Start(ctx) }), Close: func() { client.Close() }}, nil
	}
}

func module(name, ns string) *config.Module {
	return &config.Module{Name: name, Namespace: ns, HeartbeatTimeout: time.Minute, DiscoveryInterval: time.Second, MaxQueues: 100}
}

// 50 probes at once, across two servers and two modules, while idle
// eviction and the bound evict targets under them: every probe that is
// served reports its own target's numbers. Run with -race.
func TestConcurrentProbes(t *testing.T) {
	r1, r2 := testserver.StartRedis(t), testserver.StartRedis(t)
	now := time.Now()
	r1.NewBroker(t, "a").Enqueue("q", 3, now)
	r1.NewBroker(t, "b").Enqueue("q", 5, now)
	r2.NewBroker(t, "a").Enqueue("q", 7, now)
	r2.NewBroker(t, "b").Enqueue("q", 11, now)
	want := map[string]float64{r1.URL() + " a": 3, r1.URL() + " b": 5, r2.URL() + " a": 7, r2.URL() + " b": 11}

	base := &config.Config{ScrapeTimeout: 5 * time.Second, TimeoutOffset: 0, Environment: "test", Collectors: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, Options{
		Allow:       allowList(t, "127.0.0.1:*"),
		Modules:     map[string]*config.Module{"a": module("a", "a"), "b": module("b", "b")},
		IdleTimeout: 100 * time.Millisecond,
		MaxTargets:  3, // four pairs: the bound evicts too
		Build:       build(base),
		Logger:      testLogger(),
	})
	srv := httptest.NewServer(p)
	defer srv.Close()

	keys := []string{r1.URL() + " a", r1.URL() + " b", r2.URL() + " a", r2.URL() + " b"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	served, busy := 0, 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				key := keys[(i+j)%len(keys)]
				var target, mod string
				fmt.Sscan(key, &target, &mod)
				u := srv.URL + "/probe?" + url.Values{"target": {target}, "module": {mod}}.Encode()
				fams, code, err := scrape(u)
				if code == http.StatusServiceUnavailable {
					mu.Lock()
					busy++
					mu.Unlock()
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", key, err)
					continue
				}
				got := testserver.Samples(fams["dramatiq_queue_ready_messages"], map[string]string{"queue": "q"})
				if len(got) != 1 || got[0] != want[key] {
					t.Errorf("%s: ready = %v, want %v", key, got, want[key])
				}
				mu.Lock()
				served++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	t.Logf("%d probes served, %d refused for capacity (all pairs busy)", served, busy)
	if served < 100 {
		t.Errorf("only %d of 200 probes served", served)
	}
	// Idle eviction empties the table once probes stop.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(gauge(p, targetsDesc)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("targets not evicted after the probes stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := testutil.CollectAndCount(p, "dramatiq_exporter_probe_evictions_total"); n != 2 {
		t.Errorf("evictions series: %d", n)
	}
	if problems, err := testutil.CollectAndLint(p); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// gauge wraps the one metric of p with descriptor d, for ToFloat64.
func gauge(p *Prober, d *prometheus.Desc) prometheus.Collector {
	ch := make(chan prometheus.Metric, 16)
	p.Collect(ch)
	close(ch)
	for m := range ch {
		if m.Desc() == d {
			return constCollector{m}
		}
	}
	return nil
}

type constCollector struct{ m prometheus.Metric }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.Desc() }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func scrape(u string) (map[string]*dto.MetricFamily, int, error) {
	resp, err := http.Get(u)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	return fams, resp.StatusCode, err
}

// No connection before the allow-list says yes: an unroutable target
// that is not allowed is refused at once.
func TestRefusedBeforeBuild(t *testing.T) {
	built := 0
	p := New(context.Background(), Options{
		Allow: allowList(t, "10.0.0.1:6379"), Modules: map[string]*config.Module{"default": module("default", "x")},
		IdleTimeout: time.Minute, MaxTargets: 1, Logger: testLogger(),
		Build: func(context.Context, *config.Module, string, DialFunc) (*Target, error) {
			built++
			return nil, fmt.Errorf("no")
		},
	})
	for _, target := range []string{"redis://10.0.0.2:6379/0", "redis://10.0.0.1:6380/0", "redis://u:p@10.0.0.1:6379/0", "redis://10.0.0.1:6379", "redis://10.0.0.1:6379/16"} {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", "/probe?"+url.Values{"target": {target}}.Encode(), nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d", target, rec.Code)
		}
	}
	if built != 0 {
		t.Errorf("built %d targets for refused probes", built)
	}
}

func allowList(t *testing.T, entries ...string) *config.AllowList {
	t.Helper()
	a, err := config.ParseAllowList(entries)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A flood of made-up targets, each probed once, cannot push out a target
// Prometheus scrapes regularly: its dead-letter counter, which starts over
// with a new state, keeps counting up through the flood, while the flood
// evicts its own entries.
func TestFloodKeepsRegularTarget(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "app")
	b.Enqueue("q", 1, time.Now())
	base := &config.Config{ScrapeTimeout: 5 * time.Second, Environment: "test", Collectors: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	port := strconv.Itoa(r.Port)
	p := New(ctx, Options{
		Allow:   allowList(t, "127.0.0.0/8:"+port),
		Modules: map[string]*config.Module{"default": module("default", "app")}, IdleTimeout: time.Minute, MaxTargets: 4,
		Build: build(base), Logger: testLogger(),
	})
	srv := httptest.NewServer(p)
	defer srv.Close()
	probeURL := func(target string) string { return srv.URL + "/probe?" + url.Values{"target": {target}}.Encode() }
	regular := r.URL()
	dead := func() float64 {
		t.Helper()
		fams, code, err := scrape(probeURL(regular))
		if err != nil || code != http.StatusOK {
			t.Fatalf("regular probe: %d %v", code, err)
		}
		got := testserver.Samples(fams["dramatiq_queue_dead_lettered_total"], map[string]string{"queue": "q"})
		if len(got) != 1 {
			t.Fatalf("dead-lettered series: %v", got)
		}
		return got[0]
	}
	// Two scrapes a second apart make the target regular.
	dead()
	time.Sleep(1100 * time.Millisecond)
	want := dead()
	oneOffs := 0
	for i := 0; i < 12; i++ {
		b.DeadLetter("q", time.Now(), nil)
		want++
		// Nothing listens on these: each probe is served (up 0) or 503.
		for j := 0; j < 10; j++ {
			oneOffs++
			code, _ := testserver.Get(t, probeURL(fmt.Sprintf("redis://127.0.1.%d:%s/%d", oneOffs%250+1, port, oneOffs%16)))
			if code != http.StatusOK && code != http.StatusServiceUnavailable {
				t.Fatalf("one-off probe: %d", code)
			}
		}
		if got := dead(); got != want {
			t.Fatalf("after %d one-off targets: dead-lettered %v, want %v (the regular target's state was dropped)", oneOffs, got, want)
		}
	}
	ch := make(chan prometheus.Metric, 16)
	p.Collect(ch)
	close(ch)
	var evicted float64
	for m := range ch {
		var d dto.Metric
		if m.Desc() == evictionsDesc && m.Write(&d) == nil && d.GetLabel()[0].GetValue() == "capacity" {
			evicted = d.GetCounter().GetValue()
		}
	}
	if evicted < float64(oneOffs)-10 {
		t.Errorf("capacity evictions %v for %d one-off targets: the flood did not cycle through its own entries", evicted, oneOffs)
	}
}

// With the table full of regular targets, a new target's first probe gets
// 503; asked again, it may evict the least regular one.
func TestSecondAskEvictsRegular(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	p := New(context.Background(), Options{
		Allow: allowList(t, "10.0.0.0/8:6379"), Modules: map[string]*config.Module{"default": module("default", "x")},
		IdleTimeout: time.Hour, MaxTargets: 2, Logger: testLogger(),
		Build: func(context.Context, *config.Module, string, DialFunc) (*Target, error) {
			return &Target{Handler: ok, Close: func() {}}, nil
		},
	})
	get := func(host string) int {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", "/probe?"+url.Values{"target": {"redis://" + host + ":6379/0"}}.Encode(), nil))
		return rec.Code
	}
	regular := func(host string, hits int) {
		for i := 0; i < hits; i++ {
			if c := get(host); c != 200 {
				t.Fatalf("%s: %d", host, c)
			}
			p.mu.Lock()
			for _, e := range p.targets {
				e.lastHit = time.Time{} // as if a scrape interval had passed
			}
			p.mu.Unlock()
		}
	}
	regular("10.0.0.1", 5)
	regular("10.0.0.2", 3)
	if c := get("10.0.0.3"); c != http.StatusServiceUnavailable {
		t.Fatalf("a new target's first probe evicted a regular one: %d", c)
	}
	if c := get("10.0.0.3"); c != 200 {
		t.Fatalf("asked again: %d", c)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.targets["default\x00redis://10.0.0.1:6379/0"]; !ok || len(p.targets) != 2 {
		t.Errorf("the most regular target was evicted: %v", p.targets)
	}
}
