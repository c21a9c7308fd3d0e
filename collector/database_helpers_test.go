package collector

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// dbLogBuffer collects slog output from collectors that log concurrently.
type dbLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *dbLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *dbLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *dbLogBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dbExporter builds the pool and an Exporter running only the database
// collectors, the way main wires them.
type dbExporter struct {
	*Exporter
	pool *pgxpool.Pool
	log  *dbLogBuffer
}

func newDBExporter(t *testing.T, dsn, password string) *dbExporter {
	t.Helper()
	logs := &dbLogBuffer{}
	pool, err := NewDatabasePool(context.Background(), dsn, password, logs.logger())
	if err != nil {
		t.Fatalf("NewDatabasePool: %v", err)
	}
	t.Cleanup(pool.Close)
	enabled := map[string]bool{}
	for _, a := range List() {
		enabled[a.Name] = a.Name == "database" || a.Name == "database_activity"
	}
	e, err := NewExporter(ExporterOptions{Enabled: enabled}, Sources{Database: pool, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("NewExporter: %v", err)
	}
	if got := strings.Join(e.Names(), ","); got != "database,database_activity" {
		t.Fatalf("collectors = %s", got)
	}
	return &dbExporter{Exporter: e, pool: pool, log: logs}
}

// dbScrapeResult is one scrape through a pedantic registry, so Describe and
// Collect must agree.
type dbScrapeResult struct {
	mfs     []*dto.MetricFamily
	elapsed time.Duration
}

func (d *dbExporter) scrape(t *testing.T, timeout time.Duration) dbScrapeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(d.Bind(ctx)); err != nil {
		t.Fatalf("register: %v", err)
	}
	begin := time.Now()
	mfs, err := reg.Gather()
	elapsed := time.Since(begin)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return dbScrapeResult{mfs: mfs, elapsed: elapsed}
}

// compare checks the named families against exposition text.
func (r dbScrapeResult) compare(t *testing.T, expected string, names ...string) {
	t.Helper()
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return r.mfs, nil })
	if err := testutil.GatherAndCompare(g, strings.NewReader(expected), names...); err != nil {
		t.Error(err)
	}
}

// value returns the sample of name whose labels include the given pairs.
func (r dbScrapeResult) value(name string, labels ...string) (float64, bool) {
	for _, mf := range r.mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func (r dbScrapeResult) mustValue(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := r.value(name, labels...)
	if !ok {
		t.Fatalf("no sample %s%v in the scrape", name, labels)
	}
	return v
}

// databaseSeries lists the dramatiq_database_* families present.
func (r dbScrapeResult) databaseSeries() []string {
	var out []string
	for _, mf := range r.mfs {
		if strings.HasPrefix(mf.GetName(), "dramatiq_database_") {
			out = append(out, mf.GetName())
		}
	}
	return out
}

var databaseHelp = map[string]string{
	"dramatiq_database_up":                             "1 when a connection and SELECT 1 succeeded in this scrape, else 0. When 0, no other dramatiq_database_* series are sent.",
	"dramatiq_database_info":                           "Constant 1, labelled with the server's version (first word of server_version) and current_database().",
	"dramatiq_database_max_connections":                "The server's max_connections setting.",
	"dramatiq_database_in_recovery":                    "1 when the server is a replica (pg_is_in_recovery()), else 0.",
	"dramatiq_database_connections":                    "Client sessions of this database by pg_stat_activity.state, the exporter's own excluded. state=\"unknown\" counts sessions whose state the exporter's role may not see (grant pg_monitor).",
	"dramatiq_database_blocked_connections":            "Client sessions of this database waiting for a lock (an ungranted entry in pg_locks).",
	"dramatiq_database_oldest_transaction_age_seconds": "Age of the oldest open transaction (now - pg_stat_activity.xact_start) among the visible client sessions of this database; 0 when none.",
	"dramatiq_exporter_collector_success":              "1 when the collector read its source without error in this scrape, else 0.",
}

// expo renders the HELP and TYPE header of a gauge family followed by lines.
func dbExpo(name string, lines ...string) string {
	help, ok := databaseHelp[name]
	if !ok {
		panic("no help text for " + name)
	}
	help = strings.ReplaceAll(strings.ReplaceAll(help, `\`, `\\`), "\n", `\n`)
	return fmt.Sprintf("# HELP %s %s\n# TYPE %s gauge\n%s\n", name, help, name, strings.Join(lines, "\n"))
}

// dbConnectionsExpo renders dramatiq_database_connections with every state,
// taking counts for the states given and 0 for the rest.
func dbConnectionsExpo(counts map[string]int) string {
	var lines []string
	for _, s := range []string{"active", "disabled", "fastpath function call", "idle", "idle in transaction", "idle in transaction (aborted)", "unknown"} {
		lines = append(lines, fmt.Sprintf("dramatiq_database_connections{state=%q} %d", s, counts[s]))
	}
	return dbExpo("dramatiq_database_connections", lines...)
}

func dbSuccessExpo(database, activity int) string {
	return dbExpo("dramatiq_exporter_collector_success",
		fmt.Sprintf(`dramatiq_exporter_collector_success{collector="database"} %d`, database),
		fmt.Sprintf(`dramatiq_exporter_collector_success{collector="database_activity"} %d`, activity))
}

// dbWaitFor polls cond until it holds or the time is up.
func dbWaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
