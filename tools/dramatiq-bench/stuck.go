package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// stuckRun measures part 1 of docs/stuck-work.md at 1,000 queues over a
// database with `unrelated` cache keys, for one first-pass duty: the time
// from start to the first scrape that reports every queue, how soon a
// crashed worker's orphans show, discovery's share of Redis's time, and
// the steady-state scrape (Prometheus 3's Accept and gzip headers) with
// its Redis commands and round trips per read.
type stuckRun struct {
	unrelated, messages, queues int
	firstPassDuty               float64
	redisServer, exporter       string
	// newQueue: also measure how long a queue created after the first
	// pass takes to appear at the default duty (up to R / duty).
	newQueue bool
	// noInfo runs the exporter as a user that may not run INFO.
	noInfo bool
}

type stuckResult struct {
	firstFull              time.Duration // start → first scrape with every queue
	orphanLag              time.Duration // heartbeat stale → orphans on /metrics
	duty                   float64       // discovery Redis seconds / interval
	interval               float64
	p50, p99               time.Duration
	commands, trips, probe float64
	tracked                float64
	newQueue               time.Duration // queue created → on /metrics
	run                    time.Duration // exporter start → new queue seen
	busy                   time.Duration // SCAN+TYPE usec over run (commandstats)
	longest                time.Duration // longest SCAN (slowlog)
	over1ms, over5ms       int
}

// prom3Accept is what Prometheus 3 sends when scraping.
const prom3Accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"

func stuckBench(unrelated string, messages int, duties string, newQueue, noInfo bool, redisServer, bin string) {
	fmt.Printf("\nstuck work (docs/stuck-work.md): 1,000 queues, %d messages, 100 processes, heartbeat timeout 10 s, scrapes every 1 s, INFO allowed: %v\n\n", messages, !noInfo)
	fmt.Println("| unrelated keys | first-pass duty | first scrape with every queue | orphans after heartbeat stale | discovery duty (exporter) | discovery interval | scrape p50 (gzip) | scrape p99 | commands / read | round trips / read | ack probes / read | ack sets counted | new queue after | Redis busy in SCAN+TYPE over the run (commandstats) | longest SCAN | SCANs > 1 ms / > 5 ms |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, u := range strings.Split(unrelated, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(u))
		if err != nil || n < 0 {
			fatal(fmt.Errorf("--stuck: %q is not a count", u))
		}
		for _, d := range strings.Split(duties, ",") {
			duty, err := strconv.ParseFloat(strings.TrimSpace(d), 64)
			if err != nil {
				fatal(fmt.Errorf("--stuck-first-pass-duty: %q", d))
			}
			s := stuckRun{unrelated: n, messages: messages, queues: 1000, firstPassDuty: duty, redisServer: redisServer, exporter: bin, newQueue: newQueue, noInfo: noInfo}
			res, err := s.measure()
			if err != nil {
				fatal(fmt.Errorf("stuck, %d unrelated keys: %w", n, err))
			}
			newQ, busy := "not measured", "not measured"
			if newQueue {
				newQ = res.newQueue.Round(time.Second).String()
				busy = fmt.Sprintf("%.1f s in %s: %.2f%%", res.busy.Seconds(), res.run.Round(time.Second), 100*res.busy.Seconds()/res.run.Seconds())
			}
			fmt.Printf("| %d | %g | %s | %s | %.2f%% | %s | %s | %s | %.0f | %.1f | %.0f | %.0f | %s | %s | %s | %d / %d |\n", n, duty,
				res.firstFull.Round(100*time.Millisecond), res.orphanLag.Round(10*time.Millisecond), 100*res.duty,
				(time.Duration(res.interval) * time.Second).String(), ms(res.p50), ms(res.p99), res.commands, res.trips, res.probe, res.tracked,
				newQ, busy, res.longest.Round(10*time.Microsecond), res.over1ms, res.over5ms)
		}
	}
}

