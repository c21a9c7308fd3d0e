// Command dramatiq-bench measures what one scrape costs against a real
// redis-server filled like a busy production broker: N queues, ~100
// processes (a few stale, holding orphaned messages), a large message count
// and a large unrelated keyspace (a Django cache sharing the database).
//
// It reports, per queue count: scrape latency through the real binary
// (p50/p99), Redis commands and round trips per scrape, Go allocations per
// scrape, and the exporter's peak RSS. Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func main() {
	sizes := flag.String("sizes", "100,1000,10000", "queue counts to measure, comma-separated (empty: skip)")
	messages := flag.Int("messages", 1_000_000, "messages in total, spread over the queues")
	tenfold := flag.Bool("tenfold", true, "also measure the first size with a tenth of the messages, to show scrape cost does not follow message count")
	unrelated := flag.Int("unrelated", 1_000_000, "unrelated keys in the same database")
	processes := flag.Int("processes", 100, "processes in the heartbeat set (5% of them stale)")
	scrapes := flag.Int("scrapes", 50, "timed scrapes per size")
	redisServer := flag.String("redis-server", "redis-server", "redis-server binary")
	discovery := flag.String("discovery", "1000000,10000000", "unrelated key counts to measure background discovery over, comma-separated (empty: skip)")
	bigHeads := flag.Int("big-heads", 10, "queues whose head message is large, for the memory benchmark (0: skip)")
	headBytes := flag.Int("head-bytes", 5<<20, "size of the argument in each large head message")
	concurrency := flag.Int("concurrency", 40, "concurrent scrapes in the large-head benchmark (the default --web.max-requests)")
	historySizes := flag.String("history", "1000,10000", "queue counts to measure the status page's trends history at, comma-separated (empty: skip)")
	stuck := flag.String("stuck", "1000000", "unrelated key counts to measure stuck-work detection over at 1,000 queues, comma-separated (empty: skip; docs/stuck-work.md)")
	stuckMessages := flag.Int("stuck-messages", 100_000, "messages spread over the 1,000 queues of the stuck-work benchmark")
	stuckNewQueue := flag.Bool("stuck-new-queue", true, "in the stuck-work benchmark, also measure how long a queue created after the first pass takes to appear (up to a pass's Redis time / --dramatiq.discovery-duty: 15 min at 10M keys)")
	stuckNoInfo := flag.Bool("stuck-no-info", false, "run the stuck-work benchmark's exporter as a read-only user that may not run INFO")
	stuckDuties := flag.String("stuck-first-pass-duty", "0.1,1", "first-pass duties (--dramatiq.discovery-first-pass-duty) to measure the stuck-work benchmark at, comma-separated")
	backlog := flag.String("backlog", "100:1000000,100:50000", "QUEUES:MESSAGES broker states to measure --dramatiq.backlog-by-actor off and on at, comma-separated (empty: skip)")
	exporter := flag.String("exporter", "", "an exporter binary to measure instead of building ./cmd/dramatiq_exporter (to compare two versions)")
	rmqSizes := flag.String("rabbitmq", "1000", "Dramatiq queue counts to measure a RabbitMQ broker at (3 RabbitMQ queues each), comma-separated (empty: skip)")
	python := flag.String("python", ".venv/bin/python", "a Python with dramatiq[rabbitmq], to fill the RabbitMQ broker")
	rmqScrapes := flag.Int("rabbitmq-scrapes", 20, "timed scrapes per row of the RabbitMQ benchmark (a management API listing takes about a second at 3,000 queues)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "dramatiq-bench-bin")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := *exporter
	if bin == "" {
		if bin, err = build(dir, "./cmd/dramatiq_exporter"); err != nil {
			fatal(err)
		}
	}
	floor, err := build(dir, "./tools/scrape-floor")
	if err != nil {
		fatal(err)
	}

	if *sizes != "" {
		scrapeBench(*sizes, *messages, *tenfold, *unrelated, *processes, *scrapes, *redisServer, bin, floor)
	}
	if *discovery != "" {
		discoveryBench(*discovery, *redisServer, bin)
	}
	if *stuck != "" {
		stuckBench(*stuck, *stuckMessages, *stuckDuties, *stuckNewQueue, *stuckNoInfo, *redisServer, bin)
	}
	if *historySizes != "" {
		historyBench(*historySizes)
	}
	if *rmqSizes != "" {
		rabbitmqBench(*rmqSizes, *python, *rmqScrapes, bin)
	}
	if *backlog != "" {
		backlogBench(*backlog, *scrapes, *redisServer, bin)
	}
	if *bigHeads > 0 {
		bigHeadsBench(*bigHeads, *headBytes, *concurrency, 3, *redisServer, bin)
	}
	if *apiQueues != "" {
		apiClientsBench(*redisServer, bin)
	}
}

