package rabbitmq

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// One node for the package's tests against real RabbitMQ (a start costs
// about 9 s); started on first use, stopped in TestMain.
var (
	nodeOnce sync.Once
	node     *testserver.RabbitMQ
	nodeErr  error
	nodeDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if node != nil {
		node.Close()
	}
	if nodeDir != "" {
		os.RemoveAll(nodeDir)
	}
	os.Exit(code)
}

func realNode(t testing.TB) *testserver.RabbitMQ {
	t.Helper()
	testserver.LookPath(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin")
	nodeOnce.Do(func() {
		nodeDir, nodeErr = os.MkdirTemp("", "rabbitmq-reader-")
		if nodeErr == nil {
			node, nodeErr = testserver.StartRabbitMQNode(nodeDir)
		}
	})
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return node
}

// declareDramatiq declares q, q.DQ and q.XQ with Dramatiq's arguments, as
// its broker does, through the admin user.
func declareDramatiq(t testing.TB, n *testserver.RabbitMQ, vhost, q string) {
	t.Helper()
	dl := map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q + ".XQ"}
	n.DeclareQueue(t, vhost, q, dl)
	n.DeclareQueue(t, vhost, q+".DQ", dl)
	n.DeclareQueue(t, vhost, q+".XQ", map[string]any{"x-message-ttl": 604800000})
}

