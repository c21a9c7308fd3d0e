// Package probe serves /probe?target=&module=: the metrics of any allowed
// Redis broker, read with the settings of a module from the config file,
// the multi-target pattern of blackbox_exporter.
//
// Each (module, target) pair keeps its own long-lived state (client,
// background discovery, remembered queues), built on its first probe and
// closed after an idle timeout; their number is bounded. A target outside
// the allow-list is refused before anything is built, so no connection is
// ever made to it.
package probe

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/safe"
)

// Target is what one (module, target) pair reads through.
type Target struct {
	// Handler serves the target's metrics exactly as /metrics does,
	// deadline header included.
	Handler http.Handler
	// Close releases the clients; called once no probe uses them.
	Close func()
}

// BuildFunc builds a Target. ctx lives as long as the Target: background
// work (discovery) started with it stops at eviction.
type BuildFunc func(ctx context.Context, m *config.Module, target string) (*Target, error)

// Options configure New.
type Options struct {
	Allowed     []string
	Modules     map[string]*config.Module
	IdleTimeout time.Duration
	MaxTargets  int
	Build       BuildFunc
	Logger      *slog.Logger
}

// Prober is the /probe handler and the collector of its own metrics.
type Prober struct {
	opts Options
	ctx  context.Context

	mu        sync.Mutex
	targets   map[string]*entry
	evictions map[string]float64
	refused   map[string]float64
}

type entry struct {
	key      string
	ready    chan struct{} // closed once t or err is set
	t        *Target
	err      error
	cancel   context.CancelFunc
	last     time.Time
	inflight int
}

// Reasons a probe is refused, as label values.
const (
	refusedBadRequest = "bad_request"
	refusedNotAllowed = "not_allowed"
	refusedModule     = "unknown_module"
	refusedCapacity   = "capacity"
)

// New returns a Prober; its targets are closed when ctx ends.
func New(ctx context.Context, o Options) *Prober {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{
		opts: o, ctx: ctx, targets: map[string]*entry{},
		evictions: map[string]float64{"idle": 0, "capacity": 0},
		refused:   map[string]float64{refusedBadRequest: 0, refusedNotAllowed: 0, refusedModule: 0, refusedCapacity: 0},
	}
	if len(o.Allowed) > 0 {
		go p.janitor()
	}
	return p
}

func (p *Prober) refuse(w http.ResponseWriter, reason string, code int, msg string) {
	p.mu.Lock()
	p.refused[reason]++
	p.mu.Unlock()
	http.Error(w, msg, code)
}

