// Package collector holds the Prometheus collectors of dramatiq_exporter.
//
// Each collector lives in a file of its own and registers itself by name with
// a default state, the way node_exporter does; cmd/ turns the registry into
// --collector.<name> flags.
//
// The data flows one way. Exporter.Read runs every collector's Read, in
// parallel and within the caller's context, into one typed State (shared by
// concurrent callers); Exporter.Project projects that State into metrics
// for /metrics (the per-queue families as columns the server writes
// directly, the rest as const metrics), and the status package projects the
// same State into the status model of the API, the page and `check`.
// Nothing is cached in a metric vector between scrapes.
package collector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/clip"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/safe"
)

// Namespace is the prefix of every metric. It is not configurable on purpose:
// the shipped dashboards and alerts depend on it.
const Namespace = "dramatiq"

// Collector is one named source. Its read and its metrics are separate
// steps, so that one read can serve every view: Read stores what the source
// said in the collector's own part of a State; Collect turns that part into
// metrics, and the status package turns it into the status model.
type Collector interface {
	// Describe sends every descriptor Collect can use, so that a pedantic
	// registry can check Collect against it.
	Describe(ch chan<- *prometheus.Desc)
	// Read reads the source within ctx into the collector's own part of st
	// and touches nothing else of st: collectors read concurrently. An
	// error marks the collector failed in this read; what it stored before
	// is kept. Goroutines it starts must not outlive it, and must recover
	// their own panics: only the Read call itself is guarded.
	Read(ctx context.Context, st *State, o ReadOptions) error
	// Collect projects the collector's part of st, as Read left it, into
	// metrics. It reads st only.
	Collect(st *State, m *Metrics)
}

// ReadOptions say what a read must include beyond what the metrics need.
type ReadOptions struct {
	// RecentDeadLetters reads the newest dead letters of every queue that
	// has any (one bounded extra round trip), for the API and the page.
	RecentDeadLetters bool
	// DeadLetterArgs includes their args and kwargs (user data).
	DeadLetterArgs bool
}

// covers reports whether a read made with o serves a caller that asked for
// want: the metrics need nothing beyond the base read.
func (o ReadOptions) covers(want ReadOptions) bool {
	return o == want || !want.RecentDeadLetters
}

// Factory builds a collector from the shared sources. It returns (nil, nil)
// when the source the collector needs is not configured (for example the
// database collectors without --database.url).
type Factory func(s Sources) (Collector, error)

// Sources are the long-lived clients that collectors share across scrapes.
// A nil field means that source is not configured.
type Sources struct {
	// Broker is the chosen broker's reader (main wires it); collectors see
	// only the broker-neutral model.
	Broker   broker.Reader
	Database *pgxpool.Pool
	Logger   *slog.Logger
}

type registration struct {
	defaultEnabled bool
	factory        Factory
	help           string
}

var (
	registryMu sync.Mutex
	registry   = map[string]registration{}
)

// Register declares a collector. It is called from init functions only, so a
// duplicate name is a programming error.
func Register(name string, defaultEnabled bool, help string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("collector: duplicate registration of " + name)
	}
	registry[name] = registration{defaultEnabled: defaultEnabled, factory: f, help: help}
}

// Available describes one registered collector, for building flags.
type Available struct {
	Name           string
	DefaultEnabled bool
	Help           string
}

// List returns the registered collectors sorted by name.
func List() []Available {
	registryMu.Lock()
	defer registryMu.Unlock()
	out := make([]Available, 0, len(registry))
	for name, r := range registry {
		out = append(out, Available{Name: name, DefaultEnabled: r.defaultEnabled, Help: r.help})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var (
	scrapeDurationDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "exporter", "collector_duration_seconds"),
		"Time the collector took in this scrape.",
		[]string{"collector"}, nil,
	)
	scrapeSuccessDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "exporter", "collector_success"),
		"1 when the collector read its source without error in this scrape, else 0.",
		[]string{"collector"}, nil,
	)
	exporterInfoDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "exporter", "info"),
		"Constant 1, labelled with the deployment's environment name and the Dramatiq namespace read.",
		[]string{"environment", "namespace"}, nil,
	)
	invalidLabelValuesDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "exporter", "invalid_label_values"),
		fmt.Sprintf("Series left out of this scrape because a label value was not valid UTF-8 or longer than %d bytes (a queue name from Redis, say).", MaxLabelValueLength),
		nil, nil,
	)
)

