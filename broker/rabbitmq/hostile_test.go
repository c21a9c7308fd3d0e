package rabbitmq

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const secret = "s3cr3t-Pa55"

// fake serves h as the management API and returns a Reader for it.
func fake(t *testing.T, h http.HandlerFunc, mod ...func(*Options)) *Reader {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	o := Options{URL: srv.URL, User: "mon", Password: secret, Vhost: "/"}
	for _, m := range mod {
		m(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func readWithin(t *testing.T, r *Reader, d time.Duration) (*Snapshot, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	s, err := r.Read(ctx)
	return s, time.Since(start), err
}

func noSecret(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	b64 := base64.StdEncoding.EncodeToString([]byte("mon:" + secret))
	if strings.Contains(msg, secret) || strings.Contains(msg, b64) {
		t.Errorf("error text holds the secret: %q", msg)
	}
	if len(msg) > maxErrorText+4 {
		t.Errorf("error text is %d bytes long", len(msg))
	}
}

// A peer that answers with an error status gives an error naming the
// status and why, never a snapshot, and never the password, even when the
// peer echoes the request's credentials back.
func TestStatusErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{401, `{"error":"not_authorised","reason":"Login failed"}`, "check the user and password"},
		{401, `{"error":"not_authorised","reason":"User not authorised to access virtual host"}`, "needs a permission entry on vhost"},
		{401, `{"error":"not_authorised","reason":"Not management user"}`, "needs the monitoring tag"},
		{403, `forbidden`, "403 Forbidden"},
		{404, `{"error":"Object Not Found","reason":"Not Found"}`, `no vhost "/"`},
		{500, `{"error":"internal","reason":"ECHO"}`, "500 Internal Server Error"},
		{502, strings.Repeat("x", 1<<20), "502 Bad Gateway"},
		{302, ``, "redirects are not followed"},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			r := fake(t, func(w http.ResponseWriter, req *http.Request) {
				body := strings.ReplaceAll(tc.body, "ECHO", req.Header.Get("Authorization")+" "+secret)
				if tc.status == 302 {
					w.Header().Set("Location", "http://127.0.0.2:1/steal")
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, body)
			})
			s, _, err := readWithin(t, r, 5*time.Second)
			if err == nil || s != nil {
				t.Fatalf("got %+v, %v; want an error", s, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			noSecret(t, err)
		})
	}
}

// A redirect is never followed, so the credentials never reach another
// host.
func TestRedirectNotFollowed(t *testing.T) {
	var stolen atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Add(1)
		io.WriteString(w, "[]")
	}))
	defer other.Close()
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, other.URL+"/api/queues/%2F", http.StatusTemporaryRedirect)
	})
	if _, _, err := readWithin(t, r, 5*time.Second); err == nil {
		t.Fatal("a redirect was read as an answer")
	}
	if stolen.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}

// Only GETs, with the reader's columns, on the escaped vhost path.
func TestRequestShape(t *testing.T) {
	var got *http.Request
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		got = req.Clone(context.Background())
		io.WriteString(w, "[]")
	}, func(o *Options) { o.Vhost = "a/b c" })
	if _, _, err := readWithin(t, r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got.Method != http.MethodGet || got.URL.EscapedPath() != "/api/queues/a%2Fb%20c" || got.URL.Query().Get("columns") != columns {
		t.Errorf("request %s %s", got.Method, got.URL.String())
	}
	if u, p, ok := got.BasicAuth(); !ok || u != "mon" || p != secret {
		t.Errorf("basic auth %q %q %v", u, p, ok)
	}
}

