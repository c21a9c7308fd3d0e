// Package probe serves /probe?target=&module=: the metrics of any allowed
// Redis broker, read with the settings of a module from the config file,
// the multi-target pattern of blackbox_exporter.
//
// Each (module, target) pair keeps its own long-lived state (client,
// background discovery, remembered queues), built on its first probe and
// closed after an idle timeout; their number is bounded, and a target
// probed once cannot push out one that is probed regularly. A target
// outside the allow-list is refused before anything is built, so no
// connection is ever made to it; a name is resolved here and the
// connection goes to the very addresses that were checked.
package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
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
// work (discovery) started with it stops at eviction. Every connection to
// the target must be made through dial (broker.ClientOptions.NetDial),
// which reaches only addresses the allow-list admitted.
type BuildFunc func(ctx context.Context, m *config.Module, target string, dial DialFunc) (*Target, error)

// DialFunc is net.Dialer.DialContext's shape.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configure New.
type Options struct {
	// Allow is the parsed --probe.allowed-targets; empty turns /probe off.
	Allow       *config.AllowList
	Modules     map[string]*config.Module
	IdleTimeout time.Duration
	MaxTargets  int
	Build       BuildFunc
	Logger      *slog.Logger
	// Resolver resolves target names; nil is net.DefaultResolver. Tests
	// inject one that asks their own DNS server.
	Resolver *net.Resolver
}

// Prober is the /probe handler and the collector of its own metrics.
type Prober struct {
	opts Options
	ctx  context.Context

	mu        sync.Mutex
	targets   map[string]*entry
	evictions map[string]float64
	refused   map[string]float64
	// asked remembers keys recently asked for that had no entry, so that a
	// target's second request may evict a regular one and its first may not.
	asked     map[string]struct{}
	askedFIFO []string
	// lastEvictLog rate-limits the capacity eviction log line.
	lastEvictLog time.Time
	evictsSince  int
}

type entry struct {
	key      string
	ready    chan struct{} // closed once t or err is set
	t        *Target
	err      error
	cancel   context.CancelFunc
	last     time.Time
	inflight int
	// hits counts probes, at most one a second: how regular the target is.
	hits    int
	lastHit time.Time
	pin     *pin
}

// Reasons a probe is refused, as label values.
const (
	refusedBadRequest = "bad_request"
	refusedNotAllowed = "not_allowed"
	refusedModule     = "unknown_module"
	refusedCapacity   = "capacity"
	refusedUnresolved = "unresolved"
)

