package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

const redisPassword = "pw-Status-Secret-9"

// exporterServer serves /, /api/v1/status and /metrics exactly as main
// wires them, reading r through a password-protected read-only user.
type exporterServer struct {
	*httptest.Server
	redis   *testserver.Redis
	reader  *broker.Reader
	history *history.History
	// skew moves the history's clock (nanoseconds), so a test can place
	// reads in slots without waiting for them.
	skew *atomic.Int64
}

func startExporter(t *testing.T, r *testserver.Redis, showArgs bool, wrap func(http.Handler) http.Handler) *exporterServer {
	t.Helper()
	url := r.ReadOnlyUser(t, "status", redisPassword)
	client, err := broker.NewClient(broker.ClientOptions{URL: url, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq"})
	skew := &atomic.Int64{}
	// The history's clock moves only when a test says so (next): a real
	// clock can cross a 15 s slot between two reads a test compares.
	base := time.Now()
	hist := history.New(history.Options{Now: func() time.Time { return base.Add(time.Duration(skew.Load())) }})
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "staging", Namespace: "dramatiq", OnRead: hist.Record},
		collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	src := server.NewStatusSource(server.StatusOptions{
		Exporter: exp, Thresholds: status.DefaultThresholds(), ShowMessageArgs: showArgs,
		Timeout: 3 * time.Second, TelemetryPath: "/metrics", History: hist,
	})
	mux := http.NewServeMux()
	mux.Handle("/metrics", server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{Timeout: 3 * time.Second, Logger: discard()}))
	mux.Handle("/api/v1/status", src.APIHandler())
	mux.Handle("/", src.PageHandler())
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &exporterServer{Server: srv, redis: r, reader: reader, history: hist, skew: skew}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// state builds a broker with every kind of number the API reports.
type state struct {
	now                time.Time
	newestDL, plainDL  time.Time
	newestMsg, dlActor string
}

func buildState(t *testing.T, r *testserver.Redis) state {
	t.Helper()
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	alive, stale := testserver.UUID(), testserver.UUID()
	b.Enqueue("default", 5, now.Add(-90*time.Second))
	b.Fetch(alive, "default", 2, now)
	b.Fetch(stale, "default", 1, now.Add(-5*time.Minute))
	b.Enqueue("default.DQ", 3, now)
	b.Enqueue("emails", 1, now.Add(-10*time.Second))
	s := state{now: now, newestDL: now.Add(-2 * time.Minute).Truncate(time.Millisecond), plainDL: now.Add(-time.Hour).Truncate(time.Millisecond), dlActor: "send_email"}
	b.DeadLetter("emails", s.plainDL, nil)
	// A dead letter written the way Dramatiq's nack stores it, with a
	// traceback holding markup that the page must escape.
	ctx := context.Background()
	body, _ := json.Marshal(map[string]any{
		"queue_name": "emails", "actor_name": s.dlActor, "args": []any{"secret-arg"}, "kwargs": map[string]any{"api_key": "secret-kwarg"},
		"options":    map[string]any{"redis_message_id": "rid-1", "retries": 20, "traceback": "Traceback (most recent call last):\n  File \"x.py\", line 1\nsmtplib.SMTPRecipientsRefused: {'<bob@example.invalid>': (550, b'no such user')}\n"},
		"message_id": "3f6c1a9e-0000-4000-8000-000000000001", "message_timestamp": now.Add(-time.Hour).UnixMilli(),
	})
	s.newestMsg = "3f6c1a9e-0000-4000-8000-000000000001"
	r.Admin.ZAdd(ctx, "dramatiq:emails.XQ", redis.Z{Score: float64(s.newestDL.UnixMilli()), Member: "rid-1"})
	r.Admin.HSet(ctx, "dramatiq:emails.XQ.msgs", "rid-1", string(body))
	return s
}

// keys returns the sorted keys of a JSON object.
func keys(v any) []string {
	m, _ := v.(map[string]any)
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func split(s string) []string {
	out := strings.Fields(s)
	sort.Strings(out)
	return out
}

// The documented schema (docs/api.md): these exact keys, always present.
var (
	topKeys        = split("status broker time duration_seconds environment namespace version components processes_alive processes_stale queues queues_dropped collectors thresholds failed message_args_shown backlog_by_actor")
	versionKeys    = split("version revision branch go_version")
	componentKeys  = split("redis database processes")
	redisKeys      = split("status up memory_used_bytes connected_clients")
	databaseKeys   = split("status up")
	processesKeys  = split("status alive stale min_processes measure")
	queueKeys      = split("name ready in_flight delayed dead_letter orphaned oldest_message_age_seconds dead_letter_last problems recent_dead_letters dead_lettered_total dead_lettered_by_actor longest_held_seconds longest_held_lower_bound delayed_unclaimed_oldest_seconds delayed_overdue")
	deadLetterKeys = split("message_id actor dead_lettered_at retries traceback_last_line")
	collectorKeys  = split("name success duration_seconds")
	failureKeys    = split("check value threshold message")
	// With ?history=1.
	historyKeys      = split("resolution_seconds start reads")
	queueHistoryKeys = split("ready oldest_message_age_seconds dead_letter")
)

func checkKeys(t *testing.T, what string, v any, want []string) {
	t.Helper()
	if got := keys(v); !reflect.DeepEqual(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

func decode(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	return m
}

func queueOf(t *testing.T, st map[string]any, name string) map[string]any {
	t.Helper()
	for _, q := range st["queues"].([]any) {
		if q.(map[string]any)["name"] == name {
			return q.(map[string]any)
		}
	}
	t.Fatalf("no queue %q", name)
	return nil
}

func TestAPIStatusSchemaAndValues(t *testing.T) {
	r := testserver.StartRedis(t)
	s := buildState(t, r)
	srv := startExporter(t, r, false, nil)

	resp, body := get(t, srv.URL+"/api/v1/status")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	st := decode(t, body)
	checkKeys(t, "status", st, topKeys)
	checkKeys(t, "version", st["version"], versionKeys)
	checkKeys(t, "components", st["components"], componentKeys)
	comp := st["components"].(map[string]any)
	checkKeys(t, "redis", comp["redis"], redisKeys)
	checkKeys(t, "database", comp["database"], databaseKeys)
	checkKeys(t, "processes", comp["processes"], processesKeys)
	for _, q := range st["queues"].([]any) {
		checkKeys(t, "queue", q, queueKeys)
		for _, d := range q.(map[string]any)["recent_dead_letters"].([]any) {
			checkKeys(t, "dead letter", d, deadLetterKeys)
		}
	}
	for _, c := range st["collectors"].([]any) {
		checkKeys(t, "collector", c, collectorKeys)
	}
	for _, f := range st["failed"].([]any) {
		checkKeys(t, "failure", f, failureKeys)
	}

	// Values.
	if st["status"] != "healthy" || st["environment"] != "staging" || st["namespace"] != "dramatiq" ||
		st["processes_alive"] != 1.0 || st["processes_stale"] != 1.0 || st["message_args_shown"] != false {
		t.Errorf("top level: %v", st)
	}
	redisSt := comp["redis"].(map[string]any)
	if redisSt["status"] != "ok" || redisSt["up"] != true {
		t.Errorf("redis: %v", redisSt)
	}
	if mem, _ := redisSt["memory_used_bytes"].(float64); mem < 100_000 {
		t.Errorf("memory_used_bytes = %v", redisSt["memory_used_bytes"])
	}
	if cl, _ := redisSt["connected_clients"].(float64); cl < 2 { // the exporter and the test's admin client
		t.Errorf("connected_clients = %v", redisSt["connected_clients"])
	}
	if d := comp["database"].(map[string]any); d["status"] != "not_configured" {
		t.Errorf("database: %v", d)
	}
	if v := st["version"].(map[string]any); v["go_version"] == "" {
		t.Errorf("version: %v", v)
	}

	def := queueOf(t, st, "default")
	if def["ready"] != 2.0 || def["in_flight"] != 3.0 || def["delayed"] != 3.0 || def["dead_letter"] != 0.0 ||
		def["orphaned"] != 1.0 || def["dead_letter_last"] != nil || !reflect.DeepEqual(def["problems"], []any{"orphaned"}) ||
		len(def["recent_dead_letters"].([]any)) != 0 {
		t.Errorf("default: %v", def)
	}
	if age, _ := def["oldest_message_age_seconds"].(float64); age < 89 || age > 120 {
		t.Errorf("default oldest age %v", def["oldest_message_age_seconds"])
	}

	em := queueOf(t, st, "emails")
	if em["dead_letter"] != 2.0 || em["dead_letter_last"] != s.newestDL.UTC().Format(time.RFC3339Nano) ||
		!reflect.DeepEqual(em["problems"], []any{"dead_letters"}) {
		t.Errorf("emails: %v (newest %s)", em, s.newestDL.UTC().Format(time.RFC3339Nano))
	}
	dls := em["recent_dead_letters"].([]any)
	if len(dls) != 2 {
		t.Fatalf("recent dead letters: %v", dls)
	}
	newest, plain := dls[0].(map[string]any), dls[1].(map[string]any)
	if newest["message_id"] != s.newestMsg || newest["actor"] != s.dlActor || newest["retries"] != 20.0 ||
		newest["dead_lettered_at"] != s.newestDL.UTC().Format(time.RFC3339Nano) ||
		newest["traceback_last_line"] != "smtplib.SMTPRecipientsRefused: {'<bob@example.invalid>': (550, b'no such user')}" {
		t.Errorf("newest dead letter: %v", newest)
	}
	if plain["retries"] != nil || plain["traceback_last_line"] != "" || plain["actor"] != "task" ||
		plain["dead_lettered_at"] != s.plainDL.UTC().Format(time.RFC3339Nano) {
		t.Errorf("plain dead letter: %v", plain)
	}

	// Never the message arguments, never the Redis password.
	for _, secret := range []string{"secret-arg", "secret-kwarg", `"args"`, `"kwargs"`, redisPassword} {
		if strings.Contains(body, secret) {
			t.Errorf("the API shows %q:\n%s", secret, body)
		}
	}
	_, page := get(t, srv.URL+"/")
	for _, secret := range []string{"secret-arg", "secret-kwarg", redisPassword} {
		if strings.Contains(page, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}
}

func TestAPIShowsArgsOnlyWhenAsked(t *testing.T) {
	r := testserver.StartRedis(t)
	buildState(t, r)
	srv := startExporter(t, r, true, nil)
	_, body := get(t, srv.URL+"/api/v1/status")
	st := decode(t, body)
	if st["message_args_shown"] != true {
		t.Fatalf("message_args_shown = %v", st["message_args_shown"])
	}
	d := queueOf(t, st, "emails")["recent_dead_letters"].([]any)[0].(map[string]any)
	if !reflect.DeepEqual(d["args"], []any{"secret-arg"}) || !reflect.DeepEqual(d["kwargs"], map[string]any{"api_key": "secret-kwarg"}) {
		t.Fatalf("args %v kwargs %v", d["args"], d["kwargs"])
	}
	if strings.Contains(body, redisPassword) {
		t.Fatal("the Redis password leaked")
	}
	_, page := get(t, srv.URL+"/")
	if !strings.Contains(page, "secret-kwarg") {
		t.Error("the page does not show kwargs with --web.show-message-args")
	}
}

// The API and /metrics read the same collectors, so their numbers agree.
func TestAPIAgreesWithMetrics(t *testing.T) {
	r := testserver.StartRedis(t)
	buildState(t, r)
	srv := startExporter(t, r, false, nil)
	_, metrics := get(t, srv.URL+"/metrics")
	_, body := get(t, srv.URL+"/api/v1/status")
	st := decode(t, body)
	for _, q := range st["queues"].([]any) {
		m := q.(map[string]any)
		for field, metric := range map[string]string{
			"ready": "dramatiq_queue_ready_messages", "in_flight": "dramatiq_queue_inflight_messages",
			"delayed": "dramatiq_queue_delayed_messages", "dead_letter": "dramatiq_queue_dead_letter_messages",
			"orphaned": "dramatiq_queue_orphaned_messages", "dead_lettered_total": "dramatiq_queue_dead_lettered_total",
		} {
			line := metric + `{queue="` + m["name"].(string) + `"} ` + formatNumber(m[field].(float64))
			if !strings.Contains(metrics, line+"\n") {
				t.Errorf("/metrics lacks %q", line)
			}
		}
	}
	for state, field := range map[string]string{"alive": "processes_alive", "stale": "processes_stale"} {
		line := `dramatiq_processes{state="` + state + `"} ` + formatNumber(st[field].(float64))
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

// formatNumber writes a value the way the exposition format does.
func formatNumber(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestAPIRedisDown(t *testing.T) {
	r := testserver.StartRedis(t)
	buildState(t, r)
	srv := startExporter(t, r, false, nil)
	r.Stop()
	resp, body := get(t, srv.URL+"/api/v1/status")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	st := decode(t, body)
	checkKeys(t, "status", st, topKeys)
	comp := st["components"].(map[string]any)
	if st["status"] != "unhealthy" || comp["redis"].(map[string]any)["status"] != "failing" ||
		comp["redis"].(map[string]any)["memory_used_bytes"] != nil || comp["processes"].(map[string]any)["status"] != "unknown" ||
		len(st["queues"].([]any)) != 0 {
		t.Errorf("%v", st)
	}
	if f := st["failed"].([]any); len(f) != 1 || f[0].(map[string]any)["check"] != "redis" {
		t.Errorf("failed: %v", f)
	}
	_, page := get(t, srv.URL+"/")
	if !strings.Contains(page, "Redis is not answering") || !strings.Contains(page, "Unhealthy") {
		t.Errorf("page with Redis down:\n%s", page)
	}
}

func TestAPIMethodsAndPaths(t *testing.T) {
	r := testserver.StartRedis(t)
	srv := startExporter(t, r, false, nil)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/api/v1/status", 405},
		{"DELETE", "/", 405},
		{"HEAD", "/api/v1/status", 200},
		{"GET", "/nope", 404},
		{"GET", "/api/v1/status/extra", 404},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
	}
}

// docs/api.md is the contract: every field the tests above require is
// documented there, and its example has the same shape.
func TestAPIDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testserver.RepoRoot(t), "docs/api.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, set := range [][]string{topKeys, redisKeys, processesKeys, queueKeys, deadLetterKeys, collectorKeys, failureKeys, {"undecodable", "args", "kwargs", "queue", "history", "?history=1"}, historyKeys, queueHistoryKeys} {
		for _, k := range set {
			if !strings.Contains(text, "`"+k+"`") {
				t.Errorf("docs/api.md does not document %q", k)
			}
		}
	}
	block := regexp.MustCompile("(?s)```json\n(.*?)```").FindStringSubmatch(text)
	if block == nil {
		t.Fatal("docs/api.md has no JSON example")
	}
	ex := decode(t, block[1])
	checkKeys(t, "example", ex, topKeys)
	for _, q := range ex["queues"].([]any) {
		checkKeys(t, "example queue", q, queueKeys)
	}
}

// A status JSON cannot carry (here a dead-letter score in the year 10000,
// unless the broker reader clamps it first) is a 500 with a reason, never a
// 200 with an empty body.
func TestAPIEncodingFailureIsAnError(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Heartbeat(testserver.UUID(), time.Now())
	b.DeadLetter("default", time.UnixMilli(253402300800000), nil)
	srv := startExporter(t, r, false, nil)
	resp, body := get(t, srv.URL+"/api/v1/status")
	switch resp.StatusCode {
	case http.StatusOK:
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil || v["status"] == nil {
			t.Fatalf("200 with an unusable body (%v): %q", err, body)
		}
	case http.StatusInternalServerError:
		if !strings.Contains(body, "cannot encode the status") || !strings.Contains(body, "year") {
			t.Fatalf("500 without a reason: %q", body)
		}
	default:
		t.Fatalf("status %d: %q", resp.StatusCode, body)
	}
	// The other views are unaffected.
	_, metrics := get(t, srv.URL+"/metrics")
	if !strings.Contains(metrics, `dramatiq_queue_dead_letter_messages{queue="default"} 1`+"\n") {
		t.Errorf("/metrics lost the queue:\n%s", metrics)
	}
}

// The API's read and concurrent scrapes share one read of Redis.
func TestAPIAndScrapesShareOneRead(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("default", 3, time.Now())
	b.DeadLetter("default", time.Now().Add(-time.Minute), nil)
	// The API request is held at the handler's door until Redis is paused,
	// so that the network and a loaded machine's scheduling cannot delay its
	// read past the pause or behind the scrapes'.
	apiEntered, apiGo := make(chan struct{}), make(chan struct{})
	srv := startExporter(t, r, false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/api/v1/status" {
				close(apiEntered)
				<-apiGo
			}
			next.ServeHTTP(w, req)
		})
	})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(apiGo) }) }
	t.Cleanup(release)         // before the server's Close, which waits for the handler
	get(t, srv.URL+"/metrics") // discovery
	if err := r.Admin.ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	apiDone := make(chan string, 1)
	go func() { _, body := get(t, srv.URL+"/api/v1/status"); apiDone <- body }()
	select {
	case <-apiEntered:
	case <-time.After(60 * time.Second):
		t.Fatal("the API request never reached the handler")
	}
	if err := r.Admin.Do(context.Background(), "CLIENT", "PAUSE", 1500, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	release()
	// In-process only: from the handler's door to joining a read.
	time.Sleep(200 * time.Millisecond) // the API's read starts first
	const scrapes = 6
	bodies := make(chan string, scrapes)
	for range scrapes {
		go func() { _, body := get(t, srv.URL+"/metrics"); bodies <- body }()
	}
	for range scrapes {
		if body := <-bodies; !strings.Contains(body, `dramatiq_queue_ready_messages{queue="default"} 3`+"\n") {
			t.Errorf("scrape lacks the queue:\n%s", body)
		}
	}
	st := decode(t, <-apiDone)
	q := st["queues"].([]any)[0].(map[string]any)
	if q["ready"].(float64) != 3 || len(q["recent_dead_letters"].([]any)) != 1 {
		t.Errorf("API queue = %v", q)
	}
	if n := r.CommandCalls(t, "llen"); n != 1 {
		t.Errorf("one API read and %d scrapes did not share one read: %d LLEN", scrapes, n)
	}
}

