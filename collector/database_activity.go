package collector

// database_activity reads pg_stat_activity and pg_locks for the sessions of
// the database the exporter is connected to (datname = current_database()).
//
// Which sessions count: client backends of this database, minus the
// exporter's own, whose pooled connections would otherwise appear as idle
// sessions of the app. Those are left out by pid (ownBackends): every
// connection of the exporter's pool, and the querying session itself.
// Background processes (autovacuum, WAL sender, parallel workers) are left
// out by backend_type.
//
// Privileges (PostgreSQL 15; docs/clients.md): a role without pg_monitor (or
// pg_read_all_stats, or superuser) sees other roles' sessions with state,
// backend_type and xact_start all NULL. Those sessions are counted under
// state="unknown" instead of being dropped, so the total stays right and the
// missing privilege shows on the dashboard; the oldest transaction age then
// covers the role's own sessions only. pg_locks is readable by every role, so
// blocked_connections is complete either way.

import (
	"context"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	Register("database_activity", true,
		"PostgreSQL sessions of the database by state, oldest open transaction and lock waits (needs --database.url; pg_monitor for full detail).",
		func(s Sources) (Collector, error) {
			if s.Database == nil {
				return nil, nil
			}
			return &databaseActivityCollector{db: newDBSource(s.Database)}, nil
		})
}

var (
	databaseConnectionsDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "connections"),
		"Client sessions of this database by pg_stat_activity.state, the exporter's own excluded. state=\"unknown\" counts sessions whose state the exporter's role may not see (grant pg_monitor).",
		[]string{"state"}, nil,
	)
	databaseOldestTransactionDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "oldest_transaction_age_seconds"),
		"Age of the oldest open transaction (now - pg_stat_activity.xact_start) among the visible client sessions of this database; 0 when none.",
		nil, nil,
	)
	databaseBlockedDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "blocked_connections"),
		"Client sessions of this database waiting for a lock (an ungranted entry in pg_locks).",
		nil, nil,
	)
)

// databaseStates are always sent, at 0 when no session is in them, so that an
// alert on, say, "idle in transaction" has a series to compare. States a
// newer server adds are sent too when they occur.
var databaseStates = []string{
	"active",
	"idle",
	"idle in transaction",
	"idle in transaction (aborted)",
	"fastpath function call",
	"disabled",
	"unknown",
}

// Without privilege backend_type is NULL too, so a NULL is taken for a client
// session rather than dropped.
const databaseSessions = `WITH s AS (
  SELECT a.pid, a.state, a.xact_start
  FROM pg_catalog.pg_stat_activity a
  WHERE a.datname = pg_catalog.current_database()
    AND COALESCE(a.backend_type, 'client backend') = 'client backend'
    AND a.pid <> pg_catalog.pg_backend_pid()
    AND a.pid <> ALL($1::int4[])
)
`

const (
	databaseStatesQuery = databaseSessions +
		`SELECT COALESCE(s.state, 'unknown'), count(*)::float8 FROM s GROUP BY 1`
	databaseWaitsQuery = databaseSessions + `SELECT
  COALESCE(EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - min(s.xact_start)), 0)::float8,
  count(*) FILTER (WHERE s.pid IN (SELECT l.pid FROM pg_catalog.pg_locks l WHERE NOT l.granted))::float8
FROM s`
)

type databaseActivityCollector struct {
	db *dbSource
}

func (c *databaseActivityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- databaseConnectionsDesc
	ch <- databaseOldestTransactionDesc
	ch <- databaseBlockedDesc
}

// Read stores nothing unless both queries succeed. In particular, when the
// database is down it fails like the database collector, which then reports
// dramatiq_database_up 0, and no activity series contradict that.
func (c *databaseActivityCollector) Read(ctx context.Context, st *State, _ ReadOptions) error {
	conn, err := c.db.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()

	part := &DatabaseActivityState{Connections: map[string]float64{}}
	own := c.db.own.snapshot(ctx)
	err = c.db.run(ctx, conn, func(b *pgx.Batch) {
		b.Queue(databaseStatesQuery, own).Query(func(rows pgx.Rows) error {
			var state string
			var n float64
			_, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
				part.Connections[state] += n
				return nil
			})
			return err
		})
		// Both statements run in one transaction, so they read the same
		// snapshot of pg_stat_activity.
		b.Queue(databaseWaitsQuery, own).QueryRow(func(row pgx.Row) error {
			return row.Scan(&part.OldestTransactionAge, &part.Blocked)
		})
	})
	if err != nil {
		return c.db.scrub.wrap("database_activity", err)
	}
	st.DatabaseActivity = part
	return nil
}

func (c *databaseActivityCollector) Collect(st *State, m *Metrics) {
	part := st.DatabaseActivity
	if part == nil {
		return
	}
	for _, s := range databaseStates {
		m.Gauge(databaseConnectionsDesc, part.Connections[s], s)
	}
	others := make([]string, 0, len(part.Connections))
	for s := range part.Connections {
		if !slices.Contains(databaseStates, s) {
			others = append(others, s)
		}
	}
	sort.Strings(others)
	for _, s := range others {
		m.Gauge(databaseConnectionsDesc, part.Connections[s], s)
	}
	m.Gauge(databaseOldestTransactionDesc, part.OldestTransactionAge)
	m.Gauge(databaseBlockedDesc, part.Blocked)
}