func scrapeBench(sizes string, messages int, tenfold bool, unrelated, processes, scrapes int, redisServer, bin, floor string) {
	fmt.Printf("dramatiq_exporter scrape benchmark: %d messages, %d unrelated keys, %d processes, %d scrapes per size, %d CPUs\n\n",
		messages, unrelated, processes, scrapes, runtime.NumCPU())
	fmt.Println("| queues | messages | scrape p50 | floor p50 | exporter / floor | scrape p99 | Redis commands / scrape | round trips / scrape | allocs / scrape | allocs / queue | alloc bytes / scrape | peak RSS | discovery SCAN (background) |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var runs []run
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatal(fmt.Errorf("--sizes: %q is not a positive number", s))
		}
		runs = append(runs, run{queues: n, messages: messages})
	}
	if tenfold && len(runs) > 0 {
		runs = append([]run{{queues: runs[0].queues, messages: messages / 10}}, runs...)
	}
	for _, r := range runs {
		r.processes, r.unrelated, r.scrapes, r.redisServer, r.exporter, r.floor = processes, unrelated, scrapes, redisServer, bin, floor
		res, err := r.measure()
		if err != nil {
			fatal(fmt.Errorf("%d queues: %w", r.queues, err))
		}
		fmt.Printf("| %d | %d | %s | %s | %.2f× | %s | %.0f | %.0f | %.0f | %.1f | %s | %s | %s |\n", r.queues, r.messages,
			ms(res.p50), ms(res.floorP50), float64(res.p50)/float64(res.floorP50), ms(res.p99), res.commands, res.trips,
			res.allocs, res.allocs/float64(r.queues), bytes(res.allocBytes), bytes(float64(res.rssPeak)), ms(res.discovery))
	}
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("\nload average at the end (1, 5, 15 min): %s\n", strings.Join(strings.Fields(string(l))[:3], ", "))
	}
}

type run struct {
	queues, messages, processes, unrelated, scrapes int
	redisServer, exporter, floor                    string
}

type result struct {
	p50, p99, floorP50, discovery       time.Duration
	commands, trips, allocs, allocBytes float64
	rssPeak                             int64
}

