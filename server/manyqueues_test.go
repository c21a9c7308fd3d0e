package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// fillQueues writes n queues named q00000… with one message each, like
// Dramatiq does, and a dead letter in every tenth queue.
func fillQueues(t *testing.T, r *testserver.Redis, n int) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	pipe := r.Admin.Pipeline()
	for i := range n {
		q := fmt.Sprintf("q%05d", i)
		id := testserver.UUID()
		pipe.HSet(ctx, "dramatiq:"+q+".msgs", id, testserver.Body(q, id, now.Add(-time.Minute), nil))
		pipe.RPush(ctx, "dramatiq:"+q, id)
		if i%10 == 0 {
			dl := testserver.UUID()
			pipe.ZAdd(ctx, "dramatiq:"+q+".XQ", goredis.Z{Score: float64(now.UnixMilli()), Member: dl})
			pipe.HSet(ctx, "dramatiq:"+q+".XQ.msgs", dl, testserver.Body(q, dl, now.Add(-time.Minute), nil))
		}
		if i%2000 == 1999 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	b := r.NewBroker(t, "dramatiq")
	b.Heartbeat(testserver.UUID(), now)
}

// startManyQueues serves the page and the API over every queue of r, as
// --dramatiq.max-queues=0 does, with the history filled for the whole hour.
func startManyQueues(t *testing.T, r *testserver.Redis, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq", MaxQueues: 0})
	clock := &atomic.Int64{}
	clock.Store(time.Now().Add(-history.Window).UnixNano())
	hist := history.New(history.Options{MaxQueues: 0, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	exp, err := collector.NewExporter(collector.ExporterOptions{Namespace: "dramatiq", OnRead: hist.Record}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	// A few reads spread over the hour give every queue a line.
	for range 8 {
		exp.Read(context.Background(), collector.ReadOptions{})
		clock.Add(int64(history.Window / 8))
	}
	clock.Store(time.Now().UnixNano())
	src := server.NewStatusSource(server.StatusOptions{Exporter: exp, Thresholds: status.DefaultThresholds(),
		Timeout: time.Minute, TelemetryPath: "/metrics", History: hist})
	mux := http.NewServeMux()
	mux.Handle("/metrics", server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{Timeout: time.Minute, Logger: discard()}))
	mux.Handle("/api/v1/status", src.APIHandler())
	mux.Handle("/", src.PageHandler())
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// At 10,000 queues (--dramatiq.max-queues=0) the page stays small and
// settles in a real browser: it draws the worst PageQueues queues, with
// their sparklines, says how many it hides and how to see them, finds a
// named queue among the 10,000 through its filter, and its refreshes never
// overlap. Before, the page was 7 MB here (13.9 MB with longer names and
// more dead letters) and the tab spent seconds rendering every refresh.
func TestStatusPageManyQueuesInBrowser(t *testing.T) {
	bin := testserver.LookPath(t, "chromium")
	r := testserver.StartRedis(t)
	const queues = 10_000
	fillQueues(t, r, queues-1)
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("zz-needle-payments", 3, time.Now()) // no problem: far from the worst 100
	var inFlight, peak atomic.Int32
	srv := startManyQueues(t, r, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/" {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
			}
			next.ServeHTTP(w, req)
		})
	})

	begin := time.Now()
	_, page := get(t, srv.URL+"/")
	t.Logf("%d queues: page of %d bytes in %v", queues, len(page), time.Since(begin))
	if len(page) > 512<<10 {
		t.Errorf("the page is %d bytes at %d queues, want well under 1 MB", len(page), queues)
	}
	if n := strings.Count(page, "<tr data-queue="); n != server.PageQueues {
		t.Errorf("the page draws %d queue rows, want %d", n, server.PageQueues)
	}
	if !strings.Contains(page, `data-shown="100" data-matched="10000" data-total="10000"`) ||
		!strings.Contains(page, "9,900 hidden") || !strings.Contains(page, `<a href="api/v1/status">JSON API</a>`) {
		t.Errorf("the page does not say how many queues it hides and where to see them:\n%s", shownNote(page))
	}
	// Worst first: every tenth queue has a dead letter, so the rows shown
	// are queues with dead letters only.
	if n := strings.Count(page, `data-field="dead_letter">1<`); n != server.PageQueues {
		t.Errorf("%d of the rows shown have a dead letter, want all %d", n, server.PageQueues)
	}

	br := startBrowser(t, bin)
	begin = time.Now()
	tab := br.open(srv.URL+"/", true)
	br.waitFor(tab, `document.querySelectorAll("tr[data-queue]").length === 100`)
	t.Logf("the tab settled in %v", time.Since(begin))
	sparks := func(want int) {
		t.Helper()
		var got struct{ Sparks, Drawn int }
		br.eval(tab, `JSON.stringify({Sparks: document.querySelectorAll("tr[data-queue] svg.spark").length,
			Drawn: document.querySelectorAll("tr[data-queue] svg.spark path").length})`, &got)
		if got.Sparks != 3*want || got.Drawn != 3*want {
			t.Errorf("%d sparklines, %d with a line, for %d queues shown", got.Sparks, got.Drawn, want)
		}
	}
	sparks(server.PageQueues)
	// The first refresh swaps in a fresh page and says what it cost.
	br.waitFor(tab, `document.body.getAttribute("data-source") === "refresh"`)
	var took string
	br.eval(tab, `JSON.stringify(document.body.getAttribute("data-rendered"))`, &took)
	t.Logf("a refresh took %s ms", took)
	sparks(server.PageQueues)

	// The filter finds the one queue among the 10,000, with its lines.
	br.eval(tab, `(function () { var q = document.getElementById("q"); q.value = "NEEDLE";
		q.form.requestSubmit(); return JSON.stringify(true); })()`, new(bool))
	br.waitFor(tab, `location.search === "?q=NEEDLE" && document.querySelectorAll("tr[data-queue]").length === 1`)
	var found struct {
		Queue, Ready, Note string
	}
	br.eval(tab, `JSON.stringify({Queue: document.querySelector("tr[data-queue]").getAttribute("data-queue"),
		Ready: document.querySelector("tr[data-queue] [data-field=ready]").firstChild.textContent,
		Note: document.getElementById("shown").textContent})`, &found)
	if found.Queue != "zz-needle-payments" || found.Ready != "3" || !strings.Contains(found.Note, "1 of 10,000 queues match") {
		t.Errorf("filtering for NEEDLE shows %+v", found)
	}
	sparks(1)
	// Refreshes keep the filter.
	var upd string
	br.eval(tab, `JSON.stringify(document.body.getAttribute("data-updated"))`, &upd)
	br.waitFor(tab, `document.body.getAttribute("data-updated") !== `+strconv.Quote(upd)+
		` && document.querySelectorAll("tr[data-queue]").length === 1 && document.getElementById("q").value === "NEEDLE"`)

	// "show more" doubles the rows, still bounded.
	tab = br.open(srv.URL+"/", true)
	br.waitFor(tab, `document.getElementById("show-more")`)
	br.eval(tab, `(function () { document.getElementById("show-more").click(); return JSON.stringify(true); })()`, new(bool))
	br.waitFor(tab, `location.search === "?show=200" && document.querySelectorAll("tr[data-queue]").length === 200`)
	sparks(200)

	if p := peak.Load(); p > 2 {
		t.Errorf("%d page renders at once from two tabs: refreshes overlap", p)
	}
}