// A slow peer (no headers, or a body that trickles) fails within the
// caller's deadline.
func TestSlowPeer(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	for name, h := range map[string]http.HandlerFunc{
		"no headers": func(w http.ResponseWriter, req *http.Request) {
			select {
			case <-release:
			case <-req.Context().Done():
			}
		},
		"trickle": func(w http.ResponseWriter, req *http.Request) {
			io.WriteString(w, "[")
			for {
				if _, err := io.WriteString(w, `{"name":"q","messages":1},`); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-release:
					return
				case <-req.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := fake(t, h)
			_, took, err := readWithin(t, r, 500*time.Millisecond)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q is not the deadline", err)
			}
			if took > 3*time.Second {
				t.Errorf("took %s past a 500 ms deadline", took)
			}
			noSecret(t, err)
		})
	}
}

// An endless answer stops at the byte cap with an error, and memory stays
// near the cap however much the peer would send.
func TestHugeAnswer(t *testing.T) {
	const limit = 4 << 20
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "[")
		chunk := strings.Repeat(`{"name":"q.x","messages":1,"arguments":{"k":"`+strings.Repeat("v", 200)+`"}},`, 100)
		for i := 0; i < 1<<20; i++ { // up to about 24 GB
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}, func(o *Options) { o.MaxResponseBytes = limit })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, took, err := readWithin(t, r, 30*time.Second)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want the size cap", err)
	}
	if took > 20*time.Second {
		t.Errorf("took %s", took)
	}
	// TotalAlloc counts every allocation: a reader that buffered the answer
	// would have allocated at least the cap several times over.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("allocated %d MiB reading a %d MiB-capped answer", alloc>>20, limit>>20)
	}
}

// One element larger than the cap is refused too (the decoder buffers one
// value).
func TestHugeElement(t *testing.T) {
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, `[{"name":"`)
		for range 1 << 10 {
			if _, err := io.WriteString(w, strings.Repeat("a", 16<<10)); err != nil {
				return
			}
		}
		io.WriteString(w, `"}]`)
	}, func(o *Options) { o.MaxResponseBytes = 1 << 20 })
	if _, _, err := readWithin(t, r, 10*time.Second); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want the size cap", err)
	}
}

func TestTooManyQueues(t *testing.T) {
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "[")
		for i := range 11 {
			fmt.Fprintf(w, `{"name":"q%d"},`, i)
		}
		io.WriteString(w, `{"name":"z"}]`)
	}, func(o *Options) { o.MaxQueues = 10 })
	if _, _, err := readWithin(t, r, 5*time.Second); err == nil || !strings.Contains(err.Error(), "more than 10 queues") {
		t.Fatalf("error %v", err)
	}
}

// Every malformed answer is an error, never a snapshot of zeros.
func TestMalformed(t *testing.T) {
	for _, body := range []string{
		``, `{}`, `null`, `"x"`, `[`, `[{"name":"q"}`, `[{"name":"q"}]]`, `[{"name":"q"}] []`,
		`[{"name":1}]`, `[{"messages":1}]`, `[{"name":"q","messages":"1"}]`, `[{"name":"q","messages":1.5}]`,
		`[{"name":"q","messages":-1}]`, `[{"name":"q","messages_ready":1e400}]`, `[{"name":"q","consumers":{}}]`,
		`[{"name":"q","message_stats":{"redeliver":-3}}]`, `[{"name":"q","arguments":[]}]`, `[1]`, `[null]`,
		`{"items":[],"page":1}`, "\xff\xfe[]",
	} {
		r := fake(t, func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, body) })
		s, _, err := readWithin(t, r, 5*time.Second)
		if err == nil {
			t.Errorf("%q: no error, snapshot %+v", body, s)
			continue
		}
		noSecret(t, err)
	}
}

