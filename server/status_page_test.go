package server_test

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"regexp"
	"strings"
	"testing"

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
