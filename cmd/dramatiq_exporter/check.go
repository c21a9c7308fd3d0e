package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/config"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
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
	begin := time.Now()
	// Keep back a margin to build and print the answer.
	margin := min(chk.Timeout/10, 250*time.Millisecond)
	budget := chk.Timeout - 2*margin
	cfg.ScrapeTimeout = min(cfg.ScrapeTimeout, budget)

	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	// A SCAN walks the whole keyspace; a health check that runs every few
	// seconds in every worker container must not, when it need not: with
	// the queues named and no orphan check, it reads just those.
	discover := len(cfg.Queues) == 0 || chk.NoOrphans
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
	opts := server.BuildOptions{
		Thresholds: server.Thresholds{
			MinProcesses: chk.MinProcesses, MaxReady: chk.MaxReady,
			MaxOldestAge: map[string]server.Duration{}, NoOrphans: chk.NoOrphans,
		},
		Collectors: exporter.Names(),
	}
	for q, d := range chk.MaxOldestAge {
		opts.Thresholds.MaxOldestAge[q] = server.Duration(d)
	}

	done := make(chan *server.Status, 1)
	go func() {
		mfs := server.Gather(ctx, exporter)
		o := opts
		o.Now, o.Took = begin, time.Since(begin)
		done <- server.FromMetrics(mfs, o)
	}()
	watchdog := time.NewTimer(chk.Timeout - margin - time.Since(begin))
	defer watchdog.Stop()
	var st *server.Status
	select {
	case st = <-done:
		// Closing a pool waits for its connections; only safe once the
		// gather has returned them.
		cleanup()
	case <-watchdog.C:
		o := opts
		o.Now, o.Took = begin, chk.Timeout
		st = server.TimedOut(o)
		logger.Error("check timed out; a source ignored its deadline", "timeout", chk.Timeout)
	}

	if len(st.Failed) > 0 {
		logger.Warn("unhealthy", "failed", st.FailureSummary())
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(st); err != nil {
		return exitUnhealthy
	}
	if st.Status != server.StatusHealthy {
		return exitUnhealthy
	}
	return exitHealthy
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
