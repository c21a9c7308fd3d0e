// Command dramatiq_exporter exports the state of a Dramatiq Redis broker,
// and optionally the application's PostgreSQL, to Prometheus.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/buildinfo"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/clip"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/safe"
	"github.com/dramatiq-exporter/dramatiq_exporter/probe"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

const name = "dramatiq_exporter"

func main() {
	buildinfo.Fill()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli is the command line: the flags, subcommands and the config file
// they share.
type cli struct {
	app        *kingpin.Application
	flags      *config.Flags
	serve      *kingpin.CmdClause
	check      *kingpin.CmdClause
	checkFlags *config.CheckFlags
	health     *kingpin.CmdClause
	exit       int // set by --help and --version, else -1
}

func newCLI(stdout, stderr io.Writer) *cli {
	c := &cli{exit: -1}
	c.app = kingpin.New(name, "Prometheus exporter for Dramatiq's Redis broker: queues, workers, dead letters and orphaned messages, plus the application's PostgreSQL.").UsageWriter(stdout).ErrorWriter(stderr)
	c.app.HelpFlag.Short('h')
	c.app.Version(version.Print(name))
	c.app.Terminate(func(code int) { c.exit = code })

	var available []config.Collector
	for _, col := range collector.List() {
		available = append(available, config.Collector{Name: col.Name, DefaultEnabled: col.DefaultEnabled, Help: col.Help})
	}
	c.flags = config.AddFlags(c.app, available)
	c.serve = c.app.Command("serve", "Serve metrics over HTTP (the default).").Default()
	c.check, c.checkFlags = addCheckCommand(c.app, c.flags)
	c.health = c.app.Command("healthcheck", "GET /-/healthy of the exporter running here (first --web.listen-address, https when --web.config.file enables TLS) and exit 0 when it answers, 1 when not. Touches neither Redis nor the database: the health check of the container image, which has no curl.")
	return c
}

func run(args []string, stdout, stderr io.Writer) int {
	c := newCLI(stdout, stderr)
	cmd, err := c.app.Parse(args)
	if c.exit >= 0 { // --help or --version
		return c.exit
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v; try --help\n", name, err)
		return 2
	}
	cfg, err := c.flags.Load()
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return 2
	}
	// Errors quote servers' words (a host name from a Sentinel, a reply):
	// every value logged is cut to a bound, whoever logs it.
	logger := slog.New(clip.NewHandler(promslog.New(cfg.Log(stderr)).Handler()))

	switch cmd {
	case c.serve.FullCommand():
		return serve(cfg, cfg.Web(), logger)
	case c.check.FullCommand():
		return check(cfg, c.checkFlags, checkLogger(logger), stdout, stderr)
	case c.health.FullCommand():
		return healthcheck(cfg.Web(), stdout, stderr)
	}
	return 2
}

