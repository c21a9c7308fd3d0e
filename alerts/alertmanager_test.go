package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func alertmanagerConfig(t *testing.T) string {
	return filepath.Join(testserver.RepoRoot(t), "alerts", "alertmanager.yml")
}

func TestAmtoolCheckConfig(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel testserver.PromRelease) {
		amtool := rel.Amtool
		out, err := run(t, testserver.RepoRoot(t), amtool, "check-config", alertmanagerConfig(t))
		if err != nil {
			t.Fatalf("amtool check-config: %v\n%s", err, out)
		}
		for _, want := range []string{"SUCCESS", "7 inhibit rules"} {
			if !strings.Contains(out, want) {
				t.Errorf("amtool check-config output lacks %q:\n%s", want, out)
			}
		}
	})
}

// Receivers by severity, as the example promises.
var severityReceiver = map[string]string{
	"critical": "dramatiq-pager",
	"warning":  "dramatiq-chat",
	"info":     "dramatiq-info",
}

// Every shipped alert, with the labels Prometheus gives it, reaches the
// receiver of its severity; anything else reaches the default receiver.
func TestAlertmanagerRoutes(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel testserver.PromRelease) {
		amtool := rel.Amtool
		type routeCase struct {
			labels []string
			want   string
		}
		var cases []routeCase
		for _, r := range shippedRules(t) {
			if r.Alert == "" {
				continue
			}
			cases = append(cases, routeCase{
				labels: []string{"alertname=" + r.Alert, "severity=" + r.Labels["severity"], "job=dramatiq", "instance=a:10191", "queue=default"},
				want:   severityReceiver[r.Labels["severity"]],
			})
		}
		if len(cases) < 15 {
			t.Fatalf("only %d alerts found", len(cases))
		}
		cases = append(cases,
			routeCase{[]string{"alertname=NodeDown", "instance=a:9100"}, "default"},
			routeCase{[]string{"alertname=DramatiqRedisDown", "severity=page"}, "default"},
			routeCase{[]string{"alertname=Other", "severity=warning"}, "dramatiq-chat"},
		)
		for _, c := range cases {
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerConfig(t), "--verify.receivers=" + c.want}, c.labels...)
			cmd := exec.Command(amtool, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			// stdout is the comma-separated list of matched receivers.
			got := strings.TrimSpace(string(out))
			if err != nil || got != c.want {
				t.Errorf("%v: routed to %q (%v), want %s\n%s", c.labels, got, err, c.want, stderr.String())
			}
		}
	})
}

