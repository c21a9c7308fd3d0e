package collector_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// panicky collectors exist only in this test binary, off by default.
func init() {
	collector.Register("test_panic_read", false, "test only", func(collector.Sources) (collector.Collector, error) {
		return panicky{inRead: true}, nil
	})
	collector.Register("test_panic_collect", false, "test only", func(collector.Sources) (collector.Collector, error) {
		return panicky{}, nil
	})
}

var panickyDesc = prometheus.NewDesc("dramatiq_test_panicky", "test only", nil, nil)

type panicky struct{ inRead bool }

func (panicky) Describe(ch chan<- *prometheus.Desc) { ch <- panickyDesc }

func (p panicky) Read(context.Context, *collector.State, collector.ReadOptions) error {
	if p.inRead {
		panic(errors.New("boom in Read"))
	}
	return nil
}

func (p panicky) Collect(_ *collector.State, m *collector.Metrics) {
	if !p.inRead {
		m.Gauge(panickyDesc, 1) // sent before the panic, so it must be dropped
		panic("boom in Collect")
	}
}

func gauges(t *testing.T, mfs []*dto.MetricFamily, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(ls, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}

// An ack set whose queue part is not valid UTF-8 once killed the process on
// the next scrape. Now the series that cannot carry it are skipped and
// counted, and every other queue keeps its numbers.
func TestInvalidUTF8QueueNameIsSkippedAndCounted(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("default", 2, now.Add(-time.Minute))
	r.Admin.SAdd(context.Background(), "dramatiq:__acks__."+testserver.UUID()+".q\xff\xfebad", "m1")
	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "dramatiq"})
	f.discover()

	reg, cancel := f.registry(5 * time.Second)
	defer cancel()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP dramatiq_queue_ready_messages Messages waiting to be fetched: LLEN of the queue list.
