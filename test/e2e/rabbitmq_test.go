package e2e_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/shipped"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// rabbitDelayWindow replaces DelayRedeliveriesWindow (35m, longer than
// RabbitMQ's consumer_timeout) in the rule copy: rabbitmq_consumers.py
// reopens its .DQ consumer every rabbitChurn instead of every 30 minutes.
const (
	rabbitDelayWindow = 10 * time.Second
	rabbitChurn       = 3 * time.Second
)

// Dashboard queries that stay empty on this RabbitMQ, with the reason.
var rabbitExpectedEmpty = map[string]string{
	`panel "Time to drain"`: "no queue drains here",
}

// The shipped rules and dashboards on a real RabbitMQ 3.10, read by the
// exporter with --broker=rabbitmq and evaluated by every Prometheus release:
// the RabbitMQ alerts fire on the queues in their situation and only
// there, no Redis alert fires, every dashboard query that does not need
// Redis returns data, and every one that does stays empty.
func TestPrometheusEndToEndRabbitMQ(t *testing.T) {
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	root := testserver.RepoRoot(t)
	releases := testserver.PromReleases(t)
	python := venvBinary(t, root, "python")
	dir := t.TempDir()

	built := make(chan error, 1)
	exporterBin := filepath.Join(dir, "dramatiq_exporter")
	go func() {
		_, err := testserver.BuildExporter(dir)
		built <- err
	}()

	cfg := mixin.DefaultConfig()
	cfg.ForScale = forScale
	cfg.DelayRedeliveriesWindow = rabbitDelayWindow
	rulesYAML := cfg.RulesYAML()
	brokerOf, severity := map[string]string{}, map[string]string{}
	for _, a := range cfg.Alerts() {
		brokerOf[a.Name], severity[a.Name] = a.Broker, a.Severity
	}

	node := testserver.StartRabbitMQ(t)
	logf("RabbitMQ node up")
	const vhost = "e2e"
	node.PutVhost(t, vhost)
	const password = "e2e-watcher-pw"
	node.PutUser(t, "watcher", password, "monitoring")
	node.SetPermissions(t, vhost, "watcher", "", "", "")

	// The state every alert is about, made before Prometheus scrapes, so
	// no backlog seems to grow.
	dramatiqQueues := func(q string, main map[string]any) {
		dl := map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q + ".XQ"}
		for k, v := range main {
			dl[k] = v
		}
		node.DeclareQueue(t, vhost, q, dl)
		node.DeclareQueue(t, vhost, q+".DQ", dl)
		node.DeclareQueue(t, vhost, q+".XQ", map[string]any{"x-message-ttl": 604800000})
	}
	// stuck: messages, and no worker.
	dramatiqQueues("stuck", nil)
	node.Publish(t, vhost, "stuck", `{"actor_name":"a"}`, 3)
	// busy: a worker holds its messages; churn: a worker holding delayed
	// messages keeps losing its channel.
	dramatiqQueues("busy", nil)
	node.Publish(t, vhost, "busy", `{"actor_name":"b"}`, 4)
	dramatiqQueues("churn", nil)
	node.Publish(t, vhost, "churn.DQ", `{"actor_name":"c","options":{"eta":9999999999999}}`, 5)
	// quorumq: a vhost default or policy made quorum queues of it.
	dramatiqQueues("quorumq", map[string]any{"x-queue-type": "quorum"})
	// broken: its dead-letter queue is missing.
	node.DeclareQueue(t, vhost, "broken", map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "broken.XQ"})
	node.DeclareQueue(t, vhost, "broken.DQ", map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "broken.XQ"})

	consumers := startProc(t, "consumers", exec.Command(python, filepath.Join(root, "test", "e2e", "rabbitmq_consumers.py"),
		node.AdminAMQPURL(vhost), "busy", "churn.DQ", strconv.FormatFloat(rabbitChurn.Seconds(), 'f', -1, 64)))
	waitFor(t, "the consumers", 60*time.Second, func() error {
		if !strings.Contains(consumers.output(1000), "ready\n") {
			return fmt.Errorf("not consuming yet: %s", consumers.output(1000))
		}
		return nil
	})
	logf("consumers on busy and churn.DQ")

	if err := <-built; err != nil {
		t.Fatal(err)
	}
	exp, expPort := startListening(t, "exporter", func(port int) *exec.Cmd {
		cmd := exec.Command(exporterBin, "--broker=rabbitmq", "--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
		cmd.Env = testserver.Env("RABBITMQ_URL="+node.MgmtURL(), "RABBITMQ_USER=watcher", "RABBITMQ_PASSWORD="+password, "RABBITMQ_VHOST="+vhost)
		return cmd
	}, func(port int) error {
		// Wait for RabbitMQ's statistics to show the busy worker.
		b, _, err := httpGet(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err == nil && !strings.Contains(string(b), `dramatiq_queue_consumers{queue="busy"} 1`) {
			err = fmt.Errorf("busy's consumer not seen yet")
		}
		return err
	})
	exporterAddr := "127.0.0.1:" + strconv.Itoa(expPort)
	logf("exporter serving on %s", exporterAddr)
	defer func() {
		if t.Failed() {
			t.Logf("exporter output:\n%s", exp.output(4000))
			t.Logf("consumers output:\n%s", consumers.output(2000))
		}
	}()

	// No workers' middleware here: a closed port for that job.
	noWorkers := "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	var proms []*prometheus
	for _, rel := range releases {
		prom := startPrometheus(t, rel, filepath.Join(dir, rel.Name), exporterAddr, noWorkers, rulesYAML)
		proms = append(proms, prom)
		defer func() {
			if t.Failed() {
				t.Logf("%s output:\n%s", prom.name, prom.output(3000))
			}
		}()
	}
	for _, prom := range proms {
		waitFor(t, prom.name+" to scrape the exporter", 60*time.Second, func() error {
			s, err := prom.query(`dramatiq_rabbitmq_up{job="dramatiq"} == 1`)
			if err == nil && len(s) == 0 {
				err = fmt.Errorf("no successful scrape yet")
			}
			return err
		})
	}
	logf("every Prometheus scrapes the exporter")

	// Dead letters arrive once Prometheus has seen the queue without them.
	time.Sleep(3 * time.Second)
	node.Publish(t, vhost, "stuck.XQ", `{"actor_name":"a"}`, 2)

	// Phase 1: the dashboards and recording rules on RabbitMQ.
	qs, empty := rabbitQueries(t, root, rulesYAML)
	for _, prom := range proms {
		checkQueries(t, prom, qs, empty, logf)
		checkRuleHealth(t, prom)
	}
	if t.Failed() {
		return
	}

	// Phase 2: the RabbitMQ alerts, on their queues only.
	obs := map[*prometheus]*observed{}
	for _, prom := range proms {
		obs[prom] = &observed{severity: severity, instance: exporterAddr, firing: map[string]bool{}}
		obs[prom].wait(t, prom, logf, prom.name+": RabbitMQ alerts", 90*time.Second, []want{
			{"DramatiqRabbitMQQueueNoConsumers", "queue", "stuck"},
			{"DramatiqRabbitMQDeadLettersGrowing", "queue", "stuck"},
			{"DramatiqRabbitMQDelayRedeliveries", "queue", "churn"},
			{"DramatiqRabbitMQQueueLayout", "queue", "quorumq"},
			{"DramatiqRabbitMQQueueLayout", "queue", "broken"},
		}, map[string][]string{
			"DramatiqRabbitMQQueueNoConsumers":   {"stuck"},
			"DramatiqRabbitMQDeadLettersGrowing": {"stuck"},
			"DramatiqRabbitMQDelayRedeliveries":  {"churn"},
			"DramatiqRabbitMQQueueLayout":        {"quorumq", "broken"},
		})
	}
	if t.Failed() {
		return
	}

	// Phase 3: RabbitMQ stops.
	node.Stop()
	logf("RabbitMQ stopped")
	for _, prom := range proms {
		obs[prom].wait(t, prom, logf, prom.name+": RabbitMQ down", 30*time.Second, []want{{"DramatiqRabbitMQDown", "", ""}}, nil)
	}

	// Nothing of Redis fired, nor DramatiqQueueNotConsumed: the queue
	// without consumers is NoConsumers', and busy's worker holds messages.
	for _, prom := range proms {
		var fired []string
		for name := range obs[prom].firing {
			if brokerOf[name] == mixin.BrokerRedis || name == "DramatiqQueueNotConsumed" {
				fired = append(fired, name)
			}
		}
		sort.Strings(fired)
		if len(fired) > 0 {
			t.Errorf("%s: fired on RabbitMQ: %s", prom.name, strings.Join(fired, ", "))
		}
	}
}

var metricRE = regexp.MustCompile(`\bdramatiq_[a-z0-9_]+\b`)

// rabbitQueries returns the dashboard queries and recording rules this test
// checks, and those of them that must stay empty: the Redis-only ones and
// rabbitExpectedEmpty. Queries of the database and of the workers'
// middleware are left to TestPrometheusEndToEnd: neither runs here.
func rabbitQueries(t *testing.T, root string, rules []byte) ([]shipped.Query, map[string]string) {
	t.Helper()
	var qs []shipped.Query
	for _, q := range append(parseRules(t, rules, "alerts/dramatiq.rules.yml"), dashboardQueries(t, root)...) {
		if q.Alert != "" {
			continue // phase 2 checks the alerts
		}
		other := strings.Contains(q.Expr, mixin.DefaultConfig().WorkersSelector)
		for _, m := range metricRE.FindAllString(q.Expr, -1) {
			other = other || strings.HasPrefix(m, "dramatiq_database_") || slices.Contains(mixin.MiddlewareMetrics, m)
		}
		if !other {
			qs = append(qs, q)
		}
	}
	empty := map[string]string{}
	redis := 0
	// Recorded series built only from Redis's series are empty here, and
	// so is everything built on them (the rules come first, in order).
	var redisRecorded []string
	for _, q := range qs {
		needsRedis := mixin.QueryBroker(q.Expr) == mixin.BrokerRedis
		if rule := strings.HasPrefix(q.Where, "alerts/"); rule {
			// Some recording rules name orphans only to fall back on their
			// absence (`or`): they must return data on both brokers.
			needsRedis = needsRedis && !strings.Contains(q.Expr, " or ")
		}
		for _, name := range redisRecorded {
			needsRedis = needsRedis || strings.Contains(q.Expr, name)
		}
		if needsRedis {
			if rule := strings.HasPrefix(q.Where, "alerts/"); rule {
				redisRecorded = append(redisRecorded, q.Where[strings.LastIndex(q.Where, " ")+1:])
			}
			empty[q.Where] = "needs Redis's series; this exporter reads RabbitMQ"
			redis++
		}
		for panel, reason := range rabbitExpectedEmpty {
			if strings.Contains(q.Where, panel) {
				empty[q.Where] = reason
			}
		}
	}
	if redis < 10 || len(qs)-len(empty) < 20 {
		t.Fatalf("%d queries, %d of them Redis-only: the classification is broken", len(qs), redis)
	}
	return qs, empty
}