// MaxLabelValueLength bounds a label value in bytes. Real queue names are
// far shorter; anything longer would bloat every scrape and every TSDB
// that stores it.
const MaxLabelValueLength = 1024

// Exporter runs the enabled collectors. Any number of callers may read at
// once: concurrent reads share one in-flight read (see Read). It holds no
// package-level state, so a process may build many, one per target.
type Exporter struct {
	collectors  map[string]Collector
	names       []string
	environment string
	namespace   string
	logger      *slog.Logger
	onRead      func(*State)

	mu      sync.Mutex
	flights []*flight // reads in progress
}

// ExporterOptions configure NewExporter.
type ExporterOptions struct {
	// Enabled maps collector names to their state; a name missing here takes
	// the registered default.
	Enabled     map[string]bool
	Environment string
	Namespace   string
	// OnRead, when set, is given the State of every read that runs to its
	// end, once, before any caller sees it (the status history is fed this
	// way). It runs in the read's own goroutine, so it must be quick, and
	// must not modify the State. A read that every caller gave up on is
	// not passed on: its failure says nothing about the sources.
	OnRead func(*State)
}

// NewExporter builds every enabled collector. Unknown names in opts.Enabled
// are an error, so a typo in a flag or config file is caught at start-up.
func NewExporter(opts ExporterOptions, s Sources) (*Exporter, error) {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	registryMu.Lock()
	regs := make(map[string]registration, len(registry))
	for k, v := range registry {
		regs[k] = v
	}
	registryMu.Unlock()

	for name := range opts.Enabled {
		if _, ok := regs[name]; !ok {
			return nil, fmt.Errorf("unknown collector %q", name)
		}
	}
	e := &Exporter{
		collectors:  map[string]Collector{},
		environment: opts.Environment,
		namespace:   opts.Namespace,
		logger:      s.Logger,
		onRead:      opts.OnRead,
	}
	for name, r := range regs {
		on := r.defaultEnabled
		if v, ok := opts.Enabled[name]; ok {
			on = v
		}
		if !on {
			continue
		}
		c, err := r.factory(s)
		if err != nil {
			return nil, fmt.Errorf("collector %s: %w", name, err)
		}
		if c == nil {
			continue
		}
		e.collectors[name] = c
		e.names = append(e.names, name)
	}
	sort.Strings(e.names)
	return e, nil
}

// Names lists the collectors that run, sorted.
func (e *Exporter) Names() []string { return append([]string(nil), e.names...) }

// Read returns one State of every enabled source, read within ctx. It never
// returns nil. When ctx ends first, the collectors that finished by then
// keep their results and the others count as failed.
//
// Concurrent callers share one in-flight read instead of each reading the
// sources. The read runs under the deadline of the caller that started it
// (the leader), not under its cancellation: a leader whose client hangs up
// does not fail the others; the read is cancelled only when every caller
// waiting for it has given up. Each caller waits only as long as its own
// ctx allows. A caller that joined a read with an earlier deadline than its
// own, and that read was cut short by that deadline, reads again (sharing
// with whoever is reading then) with the time it has left, at most twice:
// joining costs a caller with more time nothing but that retry, and a slow
// source is never read more often than once per distinct deadline.
func (e *Exporter) Read(ctx context.Context, o ReadOptions) *State {
	for attempt := 0; ; attempt++ {
		f := e.join(ctx, o)
		select {
		case <-f.done:
		default:
			select {
			case <-f.done:
			case <-ctx.Done():
				st := f.sofar(ctx.Err())
				e.leave(f)
				return st
			}
		}
		e.leave(f)
		if attempt < 2 && f.cutShort && ctx.Err() == nil && outlasts(ctx, f) {
			continue
		}
		return f.state
	}
}