func (p *Prober) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(p.opts.Allowed) == 0 {
		http.Error(w, "/probe is off: set --probe.allowed-targets (probe.allowed_targets)", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	target, hostport, err := config.ParseTarget(q.Get("target"))
	if err != nil {
		// The raw target is not echoed: it may carry a password.
		p.refuse(w, refusedBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	if !config.TargetAllowed(p.opts.Allowed, hostport) {
		p.opts.Logger.Warn("probe refused: target not in --probe.allowed-targets", "target", hostport)
		p.refuse(w, refusedNotAllowed, http.StatusBadRequest, "target "+hostport+" is not allowed by --probe.allowed-targets")
		return
	}
	name := q.Get("module")
	if name == "" {
		name = config.DefaultModule
	}
	m, ok := p.opts.Modules[name]
	if !ok {
		p.refuse(w, refusedModule, http.StatusBadRequest, "unknown module (modules: in the config file); without module=, a module named default is used")
		return
	}
	e, err := p.acquire(r.Context(), m, target)
	if err != nil {
		if errors.Is(err, errCapacity) {
			p.refuse(w, refusedCapacity, http.StatusServiceUnavailable, err.Error())
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer p.release(e)
	e.t.Handler.ServeHTTP(w, r)
}

var errCapacity = errors.New("too many probed targets (--probe.max-targets) and none idle")

// acquire returns the target's entry, built if new, with a probe counted in
// flight so that it is not evicted under the probe.
func (p *Prober) acquire(ctx context.Context, m *config.Module, target string) (*entry, error) {
	key := m.Name + "\x00" + target
	p.mu.Lock()
	e, ok := p.targets[key]
	if !ok {
		if len(p.targets) >= p.opts.MaxTargets {
			victim := p.lruIdle()
			if victim == nil {
				p.mu.Unlock()
				return nil, errCapacity
			}
			p.evictLocked(victim, "capacity")
		}
		tctx, cancel := context.WithCancel(p.ctx)
		e = &entry{key: key, ready: make(chan struct{}), cancel: cancel}
		p.targets[key] = e
		go p.build(tctx, e, m, target)
	}
	e.inflight++
	e.last = time.Now()
	p.mu.Unlock()

	select {
	case <-e.ready:
	case <-ctx.Done():
		p.release(e)
		return nil, ctx.Err()
	}
	if e.err != nil {
		p.release(e)
		return nil, e.err
	}
	return e, nil
}

func (p *Prober) build(ctx context.Context, e *entry, m *config.Module, target string) {
	t, err := p.buildSafe(ctx, m, target)
	p.mu.Lock()
	if err != nil {
		e.err = err
		e.cancel()
		if p.targets[e.key] == e {
			delete(p.targets, e.key)
		}
	} else {
		e.t = t
		p.opts.Logger.Info("probing a new target", "target", target, "module", m.Name)
	}
	close(e.ready)
	p.mu.Unlock()
}

// buildSafe is Build in build's goroutine, which no caller guards: a
// panic fails this target's build, and its waiting probes answer 500.
func (p *Prober) buildSafe(ctx context.Context, m *config.Module, target string) (t *Target, err error) {
	defer safe.Recover(p.opts.Logger.With("target", target, "module", m.Name), "building a probed target", func(e error) { t, err = nil, e })
	return p.opts.Build(ctx, m, target)
}

// closeTarget closes a target's clients; a panic there is logged, and the
// target is gone all the same.
func (p *Prober) closeTarget(e *entry) {
	defer safe.Recover(p.opts.Logger, "closing a probed target", nil)
	e.t.Close()
}

func (p *Prober) release(e *entry) {
	p.mu.Lock()
	e.inflight--
	e.last = time.Now()
	p.mu.Unlock()
}

// lruIdle is the least recently probed entry that no probe uses.
func (p *Prober) lruIdle() *entry {
	var v *entry
	for _, e := range p.targets {
		if e.inflight > 0 || e.t == nil {
			continue
		}
		if v == nil || e.last.Before(v.last) {
			v = e
		}
	}
	return v
}

// evictLocked removes e (idle, built) and closes it outside the lock.
func (p *Prober) evictLocked(e *entry, reason string) {
	delete(p.targets, e.key)
	p.evictions[reason]++
	e.cancel()
	go p.closeTarget(e)
}

func (p *Prober) janitor() {
	every := min(max(p.opts.IdleTimeout/4, 50*time.Millisecond), 10*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			p.mu.Lock()
			for _, e := range p.targets {
				e.cancel()
				if e.t != nil {
					p.closeTarget(e)
				}
			}
			p.targets = map[string]*entry{}
			p.mu.Unlock()
			return
		case now := <-tick.C:
			p.sweep(now)
		}
	}
}

// sweep evicts the targets idle since before now. A panic is logged and
// the janitor goes on at the next tick.
func (p *Prober) sweep(now time.Time) {
	defer safe.Recover(p.opts.Logger, "the probe janitor", nil)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.targets {
		if e.inflight == 0 && e.t != nil && now.Sub(e.last) > p.opts.IdleTimeout {
			p.evictLocked(e, "idle")
		}
	}
}

var (
	targetsDesc = prometheus.NewDesc("dramatiq_exporter_probe_targets",
		"Probed targets (module and target pairs) whose state (client, discovery, remembered queues) is kept now.", nil, nil)
	maxTargetsDesc = prometheus.NewDesc("dramatiq_exporter_probe_targets_limit",
		"--probe.max-targets: the most probed targets kept at once.", nil, nil)
	idleDesc = prometheus.NewDesc("dramatiq_exporter_probe_idle_timeout_seconds",
		"--probe.idle-timeout: a probed target's state is dropped after this long without a probe.", nil, nil)
	evictionsDesc = prometheus.NewDesc("dramatiq_exporter_probe_evictions_total",
		"Probed targets whose state was dropped: idle (no probe within --probe.idle-timeout) or capacity (to make room under --probe.max-targets).", []string{"reason"}, nil)
	refusedDesc = prometheus.NewDesc("dramatiq_exporter_probe_refused_total",
		"Probes refused: bad_request (target not redis[s]://host:port/db), not_allowed (not in --probe.allowed-targets), unknown_module, capacity.", []string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (p *Prober) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{targetsDesc, maxTargetsDesc, idleDesc, evictionsDesc, refusedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(len(p.targets)))
	ch <- prometheus.MustNewConstMetric(maxTargetsDesc, prometheus.GaugeValue, float64(p.opts.MaxTargets))
	ch <- prometheus.MustNewConstMetric(idleDesc, prometheus.GaugeValue, p.opts.IdleTimeout.Seconds())
	for reason, n := range p.evictions {
		ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, n, reason)
	}
	for reason, n := range p.refused {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, n, reason)
	}
}

// FirstAlone serves the first request on its own, then calls after (once)
// and serves every later request concurrently. Requests that arrive
// during the first wait for it, within their own deadline.
//
// A new target's reader knows no queues: its first probe discovers them
// within that probe's deadline, and only then does discovery move to the
// background (after), so no probe of a new target reports it empty.
func FirstAlone(h http.Handler, after func()) http.Handler {
	gate := make(chan struct{}, 1)
	done := make(chan struct{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-done:
			h.ServeHTTP(w, r)
			return
		default:
		}
		select {
		case gate <- struct{}{}:
		case <-done:
			h.ServeHTTP(w, r)
			return
		case <-r.Context().Done():
			http.Error(w, "the target's first probe is still running", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-done:
			<-gate
			h.ServeHTTP(w, r)
			return
		default:
		}
		h.ServeHTTP(w, r)
		after()
		close(done)
		<-gate
	})
}
