package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/safe"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// Exit codes of `check`, for HEALTHCHECK and exec probes.
const (
	exitHealthy   = 0
	exitUnhealthy = 1
	exitUsage     = 2
)

func addCheckCommand(app *kingpin.Application, flags *config.Flags) (*kingpin.CmdClause, *config.CheckFlags) {
	cmd := app.Command("check", "Check once that the broker's Redis (and the database, when configured) answers and that enough Dramatiq processes are alive; print the result as JSON and exit 0 when healthy, 1 when not, 2 on a usage error. For HEALTHCHECK and exec probes.")
	return cmd, flags.AddCheckFlags(cmd)
}

// check runs the exporter's collectors once, exactly as a scrape would, and
// judges what they gathered. It answers within --check.timeout whatever the
// sources do: the gather runs under a deadline, and a watchdog answers
// "unhealthy" if a source ignores it.
func check(cfg *config.Config, flags *config.CheckFlags, logger *slog.Logger, stdout, stderr io.Writer) int {
	chk, err := flags.Load()
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return exitUsage
	}
	if cfg.Broker == config.BrokerRabbitMQ {
		// Neither can be judged read-only on RabbitMQ: a check that always
		// passed would be a lie (docs/dramatiq-rabbitmq-layout.md).
		switch {
		case len(chk.MaxOldestAge) > 0:
			fmt.Fprintf(stderr, "%s: error: --check.max-oldest-age: RabbitMQ cannot tell a message's age without consuming it; use --check.max-ready\n", name)
			return exitUsage
		case chk.NoOrphans:
			fmt.Fprintf(stderr, "%s: error: --check.no-orphans: RabbitMQ has no orphaned messages (it requeues a closed connection's unacked messages)\n", name)
			return exitUsage
		}
	}
	begin := time.Now()
	// Keep back a margin to build and print the answer.
	margin := min(chk.Timeout/10, 250*time.Millisecond)
	budget := chk.Timeout - 2*margin
	cfg.ScrapeTimeout = min(cfg.ScrapeTimeout, budget)

	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	// A SCAN walks the whole keyspace; a health check that runs every few
	// seconds in every worker container must not, when it need not, and
	// must work under a Redis user that may not SCAN. Only an orphan check
	// (ack sets are found by SCAN) or a threshold for every queue with no
	// queue named needs it. A threshold for a named queue reads that queue.
	_, allReady := chk.MaxReady[config.AllQueues]
	_, allAge := chk.MaxOldestAge[config.AllQueues]
	discover := chk.NoOrphans || ((allReady || allAge) && len(cfg.Queues) == 0)
	cfg.Queues = withThresholdQueues(cfg.Queues, chk)
	sources, cleanup, err := buildSources(ctx, cfg, logger, discover)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return exitUsage
	}
	exporter, err := collector.NewExporter(collector.ExporterOptions{
		Enabled: cfg.Collectors, Environment: cfg.Environment, Namespace: cfg.Namespace,
	}, sources)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", name, err)
		return exitUsage
	}
	opts := status.Options{Thresholds: chk.Thresholds(), Broker: broker.Kind(cfg.Broker)}

	// Read returns by its deadline whatever the sources do; the watchdog
	// is there for a bug that would make it not.
	done := make(chan *status.Status, 1)
	safe.Go(logger, "check", func() { done <- status.From(exporter.Read(ctx, collector.ReadOptions{}), opts) },
		func(err error) { done <- failedStatus(exporter.Names(), begin, err, opts) })
	watchdog := time.NewTimer(chk.Timeout - margin - time.Since(begin))
	defer watchdog.Stop()
	var st *status.Status
	select {
	case st = <-done:
		// Closing a pool waits for its connections; only safe once the
		// read has returned them.
		cleanup()
	case <-watchdog.C:
		st = status.TimedOut(exporter.Names(), begin, chk.Timeout, opts)
		logger.Error("check timed out; a source ignored its deadline", "timeout", chk.Timeout)
	}

	if len(st.Failed) > 0 {
		logger.Warn("unhealthy", "failed", st.FailureSummary())
	}
	// Encoded whole first: a status JSON cannot carry is a reason on
	// stderr and a failed check, never an empty answer.
	body, err := json.Marshal(st)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: cannot encode the status: %v\n", name, err)
		return exitUnhealthy
	}
	if _, err := stdout.Write(append(body, '\n')); err != nil {
		fmt.Fprintf(stderr, "%s: error: cannot write the status: %v\n", name, err)
		return exitUnhealthy
	}
	if st.Status != status.StatusHealthy {
		return exitUnhealthy
	}
	return exitHealthy
}

// failedStatus is the answer when the read itself panicked: every
// collector failed with err, exactly as when its source is down.
func failedStatus(collectors []string, begin time.Time, err error, o status.Options) *status.Status {
	st := &collector.State{Time: begin, Duration: time.Since(begin), Collectors: collectors}
	for _, name := range collectors {
		st.Outcomes = append(st.Outcomes, collector.Outcome{Name: name, Duration: st.Duration, Err: err})
	}
	return status.From(st, o)
}

// withThresholdQueues adds the queues a threshold names to queues.
func withThresholdQueues(queues []string, chk *config.Check) []string {
	out := slices.Clone(queues)
	for q := range chk.MaxReady {
		out = append(out, q)
	}
	for q := range chk.MaxOldestAge {
		out = append(out, q)
	}
	out = slices.DeleteFunc(out, func(q string) bool { return q == config.AllQueues })
	slices.Sort(out)
	return slices.Compact(out)
}

// quietHandler drops records below a level: a health check runs every few
// seconds, and its info lines would drown the log of failures.
type quietHandler struct {
	slog.Handler
	min slog.Level
}

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(a), h.min}
}

func (h quietHandler) WithGroup(g string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(g), h.min}
}

// checkLogger keeps warnings and errors, or everything at --log.level=debug.
func checkLogger(l *slog.Logger) *slog.Logger {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return l
	}
	return slog.New(quietHandler{l.Handler(), slog.LevelWarn})
}