// outlasts reports whether ctx allows more time than the flight had.
func outlasts(ctx context.Context, f *flight) bool {
	if !f.hasDeadline {
		return false
	}
	d, ok := ctx.Deadline()
	return !ok || d.After(f.deadline)
}

// deadlineSlack: a read that failed this close to its deadline counts as
// cut short by it. A client's socket deadline (go-redis sets it from the
// context's) fires a hair before the context's own timer, with an i/o
// timeout that does not wrap context.DeadlineExceeded.
const deadlineSlack = 50 * time.Millisecond

// failed reports whether any collector failed.
func (s *State) failed() bool {
	for _, o := range s.Outcomes {
		if !o.Success {
			return true
		}
	}
	return false
}

// flight is one read in progress, shared by every caller that joined it.
type flight struct {
	opts        ReadOptions
	deadline    time.Time
	hasDeadline bool
	cancel      context.CancelFunc
	waiters     int // guarded by Exporter.mu
	done        chan struct{}

	// The collectors' results as they finish, for callers that cannot
	// wait for the rest.
	mu       sync.Mutex
	partial  *State
	finished []bool

	// Set before done is closed.
	state    *State
	cutShort bool // the flight's own deadline ended it
}

// sofar is what the flight knows now: the collectors still reading count
// as failed because of cause.
func (f *flight) sofar(cause error) *State {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := *f.partial
	st.Duration = time.Since(st.Time)
	st.Outcomes = append([]Outcome(nil), st.Outcomes...)
	err := fmt.Errorf("the read did not finish in time: %w", cause)
	for i, done := range f.finished {
		if !done {
			st.Outcomes[i] = Outcome{Name: st.Collectors[i], Duration: st.Duration, Err: err}
		}
	}
	return &st
}

// join returns a flight that serves o, starting one if none is under way.
func (e *Exporter) join(ctx context.Context, o ReadOptions) *flight {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range e.flights {
		if f.opts.covers(o) {
			f.waiters++
			return f
		}
	}
	f := &flight{
		opts: o, waiters: 1, done: make(chan struct{}), finished: make([]bool, len(e.names)),
		partial: &State{
			Time: time.Now(), Environment: e.environment, Namespace: e.namespace,
			Collectors: e.Names(), Outcomes: make([]Outcome, len(e.names)),
		},
	}
	for i, name := range e.names {
		f.partial.Outcomes[i].Name = name
	}
	var fctx context.Context
	if d, ok := ctx.Deadline(); ok {
		f.deadline, f.hasDeadline = d, true
		fctx, f.cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
	} else {
		fctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	}
	e.flights = append(e.flights, f)
	go e.fly(fctx, f)
	return f
}

// leave drops one waiter; the last one to leave an unfinished read cancels
// it, since nobody wants its result any more.
func (e *Exporter) leave(f *flight) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		e.forget(f)
		f.cancel()
	}
}

// forget removes f from the flights new callers may join. Callers hold mu.
func (e *Exporter) forget(f *flight) {
	for i, g := range e.flights {
		if g == f {
			e.flights = append(e.flights[:i], e.flights[i+1:]...)
			return
		}
	}
}

func (e *Exporter) fly(ctx context.Context, f *flight) {
	defer func() {
		f.cutShort = f.hasDeadline && f.state.failed() &&
			(errors.Is(ctx.Err(), context.DeadlineExceeded) || time.Until(f.deadline) < deadlineSlack)
		if e.onRead != nil && !errors.Is(ctx.Err(), context.Canceled) {
			e.observe(f.state)
		}
		e.mu.Lock()
		e.forget(f)
		e.mu.Unlock()
		f.cancel()
		close(f.done)
	}()
	// readOne guards every collector; this catches a bug of fly's own, so
	// that no waiter hangs and the process lives. It runs first.
	defer safe.Recover(e.logger, "read", func(err error) { f.state = f.sofar(err) })
	var wg sync.WaitGroup
	for i, name := range e.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each collector reads into a State of its own, merged when it
			// ends, so that callers can take what has finished at any time.
			own := &State{}
			out := e.readOne(ctx, name, e.collectors[name], own, f.opts)
			f.mu.Lock()
			defer f.mu.Unlock()
			f.partial.merge(own)
			f.partial.Outcomes[i] = out
			f.finished[i] = true
		}()
	}
	wg.Wait()
	f.mu.Lock()
	st := *f.partial
	f.mu.Unlock()
	st.Duration = time.Since(st.Time)
	f.state = &st
}

