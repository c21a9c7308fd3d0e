package server_test

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// cell returns the server-rendered text of one queue's field.
func cell(t *testing.T, page, queue, field string) string {
	t.Helper()
	row := regexp.MustCompile(`(?s)<tr data-queue="` + regexp.QuoteMeta(queue) + `".*?</tr>`).FindString(page)
	if row == "" {
		t.Fatalf("no row for queue %q", queue)
	}
	m := regexp.MustCompile(`data-field="` + field + `">([^<]*)<`).FindStringSubmatch(row)
	if m == nil {
		t.Fatalf("queue %q has no %s cell:\n%s", queue, field, row)
	}
	return m[1]
}

// The first paint is complete without JavaScript: everything the script
// would fill in is already in the HTML.
func TestStatusPageServerRendered(t *testing.T) {
	r := testserver.StartRedis(t)
	s := buildState(t, r)
	srv := startExporter(t, r, false, nil)
	resp, page := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	for queue, want := range map[string]map[string]string{
		"default": {"ready": "2", "in_flight": "3", "delayed": "3", "dead_letter": "0", "orphaned": "1", "oldest": "1m 30s"},
		"emails":  {"ready": "1", "in_flight": "0", "delayed": "0", "dead_letter": "2", "orphaned": "0", "oldest": "10s"},
	} {
		for field, v := range want {
			got := cell(t, page, queue, field)
			if field == "oldest" && strings.HasPrefix(got, strings.Fields(v)[0]) {
				continue // a second may have passed
			}
			if got != v {
				t.Errorf("%s %s = %q, want %q", queue, field, got, v)
			}
		}
	}
	// Problems stand out: orphaned and dead-lettered cells carry a class.
	if !regexp.MustCompile(`class="n bad" data-label="Orphaned" data-field="orphaned">1<`).MatchString(page) ||
		!regexp.MustCompile(`class="n warn" data-label="Dead-lettered" data-field="dead_letter">2<`).MatchString(page) {
		t.Error("problem cells are not marked")
	}
	for _, want := range []string{
		`data-source="server"`, `id="env" title="environment">staging<`, `data-field="processes-alive">1<`,
		`data-field="processes-stale" class="warn">1<`, `data-field="redis-status">OK<`, `data-field="database-status">Not configured<`,
		`<a href="./metrics">Metrics</a>`, `<a href="api/v1/status">JSON API</a>`, "Healthy",
		s.newestMsg, "<code>send_email</code>",
		// Escaped, never live markup.
		"smtplib.SMTPRecipientsRefused: {&#39;&lt;bob@example.invalid&gt;&#39;: (550, b&#39;no such user&#39;)}",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<bob@example.invalid>") {
		t.Error("traceback markup was not escaped")
	}
	// The SVG namespace the script names to build sparklines is an
	// identifier, never fetched.
	if self := strings.ReplaceAll(page, `"http://www.w3.org/2000/svg"`, ""); strings.Contains(self, "http://") || strings.Contains(self, "https://") {
		t.Error("the page refers to another origin; it must be self-contained")
	}
}

// The inline style and script are allowed by hash, so a strict CSP and the
// page's own code cannot drift apart.
func TestStatusPageCSPMatchesInlineCode(t *testing.T) {
	r := testserver.StartRedis(t)
	srv := startExporter(t, r, false, nil)
	resp, page := get(t, srv.URL+"/")
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("CSP = %q", csp)
	}
	for tag, directive := range map[string]string{"style": "style-src", "script": "script-src"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no inline %s", tag)
		}
		sum := sha256.Sum256([]byte(m[1]))
		want := directive + " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}

// rowOrder lists the queues of the page's table, top to bottom.
func rowOrder(page string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<tr data-queue="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// The page shows the worst queues first (a problem, then the backlog),
// filters them by name, and cuts them to ?show=; hostile parameters still
// give a page.
func TestStatusPageWorstFirstAndFilter(t *testing.T) {
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	now := time.Now()
	b.Heartbeat(testserver.UUID(), now)
	b.Enqueue("a-small", 1, now)
	b.Enqueue("b-big", 50, now)
	b.Enqueue("c-dead", 1, now)
	b.DeadLetter("c-dead", now, nil)
	b.Enqueue("d-orphan", 3, now)
	b.Fetch(testserver.UUID(), "d-orphan", 2, now.Add(-time.Hour)) // a dead process holds two
	srv := startExporter(t, r, false, nil)

	_, page := get(t, srv.URL+"/")
	if got := strings.Join(rowOrder(page), " "); got != "d-orphan c-dead b-big a-small" {
		t.Errorf("rows = %s, want d-orphan c-dead b-big a-small", got)
	}
	if !strings.Contains(page, "All 4 queues shown, worst first.") {
		t.Errorf("no line says every queue is shown:\n%s", shownNote(page))
	}

	_, page = get(t, srv.URL+"/?q=BIG")
	if got := strings.Join(rowOrder(page), " "); got != "b-big" || !strings.Contains(page, "1 of 4 queues match.") ||
		!strings.Contains(page, `value="BIG"`) || !strings.Contains(page, `<a href="./">All queues</a>`) {
		t.Errorf("?q=BIG: rows %s\n%s", got, shownNote(page))
	}
	// Cards still count every queue.
	if !strings.Contains(page, `data-field="queues-count">4<`) {
		t.Error("the queue card counts the filtered queues only")
	}

	_, page = get(t, srv.URL+"/?show=2")
	if got := strings.Join(rowOrder(page), " "); got != "d-orphan c-dead" ||
		!strings.Contains(page, "Showing the worst 2 of 4") || !strings.Contains(page, `href="?show=4" id="show-more"`) {
		t.Errorf("?show=2: rows %s\n%s", got, shownNote(page))
	}

	_, page = get(t, srv.URL+"/?q=nothing-like-it")
	if len(rowOrder(page)) != 0 || !strings.Contains(page, "No queue name contains <code>nothing-like-it</code>") {
		t.Errorf("a filter without a match:\n%s", shownNote(page))
	}

	for _, q := range []string{"?show=-1", "?show=99999999999999999999", "?show=x", "?q=" + strings.Repeat("%3Cscript%3E", 100), "?q=%FF%FE"} {
		resp, page := get(t, srv.URL+"/"+q)
		if resp.StatusCode != 200 || strings.Count(page, "<script") != 1 || len(rowOrder(page)) > 4 {
			t.Errorf("%s: %d, %d script elements, %d rows", q, resp.StatusCode, strings.Count(page, "<script"), len(rowOrder(page)))
		}
	}
}
