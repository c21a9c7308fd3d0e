package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

//go:embed rabbitmq_fill.py
var rabbitmqFill []byte

// rabbitmqBench measures a read of a RabbitMQ vhost holding N Dramatiq
// queues (3N RabbitMQ queues, declared by real Dramatiq, with messages
// ready, delayed and dead-lettered), next to the management API requests
// it is made of and to rabbitmq_prometheus's per-queue endpoint, which is
// what a user would scrape instead.
func rabbitmqBench(sizes, python string, scrapes int, bin string) {
	fmt.Printf("\nRabbitMQ scrape benchmark: Debian's rabbitmq-server, %d scrapes per row (statistics interval 500 ms)\n\n", scrapes)
	fmt.Println("| Dramatiq queues | RabbitMQ queues | what | scrape p50 | scrape p99 | bytes read | RabbitMQ CPU / scrape |")
	fmt.Println("|---:|---:|---|---:|---:|---:|---:|")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatal(fmt.Errorf("--rabbitmq: %q is not a positive number", s))
		}
		if err := rabbitmqRun(n, python, scrapes, bin); err != nil {
			fatal(fmt.Errorf("rabbitmq, %d queues: %w", n, err))
		}
	}
}

func rabbitmqRun(queues int, python string, scrapes int, bin string) error {
	dir, err := os.MkdirTemp("", "dramatiq-bench-rabbitmq")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	progress("%d Dramatiq queues: starting rabbitmq-server", queues)
	node, err := testserver.StartRabbitMQNode(dir)
	if err != nil {
		return err
	}
	defer node.Close()

	script := filepath.Join(dir, "fill.py")
	if err := os.WriteFile(script, rabbitmqFill, 0o600); err != nil {
		return err
	}
	const ready, delayed, dead = 3, 1, 1
	progress("  filling through Dramatiq's RabbitmqBroker: %d queues, %d ready, %d delayed and %d dead letters each", queues, ready, delayed, dead)
	fill := exec.Command(python, script, node.AdminAMQPURL("/"), strconv.Itoa(queues), strconv.Itoa(ready), strconv.Itoa(delayed), strconv.Itoa(dead))
	fill.Stdout, fill.Stderr = os.Stderr, os.Stderr
	if err := fill.Run(); err != nil {
		return fmt.Errorf("%s: %w", python, err)
	}

	r, err := rabbitmq.New(rabbitmq.Options{URL: node.MgmtURL(), User: node.AdminUser, Password: node.AdminPassword, Vhost: "/", Timeout: time.Minute})
	if err != nil {
		return err
	}
	defer r.Close()
	progress("  waiting for the statistics to show every message")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s, err := r.Read(context.Background())
		if err == nil && len(s.Queues) == queues && backlog(s) == int64(queues*(ready+delayed+dead)) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the statistics never showed the messages (last error %v)", err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The node works in the background too (statistics, every 500 ms
	// here): its idle CPU rate is measured first and taken off.
	idle, err := idleCPU(node, 5*time.Second)
	if err != nil {
		return err
	}
	measure := func(what string, scrape func() (int64, error)) error {
		if _, err := scrape(); err != nil { // warm the connection
			return fmt.Errorf("%s: %w", what, err)
		}
		var took []time.Duration
		var nbytes int64
		cpu0, err := node.CPUTime()
		if err != nil {
			return err
		}
		begin := time.Now()
		for range scrapes {
			start := time.Now()
			n, err := scrape()
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			took = append(took, time.Since(start))
			nbytes = n
		}
		elapsed := time.Since(begin)
		cpu1, err := node.CPUTime()
		if err != nil {
			return err
		}
		cpu := (float64(cpu1-cpu0) - idle*float64(elapsed)) / float64(scrapes)
		sortDurations(took)
		fmt.Printf("| %d | %d | %s | %s | %s | %s | %s |\n", queues, 3*queues, what, ms(took[len(took)/2]), ms(took[len(took)*99/100]),
			bytes(float64(nbytes)), ms(time.Duration(max(cpu, 0))))
		return nil
	}
	get := func(u string, auth bool) func() (int64, error) {
		return func() (int64, error) {
			req, err := http.NewRequest(http.MethodGet, u, nil)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Accept-Encoding", "identity")
			if auth {
				req.SetBasicAuth(node.AdminUser, node.AdminPassword)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %s", u, resp.Status)
			}
			return n, err
		}
	}

	rows := []struct {
		what string
		f    func() (int64, error)
	}{
		{"reader, management API only (one listing per read)", func() (int64, error) {
			s, err := r.Read(context.Background())
			if err != nil {
				return 0, err
			}
			if len(s.Queues) != queues {
				return 0, fmt.Errorf("%d queues read, want %d", len(s.Queues), queues)
			}
			return s.ResponseBytes, nil
		}},
	}
	for _, t := range []struct {
		what     string
		interval time.Duration
	}{
		{"reader, counts from rabbitmq_prometheus, listing reused (most reads)", time.Hour},
		{"reader, counts from rabbitmq_prometheus, listing again (once per DetailsInterval)", time.Nanosecond},
	} {
		tr, err := rabbitmq.New(rabbitmq.Options{URL: node.MgmtURL(), PrometheusURL: node.PromURL(), User: node.AdminUser, Password: node.AdminPassword,
			Vhost: "/", Timeout: time.Minute, DetailsInterval: t.interval})
		if err != nil {
			return err
		}
		defer tr.Close()
		rows = append(rows, struct {
			what string
			f    func() (int64, error)
		}{t.what, func() (int64, error) {
			s, err := tr.Read(context.Background())
			if err != nil {
				return 0, err
			}
			if len(s.Queues) != queues || backlog(s) != int64(queues*(ready+delayed+dead)) {
				return 0, fmt.Errorf("%d queues read, %d messages", len(s.Queues), backlog(s))
			}
			return s.ResponseBytes, nil
		}})
	}
	// The exporter binary, as Prometheus scrapes it: the bytes are those
	// of its /metrics answer, not of what it read from RabbitMQ.
	for _, e := range []struct {
		what string
		args []string
	}{
		{"exporter /metrics, --broker=rabbitmq", nil},
		{"exporter /metrics, --broker=rabbitmq --rabbitmq.prometheus-url (listing reused)", []string{"--rabbitmq.prometheus-url", node.PromURL()}},
	} {
		u, stop, err := startRabbitExporter(bin, node, e.args)
		if err != nil {
			return fmt.Errorf("%s: %w", e.what, err)
		}
		defer stop()
		rows = append(rows, struct {
			what string
			f    func() (int64, error)
		}{e.what, get(u, false)})
	}
	mgmt := node.MgmtURL() + "/api/queues/%2F?"
	for _, v := range managementVariants {
		rows = append(rows, struct {
			what string
			f    func() (int64, error)
		}{"GET /api/queues " + v.what, get(mgmt+v.query, true)})
	}
	rows = append(rows, struct {
		what string
		f    func() (int64, error)
	}{"rabbitmq_prometheus /metrics/detailed, queue_coarse_metrics and queue_consumer_count", get(node.PromURL()+"/metrics/detailed?"+url.Values{
		"vhost": {"/"}, "family": {"queue_coarse_metrics", "queue_consumer_count"},
	}.Encode(), false)})
	for _, row := range rows {
		progress("  %s", row.what)
		if err := measure(row.what, row.f); err != nil {
			return err
		}
	}
	return nil
}

