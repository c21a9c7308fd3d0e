package topology_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// copyFile replaces dst with src's contents the way secret volumes rotate:
// a new file renamed over the old one.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// keyBody is a line from the middle of a PEM key: text that must never be
// logged.
func keyBody(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[1][:40]
}

// failsWith scrapes e once, wants dramatiq_<component>_up 0, and wants the
// log since before the scrape to name cause; it returns the log lines that
// named it.
func failsWith(t *testing.T, e *exporter, upMetric, cause string, secrets ...string) {
	t.Helper()
	// Under TLS 1.3 a server that rejects the client's certificate says so
	// after the handshake, and the client's first write can meet the closed
	// socket ("connection reset") before it reads the alert: a scrape whose
	// line does not name the cause is followed by another, up to 5.
	var before int
	var logs string
	var naming []string
	for attempt := 0; attempt < 5 && len(naming) == 0; attempt++ {
		// Lines of earlier scrapes may still be in the pipe.
		time.Sleep(300 * time.Millisecond)
		before = len(e.logs.String())
		s := e.scrape("/metrics", 5*time.Second)
		if s.err != nil {
			t.Fatalf("scrape: %v", s.err)
		}
		if v := value(s.fams, upMetric, nil); v != 0 {
			t.Errorf("%s = %v, want 0 (%s)", upMetric, v, cause)
		}
		// The log reaches us through a pipe, maybe after the response.
		for wait := time.Now().Add(3 * time.Second); time.Now().Before(wait) && !strings.Contains(e.logs.String()[before:], cause); {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		logs = e.logs.String()
		for _, l := range strings.Split(logs[before:], "\n") {
			// Background discovery logs its own failures, at its own pace;
			// what a scrape adds is its collectors' lines.
			if strings.Contains(l, cause) && strings.Contains(l, `msg="collector failed"`) {
				naming = append(naming, l)
			}
		}
	}
	// One line per failed collector: the broker collector for Redis; the
	// database and database_activity collectors each for PostgreSQL.
	seen := map[string]bool{}
	for _, l := range naming {
		c := l[strings.Index(l, "collector=")+1:]
		if i := strings.IndexByte(c, ' '); i > 0 {
			c = c[:i]
		}
		if seen[c] {
			t.Errorf("more than one line per collector names %q:\n%s", cause, logs[before:])
		}
		seen[c] = true
	}
	if len(naming) == 0 || (upMetric == "dramatiq_redis_up" && len(naming) != 1) {
		t.Errorf("want one log line per failed collector naming %q after one scrape, got %d:\n%s", cause, len(naming), logs[before:])
	}
	for _, sec := range secrets {
		if strings.Contains(logs, sec) {
			t.Errorf("a secret (%.8s...) is in the log", sec)
		}
	}
}

func TestRedisTLS(t *testing.T) {
	ca := testserver.NewCA(t, "redis-ca")
	other := testserver.NewCA(t, "other-ca")
	admin := ca.Client("admin")
	const password = "tls-Redis-pass-91"
	r := testserver.StartRedisTLS(t, testserver.RedisTLS{
		CA: ca, Server: ca.Server("redis-server", "redis.test", "127.0.0.1"), Mutual: true, Admin: &admin,
	}, "--requirepass", password)
	r.NewBroker(t, "tlsapp").Enqueue("emails", 3, time.Now())

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	client := ca.Client("exporter")
	url := "rediss://" + r.Addr + "/0"
	base := []string{"--redis.url", url, "--redis.password-file", pwFile, "--dramatiq.namespace", "tlsapp"}
	secrets := []string{password, keyBody(t, client.KeyFile)}
	withCert := func(caFile string, more ...string) []string {
		return append(append(append([]string(nil), base...), "--redis.tls-ca-file", caFile,
			"--redis.tls-cert-file", client.CertFile, "--redis.tls-key-file", client.KeyFile), more...)
	}
	want := map[string]map[string]float64{"emails": {"ready": 3}}

	t.Run("verify-full", func(t *testing.T) {
		// The certificate's IP address matches the host dialled...
		startExporter(t, withCert(ca.File)...).waitMatch(t, "/metrics", want, 20*time.Second)
		// ...and its DNS name the one given.
		startExporter(t, withCert(ca.File, "--redis.tls-server-name", "redis.test")...).waitMatch(t, "/metrics", want, 20*time.Second)
	})
	t.Run("wrong CA", func(t *testing.T) {
		e := startExporter(t, withCert(other.File)...)
		failsWith(t, e, "dramatiq_redis_up", "certificate signed by unknown authority", secrets...)
	})
	t.Run("wrong server name", func(t *testing.T) {
		e := startExporter(t, withCert(ca.File, "--redis.tls-server-name", "redis.example")...)
		failsWith(t, e, "dramatiq_redis_up", "not redis.example", secrets...)
	})
	t.Run("missing client certificate", func(t *testing.T) {
		e := startExporter(t, append(append([]string(nil), base...), "--redis.tls-ca-file", ca.File)...)
		failsWith(t, e, "dramatiq_redis_up", "certificate required", secrets...)
	})
	t.Run("skip verify", func(t *testing.T) {
		e := startExporter(t, withCert(other.File, "--redis.tls-insecure-skip-verify")...)
		e.waitMatch(t, "/metrics", want, 20*time.Second)
		if !strings.Contains(e.logs.String(), "NOT verified") {
			t.Errorf("no warning about --redis.tls-insecure-skip-verify:\n%s", e.logs.String())
		}
	})
	t.Run("rotation", func(t *testing.T) {
		// The exporter reads copies that the test replaces on disk.
		rot := t.TempDir()
		caFile, certFile, keyFile := filepath.Join(rot, "ca.pem"), filepath.Join(rot, "cert.pem"), filepath.Join(rot, "key.pem")
		copyFile(t, ca.File, caFile)
		copyFile(t, client.CertFile, certFile)
		copyFile(t, client.KeyFile, keyFile)
		e := startExporter(t, append(append([]string(nil), base...), "--redis.tls-ca-file", caFile,
			"--redis.tls-cert-file", certFile, "--redis.tls-key-file", keyFile)...)
		e.waitMatch(t, "/metrics", want, 20*time.Second)

		// Everything moves to a new CA: the server's certificate and the
		// client certificates it accepts.
		ca2 := testserver.NewCA(t, "redis-ca-2")
		admin2 := ca2.Client("admin")
		r.RestartTLS(testserver.RedisTLS{CA: ca2, Server: ca2.Server("redis-server-2", "127.0.0.1"), Mutual: true, Admin: &admin2})
		r.NewBroker(t, "tlsapp").Enqueue("emails", 5, time.Now())
		// The pooled connections died with the server: scrapes that take
		// one say EOF, until a new connection is dialled.
		mark := len(e.logs.String())
		for i := 0; i < 10 && !strings.Contains(e.logs.String()[mark:], "unknown authority"); i++ {
			e.scrape("/metrics", 5*time.Second)
		}
		failsWith(t, e, "dramatiq_redis_up", "certificate signed by unknown authority", secrets...)

		client2 := ca2.Client("exporter-2")
		copyFile(t, ca2.File, caFile)
		copyFile(t, client2.CertFile, certFile)
		copyFile(t, client2.KeyFile, keyFile)
		e.waitMatch(t, "/metrics", map[string]map[string]float64{"emails": {"ready": 5}}, 20*time.Second)
	})
}

func TestPostgresTLS(t *testing.T) {
	ca := testserver.NewCA(t, "pg-ca")
	other := testserver.NewCA(t, "other-ca")
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	const password = "tls-Pg-pass-53"
	pg.CreateRole(t, "exporter", password, "app", "pg_monitor")
	pg.EnableTLS(t, ca, ca.Server("pg-server", "db.test", "127.0.0.1"), true)
	// clientcert=verify-full: the certificate's CN must be the user name.
	client := ca.Client("exporter")
	r := testserver.StartRedis(t)
	secrets := []string{password, keyBody(t, client.KeyFile)}

	dsn := func(host, rootCert string, withClient bool) string {
		u := fmt.Sprintf("postgres://exporter:%s@%s:%d/app?sslmode=verify-full&sslrootcert=%s", password, host, pg.Port, rootCert)
		if withClient {
			u += "&sslcert=" + client.CertFile + "&sslkey=" + client.KeyFile
		}
		return u
	}
	run := func(t *testing.T, url string) *exporter {
		return startExporter(t, "--redis.url", r.URL(), "--database.url", url)
	}
	t.Run("verify-full", func(t *testing.T) {
		e := run(t, dsn("127.0.0.1", ca.File, true))
		s := e.scrape("/metrics", 10*time.Second)
		if s.err != nil || value(s.fams, "dramatiq_database_up", nil) != 1 {
			t.Fatalf("dramatiq_database_up is not 1: %v\n%s", s.err, e.logs.String())
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		failsWith(t, run(t, dsn("127.0.0.1", other.File, true)), "dramatiq_database_up", "certificate signed by unknown authority", secrets...)
	})
	t.Run("wrong server name", func(t *testing.T) {
		// localhost reaches the same server, whose certificate does not
		// name it.
		failsWith(t, run(t, dsn("localhost", ca.File, true)), "dramatiq_database_up", "not localhost", secrets...)
	})
	t.Run("missing client certificate", func(t *testing.T) {
		failsWith(t, run(t, dsn("127.0.0.1", ca.File, false)), "dramatiq_database_up", "certificate", secrets...)
	})
}

// Sentinel and TLS together, as managed Redis setups run them: the
// sentinels, the master and the replica all speak TLS only and require a
// client certificate. The exporter finds the master through the sentinels
// over TLS, reads it over TLS, and follows a failover to the replica.
func TestSentinelTLS(t *testing.T) {
	ca := testserver.NewCA(t, "sentinel-ca")
	admin := ca.Client("admin")
	g := testserver.StartSentinelGroupTLS(t, "tls-main", testserver.RedisTLS{
		CA: ca, Server: ca.Server("redis-node", "127.0.0.1"), Mutual: true, Admin: &admin,
	})
	g.Master.NewBroker(t, "dramatiq").Enqueue("emails", 4, time.Now())
	client := ca.Client("exporter")
	args := []string{"--redis.url", "rediss://sentinel/0",
		"--redis.sentinel-addrs", joinAddrs(g.Addrs()), "--redis.sentinel-master", g.Name,
		"--redis.tls-ca-file", ca.File, "--redis.tls-cert-file", client.CertFile, "--redis.tls-key-file", client.KeyFile,
		"--dramatiq.discovery-interval", "1s"}
	e := startExporter(t, args...)
	e.waitMatch(t, "/metrics", map[string]map[string]float64{"emails": {"ready": 4}}, 30*time.Second)
	onReplica := startExporter(t, append(args, "--redis.sentinel-replica")...)
	onReplica.waitMatch(t, "/metrics", map[string]map[string]float64{"emails": {"ready": 4}}, 30*time.Second)

	// Without the client certificate the sentinels refuse the handshake,
	// and the scrape says so rather than reading zeros.
	noCert := startExporter(t, "--redis.url", "rediss://sentinel/0", "--redis.sentinel-addrs", joinAddrs(g.Addrs()),
		"--redis.sentinel-master", g.Name, "--redis.tls-ca-file", ca.File)
	failsWith(t, noCert, "dramatiq_redis_up", "certificate required", keyBody(t, client.KeyFile))

	ctx := context.Background()
	if n, err := g.Master.Admin.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d %v", n, err)
	}
	old := g.Master.Addr
	g.Master.Stop()
	if promoted := g.WaitFailover(t, old, 60*time.Second); promoted != g.Replica.Addr {
		t.Fatalf("sentinels promoted %s, not the replica %s", promoted, g.Replica.Addr)
	}
	// The promoted replica takes writes; the exporter reads them there.
	g.Replica.NewBroker(t, "dramatiq").Enqueue("emails", 2, time.Now())
	want := map[string]map[string]float64{"emails": {"ready": 6}}
	e.waitMatch(t, "/metrics", want, 30*time.Second)
	onReplica.waitMatch(t, "/metrics", want, 30*time.Second)
}
