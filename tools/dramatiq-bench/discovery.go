package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// discoveryRun measures background discovery over a database holding
// `unrelated` cache keys beside a small broker: what one pass costs Redis,
// the interval the exporter settles on and so its share of Redis's time,
// and whether scrapes stay fast and `dramatiq_redis_up 1` during the first
// pass.
type discoveryRun struct {
	unrelated             int
	redisServer, exporter string
}

type discoveryResult struct {
	unpaced             time.Duration // one unpaced pass, in process
	firstPass           time.Duration // wall time of the exporter's first (paced) pass
	redisTime           float64       // the exporter's own measure, seconds
	benchUsec, benchCPU float64       // Redis's SCAN+TYPE usec and main-thread CPU over the first pass, seconds
	interval            float64       // seconds
	scrapes, down       int
	p50, p99, worst     time.Duration
	scanned             float64
}

func (d discoveryRun) measure() (*discoveryResult, error) {
	ctx := context.Background()
	addr, admin, stop, err := startBenchRedis(d.redisServer)
	if err != nil {
		return nil, err
	}
	defer stop()
	progress("discovery, %d unrelated keys: filling", d.unrelated)
	if err := admin.Do(ctx, "DEBUG", "POPULATE", d.unrelated, "django.cache:").Err(); err != nil {
		return nil, fmt.Errorf("DEBUG POPULATE: %w", err)
	}
	if err := fill(ctx, admin, run{queues: 10, messages: 10_000, processes: 20}); err != nil {
		return nil, err
	}
	res := &discoveryResult{}

	// One unpaced pass in process, for comparison: what a scrape used to
	// wait for before the first discovery.
	client, err := broker.NewClient(broker.ClientOptions{URL: "redis://" + addr + "/0", Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	err = broker.NewReader(client, broker.Options{}).Discover(ctx)
	res.unpaced = time.Since(begin)
	client.Close()
	if err != nil {
		return nil, err
	}

	usec0, cpu0, err := redisCost(ctx, admin)
	if err != nil {
		return nil, err
	}
	progress("  starting the exporter; scraping every 250 ms with a 1 s deadline during its first pass")
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	exp := exec.Command(d.exporter, "--redis.url", "redis://"+addr+"/0", "--web.listen-address", "127.0.0.1:"+strconv.Itoa(webPort),
		"--dramatiq.queues", "queue00000", "--scrape.timeout", "1s", "--log.level", "warn")
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort)
	started := time.Now()
	var lat []time.Duration
	var last map[string]*dto.MetricFamily
	for {
		if time.Since(started) > 30*time.Minute {
			return nil, fmt.Errorf("the first discovery pass did not complete in 30 minutes")
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		begin := time.Now()
		mfs, err := testserver.ScrapeMetrics(sctx, url)
		took := time.Since(begin)
		cancel()
		if err != nil {
			if len(lat) == 0 && time.Since(started) < 10*time.Second {
				time.Sleep(50 * time.Millisecond) // not listening yet
				continue
			}
			return nil, err
		}
		if gauge(mfs, "dramatiq_exporter_discovery_complete") == 1 {
			last = mfs
			break
		}
		lat = append(lat, took)
		if gauge(mfs, "dramatiq_redis_up") != 1 {
			res.down++
		}
		time.Sleep(250 * time.Millisecond)
	}
	usec1, cpu1, err := redisCost(ctx, admin)
	if err != nil {
		return nil, err
	}
	res.benchUsec, res.benchCPU = (usec1-usec0)/1e6, cpu1-cpu0
	res.firstPass = time.Duration(gauge(last, "dramatiq_exporter_discovery_duration_seconds") * float64(time.Second))
	res.redisTime = gauge(last, "dramatiq_exporter_discovery_redis_seconds")
	res.interval = gauge(last, "dramatiq_exporter_discovery_interval_seconds")
	res.scanned = gauge(last, "dramatiq_exporter_discovery_scanned_keys")
	res.scrapes = len(lat)
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		res.p50, res.p99, res.worst = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
	}
	return res, nil
}

// redisCost reads Redis's own counters: usec spent in SCAN and TYPE, and
// the main thread's CPU seconds (user + sys).
func redisCost(ctx context.Context, c *redis.Client) (usec, cpu float64, err error) {
	s, err := c.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "cmdstat_scan", "cmdstat_type":
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "usec="); ok {
					n, _ := strconv.ParseFloat(v, 64)
					usec += n
				}
			}
		case "used_cpu_sys_main_thread", "used_cpu_user_main_thread":
			n, _ := strconv.ParseFloat(rest, 64)
			cpu += n
		}
	}
	return usec, cpu, nil
}

func gauge(mfs map[string]*dto.MetricFamily, name string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return math.NaN()
	}
	v := testserver.Samples(mf, nil)
	if len(v) != 1 {
		return math.NaN()
	}
	return v[0]
}

// startBenchRedis starts a throwaway redis-server that DEBUG POPULATE may
// fill; stop kills it and removes its directory.
func startBenchRedis(bin string) (addr string, admin *redis.Client, stop func(), err error) {
	dir, err := os.MkdirTemp("", "dramatiq-bench")
	if err != nil {
		return "", nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, nil, err
	}
	addr = "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--enable-debug-command", "local")
	if err := srv.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, nil, err
	}
	admin = redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 5 * time.Minute})
	stop = func() {
		admin.Close()
		_ = srv.Process.Kill()
		_ = srv.Wait()
		os.RemoveAll(dir)
	}
	for i := 0; ; i++ {
		if err := admin.Ping(context.Background()).Err(); err == nil {
			return addr, admin, stop, nil
		} else if i > 200 {
			stop()
			return "", nil, nil, err
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func discoveryBench(sizes, redisServer, exporter string) {
	fmt.Printf("\ndramatiq_exporter discovery benchmark: 10 queues beside N unrelated keys; default --dramatiq.discovery-interval (30s); scrapes every 250 ms with a 1 s deadline until the first pass completes\n\n")
	fmt.Println("| unrelated keys | unpaced pass | first pass (paced) | Redis time / pass (exporter) | Redis SCAN+TYPE time (INFO commandstats) | Redis main-thread CPU during the pass | interval | duty cycle (exporter's measure / main-thread CPU) | scrapes during the first pass | p50 / p99 / max | redis_up 0 |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			fatal(fmt.Errorf("--discovery: %q is not a number", s))
		}
		res, err := discoveryRun{unrelated: n, redisServer: redisServer, exporter: exporter}.measure()
		if err != nil {
			fatal(fmt.Errorf("discovery over %d keys: %w", n, err))
		}
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %.0f s | %.2f%% / %.2f%% | %d | %s / %s / %s | %d |\n", n,
			secs(res.unpaced.Seconds()), secs(res.firstPass.Seconds()), secs(res.redisTime), secs(res.benchUsec), secs(res.benchCPU),
			res.interval, 100*res.redisTime/res.interval, 100*res.benchCPU/res.interval, res.scrapes, ms(res.p50), ms(res.p99), ms(res.worst), res.down)
	}
}

func secs(s float64) string { return fmt.Sprintf("%.2f s", s) }
