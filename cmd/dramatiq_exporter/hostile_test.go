package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// The review's hostile replies, and one RESP allows but that is larger
// than anything the exporter reads. Each used to end the process (a
// makeslice panic in discovery's goroutine, a fatal out-of-memory error,
// a fatal stack overflow) or grow it by gigabytes.
var hostileAnswers = []struct {
	name string
	a    testserver.Answer
}{
	{"bulk near int64 max", testserver.Reply("$9223372036854775800\r\n")},
	{"bulk of 1e12 bytes", testserver.Reply("$1000000000000\r\n")},
	{"array of 1e12", testserver.Reply("*1000000000000\r\n")},
	{"20 million nested arrays", testserver.Stream("", "*1\r\n", 20_000_000)},
	{"endless line", testserver.Stream("+", "a", -1)},
	{"a gigabyte of 1 MiB strings", testserver.Stream("*1024\r\n", "$1048576\r\n"+strings.Repeat("x", 1<<20)+"\r\n", 1024)},
}

// past answers the commands whose reply go-redis reads with a fixed shape
// (INFO, the heartbeat reads, SCAN, DBSIZE) as an empty Redis would, so
// that a answers the reader's generic commands: the path that used to
// allocate and recurse as a reply said.
func past(a testserver.Answer) testserver.Answer {
	return func(w io.Writer, cmd []string) error {
		switch strings.ToUpper(cmd[0]) {
		case "INFO":
			return testserver.Reply("$2\r\n#\n\r\n")(w, cmd)
		case "ZRANGEBYSCORE", "ZREVRANGEBYSCORE":
			return testserver.Reply("*0\r\n")(w, cmd)
		case "ZCOUNT", "DBSIZE":
			return testserver.Reply(":0\r\n")(w, cmd)
		case "SCAN":
			return testserver.Reply("*2\r\n$1\r\n0\r\n*0\r\n")(w, cmd)
		}
		return a(w, cmd)
	}
}

// hostileExporter is the binary, run under a 2 GiB address-space limit
// so that a regression fails the test instead of taking the machine.
type hostileExporter struct {
	base   string
	pid    int
	logs   *testserver.LogBuffer
	exited chan struct{}
}

