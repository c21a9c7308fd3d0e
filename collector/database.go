package collector

// The database collectors report the health of the application's PostgreSQL
// (the one the Dramatiq workers use), so that a user can tell workers that are
// down from workers starved by their database. Two collectors share one small
// pool, built by NewDatabasePool:
//
//   - database: reachability (up, ping), identity (info), capacity and role
//     (max_connections, in_recovery, replication lag, size);
//   - database_activity: what the sessions of this database are doing
//     (connections by state, oldest open transaction, lock waits).
//
// Each reports its own collector_success, so a failing activity query does
// not blank the health metrics. Both exist only when --database.url is set.
//
// Privileges: everything works for a plain login role that may CONNECT to the
// database, except that pg_stat_activity hides the state and xact_start of
// other roles' sessions from it; see database_activity.go.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	Register("database", true,
		"PostgreSQL reachability, version, max_connections, recovery state, replication lag and size (needs --database.url).",
		func(s Sources) (Collector, error) {
			if s.Database == nil {
				return nil, nil
			}
			return &databaseCollector{db: newDBSource(s.Database)}, nil
		})
}

var (
	databaseUpDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "up"),
		"1 when a connection and SELECT 1 succeeded in this scrape, else 0. When 0, no other dramatiq_database_* series are sent.",
		nil, nil,
	)
	databasePingDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "ping_duration_seconds"),
		"Round trip of SELECT 1 on a pooled connection, connection set-up excluded.",
		nil, nil,
	)
	databaseInfoDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "info"),
		"Constant 1, labelled with the server's version (first word of server_version) and current_database().",
		[]string{"server_version", "database"}, nil,
	)
	databaseMaxConnectionsDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "max_connections"),
		"The server's max_connections setting.",
		nil, nil,
	)
	databaseInRecoveryDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "in_recovery"),
		"1 when the server is a replica (pg_is_in_recovery()), else 0.",
		nil, nil,
	)
	databaseReplicationLagDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "replication_lag_seconds"),
		"On a replica only: 0 when every WAL record received has been replayed, else the time since the last replayed transaction committed on the primary (pg_last_xact_replay_timestamp()).",
		nil, nil,
	)
	databaseSizeDesc = prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "database", "size_bytes"),
		"pg_database_size(current_database()): disk space used by the database.",
		nil, nil,
	)
)

// databaseStatusQuery reads everything but the ping in one statement. The lag
// follows the usual replica rule: nothing received-but-unreplayed means no
// lag, even when the primary has been idle for hours; otherwise the age of the
// last replayed commit (clamped at 0 against clock skew between the hosts).
// It is NULL (not sent) on a primary, and on a replica that is behind but has
// not replayed any commit yet (GREATEST would turn that NULL into 0).
const databaseStatusQuery = `SELECT
  pg_catalog.current_setting('server_version'),
  pg_catalog.current_database(),
  pg_catalog.current_setting('max_connections')::float8,
  pg_catalog.pg_is_in_recovery(),
  pg_catalog.pg_database_size(pg_catalog.current_database())::float8,
  CASE
    WHEN NOT pg_catalog.pg_is_in_recovery() THEN NULL
    WHEN pg_catalog.pg_last_wal_receive_lsn() IS NOT NULL
     AND pg_catalog.pg_last_wal_receive_lsn() <= pg_catalog.pg_last_wal_replay_lsn() THEN 0
    WHEN pg_catalog.pg_last_xact_replay_timestamp() IS NULL THEN NULL
    ELSE GREATEST(0, EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - pg_catalog.pg_last_xact_replay_timestamp()))::float8
  END`

type databaseCollector struct {
	db *dbSource
}

func (c *databaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- databaseUpDesc
	ch <- databasePingDesc
	ch <- databaseInfoDesc
	ch <- databaseMaxConnectionsDesc
	ch <- databaseInRecoveryDesc
	ch <- databaseReplicationLagDesc
	ch <- databaseSizeDesc
}