// Dead letters that arrive while the exporter runs show in the API per
// queue and actor, and on the page under "Failures by actor", the same on
// /metrics; those already there at start are not counted.
func TestAPIDeadLetteredByActor(t *testing.T) {
	r := testserver.StartRedis(t)
	s := buildState(t, r)
	srv := startExporter(t, r, false, nil)
	_, body := get(t, srv.URL+"/api/v1/status")
	if q := queueOf(t, decode(t, body), "emails"); q["dead_lettered_total"] != 0.0 || len(q["dead_lettered_by_actor"].([]any)) != 0 {
		t.Fatalf("before: %v %v", q["dead_lettered_total"], q["dead_lettered_by_actor"])
	}
	b := r.NewBroker(t, "dramatiq")
	// Scored after the exporter started (buildState's ones were before).
	at := time.Now().Add(time.Second)
	for i := 0; i < 3; i++ {
		b.DeadLetter("emails", at, nil) // actor "task"
	}
	ctx := context.Background()
	for i, actor := range []string{"send_email", "send_email", "<b>resize</b>"} {
		id := fmt.Sprintf("rid-new-%d", i)
		body, _ := json.Marshal(map[string]any{"queue_name": "emails", "actor_name": actor, "args": []any{}, "kwargs": map[string]any{},
			"options": map[string]any{"redis_message_id": id}, "message_id": id, "message_timestamp": s.now.UnixMilli()})
		r.Admin.ZAdd(ctx, "dramatiq:emails.XQ", redis.Z{Score: float64(at.UnixMilli() + 1), Member: id})
		r.Admin.HSet(ctx, "dramatiq:emails.XQ.msgs", id, string(body))
	}
	_, body = get(t, srv.URL+"/api/v1/status")
	q := queueOf(t, decode(t, body), "emails")
	got, _ := json.Marshal(q["dead_lettered_by_actor"])
	want := `[{"actor":"task","dead_lettered_total":3},{"actor":"send_email","dead_lettered_total":2},{"actor":"\u003cb\u003eresize\u003c/b\u003e","dead_lettered_total":1}]`
	if q["dead_lettered_total"] != 6.0 || string(got) != want {
		t.Fatalf("dead_lettered_total %v, by actor %s, want %s", q["dead_lettered_total"], got, want)
	}
	_, metrics := get(t, srv.URL+"/metrics")
	for _, line := range []string{`dramatiq_queue_dead_lettered_total{queue="emails"} 6`, `dramatiq_actor_dead_lettered_total{actor="send_email",queue="emails"} 2`,
		`dramatiq_actor_dead_lettered_total{actor="task",queue="emails"} 3`} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	_, page := get(t, srv.URL+"/")
	for _, want := range []string{`<h2 id="actors-title">Failures by actor`, `<td data-label="Queue">emails</td><td data-label="Actor"><code>task</code></td><td class="n warn" data-label="Dead-lettered">3</td>`,
		`<code>&lt;b&gt;resize&lt;/b&gt;</code>`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