// startRabbitExporter runs the exporter binary on the node's default vhost
// and waits for a successful scrape.
func startRabbitExporter(bin string, node *testserver.RabbitMQ, extra []string) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	args := append([]string{"--broker=rabbitmq", "--rabbitmq.url", node.MgmtURL(), "--rabbitmq.user", node.AdminUser,
		"--web.listen-address", "127.0.0.1:" + strconv.Itoa(port), "--scrape.timeout", "60s", "--log.level", "warn"}, extra...)
	exp := exec.Command(bin, args...)
	exp.Env = append(os.Environ(), "RABBITMQ_PASSWORD="+node.AdminPassword)
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }
	u := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	httpc := &http.Client{Timeout: 2 * time.Minute}
	for i := 0; ; i++ {
		body, err := scrape(httpc, u)
		if err == nil && strings.Contains(body, "\ndramatiq_rabbitmq_up 1\n") {
			return u, stop, nil
		}
		if i > 300 {
			stop()
			return "", nil, fmt.Errorf("no successful scrape in a minute (%v):\n%.1000s", err, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func backlog(s *rabbitmq.Snapshot) int64 {
	var n int64
	for _, q := range s.Queues {
		n += q.Ready.N + q.InFlight.N + q.Delayed.N + q.DeadLetters.N
	}
	return n
}

// idleCPU is the node's CPU rate (CPU time per wall time) while nobody
// asks it anything.
func idleCPU(node *testserver.RabbitMQ, d time.Duration) (float64, error) {
	c0, err := node.CPUTime()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	c1, err := node.CPUTime()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(time.Since(start)), nil
}

// managementVariants are the management API's ways to list a vhost's
// queues, each measured on its own: what the reader's requests cost.
var managementVariants = []struct{ what, query string }{
	{"with statistics, every column the reader used to ask for", "columns=" + url.QueryEscape("name,type,state,arguments,messages,messages_ready,messages_unacknowledged,consumers,message_stats.publish,message_stats.deliver_get,message_stats.redeliver")},
	{"with statistics, counts and consumers only", "columns=" + url.QueryEscape("name,messages,messages_ready,messages_unacknowledged,consumers")},
	{"with statistics, redeliver only", "columns=" + url.QueryEscape("name,message_stats.redeliver")},
	{"with statistics, page 1 of 500", "page=1&page_size=500&columns=" + url.QueryEscape("name,messages,messages_ready,messages_unacknowledged,consumers")},
	{"disable_stats, enable_queue_totals, counts and consumers", "disable_stats=true&enable_queue_totals=true&columns=" + url.QueryEscape("name,messages,messages_ready,messages_unacknowledged,consumers")},
	{"disable_stats, enable_queue_totals, every column", "disable_stats=true&enable_queue_totals=true"},
	{"disable_stats, name, type, state, arguments", "disable_stats=true&columns=" + url.QueryEscape("name,type,state,arguments")},
	{"disable_stats, no columns", "disable_stats=true"},
}