// observe passes st to OnRead; a panic there is logged and does not keep
// the read's callers waiting.
func (e *Exporter) observe(st *State) {
	defer safe.Recover(e.logger, "read observer", nil)
	e.onRead(st)
}

// merge takes the parts a collector stored in its own State.
func (s *State) merge(own *State) {
	if own.Broker != nil {
		s.Broker = own.Broker
	}
	if own.Database != nil {
		s.Database = own.Database
	}
	if own.DatabaseActivity != nil {
		s.DatabaseActivity = own.DatabaseActivity
	}
}

// readOne runs one collector's Read. A panic there becomes a failed
// outcome and one log line, never a failed scrape or a dead process.
func (e *Exporter) readOne(ctx context.Context, name string, c Collector, st *State, o ReadOptions) (out Outcome) {
	begin := time.Now()
	out.Name = name
	panicked := false
	defer func() {
		out.Duration = time.Since(begin)
		// The error may quote a server (a reply, a host name a Sentinel
		// gave); it reaches the status page, the API and check's JSON.
		out.Err = clip.Error(out.Err)
		if panicked {
			return // logged by Recover
		}
		if out.Err != nil {
			e.logger.Error("collector failed", "collector", name, "duration_seconds", out.Duration.Seconds(), "err", out.Err)
		} else {
			e.logger.Debug("collector succeeded", "collector", name, "duration_seconds", out.Duration.Seconds())
		}
	}()
	defer safe.Recover(e.logger.With("collector", name), "collector", func(err error) {
		panicked, out.Success, out.Err = true, false, err
	})
	out.Err = c.Read(ctx, st, o)
	out.Success = out.Err == nil
	return out
}

// Metrics gathers one projection's series. A series whose label values
// cannot be exposed is left out and counted, never a panic: label values
// come from Redis keys and flags, which may hold any bytes.
type Metrics struct {
	list    []prometheus.Metric
	invalid int
	queues  *queueSamples // the per-queue families, if any
}

// Gauge adds a gauge sample.
func (m *Metrics) Gauge(d *prometheus.Desc, v float64, labels ...string) {
	m.add(d, prometheus.GaugeValue, v, labels)
}

// Counter adds a counter sample.
func (m *Metrics) Counter(d *prometheus.Desc, v float64, labels ...string) {
	m.add(d, prometheus.CounterValue, v, labels)
}

func (m *Metrics) add(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	for _, l := range labels {
		if len(l) > MaxLabelValueLength {
			m.invalid++
			return
		}
	}
	// NewConstMetric refuses invalid UTF-8 (and a wrong label count) with
	// an error, where MustNewConstMetric would panic.
	c, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m.invalid++
		return
	}
	m.list = append(m.list, c)
}

// Invalid is how many series were left out.
func (m *Metrics) Invalid() int { return m.invalid }

// Collect projects st into metrics on ch: the exporter's info, every
// collector's own series, its duration and success, and the count of series
// left out for their label values.
func (e *Exporter) Collect(st *State, ch chan<- prometheus.Metric) {
	e.Project(st).All().Collect(ch)
}

