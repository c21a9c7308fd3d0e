// Package e2e_test ties the exporter, the shipped rules and the shipped
// dashboards to reality: real Dramatiq (scenario.py) drives a real
// redis-server into the situations the alerts are about, the real exporter
// binary reads it and a real PostgreSQL, and two Prometheus servers at once,
// Debian's 2.x and 3.x built from its Go module (testserver.PromReleases),
// scrape the exporter, evaluate a copy of the rules with shortened `for:` and
// answer every dashboard query.
package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// forScale shortens every `for:` of the rule copy Prometheus loads: 10m
// becomes 6s, 2m becomes 1s. Thresholds on values (ages, windows) are not
// scaled.
const forScale = 0.01

// heartbeatTimeout is the Dramatiq clients' heartbeat_timeout and the
// exporter's --dramatiq.heartbeat-timeout: a killed worker is stale after it.
const heartbeatTimeout = 3 * time.Second

// Queries expected to return nothing even while the scenario runs, each with
// the reason the situation cannot be made here. Anything else that stays
// empty fails the test, and these must stay empty.
var expectedEmpty = map[string]string{
	// Only a replica has replication lag; this PostgreSQL is a primary
	// (alerts/crosscheck_test.go scrapes a replica for the metric).
	`dashboards/dramatiq-database.json: panel "Replication lag" A`: "primary only",
}

// Alerts whose situation the test creates only after the query check, by
// stopping things; each is then required to fire, which proves its
// expression returned data.
var firesLater = map[string]bool{
	"DramatiqNoAliveProcesses":         true, // the scenario stops
	"DramatiqRedisDown":                true, // redis-server stops
	"DramatiqDatabaseDown":             true, // PostgreSQL stops
	"DramatiqExporterCollectorFailing": true, // both stop
	"DramatiqExporterDown":             true, // the exporter is killed
}

// Alerts on recorded series, which carry no instance.
var recordedAlerts = map[string]bool{
	"DramatiqQueueLatencyBudgetBurnFast": true,
	"DramatiqQueueLatencyBudgetBurnSlow": true,
}

// The alerts the shipped rules could fire but this test does not provoke.
var neverFiring = map[string]string{}

// This test runs on Redis. The alerts and queries that need RabbitMQ's
// series (mixin.Alert.Broker, mixin.QueryBroker) must stay silent and empty
// here: their series are absent, not zero.
const onRabbitMQOnly = "needs RabbitMQ's series; this exporter reads Redis"

// emptyOnRedis returns expectedEmpty plus every query that needs RabbitMQ.
func emptyOnRedis(qs []shipped.Query, brokerOf map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range expectedEmpty {
		out[k] = v
	}
	for _, q := range qs {
		b := mixin.QueryBroker(q.Expr)
		if q.Alert != "" {
			b = brokerOf[q.Alert]
		}
		if b == mixin.BrokerRabbitMQ {
			out[q.Where] = onRabbitMQOnly
		}
	}
	return out
}

// longTransactionAge replaces the shipped 5-minute threshold of
// DramatiqDatabaseLongTransaction, the one threshold a one-minute test
// cannot reach; the lock-holding transaction of databaseLoad outlives it.
const longTransactionAge = 5 * time.Second

// unclaimedAge replaces DramatiqDelayedMessagesUnclaimed's 10 minutes: the
// scenario's delayed email waits unclaimed from its start.
const unclaimedAge = 5 * time.Second

// latencyObjectiveAge replaces the objective's 5 minutes: emails' head is 30
// minutes old, the other queues' heads younger than this however slow the
// run, so the burn-rate alerts fire for emails only.
const latencyObjectiveAge = 20 * time.Minute

// heldMessageThreshold replaces the shipped 30-minute threshold of
// DramatiqMessageHeldTooLong: the busy queue's blocked message outlives it.
const heldMessageThreshold = 5 * time.Second

