package server_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// chromium runs Debian's headless Chromium with the flags it needs here
// (docs/testing.md) and returns its stdout.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

// The page in a real browser: the first paint comes from the server, then
// the script swaps in a fresh rendering of the same page, without a
// reload. The broker changes right after the first paint, so the numbers
// asserted can only have come from the script's refresh.
func TestStatusPageInBrowser(t *testing.T) {
	bin := testserver.LookPath(t, "chromium")
	r := testserver.StartRedis(t)
	buildState(t, r)
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("reports", 1234, now.Add(-47*time.Minute))
	b.Enqueue("webhooks.DQ", 12, now)
	b.Enqueue("webhooks", 7, now.Add(-3*time.Second))
	worker := testserver.UUID()
	b.Fetch(worker, "webhooks", 2, now)

	var once sync.Once
	var views atomic.Int32
	changed := make(chan struct{})
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/" && views.Add(1) > 1 {
				// The script's refresh must not read the broker before the
				// change below is done, or the change only shows up a
				// refresh interval later, past the browser's budget.
				select {
				case <-changed:
				case <-time.After(60 * time.Second):
					// Serve anyway: the assertions below then say what is missing.
				case <-req.Context().Done():
					return
				}
			}
			next.ServeHTTP(w, req)
			if req.URL.Path == "/" {
				once.Do(func() {
					b.Enqueue("default", 40, time.Now())
					b.DeadLetter("default", time.Now(), map[string]any{"retries": 3, "traceback": "Traceback …\nTimeoutError: upstream took 30s\n"})
					close(changed)
				})
			}
		})
	}
	srv := startExporter(t, r, false, wrap)

	// The first refresh comes RefreshSeconds after the first paint.
	dom := chromium(t, bin, "--virtual-time-budget=8000", "--dump-dom", srv.URL+"/")
	select {
	case <-changed:
	default:
		t.Fatal("the browser never loaded /")
	}
	if !strings.Contains(dom, `data-source="refresh"`) {
		t.Fatalf("the script did not refresh the page:\n%s", dom)
	}
	for queue, want := range map[string]map[string]string{
		"default":  {"ready": "42", "in_flight": "3", "delayed": "3", "dead_letter": "1", "orphaned": "1"},
		"emails":   {"ready": "1", "dead_letter": "2", "orphaned": "0"},
		"reports":  {"ready": "1,234", "oldest": "47m"},
		"webhooks": {"ready": "5", "in_flight": "2", "delayed": "12"},
	} {
		for field, v := range want {
			got := cell(t, dom, queue, field)
			if field == "oldest" {
				got = strings.Fields(got)[0]
			}
			if got != v {
				t.Errorf("after refresh, %s %s = %q, want %q", queue, field, got, v)
			}
		}
	}
	for _, want := range []string{
		"TimeoutError: upstream took 30s", // the dead letter added after the first paint
		// ... and counted in "Failures by actor", swapped in by the script.
		`<td data-label="Queue">default</td><td data-label="Actor"><code>task</code></td><td class="n warn" data-label="Dead-lettered">1</td>`,
		`data-field="processes-alive">2<`, "Healthy", "staging",
		// The script writes data as text, never as markup.
		"&lt;bob@example.invalid&gt;",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if regexp.MustCompile(`class="live error"`).MatchString(dom) {
		t.Error("the page reports a failed refresh")
	}

	dir := filepath.Join(testserver.RepoRoot(t), "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, shot := range []struct{ name, size, scale string }{
		{"status-page-laptop.png", "1280,1000", "1"},
		{"status-page-phone.png", "390,1800", "2"},
	} {
		file := filepath.Join(dir, shot.name)
		os.Remove(file)
		chromium(t, bin, "--virtual-time-budget=4000", "--window-size="+shot.size,
			"--force-device-scale-factor="+shot.scale, "--screenshot="+file, srv.URL+"/")
		st, err := os.Stat(file)
		if err != nil || st.Size() < 10_000 {
			t.Fatalf("screenshot %s: %v (%d bytes)", file, err, sizeOf(st))
		}
		t.Logf("screenshot: %s", file)
	}

	// Redis gone: the page says so instead of showing stale numbers.
	r.Stop()
	dom = chromium(t, bin, "--virtual-time-budget=8000", "--dump-dom", srv.URL+"/")
	for _, want := range []string{`data-source="refresh"`, `class="overall unhealthy"`, `data-check="redis"`,
		"the broker's Redis did not answer", "Redis is not answering", `data-field="redis-status">Failing<`} {
		if !strings.Contains(dom, want) {
			t.Errorf("with Redis down, the DOM lacks %q", want)
		}
	}
	file := filepath.Join(dir, "status-page-unhealthy.png")
	chromium(t, bin, "--virtual-time-budget=4000", "--window-size=1280,700", "--screenshot="+file, srv.URL+"/")
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return 0
	}
	return st.Size()
}