type amAlert struct {
	Labels map[string]string `json:"labels"`
	Status struct {
		State       string   `json:"state"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
}

// startAlertmanager runs the real Alertmanager on the shipped example
// configuration, on a free loopback port, without clustering.
func startAlertmanager(t *testing.T, bin string) string {
	t.Helper()
	port := testserver.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+alertmanagerConfig(t),
		"--storage.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--cluster.listen-address=",
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start alertmanager: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager on %s not ready: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func labelKey(l map[string]string) string {
	var ks []string
	for k, v := range l {
		ks = append(ks, k+"="+v)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// The inhibit rules, exercised on a real Alertmanager: alerts are posted
// through its API and their state (active or suppressed by inhibition) read
// back.
func TestAlertmanagerInhibition(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel testserver.PromRelease) {
		base := startAlertmanager(t, rel.Alertmanager)

		type c struct {
			labels     map[string]string
			suppressed bool
		}
		a := func(name, severity, job, instance string, suppressed bool, extra ...string) c {
			l := map[string]string{"alertname": name, "severity": severity, "job": job, "instance": instance}
			for i := 0; i+1 < len(extra); i += 2 {
				l[extra[i]] = extra[i+1]
			}
			return c{l, suppressed}
		}
		const job = "dramatiq"
		cases := []c{
			// a: the exporter is down. It silences every other Dramatiq alert of
			// the target, even the Redis and database ones, but no foreign alert.
			a("DramatiqExporterDown", "critical", job, "a", false),
			a("DramatiqRedisDown", "critical", job, "a", true),
			a("DramatiqDatabaseDown", "critical", job, "a", true),
			a("DramatiqQueueNotConsumed", "critical", job, "a", true, "queue", "default"),
			a("DramatiqExporterQueuesDropped", "info", job, "a", true),
			a("NodeDown", "critical", job, "a", false),

			// b: Redis is down. Queue and process alerts and the failing broker
			// collector are its symptoms; database alerts and the failing
			// database collectors are not.
			a("DramatiqRedisDown", "critical", job, "b", false),
			a("DramatiqQueueNotConsumed", "critical", job, "b", true, "queue", "default"),
			a("DramatiqOrphanedMessages", "warning", job, "b", true, "queue", "emails"),
			a("DramatiqNoAliveProcesses", "warning", job, "b", true, "state", "alive"),
			a("DramatiqWorkersDying", "warning", job, "b", true, "state", "stale"),
			a("DramatiqExporterCollectorFailing", "warning", job, "b", true, "collector", "broker"),
			a("DramatiqExporterCollectorFailing", "warning", job, "b", false, "collector", "database"),
			a("DramatiqExporterCollectorFailing", "warning", job, "b", false, "collector", "database_activity"),
			a("DramatiqDatabaseConnectionsNearLimit", "warning", job, "b", false),
			a("DramatiqExporterQueuesDropped", "info", job, "b", false),

			// c: the database is down. Queue alerts, the database details and
			// the failing database collectors are silenced, not a failing
			// broker collector.
			a("DramatiqDatabaseDown", "critical", job, "c", false),
			a("DramatiqDeadLetters", "warning", job, "c", true, "queue", "reports"),
			a("DramatiqQueueLatencyHigh", "warning", job, "c", true, "queue", "reports"),
			a("DramatiqQueueBacklogGrowing", "warning", job, "c", true, "queue", "reports"),
			a("DramatiqDatabaseLongTransaction", "warning", job, "c", true),
			a("DramatiqDatabaseBlockedConnections", "warning", job, "c", true),
			a("DramatiqExporterCollectorFailing", "warning", job, "c", true, "collector", "database"),
			a("DramatiqExporterCollectorFailing", "warning", job, "c", true, "collector", "database_activity"),
			a("DramatiqExporterCollectorFailing", "warning", job, "c", false, "collector", "broker"),

			// d: nothing is down here; a Redis outage of another job with the
			// same instance name does not count.
			a("DramatiqRedisDown", "critical", "dramatiq-staging", "d", false),
			a("DramatiqQueueNotConsumed", "critical", job, "d", false, "queue", "default"),
			a("DramatiqDeadLetters", "warning", job, "d", false, "queue", "default"),
			a("DramatiqDatabaseBlockedConnections", "warning", job, "d", false),

			// e and f: a source on another instance of the same job does not
			// inhibit.
			a("DramatiqRedisDown", "critical", job, "e", false),
			a("DramatiqQueueNotConsumed", "critical", job, "f", false, "queue", "default"),

			// g: RabbitMQ's management API is down: as for Redis, the queue
			// alerts and the broker collector, not the database's nor the
			// queue layout (no outage causes that).
			a("DramatiqRabbitMQDown", "critical", job, "g", false),
			a("DramatiqRabbitMQQueueNoConsumers", "critical", job, "g", true, "queue", "default"),
			a("DramatiqRabbitMQDelayRedeliveries", "warning", job, "g", true, "queue", "default"),
			a("DramatiqRabbitMQDeadLettersGrowing", "warning", job, "g", true, "queue", "default"),
			a("DramatiqQueueNotConsumed", "critical", job, "g", true, "queue", "emails"),
			a("DramatiqExporterCollectorFailing", "warning", job, "g", true, "collector", "broker"),
			a("DramatiqExporterCollectorFailing", "warning", job, "g", false, "collector", "database"),
			a("DramatiqRabbitMQQueueLayout", "warning", job, "g", false, "queue", "orders"),
			a("DramatiqDatabaseConnectionsNearLimit", "warning", job, "g", false),
		}

		now := time.Now().UTC()
		var post []map[string]any
		for _, cs := range cases {
			post = append(post, map[string]any{
				"labels":      cs.labels,
				"annotations": map[string]string{"summary": "test"},
				// Starting now, group_wait (30s) holds notifications back for
				// longer than the test runs.
				"startsAt": now.Format(time.RFC3339),
				"endsAt":   now.Add(time.Hour).Format(time.RFC3339),
			})
		}
		body, _ := json.Marshal(post)
		resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("post alerts: %v", err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post alerts: %s %s", resp.Status, msg)
		}

		want := map[string]bool{}
		for _, cs := range cases {
			want[labelKey(cs.labels)] = cs.suppressed
		}
		// The inhibitor reads new alerts asynchronously, so poll until the states
		// settle on what is expected, then report the differences.
		var diffs []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := getAlerts(t, base)
			diffs = diffs[:0]
			seen := map[string]bool{}
			for _, al := range got {
				k := labelKey(al.Labels)
				seen[k] = true
				exp, ok := want[k]
				if !ok {
					diffs = append(diffs, "unexpected alert "+k)
					continue
				}
				inhibited := al.Status.State == "suppressed" && len(al.Status.InhibitedBy) > 0
				if inhibited != exp || (!exp && al.Status.State != "active") {
					diffs = append(diffs, fmt.Sprintf("%s: state %s, inhibited by %d, want inhibited=%v", k, al.Status.State, len(al.Status.InhibitedBy), exp))
				}
			}
			for k := range want {
				if !seen[k] {
					diffs = append(diffs, "missing alert "+k)
				}
			}
			if len(diffs) == 0 {
				return
			}
			if time.Now().After(deadline) {
				sort.Strings(diffs)
				t.Fatalf("inhibition differs from the example's promise:\n  %s", strings.Join(diffs, "\n  "))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func getAlerts(t *testing.T, base string) []amAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true")
	if err != nil {
		t.Fatalf("get alerts: %v", err)
	}
	defer resp.Body.Close()
	var out []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode alerts: %v", err)
	}
	return out
}

// The inhibit rules name the collectors by the server they read; every
// collector the exporter has must be in one of the lists, so a new one is
// not left out of them.
func TestInhibitionsKnowEveryCollector(t *testing.T) {
	known := map[string]bool{}
	for _, list := range []string{mixin.BrokerCollectors, mixin.DatabaseCollectors} {
		for _, name := range strings.Split(list, "|") {
			known[name] = true
		}
	}
	for _, c := range collector.List() {
		if !known[c.Name] {
			t.Errorf("collector %q is in neither mixin.BrokerCollectors nor mixin.DatabaseCollectors", c.Name)
		}
		delete(known, c.Name)
	}
	for name := range known {
		t.Errorf("mixin names collector %q, which does not exist", name)
	}
}
