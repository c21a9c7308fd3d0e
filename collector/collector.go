// Package collector holds the Prometheus collectors of dramatiq_exporter.
//
// Each collector lives in a file of its own and registers itself by name with
// a default state, the way node_exporter does; cmd/ turns the registry into
// --collector.<name> flags. Collectors read their source on every scrape,
// inside the scrape's context, and build const metrics: nothing is cached in
// a metric vector between scrapes.
package collector

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// Namespace is the prefix of every metric. It is not configurable on purpose:
// the shipped dashboards and alerts depend on it.
const Namespace = "dramatiq"

// Collector is one named source of metrics.
type Collector interface {
	// Describe sends every descriptor the collector can emit, so that a
	// pedantic registry can check Collect against it.
	Describe(ch chan<- *prometheus.Desc)
	// Update reads the source within ctx and sends metrics. An error marks the
	// collector failed for this scrape; metrics sent before it are kept.
	Update(ctx context.Context, ch chan<- prometheus.Metric) error
}

// Factory builds a collector from the shared sources. It returns (nil, nil)
// when the source the collector needs is not configured (for example the
// database collectors without --database.url).
type Factory func(s Sources) (Collector, error)

// Sources are the long-lived clients that collectors share across scrapes.
// A nil field means that source is not configured.
type Sources struct {
	Broker   *broker.Reader
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
)

// Exporter runs the enabled collectors. It holds no per-scrape state, so any
// number of scrapes may run at once; each binds its own context with Bind.
type Exporter struct {
	collectors  map[string]Collector
	names       []string
	environment string
	namespace   string
	logger      *slog.Logger
}

// ExporterOptions configure NewExporter.
type ExporterOptions struct {
	// Enabled maps collector names to their state; a name missing here takes
	// the registered default.
	Enabled     map[string]bool
	Environment string
	Namespace   string
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

// Bind returns a prometheus.Collector whose Collect reads every source within
// ctx. Register it in a registry made for one request.
func (e *Exporter) Bind(ctx context.Context) prometheus.Collector {
	return &boundExporter{e: e, ctx: ctx}
}

type boundExporter struct {
	e   *Exporter
	ctx context.Context
}

func (b *boundExporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- scrapeDurationDesc
	ch <- scrapeSuccessDesc
	ch <- exporterInfoDesc
	for _, name := range b.e.names {
		b.e.collectors[name].Describe(ch)
	}
}

func (b *boundExporter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(exporterInfoDesc, prometheus.GaugeValue, 1, b.e.environment, b.e.namespace)
	var wg sync.WaitGroup
	for _, name := range b.e.names {
		wg.Add(1)
		go func(name string, c Collector) {
			defer wg.Done()
			b.e.run(b.ctx, name, c, ch)
		}(name, b.e.collectors[name])
	}
	wg.Wait()
}

func (e *Exporter) run(ctx context.Context, name string, c Collector, ch chan<- prometheus.Metric) {
	begin := time.Now()
	err := c.Update(ctx, ch)
	duration := time.Since(begin)
	success := 1.0
	if err != nil {
		success = 0
		e.logger.Error("collector failed", "collector", name, "duration_seconds", duration.Seconds(), "err", err)
	} else {
		e.logger.Debug("collector succeeded", "collector", name, "duration_seconds", duration.Seconds())
	}
	ch <- prometheus.MustNewConstMetric(scrapeDurationDesc, prometheus.GaugeValue, duration.Seconds(), name)
	ch <- prometheus.MustNewConstMetric(scrapeSuccessDesc, prometheus.GaugeValue, success, name)
}