// shownNote is the page's line about the queues shown, for failures.
func shownNote(page string) string {
	if i := strings.Index(page, `id="shown"`); i >= 0 {
		return page[i:min(len(page), i+600)]
	}
	return "(no such line)"
}

// The page's size and the time to render it at 1,000 and 10,000 queues,
// logged for docs/status-page.md; the bounds are asserted above.
func TestStatusPageSizeByQueues(t *testing.T) {
	for _, n := range []int{1000, 10000} {
		r := testserver.StartRedis(t)
		fillQueues(t, r, n)
		srv := startManyQueues(t, r, nil)
		get(t, srv.URL+"/")
		var worst time.Duration
		var size int
		for range 3 {
			begin := time.Now()
			_, page := get(t, srv.URL+"/")
			worst, size = max(worst, time.Since(begin)), len(page)
		}
		t.Logf("%d queues: page of %d bytes, rendered in %v at worst", n, size, worst)
		if size > 512<<10 {
			t.Errorf("%d queues: page of %d bytes", n, size)
		}
	}
}

// A slow refresh slows the next one down and never overlaps it: the
// script waits for its answer, then three times as long as it took.
func TestStatusPageRefreshBacksOff(t *testing.T) {
	bin := testserver.LookPath(t, "chromium")
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	b.Heartbeat(testserver.UUID(), time.Now())
	b.Enqueue("default", 1, time.Now())
	const slow = 2 * time.Second
	var mu sync.Mutex
	var starts []time.Time
	var inFlight, peak atomic.Int32
	srv := startExporter(t, r, false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			// The script's fetches, not the tab's navigation.
			if req.URL.Path == "/" && req.Header.Get("Sec-Fetch-Mode") != "navigate" {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				if n > peak.Load() {
					peak.Store(n)
				}
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				time.Sleep(slow)
			}
			next.ServeHTTP(w, req)
		})
	})
	br := startBrowser(t, bin)
	tab := br.open(srv.URL+"/", true)
	br.waitFor(tab, `document.body.getAttribute("data-source") === "refresh"`)
	var upd string
	br.eval(tab, `JSON.stringify(document.body.getAttribute("data-updated"))`, &upd)
	br.waitFor(tab, `document.body.getAttribute("data-updated") !== `+strconv.Quote(upd))
	var live string
	br.eval(tab, `JSON.stringify(document.getElementById("live").textContent)`, &live)
	mu.Lock()
	defer mu.Unlock()
	if len(starts) < 2 {
		t.Fatalf("%d refreshes", len(starts))
	}
	// The first took over 2 s: the next starts 6 s or more after it ended.
	if gap := starts[1].Sub(starts[0]); gap < slow+3*slow-time.Second {
		t.Errorf("the second refresh started %v after the first, which took %v", gap, slow)
	}
	if p := peak.Load(); p != 1 {
		t.Errorf("%d refreshes at once", p)
	}
	n := 0
	if m := regexp.MustCompile(`refreshes every (\d+) s`).FindStringSubmatch(live); m != nil {
		n, _ = strconv.Atoi(m[1])
	}
	if n < 6 {
		t.Errorf("the page says %q after refreshes of %v", live, slow)
	}
}