func serve(cfg *config.Config, webFlags *web.FlagConfig, logger *slog.Logger) int {
	// Before anything else: SIGHUP's default action ends the process, and
	// units copied from Prometheus's send it on reload.
	ignoreSIGHUP(logger)
	logger.Info("starting "+name, "version", version.Info(), "build_context", version.BuildContext())
	// Both are start-up mistakes: refuse them before anything runs, rather
	// than fail (or hang, on a FIFO) at the first connection.
	if err := server.CheckWebConfig(*webFlags.WebConfigFile); err != nil {
		logger.Error("cannot start", "err", err)
		return 2
	}
	listeners, err := server.Listen(webFlags)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 2
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The clients, discovery and probed targets outlive the signal: the
	// scrapes still running at shutdown finish through them.
	ctx, stopRun := context.WithCancel(context.Background())
	defer stopRun()

	sources, cleanup, err := buildSources(ctx, cfg, logger, true)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	defer cleanup()
	// Every read of the shared state, whoever asked for it, feeds the
	// status page's trends. /probe targets keep none (docs/probe.md).
	trends := history.New(history.Options{MaxQueues: cfg.MaxQueues})
	exporter, err := collector.NewExporter(collector.ExporterOptions{
		Enabled: cfg.Collectors, Environment: cfg.Environment, Namespace: cfg.Namespace,
		OnRead: trends.Record,
	}, sources)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	logger.Info("collectors enabled", "collectors", exporter.Names())
	// Discovery starts now, in the background: scrapes never wait for it.
	startBackground(ctx, sources.Broker)

	base := prometheus.NewRegistry()
	base.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector(name),
	)
	allow, err := config.ParseAllowList(cfg.ProbeAllowedTargets)
	if err != nil { // Load checked it already
		logger.Error("cannot start", "err", err)
		return 2
	}
	pools := &modulePools{ctx: ctx, logger: logger, pools: map[string]*pgxpool.Pool{}}
	defer pools.close()
	prober := probe.New(ctx, probe.Options{
		Allow: allow, Modules: cfg.Modules, IdleTimeout: cfg.ProbeIdleTimeout,
		MaxTargets: cfg.ProbeMaxTargets, Logger: logger,
		Build: func(ctx context.Context, m *config.Module, target string, dial probe.DialFunc) (*probe.Target, error) {
			return buildProbeTarget(ctx, cfg.ForProbe(m, target), m, pools, dial, logger.With("target", target, "module", m.Name))
		},
	})
	base.MustRegister(prober)
	metrics := server.MetricsHandler(exporter, base, server.MetricsOptions{
		Timeout: cfg.ScrapeTimeout, TimeoutOffset: cfg.TimeoutOffset, MaxRequests: cfg.MaxRequests, Logger: logger,
	})
	// The status page and its API read the same collectors as /metrics.
	status := server.NewStatusSource(server.StatusOptions{
		Exporter: exporter, Thresholds: status.DefaultThresholds(),
		ShowMessageArgs: cfg.ShowMessageArgs, Timeout: cfg.ScrapeTimeout, MaxRequests: cfg.MaxRequests,
		TelemetryPath: cfg.TelemetryPath, History: trends, Logger: logger, Broker: brokerKind(cfg),
	})
	health := &server.Health{}
	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("/api/v1/status", status.APIHandler())
	mux.Handle("/probe", server.GetOnly(prober))
	mux.Handle("/", status.PageHandler())

	srv, limiter := server.NewHTTPServer(server.Route(cfg.TelemetryPath, metrics, mux), server.HTTPOptions{
		HandlerTimeout: cfg.ScrapeTimeout, IdleTimeout: cfg.IdleTimeout, MaxConnections: cfg.MaxConnections,
	})
	for i, l := range listeners {
		listeners[i] = limiter.Listener(l)
	}
	// Cancelled only when the shutdown's grace period is over.
	requests, cancelRequests := context.WithCancelCause(context.Background())
	defer cancelRequests(nil)
	srv.BaseContext = func(net.Listener) context.Context { return requests }
	health.SetReady(true)
	errc := make(chan error, 1)
	// ServeMultiple applies --web.config.file (TLS, basic auth) as
	// web.ListenAndServe would, on listeners that bound the connections.
	safe.Go(logger, "the HTTP server", func() { errc <- web.ServeMultiple(listeners, srv, webFlags, logger) },
		func(err error) { errc <- err })
	select {
	case err := <-errc:
		logger.Error("server stopped", "err", err)
		return 1
	case <-sig.Done():
		// A scrape running now still gets its answer: it ends by its own
		// deadline, within the grace period unless --scrape.timeout is
		// longer, and is then answered 503.
		grace := min(cfg.ScrapeTimeout+server.WriteStall, maxShutdownGrace)
		logger.Info("shutting down", "grace_period", grace)
		health.SetReady(false)
		server.Shutdown(srv, cancelRequests, grace)
		return 0
	}
}

// maxShutdownGrace keeps a stop, grace and the last writes included, under
// the 30 s Kubernetes gives a pod by default.
const maxShutdownGrace = 20 * time.Second