# TYPE dramatiq_queue_ready_messages gauge
dramatiq_queue_ready_messages{queue="default"} 2
`), "dramatiq_queue_ready_messages"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if got := gauges(t, mfs, "dramatiq_exporter_collector_success"); got["collector=broker"] != 1 {
		t.Errorf("collector_success = %v", got)
	}
	// Whether the broker reader keeps such a queue or refuses its key
	// earlier, nothing invalid reaches the exposition.
	invalid := gauges(t, mfs, "dramatiq_exporter_invalid_label_values")[""]
	st := f.exp.Read(context.Background(), collector.ReadOptions{})
	bad := 0
	for _, q := range st.Broker.Snapshot.Queues {
		if q.Name != "default" {
			bad++
		}
	}
	// Ready, in flight, delayed, dead letters, orphaned and oldest age.
	if want := float64(6 * bad); invalid != want {
		t.Errorf("invalid_label_values = %v, want %v (%d bad queues)", invalid, want, bad)
	}
}

// A label value over MaxLabelValueLength is skipped the same way: here the
// environment of the info series.
func TestOverlongLabelValueIsSkipped(t *testing.T) {
	r := testserver.StartRedis(t)
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	exp, err := collector.NewExporter(collector.ExporterOptions{
		Environment: strings.Repeat("x", collector.MaxLabelValueLength+1), Namespace: "dramatiq",
	}, collector.Sources{Broker: broker.NewReader(client, broker.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp.Bind(context.Background()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if got := gauges(t, mfs, "dramatiq_exporter_info"); len(got) != 0 {
		t.Errorf("info sent with an overlong environment: %v", got)
	}
	if got := gauges(t, mfs, "dramatiq_exporter_invalid_label_values")[""]; got != 1 {
		t.Errorf("invalid_label_values = %v, want 1", got)
	}
	if got := gauges(t, mfs, "dramatiq_redis_up")[""]; got != 1 {
		t.Errorf("redis_up = %v, want 1", got)
	}
}

// A panic in a collector's read or in its metrics is that collector's
// failure and one log line; the scrape and the process go on.
func TestCollectorPanicIsOneFailure(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("default", 3, time.Now())
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	exp, err := collector.NewExporter(collector.ExporterOptions{
		Enabled:     map[string]bool{"test_panic_read": true, "test_panic_collect": true},
		Environment: "test", Namespace: "dramatiq",
	}, collector.Sources{Broker: broker.NewReader(client, broker.Options{}), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(exp.Bind(context.Background()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"collector=broker": 1, "collector=test_panic_collect": 0, "collector=test_panic_read": 0}
	if got := gauges(t, mfs, "dramatiq_exporter_collector_success"); !equal(got, want) {
		t.Errorf("collector_success = %v, want %v", got, want)
	}
	if got := gauges(t, mfs, "dramatiq_queue_ready_messages"); got["queue=default"] != 3 {
		t.Errorf("ready = %v, want default=3", got)
	}
	if got := gauges(t, mfs, "dramatiq_test_panicky"); len(got) != 0 {
		t.Errorf("a collector whose Collect panicked sent %v", got)
	}
	mu.Lock()
	logged := logs.String()
	mu.Unlock()
	lines := strings.Split(strings.TrimSpace(logged), "\n")
	for _, name := range []string{"test_panic_read", "test_panic_collect"} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "collector="+name) {
				n++
				if !strings.Contains(l, "panic") {
					t.Errorf("log line does not say panic: %s", l)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d log lines for %s, want 1:\n%s", n, name, logged)
		}
	}
	// The status projection sees the read's panic too.
	st := exp.Read(context.Background(), collector.ReadOptions{})
	if o, _ := st.Outcome("test_panic_read"); o.Success || o.Err == nil || !strings.Contains(o.Err.Error(), "panic") {
		t.Errorf("outcome = %+v", o)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func equal(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// pause holds every client's commands on r for d, so that reads started
// now overlap. CLIENT PAUSE holds the admin client too, so it is sent last.
func pause(t *testing.T, r *testserver.Redis, d time.Duration) {
	t.Helper()
	if err := r.Admin.Do(context.Background(), "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
}

// Concurrent scrapes share one read of Redis, and all get its numbers.
func TestConcurrentReadsShareOneRead(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("default", 5, time.Now())
	b.Enqueue("emails", 2, time.Now())
	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "dramatiq"})
	f.discover()
	if err := r.Admin.ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}

	const scrapes = 12
	pause(t, r, 1500*time.Millisecond)
	results := make([]map[string]float64, scrapes)
	var wg sync.WaitGroup
	for i := range scrapes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(f.exp.Bind(ctx))
			mfs, err := reg.Gather()
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = gauges(t, mfs, "dramatiq_queue_ready_messages")
		}()
	}
	wg.Wait()
	want := map[string]float64{"queue=default": 5, "queue=emails": 2}
	for i, got := range results {
		if !equal(got, want) {
			t.Errorf("scrape %d: ready = %v, want %v", i, got, want)
		}
	}
	// A read counts live and stale processes with one ZCOUNT each,
	// whatever its queues.
	if n := r.CommandCalls(t, "zcount"); n != 2 {
		t.Errorf("%d scrapes ran ZCOUNT %d times, want 2 (one read)", scrapes, n)
	}
}

// A caller that joins a read started by a caller with a shorter deadline
// still gets its numbers when that read is cut short: it reads again with
// the time it has left.
func TestJoinerWithLongerDeadlineRereads(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("default", 4, time.Now())
	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "dramatiq"})
	f.discover()

	pause(t, r, 1500*time.Millisecond)
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	leader := make(chan *collector.State, 1)
	go func() { leader <- f.exp.Read(short, collector.ReadOptions{}) }()
	// Let the leader start the read before the joiner arrives.
	time.Sleep(50 * time.Millisecond)
	long, cancelLong := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelLong()
	begin := time.Now()
	joiner := f.exp.Read(long, collector.ReadOptions{})
	took := time.Since(begin)

	if st := <-leader; st.Broker != nil && st.Broker.Snapshot != nil {
		t.Errorf("the leader's read succeeded through a 1.5 s pause with a 300 ms deadline")
	} else if o, _ := st.Outcome("broker"); o.Success || o.Err == nil {
		t.Errorf("leader outcome = %+v", o)
	}
	if o, _ := joiner.Outcome("broker"); !o.Success {
		t.Fatalf("joiner outcome = %+v", o)
	}
	if got := joiner.Broker.Snapshot.Queues; len(got) != 1 || got[0].Ready.N != 4 {
		t.Errorf("joiner queues = %v", got)
	}
	if took > 10*time.Second {
		t.Errorf("joiner took %s", took)
	}
}

// A caller waits no longer than its own deadline, even when it joined a
// read that may take longer, and keeps what finished.
func TestCallerLeavesAtItsDeadline(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("default", 1, time.Now())
	f := newFixture(t, r, r.URL(), broker.Options{Namespace: "dramatiq"})
	f.discover()

	pause(t, r, time.Second)
	long, cancelLong := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelLong()
	leader := make(chan *collector.State, 1)
	go func() { leader <- f.exp.Read(long, collector.ReadOptions{}) }()
	// Let the leader start the read first (in-process only; the margin is
	// for a loaded machine and still well inside the 1 s pause).
	time.Sleep(200 * time.Millisecond)
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	begin := time.Now()
	st := f.exp.Read(short, collector.ReadOptions{})
	if took := time.Since(begin); took > time.Second {
		t.Errorf("a caller with a 200 ms deadline waited %s", took)
	}
	if o, _ := st.Outcome("broker"); o.Success || !errors.Is(o.Err, context.DeadlineExceeded) {
		t.Errorf("short caller outcome = %+v", o)
	}
	if st := <-leader; st.Broker == nil || st.Broker.Snapshot == nil || st.Broker.Snapshot.Queues[0].Ready.N != 1 {
		t.Errorf("the leader's read did not survive the short caller leaving: %+v", st.Broker)
	}
}
