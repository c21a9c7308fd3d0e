package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// bigHeadsBench measures the exporter's memory when the message at the
// head of every queue is large (a 5 MB argument, say) and many clients
// scrape at once: peak RSS of the exporter binary, and scrape latency.
func bigHeadsBench(queues, headBytes, concurrency, rounds int, redisServer, bin string) {
	fmt.Printf("\ndramatiq_exporter large-head benchmark: %d queues whose head message carries %s, %d concurrent scrapes × %d rounds\n\n",
		queues, bytes(float64(headBytes)), concurrency, rounds)
	fmt.Println("| queues | head body | concurrent scrapes | rounds | scrape p50 | scrape max | peak RSS |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	p50, worst, rss, err := measureBigHeads(queues, headBytes, concurrency, rounds, redisServer, bin)
	if err != nil {
		fatal(fmt.Errorf("large heads: %w", err))
	}
	fmt.Printf("| %d | %s | %d | %d | %s | %s | %s |\n", queues, bytes(float64(headBytes)), concurrency, rounds, ms(p50), ms(worst), bytes(float64(rss)))
}

func measureBigHeads(queues, headBytes, concurrency, rounds int, redisServer, bin string) (p50, worst time.Duration, rss int64, err error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dramatiq-bench")
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return 0, 0, 0, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command(redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := srv.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	admin := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Minute})
	defer admin.Close()
	for i := 0; ; i++ {
		if err := admin.Ping(ctx).Err(); err == nil {
			break
		} else if i > 200 {
			return 0, 0, 0, err
		}
		time.Sleep(25 * time.Millisecond)
	}
	progress("  filling: %d queues with a %s head each", queues, bytes(float64(headBytes)))
	created := time.Now().Add(-time.Minute).UnixMilli()
	arg := strings.Repeat("x", headBytes)
	for q := 0; q < queues; q++ {
		name := fmt.Sprintf("big%03d", q)
		for i := 0; i < 2; i++ {
			id := fmt.Sprintf("%s-%08d-0000-0000-000000000000", name, i)
			body := fmt.Sprintf(`{"queue_name":%q,"actor_name":"upload","args":[%q],"kwargs":{},"options":{"redis_message_id":%q},"message_id":"%s-m","message_timestamp":%d}`,
				name, arg, id, id, created+int64(i))
			if err := admin.HSet(ctx, "dramatiq:"+name+".msgs", id, body).Err(); err != nil {
				return 0, 0, 0, err
			}
			if err := admin.RPush(ctx, "dramatiq:"+name, id).Err(); err != nil {
				return 0, 0, 0, err
			}
		}
	}
	webPort, err := freePort()
	if err != nil {
		return 0, 0, 0, err
	}
	exp := exec.Command(bin, "--redis.url", "redis://"+addr+"/0", "--web.listen-address", "127.0.0.1:"+strconv.Itoa(webPort),
		"--dramatiq.discovery-interval", "1h", "--scrape.timeout", "60s", "--log.level", "warn")
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort)
	httpc := &http.Client{Timeout: 2 * time.Minute}
	scrape := func() (time.Duration, error) {
		begin := time.Now()
		resp, err := httpc.Get(url)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "dramatiq_redis_up 1") {
			return 0, fmt.Errorf("scrape did not succeed:\n%.2000s", body)
		}
		if !strings.Contains(string(body), "\ndramatiq_exporter_discovery_complete 1\n") {
			return 0, errNotYet
		}
		return time.Since(begin), nil
	}
	for i := 0; ; i++ { // until the exporter answers and discovery completed
		if _, err := scrape(); err == nil {
			break
		} else if i > 300 {
			return 0, 0, 0, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	progress("  scraping: %d rounds of %d concurrent scrapes", rounds, concurrency)
	var lat []time.Duration
	var mu sync.Mutex
	var firstErr error
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for c := 0; c < concurrency; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := scrape()
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, d)
			}()
		}
		wg.Wait()
	}
	if firstErr != nil {
		return 0, 0, 0, firstErr
	}
	sortDurations(lat)
	return lat[len(lat)/2], lat[len(lat)-1], peakRSS(exp.Process.Pid), nil
}