// ignoreSIGHUP logs each SIGHUP and otherwise ignores it. Nothing is
// reloaded: --web.config.file is read again by every TLS handshake and
// request already, and the rest of the configuration (clients, secrets,
// collectors, probe modules) is built once; change it with a restart.
func ignoreSIGHUP(logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			logger.Info("SIGHUP ignored: nothing is reloaded; restart to apply a changed configuration (--web.config.file users and certificates are read again on every request and TLS handshake)")
		}
	}()
}

// healthcheck exits 0 when the local server answers /-/healthy.
func healthcheck(webFlags *web.FlagConfig, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), server.DefaultProbeTimeout)
	defer cancel()
	res, err := server.ProbeHealthy(ctx, webFlags)
	if err != nil {
		if res.URL == "" { // the settings, not the server
			fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
			return 2
		}
		fmt.Fprintf(stderr, "%s: unhealthy: %v\n", name, err)
		return 1
	}
	if res.Note != "" {
		fmt.Fprintf(stdout, "healthy: %s (%s)\n", res.URL, res.Note)
	} else {
		fmt.Fprintf(stdout, "healthy: %s\n", res.URL)
	}
	return 0
}

// startBackground starts a reader's background work (the Redis reader's
// queue discovery); a reader without any has no Start.
func startBackground(ctx context.Context, r any) {
	if s, ok := r.(interface{ Start(context.Context) }); ok {
		s.Start(ctx)
	}
}

// buildSources makes the long-lived clients. Nothing here connects: the
// exporter must come up while Redis or the database is down and say so.
// discover=false reads only the configured queues and never SCANs.
func buildSources(ctx context.Context, cfg *config.Config, logger *slog.Logger, discover bool) (collector.Sources, func(), error) {
	if cfg.Broker == config.BrokerRabbitMQ {
		return buildRabbitMQSources(ctx, cfg, logger, nil)
	}
	client, err := broker.NewClient(redisOptions(cfg))
	if err != nil {
		return collector.Sources{}, nil, fmt.Errorf("--redis.url: %w", err)
	}
	if s := cfg.Sentinel; len(s.Addrs) > 0 {
		logger.Info("reading Dramatiq broker through Redis Sentinel", "sentinels", s.Addrs, "master", s.Master, "replica", s.Replica,
			"redis", broker.RedactURL(cfg.RedisURL), "namespace", cfg.Namespace, "heartbeat_timeout", cfg.HeartbeatTimeout)
	} else {
		logger.Info("reading Dramatiq broker", "redis", broker.RedactURL(cfg.RedisURL), "namespace", cfg.Namespace, "heartbeat_timeout", cfg.HeartbeatTimeout)
	}
	if cfg.RedisTLS.InsecureSkipVerify {
		logger.Warn("--redis.tls-insecure-skip-verify: the Redis server's certificate is NOT verified; anyone on the network path can impersonate it")
	}
	reader := broker.NewReader(client, broker.Options{
		Namespace: cfg.Namespace, HeartbeatTimeout: cfg.HeartbeatTimeout, Queues: cfg.Queues,
		DiscoveryInterval: cfg.DiscoveryInterval, MaxQueues: cfg.MaxQueues, QueueRetention: cfg.QueueRetention,
		DiscoveryDuty: cfg.DiscoveryDuty, FirstPassDuty: cfg.DiscoveryFirstPassDuty,
		Logger: logger, SkipDiscovery: !discover,
		BacklogByActor: cfg.BacklogByActor, BacklogExactLimit: cfg.BacklogExactLimit,
	})
	sources := collector.Sources{Broker: reader, Logger: logger}
	if cfg.DatabaseURL == "" {
		return sources, func() { client.Close() }, nil
	}
	pool, err := collector.NewDatabasePool(ctx, cfg.DatabaseURL, cfg.DatabasePassword, logger)
	if err != nil {
		client.Close()
		return collector.Sources{}, nil, fmt.Errorf("--database.url: %w", err)
	}
	sources.Database = pool
	return sources, func() { client.Close(); pool.Close() }, nil
}