func startHostileExporter(t *testing.T, args ...string) *hostileExporter {
	t.Helper()
	prlimit := testserver.LookPath(t, "prlimit")
	port := testserver.FreePort(t)
	cmd := exec.Command(prlimit, append([]string{"--as=2147483648", "--", binary,
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--scrape.timeout=5s"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	e := &hostileExporter{base: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &testserver.LogBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pid = cmd.Process.Pid // prlimit execs the binary: same process
	go func() { cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-e.exited })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(e.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return e
			}
		}
		e.alive(t)
		if time.Now().After(deadline) {
			t.Fatalf("exporter not ready: %s", e.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get scrapes path and returns dramatiq_redis_up and queue q's ready
// count, as "up ready=N".
func (e *hostileExporter) get(path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fams, err := testserver.ScrapeMetrics(ctx, e.base+path)
	if err != nil {
		return 0, "", err
	}
	up := ""
	if f, ok := fams["dramatiq_redis_up"]; ok {
		if v := testserver.Samples(f, nil); len(v) == 1 {
			up = strconv.FormatFloat(v[0], 'g', -1, 64)
		}
	}
	if f, ok := fams["dramatiq_queue_ready_messages"]; ok {
		if v := testserver.Samples(f, map[string]string{"queue": "q"}); len(v) == 1 {
			up += fmt.Sprintf(" ready=%g", v[0])
		}
	}
	return 200, up, nil
}

func (e *hostileExporter) alive(t *testing.T) {
	t.Helper()
	select {
	case <-e.exited:
		t.Fatalf("the exporter died:\n%s", tail(e.logs.String(), 4000))
	default:
	}
}

// peakRSS is the process's high-water mark of resident memory.
func (e *hostileExporter) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// scrapeUntil scrapes path until its answer is want, or fails the test.
func (e *hostileExporter) scrapeUntil(t *testing.T, path, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, got, err := e.get(path)
		if err == nil && got == want {
			return
		}
		e.alive(t)
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q (%v), want %q\n%s", path, got, err, want, tail(e.logs.String(), 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// maxLogLine is the longest line the exporter may write: every value is
// cut to 1 KiB (a stack trace to 16 KiB).
const maxLogLine = 24 << 10

func checkLogLines(t *testing.T, logs string) {
	t.Helper()
	for _, l := range strings.Split(logs, "\n") {
		if len(l) > maxLogLine {
			t.Fatalf("a log line of %d bytes: %.300s…", len(l), l)
		}
	}
	if strings.Contains(logs, "panicked") {
		t.Fatalf("something panicked:\n%s", tail(logs, 4000))
	}
}

// A Redis whose replies break RESP's bounds: every scrape answers in time
// with dramatiq_redis_up 0, the process lives within a bounded memory,
// and the same address read again once it serves a real Redis.
func TestServeSurvivesHostileRedis(t *testing.T) {
	real := testserver.StartRedis(t)
	real.NewBroker(t, "dramatiq").Enqueue("q", 3, time.Now().Add(-time.Minute))
	for _, c := range hostileAnswers {
		for _, mode := range []string{"every command", "generic commands"} {
			t.Run(c.name+", "+mode, func(t *testing.T) {
				a := c.a
				if mode == "generic commands" {
					a = past(a)
				}
				h := testserver.StartHostile(t, a)
				e := startHostileExporter(t, "--redis.url", h.URL(), "--dramatiq.queues=q", "--dramatiq.discovery-interval=1s")
				for range 3 {
					begin := time.Now()
					_, up, err := e.get("/metrics")
					took := time.Since(begin)
					if err != nil || up != "0" {
						t.Fatalf("scrape: up=%q, %v\n%s", up, err, tail(e.logs.String(), 4000))
					}
					if took > 5*time.Second {
						t.Fatalf("scrape took %v", took)
					}
					t.Logf("up 0 in %v", took)
				}
				e.alive(t)
				rss := e.peakRSS(t)
				t.Logf("peak RSS %d MiB", rss>>20)
				if rss > 200<<20 {
					t.Fatalf("peak RSS %d MiB", rss>>20)
				}
				h.Heal(real.Addr)
				e.scrapeUntil(t, "/metrics", "1 ready=3", 30*time.Second)
				checkLogLines(t, e.logs.String())
				if !strings.Contains(e.logs.String(), "reply refused") && !strings.Contains(e.logs.String(), "can't parse") {
					t.Fatalf("no log line says why:\n%s", tail(e.logs.String(), 4000))
				}
			})
		}
	}
}

// The same through Sentinel: a hostile answer to get-master-addr-by-name,
// and a Sentinel naming a 1 MiB host, which must not be logged in full on
// every retry.
func TestServeSurvivesHostileSentinel(t *testing.T) {
	real := testserver.StartRedis(t)
	real.NewBroker(t, "dramatiq").Enqueue("q", 3, time.Now().Add(-time.Minute))
	host, port, _ := net.SplitHostPort(real.Addr)
	answers := append(hostileAnswers[:len(hostileAnswers):len(hostileAnswers)],
		struct {
			name string
			a    testserver.Answer
		}{"a 1 MiB host name", testserver.MasterAddr(strings.Repeat("h", 1<<20), "6379")})
	for _, c := range answers {
		t.Run(c.name, func(t *testing.T) {
			h := testserver.StartHostile(t, testserver.SentinelAnswer(c.a))
			e := startHostileExporter(t, "--redis.url", "redis://localhost/0", "--redis.sentinel-addrs", h.Addr,
				"--redis.sentinel-master", "mymaster", "--dramatiq.queues=q", "--dramatiq.discovery-interval=1s")
			for range 3 {
				begin := time.Now()
				_, up, err := e.get("/metrics")
				if err != nil || up != "0" {
					t.Fatalf("scrape: up=%q, %v\n%s", up, err, tail(e.logs.String(), 4000))
				}
				if took := time.Since(begin); took > 5*time.Second {
					t.Fatalf("scrape took %v", took)
				}
			}
			e.alive(t)
			if rss := e.peakRSS(t); rss > 200<<20 {
				t.Fatalf("peak RSS %d MiB", rss>>20)
			}
			h.Set(testserver.SentinelAnswer(testserver.MasterAddr(host, port)))
			e.scrapeUntil(t, "/metrics", "1 ready=3", 30*time.Second)
			checkLogLines(t, e.logs.String())
		})
	}
}

// A /probe target is a server the requester names: the same bound holds.
func TestProbeSurvivesHostileTarget(t *testing.T) {
	real := testserver.StartRedis(t)
	real.NewBroker(t, "dramatiq").Enqueue("q", 3, time.Now().Add(-time.Minute))
	conf := write(t, "exporter.yml", "probe:\n  allowed_targets: [\"127.0.0.1:*\"]\nmodules:\n  default:\n    dramatiq: {queues: [q]}\n")
	e := startHostileExporter(t, "--config.file", conf, "--redis.url", real.URL())
	for _, c := range hostileAnswers {
		t.Run(c.name, func(t *testing.T) {
			h := testserver.StartHostile(t, past(c.a))
			path := "/probe?" + url.Values{"target": {h.URL()}}.Encode()
			begin := time.Now()
			_, up, err := e.get(path)
			if err != nil || up != "0" {
				t.Fatalf("probe: up=%q, %v\n%s", up, err, tail(e.logs.String(), 4000))
			}
			if took := time.Since(begin); took > 5*time.Second {
				t.Fatalf("probe took %v", took)
			}
			e.alive(t)
			h.Heal(real.Addr)
			e.scrapeUntil(t, path, "1 ready=3", 30*time.Second)
		})
	}
	if rss := e.peakRSS(t); rss > 200<<20 {
		t.Fatalf("peak RSS %d MiB", rss>>20)
	}
	e.scrapeUntil(t, "/metrics", "1 ready=3", 30*time.Second)
	checkLogLines(t, e.logs.String())
}

// check against such a server prints its JSON and exits 1: never 2, the
// code of usage errors, which a crash used to give.
func TestCheckAgainstHostileRedis(t *testing.T) {
	for _, c := range hostileAnswers {
		t.Run(c.name, func(t *testing.T) {
			h := testserver.StartHostile(t, past(c.a))
			res := runCheck(t, []string{"REDIS_URL=" + h.URL()}, "--check.max-ready=q=100")
			wantCode(t, res, 1)
			if get(res.json, "components", "redis", "status") != "failing" {
				t.Fatalf("components = %v", res.json["components"])
			}
			if res.took > 10*time.Second {
				t.Fatalf("check took %v", res.took)
			}
			checkLogLines(t, res.stderr+res.stdout)
		})
	}
}