// New returns a Prober; its targets are closed when ctx ends.
func New(ctx context.Context, o Options) *Prober {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{
		opts: o, ctx: ctx, targets: map[string]*entry{},
		evictions: map[string]float64{"idle": 0, "capacity": 0},
		refused:   map[string]float64{refusedBadRequest: 0, refusedNotAllowed: 0, refusedModule: 0, refusedCapacity: 0, refusedUnresolved: 0},
		asked:     map[string]struct{}{},
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
		p.opts.Resolver = o.Resolver
	}
	if !o.Allow.Empty() {
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
	if p.opts.Allow.Empty() {
		http.Error(w, "/probe is off: set --probe.allowed-targets (probe.allowed_targets)", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	name := q.Get("module")
	if name == "" {
		name = config.DefaultModule
	}
	m, ok := p.opts.Modules[name]
	if !ok {
		// A bad target is the more useful answer when both are wrong.
		if _, err := config.ParseTarget(q.Get("target")); err != nil {
			p.refuse(w, refusedBadRequest, http.StatusBadRequest, err.Error())
			return
		}
		p.refuse(w, refusedModule, http.StatusBadRequest, "unknown module (modules: in the config file); without module=, a module named default is used")
		return
	}
	// The module says which broker, so how its targets are spelled.
	target, err := config.ParseTargetFor(m, q.Get("target"))
	if err != nil {
		// The raw target is not echoed: it may carry a password.
		p.refuse(w, refusedBadRequest, http.StatusBadRequest, err.Error())
		return
	}
	if !m.AllowsDB(target.DB) {
		p.refuse(w, refusedNotAllowed, http.StatusBadRequest, fmt.Sprintf("database %d is not allowed by module %s (redis.databases; default 0-15)", target.DB, m.Name))
		return
	}
	addrs, err := p.admit(r.Context(), target)
	if err != nil {
		var nr *notResolved
		if errors.As(err, &nr) {
			p.refuse(w, refusedUnresolved, http.StatusBadGateway, err.Error())
			return
		}
		// The answer does not say what the name resolved to: the requester
		// need not learn the addresses of the operator's names. The log does.
		p.opts.Logger.Warn("probe refused: target not in --probe.allowed-targets", "target", target.HostPort(), "why", err.Error())
		p.refuse(w, refusedNotAllowed, http.StatusBadRequest, "target "+target.HostPort()+" is not allowed by --probe.allowed-targets")
		return
	}
	e, err := p.acquire(r.Context(), m, target, addrs)
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

type notResolved struct{ msg string }

func (e *notResolved) Error() string { return e.msg }

// maxAddrs bounds how many addresses of one name are kept and tried.
const maxAddrs = 16

// admit checks the target against the allow-list and returns the
// addresses it may be dialled at. An address literal is checked as it is.
// A name is resolved here, and every address it resolves to must be
// admitted, by an address entry, or (when a name pattern admits the name)
// by not being loopback, link-local or otherwise special: the connection
// then goes to these addresses only, so a second, different DNS answer
// (rebinding) is never dialled.
func (p *Prober) admit(ctx context.Context, t config.ProbeTarget) ([]netip.Addr, error) {
	a := p.opts.Allow
	if t.Addr.IsValid() {
		if !a.AllowsAddr(t.Addr, t.Port) {
			return nil, errors.New("no entry admits this address and port")
		}
		return []netip.Addr{t.Addr}, nil
	}
	byName := a.MatchesName(t.Host, t.Port)
	if !byName && !a.AnyAddrEntry(t.Port) {
		// Not worth a DNS query: nothing could admit it.
		return nil, errors.New("no entry admits this name and port")
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := p.opts.Resolver.LookupNetIP(ctx, "ip", t.Host)
	if err != nil || len(ips) == 0 {
		return nil, &notResolved{msg: "cannot resolve " + t.Host}
	}
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		ok := a.AllowsAddr(ip, t.Port) || (byName && a.AllowsAddrByName(ip, t.Port))
		if !ok {
			if byName {
				return nil, fmt.Errorf("%s resolves to %s, which a name pattern does not admit (loopback, link-local, unspecified, multicast need an address entry)", t.Host, ip)
			}
			return nil, fmt.Errorf("%s resolves to %s, which no address entry admits", t.Host, ip)
		}
		if !slices.Contains(out, ip) && len(out) < maxAddrs {
			out = append(out, ip)
		}
	}
	return out, nil
}

// resolveTimeout caps one target's DNS lookup inside the probe's deadline.
const resolveTimeout = 5 * time.Second

// pin dials a target's host at the addresses its latest admitted probe
// resolved, never at what the name resolves to at dial time.
type pin struct {
	host string
	port int

	mu    sync.Mutex
	addrs []netip.Addr
}

func (pn *pin) set(addrs []netip.Addr) {
	pn.mu.Lock()
	pn.addrs = addrs
	pn.mu.Unlock()
}

func (pn *pin) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !strings.EqualFold(strings.TrimSuffix(host, "."), pn.host) {
		return nil, fmt.Errorf("probe: refusing to dial %q for target host %q", addr, pn.host)
	}
	pn.mu.Lock()
	addrs := pn.addrs
	pn.mu.Unlock()
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 5 * time.Minute}
	err = errors.New("no admitted address")
	for _, a := range addrs {
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(pn.port)).String()); err == nil {
			return c, nil
		}
	}
	return nil, err
}

// dialTimeout caps one connection attempt; the caller's context is the
// real bound.
const dialTimeout = 10 * time.Second

var errCapacity = errors.New("too many probed targets (--probe.max-targets) and none that a new target may evict")