// Project is Collect's projection, with the per-queue families kept apart
// so that /metrics can write them directly (see QueueFamily).
func (e *Exporter) Project(st *State) *Projection {
	m := &Metrics{}
	m.Gauge(exporterInfoDesc, 1, st.Environment, st.Namespace)
	for _, out := range st.Outcomes {
		if c, ok := e.collectors[out.Name]; ok {
			part := &Metrics{}
			if e.project(c, out.Name, st, part) {
				m.list = append(m.list, part.list...)
				m.invalid += part.invalid
				if m.queues == nil {
					m.queues = part.queues
				} else {
					// Rows of two collectors cannot share columns.
					m.list = part.queues.appendMetrics(m.list)
				}
			} else {
				// Only /metrics saw this failure; the status projection
				// does not share the bug that caused it.
				out.Success = false
			}
		}
		success := 0.0
		if out.Success {
			success = 1
		}
		m.Gauge(scrapeDurationDesc, out.Duration.Seconds(), out.Name)
		m.Gauge(scrapeSuccessDesc, success, out.Name)
	}
	m.Gauge(invalidLabelValuesDesc, float64(m.invalid))
	return &Projection{e: e, list: m.list, queues: m.queues}
}

// Projection is the /metrics projection of one State.
type Projection struct {
	e      *Exporter
	list   []prometheus.Metric
	queues *queueSamples
}

// All is every series of the projection, for a registry.
func (p *Projection) All() prometheus.Collector { return projected{p, true} }

// Rest is every series but those of QueueText's families, for a registry
// whose families are written beside them.
func (p *Projection) Rest() prometheus.Collector { return projected{p, false} }

type projected struct {
	p      *Projection
	queues bool
}

func (c projected) Describe(ch chan<- *prometheus.Desc) { c.p.e.Describe(ch) }

func (c projected) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c.p.list {
		ch <- x
	}
	if c.queues {
		for _, x := range c.p.queues.appendMetrics(nil) {
			ch <- x
		}
	}
}

// QueueText returns the per-queue families to write in the text format
// beside Rest's, sorted by name, each with at least one sample. ok is false
// when they must go through a registry (All) to come out exactly as a
// registry would give them: a queue name repeated in the read.
func (p *Projection) QueueText() (t *QueueText, ok bool) {
	t = &QueueText{}
	q := p.queues
	if q == nil {
		return t, true
	}
	if t.rows, ok = q.sortedRows(); !ok {
		return nil, false
	}
	t.q = q
	for _, c := range q.cols {
		if c.n > 0 {
			t.cols = append(t.cols, c)
		}
	}
	slices.SortFunc(t.cols, func(a, b *queueColumn) int { return strings.Compare(a.fam.name, b.fam.name) })
	return t, true
}

// QueueText are per-queue families ready to be written in the text format.
type QueueText struct {
	q    *queueSamples
	rows []int
	cols []*queueColumn
	num  []byte
}

// Len is the number of families.
func (t *QueueText) Len() int { return len(t.cols) }

// Name is the name of family i.
func (t *QueueText) Name(i int) string { return t.cols[i].fam.name }

// Write writes family i as expfmt's text encoder writes a registry's
// family of the same series (text format 0.0.4, which is also what every
// escaping scheme gives for these names and the queue label).
func (t *QueueText) Write(w *bufio.Writer, i int) {
	t.num = t.cols[i].writeText(w, t.q, t.rows, t.num)
}

// project runs one collector's Collect; false when it panicked, in which
// case none of its series are sent.
func (e *Exporter) project(c Collector, name string, st *State, m *Metrics) (ok bool) {
	defer safe.Recover(e.logger.With("collector", name), "collector's metrics", func(error) { ok = false })
	c.Collect(st, m)
	return true
}

// Describe sends every descriptor the exporter's projection can use.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- scrapeDurationDesc
	ch <- scrapeSuccessDesc
	ch <- exporterInfoDesc
	ch <- invalidLabelValuesDesc
	for _, name := range e.names {
		e.collectors[name].Describe(ch)
	}
}

// Bind returns a prometheus.Collector whose Collect reads every source
// within ctx (sharing a read in progress) and projects it. Register it in
// a registry made for one request.
func (e *Exporter) Bind(ctx context.Context) prometheus.Collector {
	return &boundExporter{e: e, ctx: ctx}
}

type boundExporter struct {
	e   *Exporter
	ctx context.Context
}

func (b *boundExporter) Describe(ch chan<- *prometheus.Desc) { b.e.Describe(ch) }

func (b *boundExporter) Collect(ch chan<- prometheus.Metric) {
	b.e.Collect(b.e.Read(b.ctx, ReadOptions{}), ch)
}
