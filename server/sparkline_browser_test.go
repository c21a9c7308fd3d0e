package server_test

import (
	"context"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// sparkInfo is what the page says about one sparkline.
type sparkInfo struct {
	Queue, Field, Role, Label, Title, D string
	W, H, PathW, PathH                  float64
}

const sparksJS = `JSON.stringify(Array.from(document.querySelectorAll("svg.spark")).map(function (s) {
  var r = s.getBoundingClientRect(), p = s.querySelector("path"), bb = p ? p.getBBox() : { width: 0, height: 0 };
  var t = s.querySelector("title");
  return { Queue: s.closest("tr").getAttribute("data-queue"), Field: s.closest("td").getAttribute("data-field"),
    Role: s.getAttribute("role"), Label: s.getAttribute("aria-label"), Title: t ? t.textContent : "",
    D: p ? p.getAttribute("d") : "", W: r.width, H: r.height, PathW: bb.width, PathH: bb.height };
}))`

// The sparklines in a real browser: drawn by the server without any
// script (they need no JavaScript), then swapped in again by the page's
// script on every refresh, with the same paths and labels, from the page
// itself and never from the whole API; each has a size, an image role
// and a text alternative giving its min, max and latest value, which the
// browser's accessibility tree exposes as the image's name.
func TestSparklinesInBrowser(t *testing.T) {
	bin := testserver.LookPath(t, "chromium")
	r := testserver.StartRedis(t)
	b := r.NewBroker(t, "dramatiq")
	now := time.Now()
	b.Heartbeat(testserver.UUID(), now)
	b.Enqueue("default", 2, now.Add(-30*time.Second))
	b.Enqueue("emails", 1, now)
	var views, api atomic.Int32
	srv := startExporter(t, r, false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch req.URL.Path {
			case "/":
				views.Add(1)
			case "/api/v1/status":
				api.Add(1)
			}
			next.ServeHTTP(w, req)
		})
	})

	// Scrapes six slots apart, with nobody reading in between: ready 2,
	// 4, 6, 8, 10, 12 for default, one dead letter from the third on. The
	// line joins them across the slots nobody read in.
	for i := range 6 {
		if i > 0 {
			b.Enqueue("default", 2, now)
		}
		if i == 2 {
			b.DeadLetter("default", now, nil)
		}
		get(t, srv.URL+"/metrics")
		for range 6 {
			srv.next()
		}
	}
	// The page's own reads land in the next slot, with ready 12 again.

	br := startBrowser(t, bin)
	check := func(source string, sparks []sparkInfo) map[string]sparkInfo {
		t.Helper()
		if len(sparks) != 6 {
			t.Fatalf("%s: %d sparklines, want 3 per queue for 2 queues: %+v", source, len(sparks), sparks)
		}
		byKey := map[string]sparkInfo{}
		for _, s := range sparks {
			byKey[s.Queue+"/"+s.Field] = s
			if s.W < 20 || s.H < 5 {
				t.Errorf("%s: %s %s sparkline is %gx%g px", source, s.Queue, s.Field, s.W, s.H)
			}
			if s.Role != "img" || s.Label == "" || s.Label != s.Title || !strings.HasPrefix(s.Label, s.Queue+": ") {
				t.Errorf("%s: %s %s: role %q, label %q, title %q", source, s.Queue, s.Field, s.Role, s.Label, s.Title)
			}
		}
		def := byKey["default/ready"]
		if def.Label != "default: ready messages, last hour: min 2, max 12, latest 12" {
			t.Errorf("%s: default ready label = %q", source, def.Label)
		}
		if def.PathW < 15 || def.PathH < 10 || strings.Count(def.D, "M") != 1 {
			t.Errorf("%s: default ready line is %gx%g, path %q (want one stroke)", source, def.PathW, def.PathH, def.D)
		}
		if got := byKey["default/dead_letter"].Label; got != "default: dead-lettered messages, last hour: min 0, max 1, latest 1" {
			t.Errorf("%s: default dead-letter label = %q", source, got)
		}
		if got := byKey["default/oldest"].Label; !regexp.MustCompile(`^default: oldest message age, last hour: min \d+s, max \d+s, latest \d+s$`).MatchString(got) {
			t.Errorf("%s: default oldest label = %q", source, got)
		}
		return byKey
	}

	// Without scripts: the server's drawing.
	noJS := br.open(srv.URL+"/", false)
	br.waitFor(noJS, `document.querySelector("svg.spark")`)
	var sparks []sparkInfo
	br.eval(noJS, sparksJS, &sparks)
	server := check("server", sparks)
	var src string
	br.eval(noJS, `JSON.stringify(document.body.getAttribute("data-source"))`, &src)
	if src != "server" {
		t.Fatalf("scripts ran in the no-script tab (data-source %q)", src)
	}

	// With scripts: the page refreshes itself and redraws.
	withJS := br.open(srv.URL+"/", true)
	br.waitFor(withJS, `document.body.getAttribute("data-source") === "refresh"`)
	br.eval(withJS, sparksJS, &sparks)
	script := check("script", sparks)
	for k, s := range server {
		// The script's refresh is one more read in the same slot: the
		// drawing of the counts is the same (ages have grown meanwhile).
		if strings.HasSuffix(k, "/oldest") {
			continue
		}
		if js := script[k]; js.D != s.D || js.Label != s.Label {
			t.Errorf("%s: the script draws %q (%q), the server %q (%q)", k, js.D, js.Label, s.D, s.Label)
		}
	}

	// The next refresh draws the same lines again.
	var updated string
	br.eval(withJS, `JSON.stringify(document.body.getAttribute("data-updated"))`, &updated)
	br.waitFor(withJS, `document.body.getAttribute("data-updated") !== `+strconv.Quote(updated))
	br.eval(withJS, sparksJS, &sparks)
	again := check("script, reusing the trends", sparks)
	for k, s := range script {
		// Ages grow between refreshes.
		if strings.HasSuffix(k, "/oldest") {
			continue
		}
		if again[k].D != s.D {
			t.Errorf("%s: redrawn as %q, was %q", k, again[k].D, s.D)
		}
	}
	// Refreshes fetch the page, bounded whatever the queue count, never
	// the API's every queue.
	if v, a := views.Load(), api.Load(); v < 4 || a != 0 {
		t.Errorf("the pages fetched / %d times and the API %d times", v, a)
	}

	// The accessibility tree names each image by its text alternative.
	var tree struct {
		Nodes []struct {
			Role struct{ Value string } `json:"role"`
			Name struct{ Value string } `json:"name"`
		} `json:"nodes"`
	}
	br.call(withJS, "Accessibility.getFullAXTree", map[string]any{}, &tree)
	names := map[string]bool{}
	for _, n := range tree.Nodes {
		if n.Role.Value == "image" || n.Role.Value == "img" {
			names[n.Name.Value] = true
		}
	}
	for k, s := range script {
		if strings.HasSuffix(k, "/oldest") {
			continue // a refresh may have redrawn it older
		}
		if !names[s.Label] {
			t.Errorf("%s: no image named %q in the accessibility tree (images: %v)", k, s.Label, names)
		}
	}

	// A screenshot for people (test-artifacts/status-page-trends.png):
	// most of an hour of scrapes, three slots apart, while default's
	// backlog swells and drains and emails fills up.
	ctx := context.Background()
	for i := range 70 {
		for range 3 {
			srv.next()
		}
		target := int64(12 + 10*math.Sin(float64(i)/7))
		n, err := r.Admin.LLen(ctx, "dramatiq:default").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n < target {
			b.Enqueue("default", int(target-n), time.Now().Add(-time.Duration(i)*time.Second))
		} else if n > target {
			// Done by workers: gone from the list and the hash.
			ids, err := r.Admin.LPopCount(ctx, "dramatiq:default", int(n-target)).Result()
			if err != nil {
				t.Fatal(err)
			}
			r.Admin.HDel(ctx, "dramatiq:default.msgs", ids...)
		}
		if i%10 == 0 {
			b.Enqueue("emails", 1, now)
		}
		if i == 40 {
			b.DeadLetter("emails", time.Now(), nil)
		}
		get(t, srv.URL+"/metrics")
	}
	shot := br.open(srv.URL+"/", true)
	br.waitFor(shot, `document.body.getAttribute("data-source") === "refresh"`)
	var png struct{ Data []byte }
	br.call(shot, "Page.captureScreenshot", map[string]any{"format": "png"}, &png)
	dir := filepath.Join(testserver.RepoRoot(t), "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "status-page-trends.png")
	if err := os.WriteFile(file, png.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png.Data) < 10_000 {
		t.Fatalf("screenshot of %d bytes", len(png.Data))
	}
	t.Logf("screenshot: %s", file)
}