// acquire returns the target's entry, built if new, with a probe counted in
// flight so that it is not evicted under the probe.
func (p *Prober) acquire(ctx context.Context, m *config.Module, target config.ProbeTarget, addrs []netip.Addr) (*entry, error) {
	key := m.Name + "\x00" + target.Canonical
	now := time.Now()
	p.mu.Lock()
	e, ok := p.targets[key]
	if !ok {
		if len(p.targets) >= p.opts.MaxTargets {
			victim := p.victim(key)
			if victim == nil {
				p.remember(key)
				p.mu.Unlock()
				return nil, errCapacity
			}
			p.evictLocked(victim, "capacity")
			p.logEvictionLocked(now)
		}
		delete(p.asked, key)
		tctx, cancel := context.WithCancel(p.ctx)
		e = &entry{key: key, ready: make(chan struct{}), cancel: cancel, pin: &pin{host: target.Host, port: target.Port}}
		p.targets[key] = e
		e.pin.set(addrs)
		go p.build(tctx, e, m, target.Canonical)
	} else {
		e.pin.set(addrs)
	}
	if now.Sub(e.lastHit) >= time.Second {
		e.hits++
		e.lastHit = now
	}
	e.inflight++
	e.last = now
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
	t, err := p.buildSafe(ctx, m, target, e.pin.dial)
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
func (p *Prober) buildSafe(ctx context.Context, m *config.Module, target string, dial DialFunc) (t *Target, err error) {
	defer safe.Recover(p.opts.Logger.With("target", target, "module", m.Name), "building a probed target", func(e error) { t, err = nil, e })
	return p.opts.Build(ctx, m, target, dial)
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

// victim picks the entry a new key may evict, or nil. A target probed
// only once (the bulk of a flood of made-up targets) is evicted first,
// least recently probed first. Only a key asked for before (it was
// refused or evicted lately) may evict a regular target, and then the
// least regular one (fewest probes, at most one a second): pushing out a
// target Prometheus scrapes takes as many probes of each new target as
// that target had.
func (p *Prober) victim(key string) *entry {
	var once, least *entry
	for _, e := range p.targets {
		if e.inflight > 0 || e.t == nil {
			continue
		}
		if e.hits < 2 && (once == nil || e.last.Before(once.last)) {
			once = e
		}
		if least == nil || e.hits < least.hits || (e.hits == least.hits && e.last.Before(least.last)) {
			least = e
		}
	}
	if once != nil {
		return once
	}
	if _, ok := p.asked[key]; ok {
		return least
	}
	return nil
}

// remember notes a key that was asked for and not kept, in a FIFO bounded
// by a multiple of the table's size.
func (p *Prober) remember(key string) {
	if _, ok := p.asked[key]; ok {
		return
	}
	if len(p.askedFIFO) >= 4*p.opts.MaxTargets {
		delete(p.asked, p.askedFIFO[0])
		p.askedFIFO = p.askedFIFO[1:]
	}
	p.asked[key] = struct{}{}
	p.askedFIFO = append(p.askedFIFO, key)
}

// logEvictionLocked logs capacity evictions, at most one line every 10 s,
// so that a flood of targets does not flood the log too.
func (p *Prober) logEvictionLocked(now time.Time) {
	p.evictsSince++
	if now.Sub(p.lastEvictLog) < 10*time.Second {
		return
	}
	p.opts.Logger.Warn("probe: targets evicted to make room under --probe.max-targets; raise it if these are legitimate targets",
		"evicted", p.evictsSince, "max_targets", p.opts.MaxTargets)
	p.lastEvictLog, p.evictsSince = now, 0
}

// evictLocked removes e (idle, built) and closes it outside the lock.
func (p *Prober) evictLocked(e *entry, reason string) {
	delete(p.targets, e.key)
	if reason == "capacity" {
		p.remember(e.key)
	}
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
		"Probed targets whose state was dropped: idle (no probe within --probe.idle-timeout) or capacity (to make room under --probe.max-targets; a target probed once is evicted first).", []string{"reason"}, nil)
	refusedDesc = prometheus.NewDesc("dramatiq_exporter_probe_refused_total",
		"Probes refused: bad_request (target not redis[s]://host:port/db), not_allowed (not in --probe.allowed-targets, or a database number the module does not admit), unknown_module, capacity, unresolved (the target's name did not resolve).", []string{"reason"}, nil)
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
