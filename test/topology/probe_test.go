package topology_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// connCounter is a listener that only counts the connections it is offered.
type connCounter struct {
	l net.Listener
	n atomic.Int64
}

func countConnections(t *testing.T) *connCounter {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &connCounter{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			c.n.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return c
}

func probePath(target, module string) string {
	q := url.Values{"target": {target}}
	if module != "" {
		q.Set("module", module)
	}
	return "/probe?" + q.Encode()
}

// TestProbe watches two brokers, in two Redis servers and two namespaces
// written by real Dramatiq, through one exporter's /probe.
func TestProbe(t *testing.T) {
	const password = "probe-Redis-pw-3"
	r1 := testserver.StartRedis(t, "--requirepass", password)
	r2 := testserver.StartRedis(t)
	a1 := startApp(t, script(t, "probe_app.py"), "--url", fmt.Sprintf("redis://:%s@%s/0", password, r1.Addr),
		"--namespace", "app1", "--queue", "emails", "--ready", "4", "--delayed", "2")
	a2 := startApp(t, script(t, "probe_app.py"), "--url", r2.URL(), "--namespace", "app2", "--queue", "reports", "--ready", "7", "--delayed", "1")
	want1 := counts(a1.wait(t, "ready", 60*time.Second), "emails")
	want2 := counts(a2.wait(t, "ready", 60*time.Second), "reports")

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "exporter.yml")
	yml := fmt.Sprintf(`probe:
  allowed_targets: ["%s", "127.0.0.1:%d"]
  idle_timeout: 3s
  max_targets: 3
modules:
  app1:
    redis: {password_file: %s}
    dramatiq: {namespace: app1}
  default:
    dramatiq: {namespace: app2, queues: [reports]}
`, r1.Addr, r2.Port, pwFile)
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The exporter's own broker is elsewhere: r2, namespace dramatiq.
	e := startExporter(t, "--config.file", conf, "--redis.url", r2.URL())
	t1, t2 := "redis://"+r1.Addr+"/0", r2.URL()

	t.Run("per-target numbers", func(t *testing.T) {
		// Even the first probe of a target, which discovers its queues
		// within its own deadline, has them.
		for path, want := range map[string]map[string]map[string]float64{probePath(t1, "app1"): want1, probePath(t2, ""): want2} {
			if s := e.scrape(path, 5*time.Second); s.err != nil || matches(s.fams, want) != "" {
				t.Errorf("first probe %s: %v %s", path, s.err, matches(s.fams, want))
			}
		}
		e.waitMatch(t, probePath(t1, "app1"), want1, 20*time.Second)
		// No module: the module named default.
		e.waitMatch(t, probePath(t2, ""), want2, 20*time.Second)
		s := e.scrape(probePath(t1, "app1"), 5*time.Second)
		if value(s.fams, "dramatiq_redis_up", nil) != 1 || value(s.fams, "dramatiq_exporter_info", map[string]string{"namespace": "app1"}) != 1 {
			t.Errorf("probe of %s: up or info wrong", t1)
		}
		if _, ok := s.fams["dramatiq_queue_ready_messages"]; !ok {
			t.Error("no queue series")
		}
		if q := queueNumbers(s.fams, "reports"); q["ready"] != -1 {
			t.Errorf("app2's queue in app1's probe: %v", q)
		}
		// /metrics still reads the exporter's own broker.
		m := e.scrape("/metrics", 5*time.Second)
		if value(m.fams, "dramatiq_exporter_info", map[string]string{"namespace": "dramatiq"}) != 1 {
			t.Error("/metrics lost its own namespace")
		}
		if v := value(m.fams, "dramatiq_exporter_probe_targets", nil); v != 2 {
			t.Errorf("dramatiq_exporter_probe_targets = %v, want 2", v)
		}
		if v := value(m.fams, "dramatiq_exporter_probe_targets_limit", nil); v != 3 {
			t.Errorf("dramatiq_exporter_probe_targets_limit = %v, want 3", v)
		}
	})

	t.Run("refused with no connection", func(t *testing.T) {
		trap := countConnections(t)
		trapURL := "redis://" + trap.l.Addr().String() + "/0"
		for _, tc := range []struct{ path, why string }{
			{probePath(trapURL, "app1"), "not allowed"},
			{probePath(trapURL, ""), "not allowed"},
			{probePath("redis://:secret-in-url@"+r1.Addr+"/0", "app1"), "credentials"},
			{probePath("redis://"+r1.Addr, "app1"), "database number"},
			{probePath("redis://"+r1.Addr+"/0?password=x", "app1"), "no query"},
			{probePath("http://"+r1.Addr+"/0", "app1"), "redis://"},
			{probePath(t1, "nosuch"), "unknown module"},
			{"/probe", "target"},
		} {
			code, body := testserver.Get(t, e.base+tc.path)
			if code != http.StatusBadRequest || !strings.Contains(body, tc.why) {
				t.Errorf("%s: %d %q, want 400 naming %q", tc.path, code, body, tc.why)
			}
			if strings.Contains(body, "secret-in-url") || strings.Contains(e.logs.String(), "secret-in-url") {
				t.Errorf("%s: the password in the target was echoed", tc.path)
			}
		}
		time.Sleep(500 * time.Millisecond)
		if n := trap.n.Load(); n != 0 {
			t.Errorf("the exporter connected %d times to a target it refused", n)
		}
	})

	t.Run("idle eviction", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			m := e.scrape("/metrics", 5*time.Second)
			if value(m.fams, "dramatiq_exporter_probe_targets", nil) == 0 &&
				value(m.fams, "dramatiq_exporter_probe_evictions_total", map[string]string{"reason": "idle"}) >= 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("probed targets not evicted after 3s idle: %v targets", value(m.fams, "dramatiq_exporter_probe_targets", nil))
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Evicted means closed: r1 has no exporter connection left (the
		// exporter's own broker is r2).
		deadline = time.Now().Add(10 * time.Second)
		for {
			list, err := r1.Admin.ClientList(context.Background()).Result()
			if err == nil && !strings.Contains(list, "name=dramatiq_exporter") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("r1 still has exporter connections after eviction: %v %s", err, list)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// And a new probe builds it again, with the same numbers.
		e.waitMatch(t, probePath(t1, "app1"), want1, 20*time.Second)
	})

	t.Run("bounded", func(t *testing.T) {
		// Three pairs fit; the fourth evicts the least recently probed.
		for _, p := range []string{probePath(t1, "app1"), probePath(t2, ""), probePath(t2, "app1"), probePath(t1, "default")} {
			if s := e.scrape(p, 5*time.Second); s.err != nil {
				t.Fatalf("%s: %v", p, s.err)
			}
		}
		m := e.scrape("/metrics", 5*time.Second)
		if v := value(m.fams, "dramatiq_exporter_probe_targets", nil); v != 3 {
			t.Errorf("dramatiq_exporter_probe_targets = %v, want 3 (the limit)", v)
		}
		if v := value(m.fams, "dramatiq_exporter_probe_evictions_total", map[string]string{"reason": "capacity"}); v < 1 {
			t.Errorf("no eviction for capacity: %v", v)
		}
	})
}

func TestProbeOffWithoutAllowList(t *testing.T) {
	r := testserver.StartRedis(t)
	trap := countConnections(t)
	e := startExporter(t, "--redis.url", r.URL())
	code, body := testserver.Get(t, e.base+probePath("redis://"+trap.l.Addr().String()+"/0", ""))
	if code != http.StatusNotFound || !strings.Contains(body, "--probe.allowed-targets") {
		t.Errorf("/probe without an allow-list: %d %q", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	if trap.n.Load() != 0 {
		t.Error("connected with /probe off")
	}
}

// A module's database: the probe of a target reads that module's
// PostgreSQL with the password from the module's file, and the exporter's
// own /metrics, which has no database, stays without one.
func TestProbeModuleDatabase(t *testing.T) {
	const password = "probe-Pg-pw-6"
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	pg.CreateRole(t, "monitor", password, "app", "pg_monitor")
	r := testserver.StartRedis(t)
	r.NewBroker(t, "withdb").Enqueue("emails", 3, time.Now())

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pgpw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "exporter.yml")
	yml := fmt.Sprintf(`probe:
  allowed_targets: ["%s"]
modules:
  withdb:
    dramatiq: {namespace: withdb}
    database: {url: "postgres://monitor@127.0.0.1:%d/app?sslmode=disable", password_file: %s}
  nodb:
    dramatiq: {namespace: withdb}
`, r.Addr, pg.Port, pwFile)
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file", conf, "--redis.url", r.URL())
	target := r.URL()
	e.waitMatch(t, probePath(target, "withdb"), map[string]map[string]float64{"emails": {"ready": 3}}, 20*time.Second)

	s := e.scrape(probePath(target, "withdb"), 5*time.Second)
	if v := value(s.fams, "dramatiq_database_up", nil); v != 1 {
		t.Errorf("probe with module withdb: dramatiq_database_up = %v, want 1\n%s", v, e.logs.String())
	}
	if _, ok := s.fams["dramatiq_database_max_connections"]; !ok {
		t.Error("probe with module withdb: no dramatiq_database_max_connections")
	}
	for path, what := range map[string]string{probePath(target, "nodb"): "probe with module nodb", "/metrics": "/metrics"} {
		s := e.scrape(path, 5*time.Second)
		if s.err != nil {
			t.Fatalf("%s: %v", what, s.err)
		}
		if _, ok := s.fams["dramatiq_database_up"]; ok {
			t.Errorf("%s has dramatiq_database_up, but it has no database", what)
		}
	}

	// The password is wrong now: that probe says the database is down, and
	// neither the password nor the log line leaks it.
	// Sessions logged in already stay; ending them makes the pool log in again.
	pg.Exec(t, "postgres", "ALTER ROLE monitor PASSWORD 'something-else-42'",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'monitor'")
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := e.scrape(probePath(target, "withdb"), 5*time.Second)
		// The first scrape may still meet a terminated session; the next
		// one logs in again and is refused.
		if s.err == nil && value(s.fams, "dramatiq_database_up", nil) == 0 && strings.Contains(e.logs.String(), "password authentication failed") {
			if value(s.fams, "dramatiq_redis_up", nil) != 1 {
				t.Error("a database failure took the broker's numbers with it")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scrape with dramatiq_database_up 0 and a log line naming the refused password:\n%s", e.logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	logs := e.logs.String()
	if strings.Contains(logs, password) {
		t.Error("the module's database password is in the log")
	}

}

// A module's database is one database: sixteen targets (DB numbers) of
// one module share its one pool, so the exporter holds at most the pool's
// three sessions there, however many targets are probed at once.
func TestProbeModuleDatabaseSessions(t *testing.T) {
	const password = "probe-Pg-pw-16"
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	pg.CreateRole(t, "monitor", password, "app", "pg_monitor")
	r := testserver.StartRedis(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pgpw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "exporter.yml")
	yml := fmt.Sprintf(`probe:
  allowed_targets: ["%s"]
modules:
  withdb:
    dramatiq: {namespace: withdb}
    database: {url: "postgres://monitor@127.0.0.1:%d/app?sslmode=disable", password_file: %s}
`, r.Addr, pg.Port, pwFile)
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startExporter(t, "--config.file", conf, "--redis.url", r.URL())

	admin := pg.Connect(t, "postgres")
	sessions := func() int {
		var n int
		if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE usename = 'monitor'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	stop := make(chan struct{})
	peak := make(chan int)
	go func() {
		most := 0
		for {
			select {
			case <-stop:
				peak <- most
				return
			case <-time.After(20 * time.Millisecond):
				most = max(most, sessions())
			}
		}
	}()
	var wg sync.WaitGroup
	var up atomic.Int32
	for round := 0; round < 2; round++ {
		for db := 0; db < 16; db++ {
			wg.Add(1)
			go func(db int) {
				defer wg.Done()
				s := e.scrape(probePath(fmt.Sprintf("redis://%s/%d", r.Addr, db), "withdb"), 10*time.Second)
				if s.err == nil && value(s.fams, "dramatiq_database_up", nil) == 1 {
					up.Add(1)
				}
			}(db)
		}
		wg.Wait()
	}
	close(stop)
	most := max(<-peak, sessions())
	t.Logf("16 targets of one module, 32 probes: %d probes with database_up 1, at most %d sessions", up.Load(), most)
	if up.Load() < 16 {
		t.Errorf("only %d of 32 probes read the database", up.Load())
	}
	if most > 3 {
		t.Errorf("%d sessions of the exporter on the module's database, want at most the pool's 3", most)
	}
}