// serve answers body to every request.
func serve(t *testing.T, body string) *Snapshot {
	t.Helper()
	r := fake(t, func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, body) })
	s, _, err := readWithin(t, r, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const dlArgs = `{"x-dead-letter-exchange":"","x-dead-letter-routing-key":"%s.XQ"}`

func dramatiqQueues(name string, ready, unacked, dqReady, dqUnacked, xq int) string {
	a := fmt.Sprintf(dlArgs, name)
	return fmt.Sprintf(`{"name":%q,"type":"classic","state":"running","arguments":%s,"messages":%d,"messages_ready":%d,"messages_unacknowledged":%d,"consumers":2,"message_stats":{"publish":9}},`+
		`{"name":"%s.DQ","type":"classic","arguments":%s,"messages":%d,"messages_ready":%d,"messages_unacknowledged":%d,"consumers":2,"message_stats":{"redeliver":7}},`+
		`{"name":"%s.XQ","type":"classic","arguments":{"x-message-ttl":604800000},"messages":%d,"messages_ready":%d,"messages_unacknowledged":0,"consumers":0}`,
		name, a, ready+unacked, ready, unacked, name, a, dqReady+dqUnacked, dqReady, dqUnacked, name, xq, xq)
}

func TestFold(t *testing.T) {
	s := serve(t, "["+dramatiqQueues("emails", 5, 2, 3, 4, 6)+"]")
	if len(s.Queues) != 1 || s.RabbitMQQueues != 3 || s.Ignored != 0 || s.Anomalies != 0 {
		t.Fatalf("%+v", s)
	}
	q := s.Queues[0]
	for name, c := range map[string]struct {
		got  Count
		want int64
	}{
		"ready": {q.Ready, 5}, "inflight": {q.InFlight, 2}, "delayed": {q.Delayed, 7}, "held": {q.DelayedHeld, 4},
		"dead": {q.DeadLetters, 6}, "consumers": {q.Consumers, 2}, "delay consumers": {q.DelayConsumers, 2},
		"redeliveries": {q.Redeliveries, 0}, "delay redeliveries": {q.DelayRedeliveries, 7}, "ttl": {q.Dead.MessageTTL, 604800000},
	} {
		if !c.got.OK || c.got.N != c.want {
			t.Errorf("%s: %+v, want %d", name, c.got, c.want)
		}
	}
	if len(q.Problems) != 0 || q.Main.MaxPriority.OK {
		t.Errorf("problems %q, max priority %+v", q.Problems, q.Main.MaxPriority)
	}
}

// A count RabbitMQ left out (statistics not collected yet) is absent, not
// zero, and so is everything built on it; so are message statistics.
func TestMissingCountsAreAbsent(t *testing.T) {
	a := fmt.Sprintf(dlArgs, "q")
	s := serve(t, `[{"name":"q","arguments":`+a+`},{"name":"q.DQ","arguments":`+a+`,"messages_ready":1},{"name":"q.XQ","arguments":{"x-message-ttl":1}}]`)
	q := s.Queues[0]
	for name, c := range map[string]Count{"ready": q.Ready, "inflight": q.InFlight, "delayed": q.Delayed, "held": q.DelayedHeld, "dead": q.DeadLetters, "consumers": q.Consumers, "redeliveries": q.DelayRedeliveries} {
		if c.OK {
			t.Errorf("%s: %+v, want absent", name, c)
		}
	}
}

// What is a Dramatiq queue and what is ignored, and which names are
// anomalies.
func TestClassify(t *testing.T) {
	long := strings.Repeat("a", 300)
	s := serve(t, "["+strings.Join([]string{
		dramatiqQueues("ok", 1, 0, 0, 0, 0),
		`{"name":"celery","messages_ready":4}`,                                               // another application's queue
		`{"name":"lonely.XQ","messages":4,"arguments":{"x-message-ttl":1}}`,                  // a lone .XQ
		`{"name":"orders","messages":1},{"name":"orders.XQ","messages":2}`,                   // two of three: Dramatiq's, q.DQ missing
		`{"name":"solo","arguments":` + fmt.Sprintf(dlArgs, "solo") + `,"messages_ready":3}`, // routes to solo.XQ: Dramatiq's
		`{"name":"bad name","messages":1},{"name":"bad name.DQ","messages":1}`,               // not Dramatiq's pattern: ignored
		`{"name":"` + long + `","messages":1}`,                                               // too long: anomaly
		"{\"name\":\"\xff\xfe\",\"messages\":1}",                                             // not UTF-8: anomaly
		`{"name":"ok","messages":99}`,                                                        // listed twice: anomaly
	}, ",")+"]")
	var names []string
	for _, q := range s.Queues {
		names = append(names, q.Name)
	}
	if strings.Join(names, ",") != "ok,orders,solo" {
		t.Errorf("queues %v", names)
	}
	if s.Ignored != 4 || s.Anomalies != 3 || s.RabbitMQQueues != 13 {
		t.Errorf("ignored %d, anomalies %d, listed %d", s.Ignored, s.Anomalies, s.RabbitMQQueues)
	}
	for _, q := range s.Queues {
		switch q.Name {
		case "ok":
			if q.Ready.N != 1 {
				t.Errorf("ok: the duplicate replaced the first: %+v", q.Ready)
			}
		case "orders":
			if q.Delayed.OK || !q.DeadLetters.OK || q.DeadLetters.N != 2 || !hasProblem(q, "orders.DQ is missing") {
				t.Errorf("orders: %+v", q)
			}
		case "solo":
			if !q.Ready.OK || q.Ready.N != 3 || q.DeadLetters.OK || !hasProblem(q, "solo.XQ is missing") {
				t.Errorf("solo: %+v", q)
			}
		}
	}
}

func hasProblem(q Queue, sub string) bool {
	for _, p := range q.Problems {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

// Arguments Dramatiq would not have declared are reported, with foreign
// values clipped and made printable.
func TestArgumentProblems(t *testing.T) {
	hostile := strings.Repeat(`\u0001z`, 200)
	s := serve(t, `[`+
		`{"name":"w","arguments":{"x-dead-letter-exchange":"amq.direct","x-dead-letter-routing-key":"`+hostile+`","x-message-ttl":1000,"x-queue-mode":"lazy"},"messages":0},`+
		`{"name":"w.DQ","arguments":{"x-max-priority":"high"},"messages":0},`+
		`{"name":"w.XQ","arguments":{"x-dead-letter-exchange":"","x-max-priority":3},"messages":0}]`)
	q := s.Queues[0]
	for _, want := range []string{
		`w: x-dead-letter-exchange is "amq.direct"`, `w: x-dead-letter-routing-key is "`, `w: x-message-ttl is set (1000 ms)`,
		`w: unexpected argument "x-queue-mode"`, `w.DQ: no x-dead-letter-exchange`, `w.DQ: no x-dead-letter-routing-key`,
		`w.DQ: x-max-priority is not a non-negative integer`, `w.XQ: no x-message-ttl`, `w.XQ: has a dead-letter route`,
		`w.XQ: unexpected argument "x-max-priority"`,
	} {
		if !hasProblem(q, want) {
			t.Errorf("no problem %q in %q", want, q.Problems)
		}
	}
	for _, p := range q.Problems {
		if len(p) > 200 || strings.ContainsRune(p, 1) {
			t.Errorf("problem not clipped or not printable: %q", p)
		}
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/pw"
	var got atomic.Value
	r := fake(t, func(w http.ResponseWriter, req *http.Request) {
		_, p, _ := req.BasicAuth()
		got.Store(p)
		io.WriteString(w, "[]")
	}, func(o *Options) { o.PasswordFile = path; o.Password = "not this" })
	if _, _, err := readWithin(t, r, 5*time.Second); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Fatalf("missing file: %v", err)
	}
	for _, pw := range []string{"first", "rotated"} {
		if err := writeFile(path, pw+"\n"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readWithin(t, r, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if got.Load() != pw {
			t.Errorf("sent %q, want %q", got.Load(), pw)
		}
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, u := range []string{"http://u:p@127.0.0.1:1", "amqp://127.0.0.1", "http://", "http://h/?x=1", "::"} {
		if _, err := New(Options{URL: u}); err == nil {
			t.Errorf("%q accepted", u)
		} else if strings.Contains(err.Error(), ":p@") {
			t.Errorf("%q: error shows the password: %v", u, err)
		}
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