// redisOptions maps the configuration onto the client's options.
func redisOptions(cfg *config.Config) broker.ClientOptions {
	o := broker.ClientOptions{
		URL: cfg.RedisURL, Password: cfg.RedisPassword, Timeout: cfg.ScrapeTimeout,
		TLS: broker.TLSOptions(cfg.RedisTLS),
	}
	if s := cfg.Sentinel; len(s.Addrs) > 0 {
		o.Sentinel = &broker.SentinelOptions{Addrs: s.Addrs, Master: s.Master, Password: s.Password, Replica: s.Replica}
	}
	return o
}

// buildProbeTarget makes what /probe reads one target through: the same
// collectors and handler as /metrics, with the target's own registry (no
// go_* or process_* series: those describe the exporter). Its Redis client
// connects only through dial, to the addresses the allow-list admitted;
// its database pool is the module's, shared by all its targets.
func buildProbeTarget(ctx context.Context, cfg *config.Config, m *config.Module, pools *modulePools, dial probe.DialFunc, logger *slog.Logger) (*probe.Target, error) {
	if cfg.Broker == config.BrokerRabbitMQ {
		return buildRabbitMQProbeTarget(cfg, m, pools, dial, logger)
	}
	ro := redisOptions(cfg)
	ro.NetDial = dial
	client, err := broker.NewClient(ro)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	reader := broker.NewReader(client, broker.Options{
		Namespace: cfg.Namespace, HeartbeatTimeout: cfg.HeartbeatTimeout, Queues: cfg.Queues,
		DiscoveryInterval: cfg.DiscoveryInterval, MaxQueues: cfg.MaxQueues, QueueRetention: cfg.QueueRetention,
		Logger: logger,
	})
	sources := collector.Sources{Broker: reader, Logger: logger}
	if cfg.DatabaseURL != "" {
		if sources.Database, err = pools.get(m); err != nil {
			client.Close()
			return nil, err
		}
	}
	exporter, err := collector.NewExporter(collector.ExporterOptions{
		Enabled: cfg.Collectors, Environment: cfg.Environment, Namespace: cfg.Namespace,
	}, sources)
	if err != nil {
		client.Close()
		return nil, err
	}
	h := server.MetricsHandler(exporter, prometheus.NewRegistry(), server.MetricsOptions{
		Timeout: cfg.ScrapeTimeout, TimeoutOffset: cfg.TimeoutOffset, MaxRequests: cfg.MaxRequests, Logger: logger,
	})
	// A new target knows no queues yet: its first probe discovers them
	// within its own deadline (a reader not yet started does), then
	// discovery goes on in the background, as for /metrics.
	first := probe.FirstAlone(h, func() { reader.Start(ctx) })
	return &probe.Target{Handler: first, Close: func() { client.Close() }}, nil
}

// modulePools holds one database pool per module. A module's database is
// one database whatever the number of its targets (each DB number, each
// spelling of a host is a target): a pool per target opened up to three
// sessions each, and sixteen DB numbers took 27 of the application's
// connections.
type modulePools struct {
	ctx    context.Context
	logger *slog.Logger

	mu    sync.Mutex
	pools map[string]*pgxpool.Pool
}

func (mp *modulePools) get(m *config.Module) (*pgxpool.Pool, error) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if p, ok := mp.pools[m.Name]; ok {
		return p, nil
	}
	p, err := collector.NewDatabasePool(mp.ctx, m.DatabaseURL, m.DatabasePassword, mp.logger.With("module", m.Name))
	if err != nil {
		return nil, fmt.Errorf("modules.%s: database.url: %w", m.Name, err)
	}
	mp.pools[m.Name] = p
	return p, nil
}

func (mp *modulePools) close() {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	for _, p := range mp.pools {
		p.Close()
	}
	mp.pools = map[string]*pgxpool.Pool{}
}