func (s stuckRun) measure() (*stuckResult, error) {
	ctx := context.Background()
	addr, admin, stop, err := startBenchRedis(s.redisServer)
	if err != nil {
		return nil, err
	}
	defer stop()
	progress("stuck, %d unrelated keys: filling", s.unrelated)
	if s.unrelated > 0 {
		if err := admin.Do(ctx, "DEBUG", "POPULATE", s.unrelated, "django.cache:").Err(); err != nil {
			return nil, fmt.Errorf("DEBUG POPULATE: %w", err)
		}
	}
	if err := fill(ctx, admin, run{queues: s.queues, messages: s.messages, processes: 100}); err != nil {
		return nil, err
	}
	res := &stuckResult{}
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	url := "redis://" + addr + "/0"
	if s.noInfo {
		if url, err = noInfoUser(ctx, admin, addr); err != nil {
			return nil, err
		}
	}
	if err := watchSlowScans(ctx, admin); err != nil {
		return nil, err
	}
	busy0, err := redisBusy(ctx, admin)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	exp := exec.Command(s.exporter, "--redis.url", url, "--web.listen-address", "127.0.0.1:"+strconv.Itoa(webPort),
		"--dramatiq.max-queues", "0", "--dramatiq.heartbeat-timeout", "10s", "--scrape.timeout", "30s", "--log.level", "warn",
		"--dramatiq.discovery-first-pass-duty", strconv.FormatFloat(s.firstPassDuty, 'g', -1, 64))
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort)
	httpc := &http.Client{Timeout: time.Minute}

	progress("  waiting for the first scrape that reports every queue (first-pass duty %g)", s.firstPassDuty)
	for {
		body, err := scrapeProm3(httpc, metricsURL)
		if err == nil && strings.Count(body, "dramatiq_queue_ready_messages{") >= s.queues {
			res.firstFull = time.Since(started)
			break
		}
		if time.Since(started) > 45*time.Minute {
			return nil, fmt.Errorf("no scrape with every queue in 45 minutes")
		}
		time.Sleep(time.Second)
	}

	// A worker that takes 3 messages of a queue nobody else holds, heartbeats
	// for 15 s while scrapes go on, then dies.
	progress("  crashing a worker")
	const q = "queue00500"
	wid := testserver.UUID()
	hb := func() {
		admin.ZAdd(ctx, "dramatiq:__heartbeats__", redis.Z{Score: float64(time.Now().UnixMilli()), Member: wid})
	}
	hb()
	for i := 0; i < 3; i++ {
		id, err := admin.LPop(ctx, "dramatiq:"+q).Result()
		if err != nil {
			return nil, err
		}
		admin.SAdd(ctx, "dramatiq:__acks__."+wid+"."+q, id)
	}
	var last time.Time
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
		hb()
		last = time.Now()
		_, _ = scrapeProm3(httpc, metricsURL)
		time.Sleep(500 * time.Millisecond)
	}
	staleAt := last.Add(10 * time.Second)
	for {
		body, err := scrapeProm3(httpc, metricsURL)
		if err == nil && strings.Contains(body, `dramatiq_queue_orphaned_messages{queue="`+q+`"} 3`) {
			res.orphanLag = time.Since(staleAt)
			break
		}
		if time.Since(staleAt) > 30*time.Minute {
			return nil, fmt.Errorf("orphans never reported")
		}
		time.Sleep(time.Second)
	}

	// A queue created once the first pass is done appears at the end of
	// the next pass, which the default duty spaces out by R / duty.
	if s.newQueue {
		progress("  creating a new queue; waiting for it on /metrics")
		const nq = "brand_new_queue"
		if err := admin.RPush(ctx, "dramatiq:"+nq, "x").Err(); err != nil {
			return nil, err
		}
		created := time.Now()
		for {
			body, err := scrapeProm3(httpc, metricsURL)
			if err == nil && strings.Contains(body, `dramatiq_queue_ready_messages{queue="`+nq+`"}`) {
				res.newQueue = time.Since(created)
				break
			}
			if time.Since(created) > 90*time.Minute {
				return nil, fmt.Errorf("the new queue was not reported in 90 minutes")
			}
			time.Sleep(2 * time.Second)
		}
		busy1, err := redisBusy(ctx, admin)
		if err != nil {
			return nil, err
		}
		res.run, res.busy = time.Since(started), busy1-busy0
		if res.longest, res.over1ms, res.over5ms, err = slowScans(ctx, admin); err != nil {
			return nil, err
		}
	}

	// Steady state, through the binary: Prometheus 3's headers.
	progress("  steady-state scrapes")
	var lat []time.Duration
	var body string
	for i := 0; i < 30; i++ {
		begin := time.Now()
		if body, err = scrapeProm3(httpc, metricsURL); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(begin))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err == nil {
		res.interval = gauge(mfs, "dramatiq_exporter_discovery_interval_seconds")
		if r := gauge(mfs, "dramatiq_exporter_discovery_redis_seconds"); res.interval > 0 {
			res.duty = r / res.interval
		}
	}

	// In process: commands and round trips of one steady-state read.
	client, err := broker.NewClient(broker.ClientOptions{URL: "redis://" + addr + "/0", Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	hook := &countingHook{}
	client.AddHook(hook)
	reader := broker.NewReader(client, broker.Options{HeartbeatTimeout: 10 * time.Second})
	if err := reader.Discover(ctx); err != nil {
		return nil, err
	}
	for i := 0; i < 3; i++ { // learn heads and ack sets
		if _, err := reader.Snapshot(ctx); err != nil {
			return nil, err
		}
	}
	hook.cmds.Store(0)
	hook.trips.Store(0)
	const reads = 10
	var probes, tracked int
	for i := 0; i < reads; i++ {
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			return nil, err
		}
		probes += snap.AckProbes
		tracked += snap.AckSetsTracked
	}
	res.commands = float64(hook.cmds.Load()) / reads
	res.trips = float64(hook.trips.Load()) / reads
	res.probe = float64(probes) / reads
	res.tracked = float64(tracked) / reads
	return res, nil
}

// scrapeProm3 GETs u as Prometheus 3 does (its Accept header, gzip).
func scrapeProm3(c *http.Client, u string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", prom3Accept)
	// Set by hand, Go's transport leaves the body compressed: read it so.
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzipReader(resp.Body)
		if err != nil {
			return "", err
		}
		r = gz
	}
	b, err := io.ReadAll(r)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", u, resp.Status)
	}
	return string(b), err
}

func gzipReader(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
