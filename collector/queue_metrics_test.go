package collector

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
)

// The per-queue families reuse label pairs across scrapes. Their
// exposition must be byte for byte what const metrics give, through a
// pedantic registry, scrape after scrape while the queue set changes, and
// names that cannot be label values must be left out and counted the same.
func TestQueueFamiliesExposeLikeConstMetrics(t *testing.T) {
	c := &brokerCollector{}
	scrapes := [][]string{
		{"a", "b", "c\xff", "default"},
		{"b", "default", "new", string(bytes.Repeat([]byte("x"), MaxLabelValueLength+1))},
		{"a", "b", "c\xff", "default"},
	}
	for n, names := range scrapes {
		snap := &broker.Snapshot{MemoryUsedBytes: math.NaN(), ConnectedClients: math.NaN(), Anomalies: broker.Anomalies{}}
		for i, name := range names {
			q := broker.QueueStats{Name: name, Ready: int64(n*10 + i), InFlight: 2, Delayed: 3, DeadLetter: int64(i), Orphaned: 1, DeadLettered: uint64(i * 7),
				OldestAge: time.Duration(i) * time.Second, OldestAgeKnown: i%2 == 0,
				LongestHeld: time.Duration(i) * time.Minute, LongestHeldLowerBound: i == 1}
			if i > 0 {
				q.DeadLetterLast = time.UnixMilli(1_700_000_000_123 + int64(i))
			}
			snap.Queues = append(snap.Queues, q)
		}
		st := &State{Broker: &BrokerState{Snapshot: broker.ToModel(snap)}}
		fast := &Metrics{}
		c.Collect(st, fast)
		fast.list = fast.queues.appendMetrics(fast.list)
		slow := &Metrics{}
		for _, q := range snap.Queues {
			slow.Gauge(queueReady.Desc(), float64(q.Ready), q.Name)
			slow.Gauge(queueInflight.Desc(), float64(q.InFlight), q.Name)
			slow.Gauge(queueDelayed.Desc(), float64(q.Delayed), q.Name)
			slow.Gauge(queueDead.Desc(), float64(q.DeadLetter), q.Name)
			slow.Gauge(queueOrphaned.Desc(), float64(q.Orphaned), q.Name)
			slow.Counter(queueDeadLettered.Desc(), float64(q.DeadLettered), q.Name)
			if !q.DeadLetterLast.IsZero() {
				slow.Gauge(queueDeadLast.Desc(), float64(q.DeadLetterLast.UnixMilli())/1000, q.Name)
			}
			if q.OldestAgeKnown {
				slow.Gauge(queueOldest.Desc(), q.OldestAge.Seconds(), q.Name)
			}
			slow.Gauge(queueLongestHeld.Desc(), q.LongestHeld.Seconds(), q.Name)
			lb := 0.0
			if q.LongestHeldLowerBound {
				lb = 1
			}
			slow.Gauge(queueLongestHeldLowerBound.Desc(), lb, q.Name)
		}
		got, want := exposeQueueFamilies(t, fast), exposeQueueFamilies(t, slow)
		if got != want {
			t.Fatalf("scrape %d: exposition differs\n got:\n%s\nwant:\n%s", n, got, want)
		}
		if fast.invalid != slow.invalid || fast.invalid == 0 {
			t.Errorf("scrape %d: invalid = %d, const metrics %d (one bad name each scrape)", n, fast.invalid, slow.invalid)
		}
	}
}

// exposeQueueFamilies encodes the per-queue series of m as text through a
// pedantic registry.
func exposeQueueFamilies(t *testing.T, m *Metrics) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metricsCollector{m, []*prometheus.Desc{queueReady.Desc(), queueInflight.Desc(), queueDelayed.Desc(),
		queueDead.Desc(), queueOrphaned.Desc(), queueDeadLast.Desc(), queueOldest.Desc(), queueDeadLettered.Desc(),
		queueLongestHeld.Desc(), queueLongestHeldLowerBound.Desc()}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	if b.Len() == 0 {
		t.Fatal("no series")
	}
	return b.String()
}

type metricsCollector struct {
	m     *Metrics
	descs []*prometheus.Desc
}

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c.m.list {
		for _, d := range c.descs {
			if x.Desc() == d {
				ch <- x
			}
		}
	}
}

// The HELP text's cap is the Redis reader's (the limit series reports the
// reader's own value).
func TestActorSeriesCapInHelp(t *testing.T) {
	if maxActorSeries != broker.MaxActorSeries {
		t.Fatalf("HELP says %d, the reader caps at %d", maxActorSeries, broker.MaxActorSeries)
	}
}