func TestPrometheusEndToEnd(t *testing.T) {
	if len(expectedEmpty) > 1 || len(neverFiring) > 0 {
		t.Fatalf("the lists of queries and alerts this test cannot exercise grew to %d and %d: make the scenario create their situations", len(expectedEmpty), len(neverFiring))
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	root := testserver.RepoRoot(t)
	releases := testserver.PromReleases(t)
	python := venvBinary(t, root, "python")
	dramatiqCLI := venvBinary(t, root, "dramatiq")
	dir := t.TempDir()

	built := make(chan error, 1)
	exporterBin := filepath.Join(dir, "dramatiq_exporter")
	go func() {
		_, err := testserver.BuildExporter(dir)
		built <- err
	}()

	// The rule copy: the shipped expressions, shorter `for:`, and one
	// threshold lowered.
	cfg := mixin.DefaultConfig()
	cfg.ForScale = forScale
	shippedAge := cfg.DatabaseTransactionAge
	cfg.DatabaseTransactionAge = longTransactionAge
	// The other changed thresholds, as the text they change in the
	// committed expressions: the unclaimed age the test cannot wait for,
	// and a latency objective that only emails (30 minutes old) misses
	// however slow the run.
	shippedUnclaimed, shippedObjective := cfg.DelayedUnclaimedAge, cfg.QueueLatencyObjectiveAge
	cfg.DelayedUnclaimedAge, cfg.QueueLatencyObjectiveAge = unclaimedAge, latencyObjectiveAge
	lowered := map[string]string{
		fmt.Sprintf("dramatiq_queue_delayed_unclaimed_oldest_seconds{job=\"dramatiq\"} > %g", shippedUnclaimed.Seconds()): fmt.Sprintf("dramatiq_queue_delayed_unclaimed_oldest_seconds{job=\"dramatiq\"} > %g", unclaimedAge.Seconds()),
		fmt.Sprintf("> bool %g", shippedObjective.Seconds()):                                                              fmt.Sprintf("> bool %g", latencyObjectiveAge.Seconds()),
	}
	shippedHeld := cfg.HeldMessageThreshold
	cfg.HeldMessageThreshold = heldMessageThreshold
	rulesYAML := cfg.RulesYAML()
	committed, err := os.ReadFile(filepath.Join(root, "alerts", "dramatiq.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	ruleQs := parseRules(t, rulesYAML, "alerts/dramatiq.rules.yml")
	committedQs := parseRules(t, committed, "alerts/dramatiq.rules.yml")
	for i, q := range committedQs {
		if q.Alert == "DramatiqDatabaseLongTransaction" {
			lowered := strings.Replace(q.Expr, fmt.Sprintf("> %g", shippedAge.Seconds()), fmt.Sprintf("> %g", longTransactionAge.Seconds()), 1)
			if lowered == q.Expr {
				t.Fatalf("cannot find the %s threshold in %q", shippedAge, q.Expr)
			}
			committedQs[i].Expr = lowered
		}
		if q.Alert == "DramatiqMessageHeldTooLong" {
			lowered := strings.Replace(q.Expr, fmt.Sprintf("> %g", shippedHeld.Seconds()), fmt.Sprintf("> %g", heldMessageThreshold.Seconds()), 1)
			if lowered == q.Expr {
				t.Fatalf("cannot find the %s threshold in %q", shippedHeld, q.Expr)
			}
			committedQs[i].Expr = lowered
		}
	}
	for from, to := range lowered {
		n := 0
		for i, q := range committedQs {
			if strings.Contains(q.Expr, from) {
				committedQs[i].Expr = strings.ReplaceAll(q.Expr, from, to)
				n++
			}
		}
		if n == 0 {
			t.Fatalf("no committed rule has %q", from)
		}
	}
	if fmt.Sprint(ruleQs) != fmt.Sprint(committedQs) {
		t.Fatalf("the for-scaled rule copy differs from alerts/dramatiq.rules.yml beyond `for:`:\ncopy:    %v\nshipped: %v", ruleQs, committedQs)
	}
	severity := map[string]string{}
	brokerOf := map[string]string{}
	for _, a := range cfg.Alerts() {
		severity[a.Name] = a.Severity
		brokerOf[a.Name] = a.Broker
	}
	dashQs := dashboardQueries(t, root)
	logf("%d rule expressions and %d dashboard queries to check", len(ruleQs), len(dashQs))

	rds := testserver.StartRedis(t)
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	pg.Exec(t, "app", "CREATE TABLE invoices (id int)")
	databaseURL := pg.CreateRole(t, "exporter", "e2e-password", "app", "pg_monitor")
	logf("redis-server on %s, PostgreSQL on port %d", rds.Addr, pg.Port)

	if err := <-built; err != nil {
		t.Fatal(err)
	}
	exp, expPort := startListening(t, "exporter", func(port int) *exec.Cmd {
		cmd := exec.Command(exporterBin,
			"--redis.url="+rds.URL(),
			"--dramatiq.heartbeat-timeout="+heartbeatTimeout.String(),
			"--dramatiq.discovery-interval=1s",
			// The scenario makes six queues; the sixth is dropped.
			"--dramatiq.max-queues=5",
			// Opt-in; the Queue dashboard's "Ready by actor" panel needs it.
			"--dramatiq.backlog-by-actor",
			"--environment=e2e",
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		)
		cmd.Env = testserver.Env("DATABASE_URL=" + databaseURL)
		return cmd
	}, func(port int) error {
		// Wait for a scrape that reached the database: the exporter's
		// pool then holds its connections before the test takes the rest.
		b, _, err := httpGet(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err == nil && !strings.Contains(string(b), "\ndramatiq_database_up 1\n") {
			err = fmt.Errorf("database not up yet")
		}
		return err
	})
	exporterAddr := "127.0.0.1:" + strconv.Itoa(expPort)
	logf("exporter serving on %s", exporterAddr)
	defer func() {
		if t.Failed() {
			t.Logf("exporter output:\n%s", exp.output(4000))
		}
	}()

	databaseLoad(t, pg)
	logf("PostgreSQL: one session blocked on a lock, %d sessions in all", databaseSessions)

	workersAddr := startWorkers(t, root, dramatiqCLI, rds.URL(), dir)
	logf("Dramatiq workers with the Prometheus middleware serving on %s", workersAddr)

	// One Prometheus per release, all scraping the same exporter: the
	// scenario runs once and every check runs against each of them.
	var proms []*prometheus
	for _, rel := range releases {
		prom := startPrometheus(t, rel, filepath.Join(dir, rel.Name), exporterAddr, workersAddr, rulesYAML)
		proms = append(proms, prom)
		logf("%s ready on %s", prom.name, prom.base)
		defer func() {
			if t.Failed() {
				t.Logf("%s output:\n%s", prom.name, prom.output(3000))
			}
		}()
	}
	for _, prom := range proms {
		waitFor(t, prom.name+" to scrape the exporter", 60*time.Second, func() error {
			s, err := prom.query(`up{job="dramatiq"} == 1`)
			if err == nil && len(s) == 0 {
				err = fmt.Errorf("no successful scrape yet")
			}
			return err
		})
	}
	logf("every Prometheus scrapes the exporter")

	// Real Dramatiq: see scenario.py for what each queue is for.
	markers := filepath.Join(dir, "markers")
	if err := os.Mkdir(markers, 0o755); err != nil {
		t.Fatal(err)
	}
	sc := startScenario(t, python, filepath.Join(root, "test", "e2e", "scenario.py"),
		"--redis-url", rds.URL(), "--heartbeat-timeout", strconv.FormatFloat(heartbeatTimeout.Seconds(), 'f', -1, 64),
		"--markers", markers, "--dramatiq-cli", dramatiqCLI)
	defer func() {
		if t.Failed() {
			t.Logf("scenario output:\n%s", sc.output(6000))
		}
	}()
	for _, ev := range []string{"started", "cli", "holding", "killed"} {
		e := sc.wait(t, ev, 60*time.Second)
		logf("scenario: %s %s", ev, e.raw)
	}

	// Phase 1: every query evaluates, and returns data once the situations
	// exist (the dead workers need the heartbeat timeout to turn stale).
	all := append(append([]shipped.Query{}, ruleQs...), dashQs...)
	empty := emptyOnRedis(all, brokerOf)
	if n := len(empty) - len(expectedEmpty); n < 10 {
		t.Errorf("only %d queries need RabbitMQ: the broker lists of alerts/mixin are not used", n)
	}
	for _, prom := range proms {
		checkQueries(t, prom, all, empty, logf)
		checkRuleHealth(t, prom)
		checkValues(t, prom, logf)
	}
	if t.Failed() {
		return
	}

	// Phase 2: the queue, worker and database alerts fire, on the right
	// queues and only there.
	obs := map[*prometheus]*observed{}
	for _, prom := range proms {
		obs[prom] = &observed{severity: severity, instance: exporterAddr, firing: map[string]bool{}}
	}
	waitAll := func(phase string, timeout time.Duration, wants []want, onlyQueues map[string][]string) {
		t.Helper()
		for _, prom := range proms {
			obs[prom].wait(t, prom, logf, prom.name+": "+phase, timeout, wants, onlyQueues)
		}
	}
	waitAll("queue, worker and database alerts", 60*time.Second, []want{
		{"DramatiqQueueNotConsumed", "queue", "emails"},
		{"DramatiqQueueNotConsumed", "queue", "crash"},
		{"DramatiqQueueLatencyHigh", "queue", "emails"},
		{"DramatiqQueueBacklogGrowing", "queue", "emails"},
		{"DramatiqOrphanedMessages", "queue", "crash"},
		{"DramatiqMessageHeldTooLong", "queue", "busy"},
		{"DramatiqDeadLetters", "queue", "reports"},
		{"DramatiqActorDeadLettersHigh", "actor", "export_report"},
		{"DramatiqWorkersDying", "", ""},
		{"DramatiqExporterQueuesDropped", "", ""},
		{"DramatiqDatabaseBlockedConnections", "", ""},
		{"DramatiqDatabaseConnectionsNearLimit", "", ""},
		{"DramatiqActorErrorRatioHigh", "actor_name", "charge"},
		{"DramatiqDelayedMessagesUnclaimed", "queue", "emails"},
		{"DramatiqDelayedMessagesOverdue", "queue", "emails"},
		{"DramatiqQueueLatencyBudgetBurnFast", "queue", "emails"},
		{"DramatiqQueueLatencyBudgetBurnSlow", "queue", "emails"},
	}, map[string][]string{
		// Every queue alert that fires, fires for these queues only: drain
		// and reports are served by a live worker, zz_overflow is dropped.
		"DramatiqQueueNotConsumed":     {"emails", "crash"},
		"DramatiqQueueLatencyHigh":     {"emails"},
		"DramatiqQueueBacklogGrowing":  {"emails"},
		"DramatiqOrphanedMessages":     {"crash"},
		"DramatiqMessageHeldTooLong":   {"busy"},
		"DramatiqDeadLetters":          {"reports"},
		"DramatiqActorDeadLettersHigh": {"reports"},
		// reports and busy have delayed messages too, claimed by live
		// workers and not due.
		"DramatiqDelayedMessagesUnclaimed":   {"emails"},
		"DramatiqDelayedMessagesOverdue":     {"emails"},
		"DramatiqQueueLatencyBudgetBurnFast": {"emails"},
		"DramatiqQueueLatencyBudgetBurnSlow": {"emails"},
	})
	if t.Failed() {
		return
	}

	// Phase 3: the producer and the live worker stop; nothing heartbeats.
	sc.stop(t)
	logf("scenario stopped: no Dramatiq process is left")
	waitAll("no alive processes", 30*time.Second, []want{{"DramatiqNoAliveProcesses", "", ""}}, nil)

	// Phase 4: Redis and PostgreSQL go away.
	rds.Stop()
	pg.Stop()
	logf("redis-server and PostgreSQL stopped")
	waitAll("sources down", 30*time.Second, []want{
		{"DramatiqRedisDown", "", ""},
		{"DramatiqDatabaseDown", "", ""},
		{"DramatiqExporterCollectorFailing", "collector", "broker"},
		{"DramatiqExporterCollectorFailing", "collector", "database"},
		{"DramatiqExporterCollectorFailing", "collector", "database_activity"},
	}, nil)

	// Phase 5: the exporter itself goes away.
	exp.kill()
	logf("exporter killed")
	waitAll("exporter down", 30*time.Second, []want{{"DramatiqExporterDown", "", ""}}, nil)

	for _, prom := range proms {
		var missed []string
		for name := range severity {
			if brokerOf[name] == mixin.BrokerRabbitMQ {
				if obs[prom].firing[name] {
					t.Errorf("%s: %s fired, but it %s", prom.name, name, onRabbitMQOnly)
				}
				continue
			}
			if !obs[prom].firing[name] && neverFiring[name] == "" {
				missed = append(missed, name)
			}
			if obs[prom].firing[name] && neverFiring[name] != "" {
				t.Errorf("%s: %s fired, but is listed as never firing here (%s): update the list", prom.name, name, neverFiring[name])
			}
		}
		sort.Strings(missed)
		if len(missed) > 0 {
			t.Errorf("%s: alerts never seen firing: %s", prom.name, strings.Join(missed, ", "))
		}
		logf("%s: %d of %d alerts seen firing", prom.name, len(obs[prom].firing), len(severity))
	}
}

// Sessions the test holds in the application database: 34 of the
// max_connections=40 that testserver.StartPostgres sets is 85%, past the
// rule's 80%; the exporter's own sessions are not counted.
const databaseSessions = 34

// databaseLoad opens databaseSessions sessions in the application database:
// one holds a lock in an open transaction, one waits for it, the rest are
// idle. The exporter's pool (at most 3) still fits in max_connections.
func databaseLoad(t *testing.T, pg *testserver.Postgres) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var conns []*pgx.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel() // interrupts the blocked query
		wg.Wait()
		for _, c := range conns {
			cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.Close(cctx)
			ccancel()
		}
	})
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, pg.AdminDSN("app"))
		if err != nil {
			t.Fatalf("connect to app: %v", err)
		}
		return c
	}
	for i := 0; i < databaseSessions-1; i++ {
		conns = append(conns, connect())
	}
	if _, err := conns[0].Exec(ctx, "BEGIN; LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatalf("lock: %v", err)
	}
	// Owned by its goroutine alone: a pgx connection is not safe for
	// concurrent use.
	blocked := connect()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = blocked.Exec(ctx, "SELECT count(*) FROM invoices")
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = blocked.Close(cctx)
		ccancel()
	}()
}