func reader(t testing.TB, n *testserver.RabbitMQ, user, pw, vhost string) *Reader {
	t.Helper()
	r, err := New(Options{URL: n.MgmtURL(), User: user, Password: pw, Vhost: vhost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// until reads until ok accepts the snapshot (the management API lags by
// its statistics interval), failing after a generous deadline.
func until(t *testing.T, r *Reader, what string, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last *Snapshot
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := r.Read(ctx)
		cancel()
		if err == nil && ok(s) {
			return s
		}
		last, lastErr = s, err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: never seen; last %+v, %v", what, last, lastErr)
	return nil
}

func find(s *Snapshot, name string) *Queue {
	for i := range s.Queues {
		if s.Queues[i].Name == name {
			return &s.Queues[i]
		}
	}
	return nil
}

// A user with only the monitoring tag and a permission entry that grants
// nothing reads the default vhost; another application's queue is ignored;
// a queue Dramatiq would not have declared is reported with its problems.
func TestRealMonitoringUser(t *testing.T) {
	n := realNode(t)
	n.PutUser(t, "mon", "mon-pw", "monitoring")
	n.SetPermissions(t, "/", "mon", "", "", "")
	declareDramatiq(t, n, "/", "emails")
	n.Publish(t, "/", "emails", `{"queue_name":"emails"}`, 3)
	n.Publish(t, "/", "emails.DQ", `{"queue_name":"emails.DQ"}`, 2)
	n.DeclareQueue(t, "/", "celery", nil)
	n.Publish(t, "/", "celery", "x", 1)
	// Made by hand: no dead-letter route on q.DQ, a TTL on q, a quorum q.XQ.
	n.DeclareQueue(t, "/", "odd", map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "odd.XQ", "x-message-ttl": 60000})
	n.DeclareQueue(t, "/", "odd.DQ", nil)
	n.DeclareQueue(t, "/", "odd.XQ", map[string]any{"x-queue-type": "quorum"})

	r := reader(t, n, "mon", "mon-pw", "/")
	s := until(t, r, "emails 3 ready, 2 delayed", func(s *Snapshot) bool {
		q := find(s, "emails")
		return q != nil && q.Ready == Count{3, true} && q.Delayed == Count{2, true} && q.DeadLetters == Count{0, true}
	})
	if find(s, "celery") != nil || s.Ignored < 1 {
		t.Errorf("celery reported or not counted as ignored: %+v", s)
	}
	if q := find(s, "emails"); len(q.Problems) != 0 || q.Main.Type != "classic" || q.Dead.MessageTTL != (Count{604800000, true}) {
		t.Errorf("emails: %+v", q)
	}
	odd := find(s, "odd")
	if odd == nil {
		t.Fatal("odd not reported")
	}
	for _, want := range []string{"odd: x-message-ttl is set (60000 ms)", "odd.DQ: no x-dead-letter-routing-key", "odd.XQ: no x-message-ttl"} {
		if !hasProblem(*odd, want) {
			t.Errorf("odd: no problem %q in %q", want, odd.Problems)
		}
	}
	if odd.Dead.Type != "quorum" {
		t.Errorf("odd.XQ type %q, want quorum", odd.Dead.Type)
	}
}

// A user without rights gets an error that says why, never zeros.
func TestRealRefused(t *testing.T) {
	n := realNode(t)
	n.PutVhost(t, "closed")
	n.PutUser(t, "outsider", "o-pw", "monitoring") // no permission entry on "closed"
	n.PutUser(t, "plain", "p-pw", "")              // no management tag
	for _, tc := range []struct{ user, pw, vhost, want string }{
		{"outsider", "o-pw", "closed", `needs a permission entry on vhost "closed"`},
		{"plain", "p-pw", "/", "needs the monitoring tag"},
		{"outsider", "wrong", "/", "check the user and password"},
		{n.AdminUser, n.AdminPassword, "no-such-vhost", `no vhost "no-such-vhost"`},
	} {
		r := reader(t, n, tc.user, tc.pw, tc.vhost)
		s, err := r.Read(context.Background())
		if err == nil || s != nil {
			t.Errorf("%s on %s: %+v, %v; want an error", tc.user, tc.vhost, s, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s on %s: %q does not say %q", tc.user, tc.vhost, err, tc.want)
		}
		if strings.Contains(err.Error(), tc.pw) {
			t.Errorf("error holds the password: %q", err)
		}
	}
}

// Stopped, the node gives an error at once; restarted, the same reader
// reads again.
func TestRealRestart(t *testing.T) {
	n := realNode(t)
	n.PutVhost(t, "restart")
	declareDramatiq(t, n, "restart", "jobs")
	n.Publish(t, "restart", "jobs", "x", 4)
	r := reader(t, n, n.AdminUser, n.AdminPassword, "restart")
	until(t, r, "4 ready", func(s *Snapshot) bool {
		q := find(s, "jobs")
		return q != nil && q.Ready == Count{4, true}
	})
	n.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	start := time.Now()
	s, err := r.Read(ctx)
	cancel()
	if err == nil || s != nil {
		t.Fatalf("stopped node: %+v, %v", s, err)
	}
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Errorf("a stopped node took %s to fail", took)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	until(t, r, "4 ready after the restart (durable queue, persistent messages)", func(s *Snapshot) bool {
		q := find(s, "jobs")
		return q != nil && q.Ready == Count{4, true}
	})
}

// BenchmarkRead measures one read of a vhost holding N Dramatiq queues
// (3N RabbitMQ queues), each with a message ready: time per read and the
// bytes of the answer (reported as answer-bytes/op).
//
//	go test ./broker/rabbitmq -run '^$' -bench Read -benchtime 20x
func BenchmarkRead(b *testing.B) {
	n := realNode(b)
	for _, size := range []int{100, 1000} {
		vhost := fmt.Sprintf("bench-%d", size)
		n.PutVhost(b, vhost)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range size {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				q := fmt.Sprintf("queue_%04d", i)
				declareDramatiq(b, n, vhost, q)
				n.Publish(b, vhost, q, "x", 1)
			}()
		}
		wg.Wait()
		r, err := New(Options{URL: n.MgmtURL(), User: n.AdminUser, Password: n.AdminPassword, Vhost: vhost})
		if err != nil {
			b.Fatal(err)
		}
		// Wait until statistics show every message.
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, err := r.Read(context.Background())
			ready := 0
			if err == nil {
				for _, q := range s.Queues {
					ready += int(q.Ready.N)
				}
			}
			if ready == size {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d queues: %d ready, %v", size, ready, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		b.Run(fmt.Sprintf("queues=%d/reader", size), func(b *testing.B) {
			var bytes int64
			cpu0, _ := n.CPUTime()
			for b.Loop() {
				s, err := r.Read(context.Background())
				if err != nil || len(s.Queues) != size {
					b.Fatalf("%v", err)
				}
				bytes = s.ResponseBytes
			}
			cpu1, _ := n.CPUTime()
			b.ReportMetric(float64(bytes), "answer-bytes/op")
			b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(b.N), "rabbitmq-cpu-ms/op")
		})
		// The same list without statistics (no consumers, no counts):
		// what a reader would pay for names, types and arguments alone.
		bare := n.MgmtURL() + "/api/queues/" + url.PathEscape(vhost) + "?columns=name,type,arguments&disable_stats=true"
		b.Run(fmt.Sprintf("queues=%d/management-disable_stats", size), func(b *testing.B) {
			var bytes int64
			cpu0, _ := n.CPUTime()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, bare, nil)
				req.SetBasicAuth(n.AdminUser, n.AdminPassword)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				bytes, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("%s: %v", resp.Status, err)
				}
			}
			cpu1, _ := n.CPUTime()
			b.ReportMetric(float64(bytes), "answer-bytes/op")
			b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(b.N), "rabbitmq-cpu-ms/op")
		})
		// What a user would scrape instead: rabbitmq_prometheus's
		// per-queue counts and consumers for the same vhost.
		prom := n.PromURL() + "/metrics/detailed?vhost=" + url.QueryEscape(vhost) + "&family=queue_coarse_metrics&family=queue_consumer_count"
		b.Run(fmt.Sprintf("queues=%d/rabbitmq_prometheus", size), func(b *testing.B) {
			var bytes int64
			cpu0, _ := n.CPUTime()
			for b.Loop() {
				resp, err := http.Get(prom)
				if err != nil {
					b.Fatal(err)
				}
				bytes, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("%s: %v", resp.Status, err)
				}
			}
			cpu1, _ := n.CPUTime()
			b.ReportMetric(float64(bytes), "answer-bytes/op")
			b.ReportMetric(float64((cpu1-cpu0).Milliseconds())/float64(b.N), "rabbitmq-cpu-ms/op")
		})
		r.Close()
		// The vhost stays: deleting 3,000 queues takes longer than the
		// helper's request deadline, and the node goes at the end.
	}
}
