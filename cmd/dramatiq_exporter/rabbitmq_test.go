package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// rabbitPassword has every URL delimiter and quote, so that an escaping
// slip anywhere would show it.
const rabbitPassword = `p@ss:w/rd#?%&"' x=1`

// declareDramatiqQueues declares q, q.DQ and q.XQ with the arguments
// Dramatiq's RabbitmqBroker gives them.
func declareDramatiqQueues(t *testing.T, n *testserver.RabbitMQ, vhost, q string) {
	t.Helper()
	dl := map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q + ".XQ"}
	n.DeclareQueue(t, vhost, q, dl)
	n.DeclareQueue(t, vhost, q+".DQ", dl)
	n.DeclareQueue(t, vhost, q+".XQ", map[string]any{"x-message-ttl": 604800000})
}

type rabbitExporter struct {
	base string
	logs *testserver.LogBuffer
	cmd  *exec.Cmd
}

func startRabbitExporter(t *testing.T, env []string, args ...string) *rabbitExporter {
	t.Helper()
	port := testserver.FreePort(t)
	cmd := exec.Command(binary, append([]string{"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--broker=rabbitmq", "--scrape.timeout=5s"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	e := &rabbitExporter{base: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &testserver.LogBuffer{}, cmd: cmd}
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(e.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter not ready: %s", e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// until scrapes /metrics until every want line is in it (RabbitMQ's
// statistics lag), failing after a generous deadline.
func (e *rabbitExporter) until(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var body string
	for {
		body, _ = scrape(t, e.base+"/metrics", "")
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w+"\n") {
				missing = w
				break
			}
		}
		if missing == "" {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %q in:\n%s\nlogs:\n%s", missing, grepLines(body, "dramatiq_"), e.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The binary on --broker=rabbitmq: exact numbers for a backlog, delayed
// (waiting) messages and dead letters as a monitoring-only user; what
// RabbitMQ cannot give is absent; a user without rights on the vhost is
// up 0 with one line saying why; RabbitMQ stopped is up 0 within the
// scrape deadline and recovers by itself; `check` judges the same read;
// the password is nowhere.
func TestRabbitMQServeEndToEnd(t *testing.T) {
	n := testserver.StartRabbitMQ(t)
	const vhost = "apps/prod"
	n.PutVhost(t, vhost)
	n.PutUser(t, "watcher", rabbitPassword, "monitoring")
	n.SetPermissions(t, vhost, "watcher", "", "", "")
	n.PutUser(t, "outsider", rabbitPassword, "monitoring") // no entry on the vhost
	declareDramatiqQueues(t, n, vhost, "emails")
	declareDramatiqQueues(t, n, vhost, "reports")
	n.Publish(t, vhost, "emails", `{"queue_name":"emails"}`, 5)
	n.Publish(t, vhost, "emails.DQ", `{"queue_name":"emails.DQ"}`, 2)
	n.Publish(t, vhost, "emails.XQ", `{"queue_name":"emails.XQ"}`, 3)
	n.Publish(t, vhost, "reports", `{"queue_name":"reports"}`, 1)
	n.DeclareQueue(t, vhost, "celery", nil) // another application's: ignored

	env := []string{"RABBITMQ_URL=" + n.MgmtURL(), "RABBITMQ_USER=watcher", "RABBITMQ_PASSWORD=" + rabbitPassword, "RABBITMQ_VHOST=" + vhost}
	e := startRabbitExporter(t, env)
	body := e.until(t,
		"dramatiq_rabbitmq_up 1",
		`dramatiq_queue_ready_messages{queue="emails"} 5`,
		`dramatiq_queue_ready_messages{queue="reports"} 1`,
		`dramatiq_queue_inflight_messages{queue="emails"} 0`,
		`dramatiq_queue_delayed_messages{queue="emails"} 2`,
		`dramatiq_queue_delayed_held_messages{queue="emails"} 0`,
		`dramatiq_queue_dead_letter_messages{queue="emails"} 3`,
		`dramatiq_queue_dead_letter_messages{queue="reports"} 0`,
		`dramatiq_queue_consumers{queue="emails"} 0`,
		`dramatiq_queue_delay_consumers{queue="emails"} 0`,
		`dramatiq_rabbitmq_queue_info{member="main",queue="emails",type="classic"} 1`,
		`dramatiq_rabbitmq_queue_info{member="delay",queue="emails",type="classic"} 1`,
		`dramatiq_rabbitmq_queue_info{member="dead",queue="emails",type="classic"} 1`,
		`dramatiq_rabbitmq_queue_layout_problems{queue="emails"} 0`,
		`dramatiq_rabbitmq_vhost_queues{kind="ignored"} 1`,
		`dramatiq_exporter_collector_success{collector="broker"} 1`,
	)
	// Absent, not zero: what RabbitMQ cannot answer read-only, and the
	// other broker's health.
	for _, absent := range []string{"dramatiq_redis_up", "dramatiq_queue_oldest_message_age_seconds", "dramatiq_queue_orphaned_messages",
		"dramatiq_actor_dead_lettered_total", "dramatiq_queue_dead_lettered_total", "dramatiq_processes", "dramatiq_exporter_discovery_",
		"dramatiq_exporter_broker_anomalies", `queue="celery"`} {
		if strings.Contains(body, absent) {
			t.Errorf("%s present on RabbitMQ:\n%s", absent, grepLines(body, absent))
		}
	}

	// The status API and the page project the same read.
	resp, err := http.Get(e.base + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	apiBody := readAll(t, resp)
	var st map[string]any
	if err := json.Unmarshal([]byte(apiBody), &st); err != nil {
		t.Fatalf("%v: %s", err, apiBody)
	}
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"broker"}, "rabbitmq"},
		{[]any{"components", "rabbitmq", "up"}, true},
		{[]any{"components", "rabbitmq", "vhost"}, vhost},
		{[]any{"components", "redis", "status"}, "not_configured"},
		{[]any{"components", "processes", "measure"}, "consumers"},
		{[]any{"components", "processes", "alive"}, 0.0},
	} {
		if got := get(st, c.path...); got != c.want {
			t.Errorf("status %v = %v, want %v", c.path, got, c.want)
		}
	}
	q := queue(t, st, "emails")
	for k, want := range map[string]any{"ready": 5.0, "in_flight": 0.0, "delayed": 2.0, "delayed_held": 0.0, "dead_letter": 3.0, "consumers": 0.0, "delay_consumers": 0.0} {
		if q[k] != want {
			t.Errorf("status emails.%s = %v, want %v", k, q[k], want)
		}
	}
	if u, _ := q["unavailable"].([]any); len(u) == 0 || u[0] != "orphaned" {
		t.Errorf("status emails.unavailable = %v", q["unavailable"])
	}
	resp, err = http.Get(e.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, "emails") {
		t.Errorf("page: %d", resp.StatusCode)
	}

	// check reads the same way and judges it: no consumer is fewer than
	// one worker process.
	res := runCheck(t, env, "--broker=rabbitmq")
	wantCode(t, res, 1)
	if got := failedChecks(res.json); len(got) != 1 || got[0] != "min_processes" {
		t.Errorf("check failed = %v, want [min_processes]\n%s", got, res.stdout)
	}
	res = runCheck(t, env, "--broker=rabbitmq", "--check.min-processes=0", "--check.max-ready=10")
	wantCode(t, res, 0)
	res = runCheck(t, env, "--broker=rabbitmq", "--check.min-processes=0", "--check.max-ready=emails=4")
	wantCode(t, res, 1)
	if got := failedChecks(res.json); len(got) != 1 || got[0] != "max_ready:emails" {
		t.Errorf("check failed = %v, want [max_ready:emails]", got)
	}
	res = runCheck(t, env, "--broker=rabbitmq", "--check.max-oldest-age=1h")
	wantCode(t, res, 2)
	for _, r := range []checkResult{res} {
		if strings.Contains(r.stdout+r.stderr, "w/rd") {
			t.Errorf("password in check output")
		}
	}

	// A user with no rights on the vhost: up 0, the reason in one line,
	// no zeros.
	env2 := []string{"RABBITMQ_URL=" + n.MgmtURL(), "RABBITMQ_USER=outsider", "RABBITMQ_PASSWORD=" + rabbitPassword, "RABBITMQ_VHOST=" + vhost}
	o := startRabbitExporter(t, env2)
	body = o.until(t, "dramatiq_rabbitmq_up 0", `dramatiq_exporter_collector_success{collector="broker"} 0`)
	if strings.Contains(body, "dramatiq_queue_") {
		t.Errorf("queue series while the vhost is refused:\n%s", grepLines(body, "dramatiq_queue_"))
	}
	lines := regexp.MustCompile(`(?m)^.*collector failed.*$`).FindAllString(o.logs.String(), -1)
	if len(lines) == 0 || !strings.Contains(lines[0], "permission entry on vhost") || !strings.Contains(lines[0], "outsider") {
		t.Errorf("no line saying why: %q", lines)
	}

	// RabbitMQ stopped: up 0 within the scrape's deadline; back: recovers.
	n.Stop()
	body, took := scrape(t, e.base+"/metrics", "3")
	if !strings.Contains(body, "dramatiq_rabbitmq_up 0\n") || took > 4*time.Second {
		t.Errorf("RabbitMQ down: took %s\n%s", took, grepLines(body, "dramatiq_rabbitmq_up"))
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	e.until(t, "dramatiq_rabbitmq_up 1", `dramatiq_queue_ready_messages{queue="emails"} 5`)

	for _, where := range []struct{ name, text string }{{"logs", e.logs.String()}, {"logs (no rights)", o.logs.String()}, {"metrics", body}, {"api", apiBody}, {"page", page}} {
		for _, piece := range []string{rabbitPassword, "w/rd", "p@ss"} {
			if strings.Contains(where.text, piece) {
				t.Errorf("%s holds a piece of the password (%q)", where.name, piece)
			}
		}
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