// checkQueries evaluates every query until each one has returned data at
// least once, except those in expectedEmpty, which must never return any.
// An evaluation error fails at once: Prometheus's answer does not change.
func checkQueries(t *testing.T, prom *prometheus, qs []shipped.Query, expectedEmpty map[string]string, logf func(string, ...any)) {
	t.Helper()
	pending := map[string]shipped.Query{}
	for _, q := range qs {
		if _, ok := expectedEmpty[q.Where]; !ok && !firesLater[q.Alert] {
			pending[q.Where] = q
		}
	}
	for where := range expectedEmpty {
		found := false
		for _, q := range qs {
			found = found || q.Where == where
		}
		if !found {
			t.Errorf("expectedEmpty names %q, which is no shipped query", where)
		}
	}
	failed := map[string]bool{}
	deadline := time.Now().Add(45 * time.Second)
	polls := 0
	for {
		polls++
		for _, q := range qs {
			if failed[q.Where] {
				continue
			}
			res, err := prom.query(q.Expr)
			if err != nil {
				t.Errorf("%s: %s: %v\n\tquery: %s", prom.name, q.Where, err, q.Expr)
				failed[q.Where] = true
				delete(pending, q.Where)
				continue
			}
			if reason, ok := expectedEmpty[q.Where]; ok && len(res) > 0 {
				t.Errorf("%s: %s returned %d series but is expected empty (%s): %v", prom.name, q.Where, len(res), reason, res)
				failed[q.Where] = true
			}
			if len(res) > 0 {
				delete(pending, q.Where)
			}
		}
		if len(pending) == 0 {
			later := 0
			for _, q := range qs {
				if firesLater[q.Alert] {
					later++
				}
			}
			logf("%s: all %d queries evaluate; all but %d expected empty and %d rules for later phases returned data (%d polls)",
				prom.name, len(qs), len(expectedEmpty), later, polls)
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for where, q := range pending {
				names = append(names, where+"\n\t\t"+q.Expr)
			}
			sort.Strings(names)
			t.Errorf("%s: %d queries never returned data while their situation was present:\n\t%s", prom.name, len(names), strings.Join(names, "\n\t"))
			return
		}
		time.Sleep(time.Second)
	}
}