func (r run) measure() (*result, error) {
	ctx := context.Background()
	progress("%d queues, %d messages: starting redis-server", r.queues, r.messages)
	dir, err := os.MkdirTemp("", "dramatiq-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command(r.redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--enable-debug-command", "local")
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	admin := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Minute})
	defer admin.Close()
	for i := 0; ; i++ {
		if err := admin.Ping(ctx).Err(); err == nil {
			break
		} else if i > 200 {
			return nil, err
		}
		time.Sleep(25 * time.Millisecond)
	}

	progress("  filling: %d unrelated keys", r.unrelated)
	if r.unrelated > 0 {
		if err := admin.Do(ctx, "DEBUG", "POPULATE", r.unrelated, "django.cache:").Err(); err != nil {
			return nil, fmt.Errorf("DEBUG POPULATE: %w", err)
		}
	}
	progress("  filling: %d queues, %d messages, %d processes", r.queues, r.messages, r.processes)
	if err := fill(ctx, admin, r); err != nil {
		return nil, err
	}

	// In process: commands, round trips and allocations of one Snapshot.
	client, err := broker.NewClient(broker.ClientOptions{URL: "redis://" + addr + "/0", Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	hook := &countingHook{}
	client.AddHook(hook)
	reader := broker.NewReader(client, broker.Options{MaxQueues: 0})
	begin := time.Now()
	if err := reader.Discover(ctx); err != nil {
		return nil, err
	}
	discovery := time.Since(begin)
	if _, err := reader.Snapshot(ctx); err != nil { // warm the pool
		return nil, err
	}
	hook.cmds.Store(0)
	hook.trips.Store(0)
	const inproc = 10
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < inproc; i++ {
		if _, err := reader.Snapshot(ctx); err != nil {
			return nil, err
		}
	}
	runtime.ReadMemStats(&after)
	res := &result{
		commands:   float64(hook.cmds.Load()) / inproc,
		trips:      float64(hook.trips.Load()) / inproc,
		allocs:     float64(after.Mallocs-before.Mallocs) / inproc,
		allocBytes: float64(after.TotalAlloc-before.TotalAlloc) / inproc,
		discovery:  discovery,
	}

	// Through the real binary over HTTP: latency and peak RSS.
	progress("  scraping the exporter binary %d times", r.scrapes)
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	exp := exec.Command(r.exporter, "--redis.url", "redis://"+addr+"/0", "--web.listen-address", "127.0.0.1:"+strconv.Itoa(webPort),
		"--dramatiq.max-queues", "0", "--dramatiq.discovery-interval", "1h", "--scrape.timeout", "60s", "--log.level", "warn")
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort)
	httpc := &http.Client{Timeout: 2 * time.Minute}
	for i := 0; ; i++ { // the first scrapes discover and warm up
		body, err := scrape(httpc, url)
		if err == nil && !strings.Contains(body, "dramatiq_redis_up 1") {
			return nil, fmt.Errorf("scrape did not succeed:\n%.2000s", body)
		}
		// Discovery runs in the background from start: time full scrapes only.
		// The sample line, not the HELP text, which also starts with the name and a 1.
		if err == nil && strings.Contains(body, "\ndramatiq_exporter_discovery_complete 1\n") && i >= 2 {
			break
		}
		if i > 1500 { // 5 minutes: a paced first pass over 1M keys takes about 10 s
			return nil, fmt.Errorf("the exporter did not complete discovery: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The floor, on the same Redis, scraped alternately with the exporter
	// so that both see the same machine load.
	names, err := os.Create(filepath.Join(dir, "queues.txt"))
	if err != nil {
		return nil, err
	}
	for q := 0; q < r.queues; q++ {
		fmt.Fprintf(names, "queue%05d\n", q)
	}
	names.Close()
	floorPort, err := freePort()
	if err != nil {
		return nil, err
	}
	fl := exec.Command(r.floor, "-redis", addr, "-queues-file", names.Name(), "-listen", "127.0.0.1:"+strconv.Itoa(floorPort))
	fl.Stderr = os.Stderr
	if err := fl.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = fl.Process.Kill(); _ = fl.Wait() }()
	floorURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", floorPort)
	for i := 0; ; i++ {
		_, err := scrape(httpc, floorURL)
		if err == nil && i >= 2 {
			break
		}
		if err != nil && i > 300 {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	progress("  scraping the exporter binary and the floor %d times each, interleaved", r.scrapes)
	var lat, floorLat []time.Duration
	// Both must report every queue, or the comparison is meaningless.
	timed := func(u string) (time.Duration, error) {
		begin := time.Now()
		body, err := scrape(httpc, u)
		d := time.Since(begin)
		if n := strings.Count(body, "dramatiq_queue_ready_messages{"); err == nil && n != r.queues {
			err = fmt.Errorf("%s reported %d of %d queues:\n%.2000s", u, n, r.queues, body)
		}
		return d, err
	}
	for i := 0; i < r.scrapes; i++ {
		// Alternate who goes first, so neither always follows the other.
		order := []string{url, floorURL}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, u := range order {
			d, err := timed(u)
			if err != nil {
				return nil, err
			}
			if u == url {
				lat = append(lat, d)
			} else {
				floorLat = append(floorLat, d)
			}
		}
	}
	sortDurations(lat)
	sortDurations(floorLat)
	res.p50 = lat[len(lat)/2]
	res.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	res.floorP50 = floorLat[len(floorLat)/2]
	res.rssPeak = peakRSS(exp.Process.Pid)
	return res, nil
}

// fill writes the state through the same layout Dramatiq uses.
func fill(ctx context.Context, c *redis.Client, r run) error {
	per := r.messages / r.queues
	extra := r.messages % r.queues
	now := time.Now()
	pipe := c.Pipeline()
	pending := 0
	flush := func(force bool) error {
		if pending == 0 || (!force && pending < 2000) {
			return nil
		}
		_, err := pipe.Exec(ctx)
		pending = 0
		return err
	}
	for q := 0; q < r.queues; q++ {
		name := fmt.Sprintf("queue%05d", q)
		n := per
		if q < extra {
			n++
		}
		for start := 0; start < n; start += 1000 {
			end := min(n, start+1000)
			ids := make([]any, 0, end-start)
			fields := make([]any, 0, 2*(end-start))
			for i := start; i < end; i++ {
				id := fmt.Sprintf("%s-%08d-0000-0000-000000000000", name[5:], i)
				ids = append(ids, id)
				fields = append(fields, id, testserver.Body(name, id, now.Add(-time.Duration(n-i)*time.Second), nil))
			}
			pipe.HSet(ctx, "dramatiq:"+name+".msgs", fields...)
			pipe.RPush(ctx, "dramatiq:"+name, ids...)
			pending += 2
		}
		if q%10 == 0 {
			pipe.ZAdd(ctx, "dramatiq:"+name+".XQ", redis.Z{Score: float64(now.UnixMilli()), Member: "dead-" + name})
			pending++
		}
		if err := flush(false); err != nil {
			return err
		}
	}
	// Processes: each alive one holds two messages of one queue; the stale
	// ones (5%) left theirs behind.
	for p := 0; p < r.processes; p++ {
		wid := testserver.UUID()
		at := now
		if p%20 == 0 {
			at = now.Add(-time.Hour)
		}
		pipe.ZAdd(ctx, "dramatiq:__heartbeats__", redis.Z{Score: float64(at.UnixMilli()), Member: wid})
		q := fmt.Sprintf("queue%05d", p%r.queues)
		for i := 0; i < 2; i++ {
			pipe.LMove(ctx, "dramatiq:"+q, "dramatiq:__acks__."+wid+"."+q, "LEFT", "RIGHT")
		}
		pending += 3
	}
	if err := flush(true); err != nil {
		return err
	}
	// LMOVE made lists; Dramatiq's ack sets are sets.
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, "dramatiq:__acks__.*", 1000).Result()
		if err != nil {
			return err
		}
		for _, k := range keys {
			ids, err := c.LRange(ctx, k, 0, -1).Result()
			if err != nil {
				return err
			}
			c.Del(ctx, k)
			members := make([]any, len(ids))
			for i, id := range ids {
				members[i] = id
			}
			if len(members) > 0 {
				c.SAdd(ctx, k, members...)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

type countingHook struct{ cmds, trips atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		h.trips.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		h.trips.Add(1)
		return next(ctx, cmds)
	}
}

func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// build compiles pkg into dir; only the exporter's own code is timed, so
// both binaries are built the same way.
func build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	progress("building %s", pkg)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, err)
	}
	return bin, nil
}

// scrape GETs u as curl does (no compression) and fails on any status but 200.
func scrape(c *http.Client, u string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %.200s", u, resp.Status, body)
	}
	return string(body), err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func bytes(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "dramatiq-bench:", err)
	os.Exit(1)
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

var errNotYet = fmt.Errorf("discovery has not completed yet")