func (c *databaseCollector) Read(ctx context.Context, st *State, _ ReadOptions) error {
	part := &DatabaseState{}
	defer func() { st.Database = part }()
	conn, err := c.db.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()

	begin := time.Now()
	_, err = conn.Exec(ctx, "SELECT 1")
	ping := time.Since(begin)
	if err != nil {
		return c.db.scrub.wrap("database: SELECT 1", err)
	}
	part.Up, part.Ping = true, ping

	var d DatabaseDetails
	var version string
	err = c.db.run(ctx, conn, func(b *pgx.Batch) {
		b.Queue(databaseStatusQuery).QueryRow(func(row pgx.Row) error {
			return row.Scan(&version, &d.Name, &d.MaxConnections, &d.InRecovery, &d.SizeBytes, &d.ReplicationLag)
		})
	})
	if err != nil {
		return c.db.scrub.wrap("database: status query", err)
	}
	d.ServerVersion = pgShortVersion(version)
	part.Details = &d
	return nil
}

func (c *databaseCollector) Collect(st *State, m *Metrics) {
	part := st.Database
	if part == nil || !part.Up {
		m.Gauge(databaseUpDesc, 0)
		return
	}
	m.Gauge(databaseUpDesc, 1)
	m.Gauge(databasePingDesc, part.Ping.Seconds())
	d := part.Details
	if d == nil {
		return
	}
	m.Gauge(databaseInfoDesc, 1, d.ServerVersion, d.Name)
	m.Gauge(databaseMaxConnectionsDesc, d.MaxConnections)
	m.Gauge(databaseInRecoveryDesc, dbBool(d.InRecovery))
	if d.ReplicationLag != nil {
		m.Gauge(databaseReplicationLagDesc, *d.ReplicationLag)
	}
	m.Gauge(databaseSizeDesc, d.SizeBytes)
}

// pgShortVersion keeps "15.18" of "15.18 (Debian 15.18-0+deb12u1)": the
// packager's suffix would split one version into several label values.
func pgShortVersion(v string) string {
	if i := strings.IndexByte(v, ' '); i > 0 {
		return v[:i]
	}
	return v
}

func dbBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dbSource is the database side the collectors share: the pool, and how to
// run queries on it within a scrape.
type dbSource struct {
	pool  *pgxpool.Pool
	scrub *dbScrubber
	own   *ownBackends
}

func newDBSource(pool *pgxpool.Pool) *dbSource {
	cfg := pool.Config()
	return &dbSource{pool: pool, scrub: newDBScrubber(cfg), own: ownBackendsOf(cfg.ConnConfig)}
}

// acquire takes a connection (dialling one if the pool has none idle) within
// ctx. pgxpool pings a connection that sat idle for over a second before
// handing it out, so a server restarted between scrapes costs a reconnect,
// not a failed scrape.
func (s *dbSource) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.scrub.wrap("database: connect", err)
	}
	return conn, nil
}

// The server-side timeouts end before the scrape's deadline: the server
// gives up first, so the log says which wait it was ("canceling statement due
// to lock timeout") and no backend keeps waiting after the exporter has
// answered Prometheus. The margin is a tenth of the time left, at least
// dbMinTimeoutMargin.
const (
	dbMinTimeoutMargin = 100 * time.Millisecond
	dbDefaultTimeout   = 10 * time.Second // when ctx has no deadline
)

// run sends the queued queries in one round trip, in one implicit
// transaction whose statement_timeout and lock_timeout end before ctx does.
// SET LOCAL ends with that transaction, so nothing leaks into the pooled
// session (nor, behind PgBouncer, into someone else's).
func (s *dbSource) run(ctx context.Context, conn *pgxpool.Conn, queue func(*pgx.Batch)) error {
	timeout := dbDefaultTimeout
	if deadline, ok := ctx.Deadline(); ok {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return ctx.Err()
		}
		timeout = remaining - max(remaining/10, dbMinTimeoutMargin)
		if timeout < remaining/2 {
			timeout = remaining / 2
		}
	}
	ms := max(timeout.Milliseconds(), 1)
	b := &pgx.Batch{}
	b.Queue(fmt.Sprintf("SET LOCAL statement_timeout = %d", ms))
	// The lock wait ends a little earlier still, so it is reported as such
	// rather than as a statement timeout.
	b.Queue(fmt.Sprintf("SET LOCAL lock_timeout = %d", max(ms*9/10, 1)))
	queue(b)
	return conn.SendBatch(ctx, b).Close()
}