// checkRuleHealth asks Prometheus whether it evaluated every rule without an
// error.
func checkRuleHealth(t *testing.T, prom *prometheus) {
	t.Helper()
	rules, err := prom.rules()
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Errorf("%s loaded no rules", prom.name)
	}
	for _, r := range rules {
		if r.Health != "ok" {
			t.Errorf("%s: rule %s: health %q %s", prom.name, r.Name, r.Health, r.LastError)
		}
	}
}

// checkValues checks that the scenario made the situations it claims, seen
// through Prometheus: without this, "returns data" could be zeros. The two
// killed workers turn stale up to a second apart, hence the polling.
func checkValues(t *testing.T, prom *prometheus, logf func(string, ...any)) {
	t.Helper()
	checks := []struct {
		expr string
		ok   func(float64) bool
		want string
	}{
		{`dramatiq_processes{job="dramatiq",state="stale"}`, func(v float64) bool { return v == 2 }, "2: the two killed CLI worker processes"},
		{`dramatiq_processes{job="dramatiq",state="alive"}`, func(v float64) bool { return v == 1 }, "1: the scenario's producer and worker"},
		{`dramatiq_queue_orphaned_messages{job="dramatiq",queue="crash"}`, func(v float64) bool { return v >= 2 && v <= 4 }, "2 to 4: each killed process held 1 or 2"},
		{`dramatiq_queue_inflight_messages{job="dramatiq",queue="crash"} - dramatiq_queue_orphaned_messages{job="dramatiq",queue="crash"}`, func(v float64) bool { return v == 0 }, "0: only dead workers hold crash messages"},
		{`dramatiq_queue_ready_messages{job="dramatiq",queue="crash"}`, func(v float64) bool { return v >= 2 }, "at least 2: nobody took them"},
		{`dramatiq_queue_dead_letter_messages{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 16 }, "16: 2 build_report, 14 export_report"},
		{`dramatiq_actor_dead_lettered_total{job="dramatiq",queue="reports",actor="build_report"}`, func(v float64) bool { return v == 2 }, "2: both died after the exporter started"},
		{`dramatiq_queue_dead_lettered_total{job="dramatiq",queue="reports"} - ignoring(actor) dramatiq_actor_dead_lettered_total{job="dramatiq",queue="reports",actor="export_report"}`, func(v float64) bool { return v == 2 }, "2: the queue's count is its actors' sum"},
		{`dramatiq_queue_delayed_messages{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 1 }, "1"},
		{`dramatiq_queue_oldest_message_age_seconds{job="dramatiq",queue="emails"}`, func(v float64) bool { return v > 1700 && v < 2000 }, "about 1800"},
		{`dramatiq_exporter_queues_dropped{job="dramatiq"}`, func(v float64) bool { return v == 1 }, "1: zz_overflow"},
		// Delayed work that does not come back (scenario.py, emails).
		{`dramatiq_queue_delayed_messages{job="dramatiq",queue="emails"}`, func(v float64) bool { return v == 3 }, "3: 2 held overdue, 1 unclaimed"},
		{`dramatiq_queue_delayed_overdue_messages{job="dramatiq",queue="emails"}`, func(v float64) bool { return v == 2 }, "2: held by the hung consumer, due 2 minutes before"},
		{`dramatiq_queue_delayed_overdue_messages{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 0 }, "0: the live worker holds one, due in 10 minutes"},
		{`dramatiq_queue_delayed_unclaimed_oldest_seconds{job="dramatiq",queue="emails"}`, func(v float64) bool { return v > 0 }, "above 0: nobody claims emails' delay queue"},
		{`dramatiq_queue_delayed_unclaimed_oldest_seconds{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 0 }, "0: the live worker claims reports' delayed messages at once"},
		// Time to drain (no middleware on these queues: the broker's
		// estimate, or 0 for an empty list).
		{`queue:dramatiq_queue_time_to_drain:seconds{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 0 }, "0: nothing ready"},
		{`absent(queue:dramatiq_queue_time_to_drain:seconds{job="dramatiq",queue="emails"})`, func(v float64) bool { return v == 1 }, "no series: emails grows, no finite time"},
		// The recording rules, with the numbers docs/recording-rules.md gives.
		// The recorded series carry no instance: max over an HA pair.
		{`queue:dramatiq_queue_workload_messages:max{job="dramatiq",queue="busy",instance=""}`, func(v float64) bool { return v == 5 }, "5: busy's ready plus what its live worker holds"},
		{`queue:dramatiq_queue_unfinished_messages:max{job="dramatiq",queue="busy"}`, func(v float64) bool { return v == 6 }, "6: busy's 5 plus its delayed one"},
		{`dramatiq_queue_delayed_messages{job="dramatiq",queue="busy"}`, func(v float64) bool { return v == 1 }, "1"},
		{`dramatiq_queue_inflight_messages{job="dramatiq",queue="busy"} - dramatiq_queue_orphaned_messages{job="dramatiq",queue="busy"}`, func(v float64) bool { return v >= 1 }, "at least 1: the live worker runs one"},
		{`queue:dramatiq_queue_workload_messages:max{job="dramatiq",queue="crash"} + on (job, queue) dramatiq_queue_orphaned_messages{job="dramatiq",queue="crash"}`, func(v float64) bool { return v == 6 }, "6: crash's workload is its ready messages, 6 minus the orphaned"},
		{`queue:dramatiq_queue_workload_messages:max{job="dramatiq",queue="crash"} - on (job, queue) dramatiq_queue_ready_messages{job="dramatiq",queue="crash"}`, func(v float64) bool { return v == 0 }, "0: crash's workload equals its ready messages"},
		{`queue:dramatiq_queue_unfinished_messages:max{job="dramatiq",queue="crash"}`, func(v float64) bool { return v == 6 }, "6: every crash message, orphaned ones included"},
		{`queue:dramatiq_queue_workload_messages:max{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 0 }, "0: reports holds only dead letters and a delayed message"},
		{`queue:dramatiq_queue_unfinished_messages:max{job="dramatiq",queue="reports"}`, func(v float64) bool { return v == 1 }, "1: reports' delayed message"},
		{`dramatiq_database_blocked_connections{job="dramatiq"}`, func(v float64) bool { return v == 1 }, "1"},
		{`sum(dramatiq_database_connections{job="dramatiq"})`, func(v float64) bool { return v == databaseSessions }, strconv.Itoa(databaseSessions)},
		// e2e_workers.py: charge fails 2 attempts in 3, resize never; each
		// retry is counted once, under the queue's own name.
		{`queue_actor:dramatiq_message_errors:ratio_rate5m{job="dramatiq-workers",queue_name="payments",actor_name="charge"}`, func(v float64) bool { return v > 0.5 && v < 0.8 }, "about 2/3"},
		{`queue_actor:dramatiq_message_errors:ratio_rate5m{job="dramatiq-workers",queue_name="default",actor_name="resize"}`, func(v float64) bool { return v == 0 }, "0"},
		{`count(queue_actor:dramatiq_message_retries:rate5m{job="dramatiq-workers",actor_name="charge"})`, func(v float64) bool { return v == 1 }, "1 series (payments, not payments.DQ)"},
		{`queue_actor:dramatiq_message_retries:rate5m{job="dramatiq-workers",queue_name="payments"} / queue_actor:dramatiq_message_rejects:rate5m{job="dramatiq-workers",queue_name="payments"}`, func(v float64) bool { return v > 0.7 && v < 1.4 }, "about 1: one retry per dead letter"},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var problems []string
		for _, c := range checks {
			res, err := prom.query(c.expr)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s: %v", c.expr, err))
			case len(res) != 1:
				problems = append(problems, fmt.Sprintf("%s: %d series, want one of value %s", c.expr, len(res), c.want))
			case !c.ok(res[0].value()):
				problems = append(problems, fmt.Sprintf("%s = %g, want %s", c.expr, res[0].value(), c.want))
			}
		}
		if len(problems) == 0 {
			logf("%s: the broker and the database are in the state the scenario claims", prom.name)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: not the state the scenario claims:\n\t%s", prom.name, strings.Join(problems, "\n\t"))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// want is an alert expected to fire, with one label (queue or collector)
// that tells which one, or none.
type want struct {
	name, label, value string
}

func (w want) String() string {
	if w.label == "" {
		return w.name
	}
	return fmt.Sprintf("%s{%s=%q}", w.name, w.label, w.value)
}

func (w want) matches(a alert) bool {
	return a.Labels["alertname"] == w.name && (w.label == "" || a.Labels[w.label] == w.value)
}

// observed remembers which alerts were seen firing over the whole test.
type observed struct {
	severity map[string]string
	instance string
	firing   map[string]bool
}

// wait polls /api/v1/alerts until every wanted alert has been seen firing,
// with the labels every alert of these rules carries. onlyQueues limits,
// per alert name, the queues it may fire for during this phase.
func (o *observed) wait(t *testing.T, prom *prometheus, logf func(string, ...any), phase string, timeout time.Duration, wants []want, onlyQueues map[string][]string) {
	t.Helper()
	seen := map[want]bool{}
	reported := map[string]bool{}
	deadline := time.Now().Add(timeout)
	for {
		alerts, err := prom.alerts()
		if err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		for _, a := range alerts {
			if a.State != "firing" {
				continue
			}
			name := a.Labels["alertname"]
			o.firing[name] = true
			problem := ""
			switch {
			case a.Labels["job"] == workersJob:
				// From the workers' middleware, summed over their pods.
				if a.Labels["instance"] != "" || a.Labels["queue_name"] != "payments" || a.Labels["actor_name"] != "charge" {
					problem = "want payments/charge without instance"
				}
			case recordedAlerts[name]:
				// From recorded series, combined over an HA pair of
				// exporters: the job names them, not an instance.
				if a.Labels["job"] != "dramatiq" || a.Labels["instance"] != "" {
					problem = fmt.Sprintf("job %q instance %q, want dramatiq and no instance", a.Labels["job"], a.Labels["instance"])
				} else if a.Labels["severity"] != o.severity[name] {
					problem = fmt.Sprintf("severity %q, want %q", a.Labels["severity"], o.severity[name])
				}
			case a.Labels["job"] != "dramatiq" || a.Labels["instance"] != o.instance:
				problem = fmt.Sprintf("job %q instance %q, want dramatiq and %s", a.Labels["job"], a.Labels["instance"], o.instance)
			case a.Labels["severity"] != o.severity[name]:
				problem = fmt.Sprintf("severity %q, want %q", a.Labels["severity"], o.severity[name])
			}
			if allowed, ok := onlyQueues[name]; ok && !contains(allowed, a.Labels["queue"]) {
				problem = fmt.Sprintf("fires for queue %q; it may fire only for %v here", a.Labels["queue"], allowed)
			}
			if problem != "" && !reported[a.String()+problem] {
				reported[a.String()+problem] = true
				t.Errorf("%s: %s %s (labels %v)", phase, a, problem, a.Labels)
			}
			for _, w := range wants {
				if w.matches(a) && !seen[w] {
					seen[w] = true
					logf("%s: firing %s", prom.name, w)
				}
			}
		}
		if len(seen) == len(wants) {
			return
		}
		if time.Now().After(deadline) {
			var missing, now []string
			for _, w := range wants {
				if !seen[w] {
					missing = append(missing, w.String())
				}
			}
			for _, a := range alerts {
				now = append(now, a.String()+" "+a.State)
			}
			t.Errorf("%s: never seen firing within %s: %s\n\talerts now: %s", phase, timeout, strings.Join(missing, ", "), strings.Join(now, ", "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scenario is the running scenario.py.
type scenario struct {
	*proc
	stdin  io.WriteCloser
	events chan event
	cliPid int
}

type event struct {
	name string
	raw  string
}

func startScenario(t *testing.T, python, script string, args ...string) *scenario {
	t.Helper()
	cmd := exec.Command(python, append([]string{script}, args...)...)
	cmd.Dir = filepath.Dir(script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Our own pipe rather than StdoutPipe: Wait may then run while the
	// last lines are still being read.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	s := &scenario{stdin: stdin, events: make(chan event, 16)}
	s.proc = startProc(t, "scenario", cmd)
	w.Close()
	go func() {
		defer close(s.events)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var e struct {
				Event string `json:"event"`
				Pid   int    `json:"pid"`
			}
			line := sc.Text()
			if json.Unmarshal([]byte(line), &e) != nil || e.Event == "" {
				_, _ = s.proc.Write([]byte("stdout: " + line + "\n"))
				continue
			}
			s.events <- event{name: e.Event, raw: line}
		}
	}()
	// Registered after startProc's kill, so it runs first: the scenario
	// gets the chance to kill its CLI worker itself; if the scenario died,
	// the CLI's process group is killed by the pid it reported.
	t.Cleanup(func() {
		_ = s.stdin.Close()
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
		}
		if s.cliPid > 0 {
			_ = syscall.Kill(-s.cliPid, syscall.SIGKILL)
		}
	})
	return s
}

// wait returns the next event, which must be name.
func (s *scenario) wait(t *testing.T, name string, timeout time.Duration) event {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatalf("scenario ended before %q", name)
		}
		if e.name != name {
			t.Fatalf("scenario said %s, want %q", e.raw, name)
		}
		if name == "cli" {
			var v struct{ Pid int }
			_ = json.Unmarshal([]byte(e.raw), &v)
			s.cliPid = v.Pid
		}
		if name == "killed" {
			s.cliPid = 0 // reaped by the scenario: the pid may be reused
		}
		return e
	case <-time.After(timeout):
		t.Fatalf("scenario: no %q within %s", name, timeout)
	}
	return event{}
}

// stop closes the scenario's stdin, which makes it stop its worker and
// producer and exit, and waits for that.
func (s *scenario) stop(t *testing.T) {
	t.Helper()
	_ = s.stdin.Close()
	s.wait(t, "stopped", 20*time.Second)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("scenario did not exit after stopping")
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("scenario exited with %d", code)
	}
}

// venvBinary finds a binary of the Dramatiq venv that scripts/deps.sh
// builds; never one from PATH, which would lack the pinned Dramatiq.
func venvBinary(t *testing.T, root, name string) string {
	t.Helper()
	p := filepath.Join(root, ".venv", "bin", name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s missing (CI=%s): run scripts/deps.sh (make deps) first", p, os.Getenv("CI"))
		}
		t.Skipf("%s missing: run scripts/deps.sh (make deps) to run this test", p)
	}
	return p
}

// workersJob is the scrape job of the workers' own Prometheus middleware,
// the mixin's default WorkersSelector.
const workersJob = "dramatiq-workers"

// startWorkers runs e2e_workers.py under the dramatiq CLI with Dramatiq's
// Prometheus middleware on a free port, and returns its address once it
// exports the per-actor counters.
func startWorkers(t *testing.T, root, cli, redisURL, dir string) string {
	t.Helper()
	promDir := filepath.Join(dir, "dramatiq-prometheus")
	if err := os.Mkdir(promDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, port := startListening(t, "workers", func(port int) *exec.Cmd {
		cmd := exec.Command(cli, "e2e_workers", "--processes", "1", "--threads", "4")
		cmd.Dir = filepath.Join(root, "test", "e2e")
		cmd.Env = testserver.Env(
			"E2E_REDIS_URL="+redisURL,
			"dramatiq_prom_host=127.0.0.1",
			"dramatiq_prom_port="+strconv.Itoa(port),
			"dramatiq_prom_db="+promDir,
			"PROMETHEUS_MULTIPROC_DIR="+promDir,
		)
		return cmd
	}, func(port int) error {
		b, _, err := httpGet(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err == nil && !strings.Contains(string(b), "dramatiq_message_errors_total{") {
			err = fmt.Errorf("no errors counted yet")
		}
		return err
	})
	// The CLI forks the middleware's exposition server from its main
	// process, which no Pdeathsig reaches: end the whole process group
	// (startProc made the CLI its leader) before the CLI itself.
	t.Cleanup(func() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
	return "127.0.0.1:" + strconv.Itoa(port)
}
