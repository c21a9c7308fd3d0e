package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// --rabbitmq.prometheus-url: the same exact numbers as a listing gives,
// with the counts read from rabbitmq_prometheus; a prometheus URL nobody
// answers is up 0 with a line that names it, never zeros.
func TestRabbitMQPrometheusURLEndToEnd(t *testing.T) {
	n := testserver.StartRabbitMQ(t)
	n.PutUser(t, "watcher", rabbitPassword, "monitoring")
	n.SetPermissions(t, "/", "watcher", "", "", "")
	declareDramatiqQueues(t, n, "/", "emails")
	n.Publish(t, "/", "emails", `{"queue_name":"emails"}`, 4)
	n.Publish(t, "/", "emails.DQ", `{"queue_name":"emails.DQ"}`, 2)
	n.Publish(t, "/", "emails.XQ", `{"queue_name":"emails.XQ"}`, 1)

	env := []string{"RABBITMQ_URL=" + n.MgmtURL(), "RABBITMQ_USER=watcher", "RABBITMQ_PASSWORD=" + rabbitPassword,
		"RABBITMQ_PROMETHEUS_URL=" + n.PromURL()}
	e := startRabbitExporter(t, env)
	e.until(t,
		"dramatiq_rabbitmq_up 1",
		`dramatiq_queue_ready_messages{queue="emails"} 4`,
		`dramatiq_queue_delayed_messages{queue="emails"} 2`,
		`dramatiq_queue_dead_letter_messages{queue="emails"} 1`,
		`dramatiq_queue_consumers{queue="emails"} 0`,
		`dramatiq_rabbitmq_queue_info{member="main",queue="emails",type="classic"} 1`,
		`dramatiq_rabbitmq_queue_layout_problems{queue="emails"} 0`,
	)

	closed := "http://127.0.0.1:" + strconv.Itoa(testserver.FreePort(t))
	bad := startRabbitExporter(t, append(env[:3:3], "RABBITMQ_PROMETHEUS_URL="+closed))
	body := bad.until(t, "dramatiq_rabbitmq_up 0")
	if strings.Contains(body, "dramatiq_queue_ready_messages{") {
		t.Errorf("queue series while up 0:\n%s", grepLines(body, "dramatiq_queue_"))
	}
	// The failed read is logged as the scrape is answered, not before:
	// give the line a moment to land.
	logs := bad.logs.String()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs, "/metrics/detailed") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		logs = bad.logs.String()
	}
	if !strings.Contains(logs, "/metrics/detailed") || strings.Contains(logs, rabbitPassword) {
		t.Errorf("logs do not name the endpoint, or hold the password:\n%s", logs)
	}
}
