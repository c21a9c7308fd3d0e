package rabbitmq

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// promText is what rabbitmq_prometheus answers for queues (name, ready,
// unacked, consumers), in its family order.
func promText(vhost string, qs ...[4]any) string {
	var b strings.Builder
	for _, f := range []struct {
		name string
		v    func(q [4]any) any
	}{
		{"rabbitmq_detailed_queue_messages_ready", func(q [4]any) any { return q[1] }},
		{"rabbitmq_detailed_queue_messages_unacked", func(q [4]any) any { return q[2] }},
		{"rabbitmq_detailed_queue_messages", func(q [4]any) any { return q[1].(int) + q[2].(int) }},
		{"rabbitmq_detailed_queue_process_reductions_total", func(q [4]any) any { return 7781 }},
		{"rabbitmq_detailed_queue_consumers", func(q [4]any) any { return q[3] }},
	} {
		fmt.Fprintf(&b, "# TYPE %s gauge\n# HELP %s Some help\n", f.name, f.name)
		for _, q := range qs {
			fmt.Fprintf(&b, "%s{vhost=%q,queue=%q} %v\n", f.name, vhost, q[0], f.v(q))
		}
	}
	b.WriteString("# TYPE rabbitmq_build_info untyped\nrabbitmq_build_info{rabbitmq_version=\"3.10.8\"} 1\n")
	return b.String()
}

