package collector

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// TestDatabase shares one server among subtests that leave it running. Each
// subtest works in a database of its own, and the collectors count per
// database, so they run in parallel without seeing each other's sessions.
func TestDatabase(t *testing.T) {
	t.Parallel()
	pg := testserver.StartPostgres(t)
	ctx := context.Background()
	var fullVersion string
	if err := pg.Connect(t, "postgres").QueryRow(ctx, "SHOW server_version").Scan(&fullVersion); err != nil {
		t.Fatal(err)
	}
	version := strings.Fields(fullVersion)[0]

	t.Run("superuser baseline", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "baseline")
		e := newDBExporter(t, pg.URL("postgres", "", "baseline"), "")
		r := e.scrape(t, 5*time.Second)

		// The exporter's own pooled sessions are not counted, so an unused
		// database reads all zeros.
		r.compare(t,
			dbExpo("dramatiq_database_up", "dramatiq_database_up 1")+
				dbExpo("dramatiq_database_info", fmt.Sprintf(`dramatiq_database_info{database="baseline",server_version=%q} 1`, version))+
				dbExpo("dramatiq_database_max_connections", "dramatiq_database_max_connections 40")+
				dbExpo("dramatiq_database_in_recovery", "dramatiq_database_in_recovery 0")+
				dbConnectionsExpo(nil)+
				dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 0")+
				dbExpo("dramatiq_database_oldest_transaction_age_seconds", "dramatiq_database_oldest_transaction_age_seconds 0")+
				dbSuccessExpo(1, 1),
			"dramatiq_database_up", "dramatiq_database_info", "dramatiq_database_max_connections",
			"dramatiq_database_in_recovery", "dramatiq_database_connections",
			"dramatiq_database_blocked_connections", "dramatiq_database_oldest_transaction_age_seconds",
			"dramatiq_exporter_collector_success", "dramatiq_database_replication_lag_seconds")

		var size float64
		if err := pg.Connect(t, "baseline").QueryRow(ctx, "SELECT pg_database_size('baseline')::float8").Scan(&size); err != nil {
			t.Fatal(err)
		}
		// Not equal: the server writes files into the database's directory
		// on a backend's first connection (the relation cache's init file,
		// about 140 KiB), between the exporter's read and this one.
		if got := r.mustValue(t, "dramatiq_database_size_bytes"); math.Abs(got-size) > 1<<20 || got < 1e6 {
			t.Errorf("size_bytes = %v, pg_database_size = %v", got, size)
		}
		if ping := r.mustValue(t, "dramatiq_database_ping_duration_seconds"); ping <= 0 || ping > 1 {
			t.Errorf("ping_duration_seconds = %v", ping)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		problems, err := testutil.CollectAndLint(e.Bind(ctx))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}

		// The sessions carry the exporter's application_name, and the pool
		// stays within its bound of 3.
		var n int
		if err := pg.Connect(t, "baseline").QueryRow(ctx,
			"SELECT count(*) FROM pg_stat_activity WHERE datname = 'baseline' AND application_name = 'dramatiq_exporter'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > 3 {
			t.Errorf("exporter sessions = %d, want 1..3", n)
		}
	})

	t.Run("idle sessions and an open transaction", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "idlers")
		url := pg.CreateRole(t, "mon_idlers", "mon-pw", "idlers", "pg_monitor")
		const idle = 3
		for range idle {
			pg.Connect(t, "idlers")
		}
		tx := pg.Connect(t, "idlers")
		if _, err := tx.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		opened := time.Now()
		const hold = 2 * time.Second
		time.Sleep(hold)

		e := newDBExporter(t, url, "")
		r := e.scrape(t, 5*time.Second)
		r.compare(t,
			dbConnectionsExpo(map[string]int{"idle": idle, "idle in transaction": 1})+
				dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 0")+
				dbSuccessExpo(1, 1),
			"dramatiq_database_connections", "dramatiq_database_blocked_connections", "dramatiq_exporter_collector_success")
		age := r.mustValue(t, "dramatiq_database_oldest_transaction_age_seconds")
		if age < hold.Seconds() || age > time.Since(opened).Seconds()+1 {
			t.Errorf("oldest_transaction_age_seconds = %v, want between %v and %v", age, hold.Seconds(), time.Since(opened).Seconds())
		}

		// Once the transaction ends the age drops back to 0.
		if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		r = e.scrape(t, 5*time.Second)
		r.compare(t,
			dbConnectionsExpo(map[string]int{"idle": idle + 1})+
				dbExpo("dramatiq_database_oldest_transaction_age_seconds", "dramatiq_database_oldest_transaction_age_seconds 0"),
			"dramatiq_database_connections", "dramatiq_database_oldest_transaction_age_seconds")
	})

	t.Run("application sessions named like the exporter", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "namesakes")
		url := pg.CreateRole(t, "mon_namesakes", "mon-pw", "namesakes", "pg_monitor")
		// Sessions of another role and of the exporter's own role, all
		// named dramatiq_exporter: only pids tell them from the exporter's.
		named := func(dsn string) *pgx.Conn {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(context.Background()) })
			return c
		}
		tx := named(pg.AdminDSN("namesakes") + " application_name=" + DatabaseApplicationName)
		named(url + "&application_name=" + DatabaseApplicationName)
		if _, err := tx.Exec(ctx, "BEGIN; SELECT 1"); err != nil {
			t.Fatal(err)
		}
		opened := time.Now()
		const hold = 2 * time.Second

		e := newDBExporter(t, url, "")
		// Fill the pool to its bound of 3, so that every pooled
		// connection, not only the querying one, has to be left out.
		conns := make([]*pgxpool.Conn, 0, databasePoolMaxConns)
		for range databasePoolMaxConns {
			c, err := e.pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Release()
		}
		time.Sleep(time.Until(opened.Add(hold)))

		r := e.scrape(t, 5*time.Second)
		r.compare(t,
			dbConnectionsExpo(map[string]int{"idle": 1, "idle in transaction": 1})+
				dbSuccessExpo(1, 1),
			"dramatiq_database_connections", "dramatiq_exporter_collector_success")
		age := r.mustValue(t, "dramatiq_database_oldest_transaction_age_seconds")
		if age < hold.Seconds() || age > time.Since(opened).Seconds()+1 {
			t.Errorf("oldest_transaction_age_seconds = %v, want between %v and %v", age, hold.Seconds(), time.Since(opened).Seconds())
		}
		var exporters int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'namesakes' AND usename = 'mon_namesakes' AND application_name = $1",
			DatabaseApplicationName).Scan(&exporters); err != nil {
			t.Fatal(err)
		}
		if exporters != 1+databasePoolMaxConns {
			t.Errorf("sessions of mon_namesakes named %s = %d, want 1 of the application's + %d of the pool", DatabaseApplicationName, exporters, databasePoolMaxConns)
		}

		// A closed pooled connection is forgotten: its pid may come back
		// as an application's session.
		if n := len(e.pool.Config().ConnConfig.Tracer.(*ownBackends).snapshot(ctx)); n != databasePoolMaxConns {
			t.Errorf("own pids = %d, want %d", n, databasePoolMaxConns)
		}
		e.pool.Reset()
		dbWaitFor(t, "closed connections forgotten", 10*time.Second, func() bool {
			return len(e.pool.Config().ConnConfig.Tracer.(*ownBackends).snapshot(ctx)) == 0
		})
	})

	t.Run("lock wait", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "locks")
		pg.Exec(t, "locks", "CREATE TABLE jobs (id int)")
		url := pg.CreateRole(t, "mon_locks", "mon-pw", "locks", "pg_monitor")
		blocker := pg.Connect(t, "locks")
		waiter := pg.Connect(t, "locks")
		if _, err := blocker.Exec(ctx, "BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		waiterDone := make(chan error, 1)
		go func() {
			_, err := waiter.Exec(context.Background(), "SELECT count(*) FROM jobs")
			waiterDone <- err
		}()
		dbWaitUntilBlocked(t, pg, waiter)

		e := newDBExporter(t, url, "")
		r := e.scrape(t, 5*time.Second)
		r.compare(t,
			dbConnectionsExpo(map[string]int{"active": 1, "idle in transaction": 1})+
				dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 1")+
				dbSuccessExpo(1, 1),
			"dramatiq_database_connections", "dramatiq_database_blocked_connections", "dramatiq_exporter_collector_success")

		if _, err := blocker.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		if err := <-waiterDone; err != nil {
			t.Fatalf("waiter: %v", err)
		}
		r = e.scrape(t, 5*time.Second)
		r.compare(t, dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 0"),
			"dramatiq_database_blocked_connections")
	})

	t.Run("plain role versus pg_monitor", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "shop")
		pg.Exec(t, "shop", "CREATE TABLE orders (id int)", "GRANT ALL ON orders TO PUBLIC")
		appURL := pg.CreateRole(t, "shop_app", "app-pw", "shop")
		plainURL := pg.CreateRole(t, "shop_plain", "plain-pw", "shop")
		statsURL := pg.CreateRole(t, "shop_stats", "stats-pw", "shop", "pg_read_all_stats")
		// The README's CREATE ROLE example, verbatim but for the names.
		pg.Exec(t, "postgres",
			"CREATE ROLE shop_mon LOGIN PASSWORD 'mon-pw' CONNECTION LIMIT 5",
			"GRANT pg_monitor TO shop_mon",
			"ALTER ROLE shop_mon SET default_transaction_read_only = on",
			"GRANT CONNECT ON DATABASE shop TO shop_mon")
		monURL := pg.URL("shop_mon", "mon-pw", "shop")

		// The application's role: two idle sessions, one holding a lock in
		// an open transaction, one waiting for it.
		appConn := func() *pgx.Conn {
			c, err := pgx.Connect(ctx, appURL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close(context.Background()) })
			return c
		}
		appConn()
		appConn()
		blocker, waiter := appConn(), appConn()
		if _, err := blocker.Exec(ctx, "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		waiterDone := make(chan error, 1)
		go func() {
			_, err := waiter.Exec(context.Background(), "SELECT count(*) FROM orders")
			waiterDone <- err
		}()
		dbWaitUntilBlocked(t, pg, waiter)
		time.Sleep(time.Second)

		// Without pg_monitor the role cannot see the app's state or
		// xact_start: the four sessions are counted as unknown, the oldest
		// transaction is invisible, and pg_locks (readable by all) still
		// shows the wait. Nothing fails.
		plain := newDBExporter(t, plainURL, "")
		r := plain.scrape(t, 5*time.Second)
		r.compare(t,
			dbExpo("dramatiq_database_up", "dramatiq_database_up 1")+
				dbConnectionsExpo(map[string]int{"unknown": 4})+
				dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 1")+
				dbExpo("dramatiq_database_oldest_transaction_age_seconds", "dramatiq_database_oldest_transaction_age_seconds 0")+
				dbExpo("dramatiq_database_max_connections", "dramatiq_database_max_connections 40")+
				dbSuccessExpo(1, 1),
			"dramatiq_database_up", "dramatiq_database_connections", "dramatiq_database_blocked_connections",
			"dramatiq_database_oldest_transaction_age_seconds", "dramatiq_database_max_connections",
			"dramatiq_exporter_collector_success")
		if size := r.mustValue(t, "dramatiq_database_size_bytes"); size < 1e6 {
			t.Errorf("plain role size_bytes = %v", size)
		}
		if strings.Contains(plain.log.String(), "level=ERROR") {
			t.Errorf("plain role logged errors:\n%s", plain.log.String())
		}

		// With pg_monitor, or just the pg_read_all_stats part of it, every
		// session is classified and the transaction age is seen. Another
		// exporter's sessions are sessions like any other, so each exporter
		// closes its pool before the next one counts.
		// Watched from another database, outside any transaction (a
		// transaction keeps one snapshot of pg_stat_activity).
		watcher := pg.Connect(t, "postgres")
		closePool := func(e *dbExporter) {
			e.pool.Close()
			// A backend ends a moment after its client has gone.
			dbWaitFor(t, "the exporter's sessions to end", 10*time.Second, func() bool {
				var n int
				err := watcher.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND application_name = $1",
					DatabaseApplicationName).Scan(&n)
				return err == nil && n == 0
			})
		}
		closePool(plain)
		for role, url := range map[string]string{"pg_monitor": monURL, "pg_read_all_stats": statsURL} {
			e := newDBExporter(t, url, "")
			r = e.scrape(t, 5*time.Second)
			closePool(e)
			r.compare(t,
				dbConnectionsExpo(map[string]int{"idle": 2, "idle in transaction": 1, "active": 1})+
					dbExpo("dramatiq_database_blocked_connections", "dramatiq_database_blocked_connections 1")+
					dbSuccessExpo(1, 1),
				"dramatiq_database_connections", "dramatiq_database_blocked_connections", "dramatiq_exporter_collector_success")
			if age := r.mustValue(t, "dramatiq_database_oldest_transaction_age_seconds"); age < 1 {
				t.Errorf("%s: oldest_transaction_age_seconds = %v, want >= 1", role, age)
			}
		}
		if _, err := blocker.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		if err := <-waiterDone; err != nil {
			t.Fatalf("waiter: %v", err)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "secrets")
		const right, wrong = "c0rrect-Horse", "Wr0ng-b@ttery/staple"
		pg.CreateRole(t, "secret_user", right, "secrets", "pg_monitor")
		dsn := pg.URL("secret_user", wrong, "secrets")

		e := newDBExporter(t, dsn, "")
		r := e.scrape(t, 5*time.Second)
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 0")+dbSuccessExpo(0, 0),
			"dramatiq_database_up", "dramatiq_exporter_collector_success")
		if got := r.databaseSeries(); len(got) != 1 {
			t.Errorf("with up=0 the scrape has %v, want only dramatiq_database_up", got)
		}
		logs := e.log.String()
		if !strings.Contains(logs, `password authentication failed for user`) || !strings.Contains(logs, "collector=database ") {
			t.Errorf("no clear log line about the failed login:\n%s", logs)
		}
		dbAssertNoSecret(t, logs, dsn, wrong)

		// A password given apart from the DSN (--database.password-file)
		// replaces the DSN's and is kept out of logs the same way.
		bare := pg.URL("secret_user", "", "secrets")
		e = newDBExporter(t, bare, wrong+"2")
		r = e.scrape(t, 5*time.Second)
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 0"), "dramatiq_database_up")
		dbAssertNoSecret(t, e.log.String(), wrong+"2")

		e = newDBExporter(t, dsn, right)
		r = e.scrape(t, 5*time.Second)
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 1")+dbSuccessExpo(1, 1),
			"dramatiq_database_up", "dramatiq_exporter_collector_success")
	})

	t.Run("query hanging past the deadline", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "hang")
		url := pg.CreateRole(t, "mon_hang", "mon-pw", "hang", "pg_monitor")
		e := newDBExporter(t, url, "")
		e.scrape(t, 5*time.Second) // connections are in the pool

		// Another session holds pg_locks, which only the activity query
		// reads: that query waits, the health query does not.
		holder := pg.Connect(t, "hang")
		if _, err := holder.Exec(ctx, "BEGIN; LOCK TABLE pg_catalog.pg_locks IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		const deadline = 2 * time.Second
		r := e.scrape(t, deadline)
		if r.elapsed > deadline+300*time.Millisecond {
			t.Errorf("scrape took %v with a %v deadline", r.elapsed, deadline)
		}
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 1")+dbSuccessExpo(1, 0),
			"dramatiq_database_up", "dramatiq_database_connections", "dramatiq_exporter_collector_success")
		// The server ended the wait itself (lock_timeout from the deadline),
		// so no backend is left waiting for the lock after the scrape.
		if logs := e.log.String(); !strings.Contains(logs, "lock timeout") {
			t.Errorf("want the server's lock timeout in the log:\n%s", logs)
		}
		var waiting int
		if err := pg.Connect(t, "postgres").QueryRow(ctx,
			"SELECT count(*) FROM pg_stat_activity WHERE datname = 'hang' AND wait_event_type = 'Lock'").Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting != 0 {
			t.Errorf("%d backends still wait for the lock after the scrape", waiting)
		}

		if _, err := holder.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		r = e.scrape(t, 5*time.Second)
		r.compare(t, dbSuccessExpo(1, 1), "dramatiq_exporter_collector_success")
	})

	t.Run("replica", func(t *testing.T) {
		t.Parallel()
		pg.CreateDatabase(t, "replicated")
		pg.Exec(t, "replicated", "CREATE TABLE ticks (t timestamptz)")
		replica := pg.StartReplica(t)
		primary := pg.Connect(t, "replicated")
		// The server runs with synchronous_commit=off; this session waits for
		// the flush, so pg_current_wal_lsn() covers each tick's commit.
		if _, err := primary.Exec(ctx, "SET synchronous_commit = on"); err != nil {
			t.Fatal(err)
		}
		standby := replica.Connect(t, "replicated")
		tick := func() {
			if _, err := primary.Exec(ctx, "INSERT INTO ticks VALUES (now())"); err != nil {
				t.Fatal(err)
			}
		}
		caughtUp := func() bool {
			var ok bool
			err := standby.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
				AND pg_last_wal_receive_lsn() >= $1::pg_lsn`, dbCurrentLSN(t, primary)).Scan(&ok)
			return err == nil && ok
		}
		tick()
		dbWaitFor(t, "the replica to replay", 10*time.Second, caughtUp)

		e := newDBExporter(t, replica.URL("postgres", "", "replicated"), "")
		r := e.scrape(t, 5*time.Second)
		r.compare(t,
			dbExpo("dramatiq_database_in_recovery", "dramatiq_database_in_recovery 1")+dbSuccessExpo(1, 1),
			"dramatiq_database_in_recovery", "dramatiq_exporter_collector_success")
		if lag := r.mustValue(t, "dramatiq_database_replication_lag_seconds"); lag != 0 {
			t.Errorf("caught-up replica lag = %v, want 0", lag)
		}

		// Pause replay, commit on the primary, and wait: WAL arrives but is
		// not applied, so the lag grows from the last replayed commit.
		if _, err := standby.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		paused := time.Now()
		tick()
		want := dbCurrentLSN(t, primary)
		dbWaitFor(t, "the replica to receive", 10*time.Second, func() bool {
			var ok bool
			err := standby.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", want).Scan(&ok)
			return err == nil && ok
		})
		time.Sleep(time.Second)
		r = e.scrape(t, 5*time.Second)
		if lag := r.mustValue(t, "dramatiq_database_replication_lag_seconds"); lag < 1 || lag > time.Since(paused).Seconds()+5 {
			t.Errorf("paused replica lag = %v, want >= 1 s and about %v", lag, time.Since(paused))
		}
		if _, err := standby.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
			t.Fatal(err)
		}
		dbWaitFor(t, "the replica to catch up", 10*time.Second, caughtUp)
		r = e.scrape(t, 5*time.Second)
		if lag := r.mustValue(t, "dramatiq_database_replication_lag_seconds"); lag != 0 {
			t.Errorf("lag after catching up = %v, want 0", lag)
		}
	})
}

// TestDatabaseServerDown runs on a server of its own because it freezes and
// stops it. The collectors are built once and must recover by themselves.
func TestDatabaseServerDown(t *testing.T) {
	t.Parallel()
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	url := pg.CreateRole(t, "mon", "mon-pw", "app", "pg_monitor")
	// Down when the exporter starts.
	pg.Stop()
	e := newDBExporter(t, url, "")
	healthy := func(when string) {
		t.Helper()
		r := e.scrape(t, 5*time.Second)
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 1")+dbSuccessExpo(1, 1),
			"dramatiq_database_up", "dramatiq_exporter_collector_success")
		if got := len(r.databaseSeries()); got != 9 {
			t.Errorf("%s: %d database families, want 9: %v", when, got, r.databaseSeries())
		}
	}
	down := func(when string, deadline, within time.Duration) {
		t.Helper()
		r := e.scrape(t, deadline)
		if r.elapsed > within {
			t.Errorf("%s: scrape took %v, want at most %v", when, r.elapsed, within)
		}
		r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 0")+dbSuccessExpo(0, 0),
			"dramatiq_database_up", "dramatiq_exporter_collector_success")
		if got := r.databaseSeries(); len(got) != 1 {
			t.Errorf("%s: with up=0 the scrape has %v, want only dramatiq_database_up", when, got)
		}
	}

	down("down at start-up", 5*time.Second, time.Second)
	pg.Start()
	healthy("first start")

	// A hung server: connections open, nothing answers. Only the scrape's
	// deadline can end the wait.
	pg.Freeze()
	down("frozen", time.Second, 1300*time.Millisecond)
	pg.Thaw()
	healthy("after thaw")

	// A stopped server refuses connections: up=0 at once, not at the deadline.
	pg.Stop()
	down("stopped", 5*time.Second, time.Second)
	if logs := e.log.String(); !strings.Contains(logs, `msg="collector failed" collector=database `) || strings.Contains(logs, "mon-pw") {
		t.Errorf("log after the server stopped:\n%s", logs)
	}
	pg.Start()
	healthy("after restart")
}

// The exporter must start, and scrape, while the database is down.
func TestDatabaseDownAtStartup(t *testing.T) {
	port := testserver.FreePort(t)
	dsn := fmt.Sprintf("postgres://app:S3cret%%21pw@127.0.0.1:%d/app?sslmode=disable", port)
	e := newDBExporter(t, dsn, "")
	r := e.scrape(t, 5*time.Second)
	if r.elapsed > time.Second {
		t.Errorf("scrape against a closed port took %v", r.elapsed)
	}
	r.compare(t, dbExpo("dramatiq_database_up", "dramatiq_database_up 0")+dbSuccessExpo(0, 0),
		"dramatiq_database_up", "dramatiq_exporter_collector_success")
	logs := e.log.String()
	if !strings.Contains(logs, "database collectors enabled") || !strings.Contains(logs, fmt.Sprintf("app@127.0.0.1:%d/app", port)) {
		t.Errorf("start-up line missing:\n%s", logs)
	}
	dbAssertNoSecret(t, logs, dsn, "S3cret!pw", "S3cret%21pw")
}

// dbWaitUntilBlocked waits until the backend of c waits for a lock.
func dbWaitUntilBlocked(t *testing.T, pg *testserver.Postgres, c *pgx.Conn) {
	t.Helper()
	// From another database, so that this session is not counted.
	admin := pg.Connect(t, "postgres")
	pid := c.PgConn().PID()
	dbWaitFor(t, "the lock wait", 10*time.Second, func() bool {
		var n int
		err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid).Scan(&n)
		return err == nil && n > 0
	})
}

func dbCurrentLSN(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var lsn string
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}
