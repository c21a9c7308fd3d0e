package main

import (
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// backlogBench measures --dramatiq.backlog-by-actor: the same broker
// scraped by the exporter with the option off and on. Each spec is
// QUEUES:MESSAGES; the messages are spread over the queues, 90/9/1 over
// three actors in bursts of 25.
func backlogBench(specs string, scrapes int, redisServer, bin string) {
	fmt.Printf("\ndramatiq_exporter backlog-by-actor benchmark: %d scrapes per row, %d CPUs\n\n", scrapes, runtime.NumCPU())
	fmt.Println("| queues | messages | backlog-by-actor | first scrape | scrape p50 | scrape p99 | Redis commands / scrape | peak RSS |")
	fmt.Println("|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, spec := range strings.Split(specs, ",") {
		q, m, ok := strings.Cut(strings.TrimSpace(spec), ":")
		queues, err1 := strconv.Atoi(q)
		messages, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || queues <= 0 || messages < 0 {
			fatal(fmt.Errorf("--backlog: %q is not QUEUES:MESSAGES", spec))
		}
		if err := measureBacklog(queues, messages, scrapes, redisServer, bin); err != nil {
			fatal(fmt.Errorf("backlog %s: %w", spec, err))
		}
	}
}

func measureBacklog(queues, messages, scrapes int, redisServer, bin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dramatiq-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command(redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	admin := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Minute})
	defer admin.Close()
	for i := 0; ; i++ {
		if err := admin.Ping(ctx).Err(); err == nil {
			break
		} else if i > 200 {
			return err
		}
		time.Sleep(25 * time.Millisecond)
	}
	progress("  filling: %d messages over %d queues, 90/9/1 over three actors", messages, queues)
	if err := fillSkewed(ctx, admin, queues, messages); err != nil {
		return err
	}
	for _, on := range []bool{false, true} {
		first, p50, p99, cmds, rss, err := scrapeBacklog(ctx, admin, addr, queues, scrapes, on, bin)
		if err != nil {
			return err
		}
		mode := "off"
		if on {
			mode = "on"
		}
		fmt.Printf("| %d | %d | %s | %s | %s | %s | %.0f | %s |\n", queues, messages, mode, ms(first), ms(p50), ms(p99), cmds, bytes(float64(rss)))
	}
	return nil
}

func fillSkewed(ctx context.Context, c *redis.Client, queues, messages int) error {
	rng := rand.New(rand.NewSource(1))
	now := time.Now()
	actor, left := "", 0
	for q := 0; q < queues; q++ {
		name := fmt.Sprintf("queue%05d", q)
		n := messages / queues
		if q < messages%queues {
			n++
		}
		for start := 0; start < n; start += 1000 {
			end := min(n, start+1000)
			ids := make([]any, 0, end-start)
			fields := make([]any, 0, 2*(end-start))
			for i := start; i < end; i++ {
				if left == 0 {
					switch x := rng.Float64(); {
					case x < 0.90:
						actor = "send_email"
					case x < 0.99:
						actor = "resize_image"
					default:
						actor = "rebuild_index"
					}
					left = 25
				}
				left--
				id := fmt.Sprintf("%s-%08d-0000-0000-000000000000", name[5:], i)
				ids = append(ids, id)
				fields = append(fields, id, testserver.Message{Queue: name, Actor: actor, ID: id, Args: []any{i}, Created: now}.JSON(id))
			}
			pipe := c.Pipeline()
			pipe.HSet(ctx, "dramatiq:"+name+".msgs", fields...)
			pipe.RPush(ctx, "dramatiq:"+name, ids...)
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// scrapeBacklog runs the exporter, waits for discovery, times its first
// scrape (the one that reads the bodies) and then scrapes more.
// Commands are Redis's total_commands_processed over the timed scrapes.
func scrapeBacklog(ctx context.Context, admin *redis.Client, addr string, queues, scrapes int, on bool, bin string) (first, p50, p99 time.Duration, cmds float64, rss int64, err error) {
	webPort, err := freePort()
	if err != nil {
		return
	}
	args := []string{"--redis.url", "redis://" + addr + "/0", "--web.listen-address", "127.0.0.1:" + strconv.Itoa(webPort),
		"--dramatiq.discovery-interval", "1h", "--scrape.timeout", "60s", "--log.level", "warn"}
	if on {
		args = append(args, "--dramatiq.backlog-by-actor")
	}
	// The queues are configured, so that the first scrape reads them all
	// (the one that reads every body) without waiting for discovery.
	names := make([]string, queues)
	for q := range names {
		names[q] = fmt.Sprintf("queue%05d", q)
	}
	args = append(args, "--dramatiq.queues="+strings.Join(names, ","))
	exp := exec.Command(bin, args...)
	exp.Stderr = os.Stderr
	if err = exp.Start(); err != nil {
		return
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/-/ready", webPort)
	httpc := &http.Client{Timeout: 2 * time.Minute}
	for i := 0; ; i++ {
		resp, e := httpc.Get(url)
		if e == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 600 {
			err = fmt.Errorf("exporter not ready: %v", e)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort)
	timed := func() (time.Duration, error) {
		begin := time.Now()
		body, err := scrape(httpc, metrics)
		if err != nil {
			return 0, err
		}
		if !strings.Contains(body, "dramatiq_redis_up 1") {
			return 0, fmt.Errorf("scrape did not succeed:\n%.2000s", body)
		}
		if on != strings.Contains(body, "dramatiq_queue_ready_messages_by_actor{") {
			return 0, fmt.Errorf("backlog-by-actor %v but the series are not so:\n%.2000s", on, body)
		}
		return time.Since(begin), nil
	}
	if first, err = timed(); err != nil {
		return
	}
	before := processed(ctx, admin)
	lat := make([]time.Duration, 0, scrapes)
	for i := 0; i < scrapes; i++ {
		var d time.Duration
		if d, err = timed(); err != nil {
			return
		}
		lat = append(lat, d)
	}
	// processed itself is one command each time.
	cmds = float64(processed(ctx, admin)-before-1) / float64(scrapes)
	sortDurations(lat)
	return first, lat[len(lat)/2], lat[len(lat)*99/100], cmds, peakRSS(exp.Process.Pid), nil
}

func processed(ctx context.Context, c *redis.Client) int64 {
	s, _ := c.Info(ctx, "stats").Result()
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