// twoEndpoints serves rabbitmq_prometheus and the management API from one
// fake server; listing counts the listings.
func twoEndpoints(t *testing.T, prom func() string, listing func() string, mod ...func(*Options)) (*Reader, *atomic.Int32, *atomic.Bool) {
	t.Helper()
	var lists atomic.Int32
	var promAuth atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			t.Errorf("%s %s", req.Method, req.URL)
		}
		switch req.URL.Path {
		case "/metrics/detailed":
			if req.Header.Get("Authorization") != "" {
				promAuth.Store(true)
			}
			if req.URL.Query().Get("vhost") != "/" || len(req.URL.Query()["family"]) != 2 {
				t.Errorf("prometheus request %s", req.URL)
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			io.WriteString(w, prom())
		case "/api/queues/%2F", "/api/queues//":
			lists.Add(1)
			if req.URL.Query().Get("columns") != detailsColumns {
				t.Errorf("listing request %s", req.URL)
			}
			io.WriteString(w, listing())
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	o := Options{URL: srv.URL, PrometheusURL: srv.URL, User: "mon", Password: secret, Vhost: "/"}
	for _, m := range mod {
		m(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, &lists, &promAuth
}

const emailsListing = `[` +
	`{"name":"emails","type":"classic","state":"running","arguments":{"x-dead-letter-exchange":"","x-dead-letter-routing-key":"emails.XQ"},"message_stats":[]},` +
	`{"name":"emails.DQ","type":"classic","state":"running","arguments":{"x-dead-letter-exchange":"","x-dead-letter-routing-key":"emails.XQ"},"message_stats":{"redeliver":4}},` +
	`{"name":"emails.XQ","type":"classic","state":"running","arguments":{"x-message-ttl":604800000}}]`

// The counts and consumers come from rabbitmq_prometheus on every read,
// the rest from a listing reused for DetailsInterval; no credentials go
// to the unauthenticated endpoint.
func TestTieredRead(t *testing.T) {
	var ready atomic.Int32
	ready.Store(5)
	r, lists, promAuth := twoEndpoints(t, func() string {
		return promText("/", [4]any{"emails", int(ready.Load()), 2, 3}, [4]any{"emails.DQ", 1, 6, 3}, [4]any{"emails.XQ", 9, 0, 0},
			[4]any{"other", 1, 0, 0}) + promText("elsewhere", [4]any{"emails", 100, 0, 0})
	}, func() string { return emailsListing }, func(o *Options) { o.DetailsInterval = time.Hour })
	for i, want := range []int64{5, 8} {
		ready.Store(int32(want))
		s, _, err := readWithin(t, r, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Queues) != 1 || s.RabbitMQQueues != 4 || s.Ignored != 1 {
			t.Fatalf("read %d: %+v", i, s)
		}
		q := s.Queues[0]
		for name, c := range map[string]struct {
			got  Count
			want int64
		}{
			"ready": {q.Ready, want}, "inflight": {q.InFlight, 2}, "delayed": {q.Delayed, 7}, "held": {q.DelayedHeld, 6},
			"dead": {q.DeadLetters, 9}, "consumers": {q.Consumers, 3}, "delay consumers": {q.DelayConsumers, 3},
			"redeliveries": {q.Redeliveries, 0}, "delay redeliveries": {q.DelayRedeliveries, 4}, "ttl": {q.Dead.MessageTTL, 604800000},
		} {
			if c.got != (Count{c.want, true}) {
				t.Errorf("read %d: %s %+v, want %d", i, name, c.got, c.want)
			}
		}
		if len(q.Problems) != 0 || q.Main.Type != "classic" {
			t.Errorf("read %d: problems %q, type %q", i, q.Problems, q.Main.Type)
		}
		if i == 1 && s.DetailsAge <= 0 {
			t.Errorf("details age %s on a reused listing", s.DetailsAge)
		}
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d listings in two reads within the interval, want 1", n)
	}
	if promAuth.Load() {
		t.Error("credentials were sent to rabbitmq_prometheus")
	}
}

// A queue the listing does not know forces a new listing, but not more
// often than minDetailsRefresh; until it is listed its arguments are
// unknown, not reported as problems; a deleted queue goes at once.
func TestTieredNewAndDeletedQueues(t *testing.T) {
	defer func(d time.Duration) { minDetailsRefresh = d }(minDetailsRefresh)
	minDetailsRefresh = 300 * time.Millisecond
	var phase atomic.Int32
	r, lists, _ := twoEndpoints(t, func() string {
		qs := [][4]any{{"emails", 1, 0, 1}, {"emails.DQ", 0, 0, 1}, {"emails.XQ", 0, 0, 0}}
		if phase.Load() >= 1 {
			qs = append(qs, [4]any{"sms", 2, 0, 0}, [4]any{"sms.DQ", 0, 0, 0}, [4]any{"sms.XQ", 0, 0, 0})
		}
		if phase.Load() >= 2 {
			qs = qs[3:]
		}
		return promText("/", qs...)
	}, func() string { return emailsListing }, func(o *Options) { o.DetailsInterval = time.Hour })
	read := func() *Snapshot {
		t.Helper()
		s, _, err := readWithin(t, r, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	read()
	phase.Store(1)
	s := read() // within minDetailsRefresh of the first listing
	sms := find(s, "sms")
	if sms == nil || sms.Ready != (Count{2, true}) || len(sms.Problems) != 0 || sms.Main.Type != "" {
		t.Fatalf("sms before its listing: %+v", sms)
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d listings before minDetailsRefresh, want 1", n)
	}
	time.Sleep(400 * time.Millisecond)
	read() // lists: sms is unknown
	read() // the listing still lacks sms, but is too recent
	if n := lists.Load(); n != 2 {
		t.Errorf("%d listings, want 2 (the first, then one for the new queue)", n)
	}
	phase.Store(2)
	if s := read(); find(s, "emails") != nil || find(s, "sms") == nil {
		t.Errorf("after the deletion: %+v", s.Queues)
	}
}

// A failed listing fails the read (up 0), never zeros; a failed counts
// answer too.
func TestTieredFailures(t *testing.T) {
	for name, tc := range map[string]struct {
		prom, listing string
		want          string
	}{
		"listing 500":    {promText("/", [4]any{"q", 1, 0, 0}), "", "500"},
		"html page":      {"<html><body>hello</body></html>\n", emailsListing, "malformed"},
		"no families":    {"# TYPE up gauge\nup 1\n", emailsListing, "not rabbitmq_prometheus"},
		"negative":       {promText("/", [4]any{"q", -1, 0, 0}), emailsListing, "non-negative"},
		"listed twice":   {promText("/", [4]any{"q", 1, 0, 0}, [4]any{"q", 1, 0, 0}), emailsListing, "listed twice"},
		"bad escape":     {promText("/", [4]any{"q", 1, 0, 0}) + `rabbitmq_detailed_queue_consumers{vhost="/",queue="a\x"} 1` + "\n", emailsListing, "escape"},
		"no queue label": {promText("/") + `rabbitmq_detailed_queue_consumers{vhost="/"} 1` + "\n", emailsListing, "labels"},
		"long line":      {promText("/") + "x" + strings.Repeat("y", 10000) + " 1\n", emailsListing, "longer than"},
	} {
		t.Run(name, func(t *testing.T) {
			r, _, _ := twoEndpoints(t, func() string { return tc.prom }, func() string {
				if tc.listing == "" {
					panic(http.ErrAbortHandler)
				}
				return tc.listing
			})
			s, _, err := readWithin(t, r, 5*time.Second)
			if err == nil || s != nil {
				t.Fatalf("%+v, %v; want an error", s, err)
			}
			if tc.want != "500" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			noSecret(t, err)
		})
	}
}

func TestTieredWrongContentType(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.google.protobuf")
		io.WriteString(w, promText("/"))
	}))
	defer srv.Close()
	r, err := New(Options{URL: srv.URL, PrometheusURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, err := readWithin(t, r, 5*time.Second); err == nil || !strings.Contains(err.Error(), "not the Prometheus text format") {
		t.Fatalf("error %v", err)
	}
}

func TestPrometheusURLRefused(t *testing.T) {
	for _, u := range []string{"http://u:p@127.0.0.1:1", "amqp://127.0.0.1", "http://", "http://h/?x=1"} {
		if _, err := New(Options{URL: "http://127.0.0.1:1", PrometheusURL: u}); err == nil {
			t.Errorf("%q accepted", u)
		} else if strings.Contains(err.Error(), ":p@") {
			t.Errorf("%q: error shows the password: %v", u, err)
		}
	}
}

// Against a real node: the counts read through rabbitmq_prometheus equal
// those of a full listing, with the same problems and types.
func TestRealTieredMatchesListing(t *testing.T) {
	n := realNode(t)
	n.PutVhost(t, "tiered")
	declareDramatiq(t, n, "tiered", "emails")
	n.Publish(t, "tiered", "emails", "x", 3)
	n.Publish(t, "tiered", "emails.DQ", "x", 2)
	n.Publish(t, "tiered", "emails.XQ", "x", 1)
	n.DeclareQueue(t, "tiered", "odd", map[string]any{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "odd.XQ", "x-message-ttl": 60000})
	n.DeclareQueue(t, "tiered", "odd.DQ", nil)
	n.DeclareQueue(t, "tiered", "celery", nil)
	full := reader(t, n, n.AdminUser, n.AdminPassword, "tiered")
	tiered, err := New(Options{URL: n.MgmtURL(), PrometheusURL: n.PromURL(), User: n.AdminUser, Password: n.AdminPassword, Vhost: "tiered"})
	if err != nil {
		t.Fatal(err)
	}
	defer tiered.Close()
	want := until(t, full, "emails 3 ready, 2 delayed, 1 dead", func(s *Snapshot) bool {
		q := find(s, "emails")
		return q != nil && q.Ready == Count{3, true} && q.Delayed == Count{2, true} && q.DeadLetters == Count{1, true}
	})
	got := until(t, tiered, "the same through rabbitmq_prometheus", func(s *Snapshot) bool {
		return reflect.DeepEqual(s.Queues, want.Queues) && s.Ignored == want.Ignored && s.RabbitMQQueues == want.RabbitMQQueues
	})
	if got.ResponseBytes == 0 {
		t.Error("no bytes counted")
	}
}

// FuzzDecodePromCounts feeds arbitrary answers to the Prometheus text
// decoder and the fold: whatever it accepts holds only valid names and
// non-negative counts, and every queue is accounted for once.
func FuzzDecodePromCounts(f *testing.F) {
	f.Add([]byte(promText("/", [4]any{"emails", 5, 2, 3}, [4]any{"emails.DQ", 1, 6, 3}, [4]any{"emails.XQ", 9, 0, 0})))
	f.Add([]byte(promText("/", [4]any{"a\"b\\n", 1, 0, 0}, [4]any{"\xff", 1, 0, 0})))
	f.Add([]byte(promProof + "\nrabbitmq_detailed_queue_messages{queue=\"q\",vhost=\"/\"} 1e3 1700000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		queues, anomalies, err := decodePromCounts(bytes.NewReader(data), "/", 1000)
		if err != nil {
			return
		}
		if len(queues) > 1000 || anomalies > 1000 {
			t.Fatalf("%d queues, %d anomalies past the cap", len(queues), anomalies)
		}
		for name, q := range queues {
			if name != q.name || !utf8.ValidString(name) || name == "" || len(name) > MaxNameBytes {
				t.Fatalf("queue name %q", name)
			}
			for _, c := range []Count{q.messages, q.ready, q.unacked, q.consumers} {
				if c.OK && c.N < 0 {
					t.Fatalf("%q: negative count", name)
				}
			}
		}
		out, ignored := fold(queues)
		members := 0
		for _, q := range out {
			if !ValidQueueName(q.Name) || len(q.Problems) > 17 {
				t.Fatalf("%+v", q)
			}
			for _, m := range []Member{q.Main, q.Delay, q.Dead} {
				if m.Exists {
					members++
				}
			}
		}
		if members+ignored != len(queues) {
			t.Fatalf("%d queues, %d reported + %d ignored", len(queues), members, ignored)
		}
	})
}

// Label values are unescaped as the text format says; a name that is not
// UTF-8 is an anomaly, not a queue.
func TestPromEscapes(t *testing.T) {
	text := promProof + "\n" +
		`rabbitmq_detailed_queue_messages_ready{vhost="/",queue="a\"b\\c\nd"} 4` + "\n" +
		`rabbitmq_detailed_queue_messages_ready{queue="plain", vhost="/"} 1.5e1 1700000000000` + "\n" +
		"rabbitmq_detailed_queue_messages_ready{vhost=\"/\",queue=\"\xff\"} 1\n" +
		`rabbitmq_detailed_queue_messages_ready{vhost="/other",queue="elsewhere"} 1` + "\n"
	queues, anomalies, err := decodePromCounts(strings.NewReader(text), "/", 10)
	if err != nil {
		t.Fatal(err)
	}
	if q := queues["a\"b\\c\nd"]; q == nil || q.ready != (Count{4, true}) || q.consumers.OK {
		t.Errorf("escaped name: %+v", queues)
	}
	if q := queues["plain"]; q == nil || q.ready != (Count{15, true}) {
		t.Errorf("plain: %+v", q)
	}
	if len(queues) != 2 || anomalies != 1 {
		t.Errorf("%d queues, %d anomalies", len(queues), anomalies)
	}
}

// While one read lists, concurrent reads keep the last listing instead of
// waiting for it; the first read of all waits, as it has none.
func TestTieredConcurrentReadsDoNotWait(t *testing.T) {
	release := make(chan struct{})
	var slow atomic.Bool
	r, lists, _ := twoEndpoints(t, func() string {
		return promText("/", [4]any{"emails", 1, 0, 0}, [4]any{"emails.DQ", 0, 0, 0}, [4]any{"emails.XQ", 0, 0, 0})
	}, func() string {
		if slow.Load() {
			<-release
		}
		return emailsListing
	}, func(o *Options) { o.DetailsInterval = 50 * time.Millisecond })
	if _, _, err := readWithin(t, r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	slow.Store(true)
	done := make(chan error, 1)
	go func() { _, _, err := readWithin(t, r, 10*time.Second); done <- err }()
	for lists.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	s, took, err := readWithin(t, r, 5*time.Second)
	if err != nil || len(s.Queues) != 1 || s.DetailsAge < 100*time.Millisecond {
		t.Errorf("a read during a listing: %+v, %v", s, err)
	}
	if took > 2*time.Second {
		t.Errorf("a read during a listing waited %s", took)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
