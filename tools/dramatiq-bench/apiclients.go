package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Flags of the API-clients benchmark, kept in this file so that main.go
// only calls it.
var (
	apiQueues  = flag.String("api-queues", "1000,10000", "queue counts at which to measure the exporter's peak RSS under concurrent /api/v1/status?history=1 clients, comma-separated (empty: skip)")
	apiClients = flag.String("api-clients", "8,40", "concurrent API clients per measurement, comma-separated")
	apiFor     = flag.Duration("api-for", 8*time.Second, "how long the clients keep asking, per measurement")
	apiLimit   = flag.String("api-gomemlimit", "115MiB", "GOMEMLIMIT of the second run of each measurement: what the Helm chart sets for its 128 MiB limit (90%); empty: one run without")
)

// apiClientsBench measures what concurrent API clients cost the exporter
// process: its peak RSS (VmHWM) while `clients` clients each fetch
// /api/v1/status?history=1 in a loop, at n queues, with a fresh process
// per measurement so that one peak does not hide the next. Each
// measurement runs without GOMEMLIMIT (a bare binary) and with the
// chart's.
func apiClientsBench(redisServer, bin string) {
	var sizes, clients []int
	for _, list := range []struct {
		flag, v string
		out     *[]int
	}{{"--api-queues", *apiQueues, &sizes}, {"--api-clients", *apiClients, &clients}} {
		for _, s := range strings.Split(list.v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				fatal(fmt.Errorf("%s: %q is not a positive number", list.flag, s))
			}
			*list.out = append(*list.out, n)
		}
	}
	limits := []string{""}
	if *apiLimit != "" {
		limits = append(limits, *apiLimit)
	}
	fmt.Printf("\nPeak RSS (VmHWM) of the exporter under concurrent /api/v1/status?history=1 clients, each asking again as soon as it has its answer, for %s; a fresh process per row:\n\n", *apiFor)
	fmt.Println("| queues | clients | GOMEMLIMIT | RSS idle | peak RSS | answers 200 | answers 503 | answer size | answer p50 |")
	fmt.Println("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, n := range sizes {
		addr, stop, err := apiRedis(redisServer, n)
		if err != nil {
			fatal(fmt.Errorf("%d queues: %w", n, err))
		}
		for _, c := range clients {
			for _, limit := range limits {
				res, err := apiMeasure(bin, addr, n, c, limit)
				if err != nil {
					stop()
					fatal(fmt.Errorf("%d queues, %d clients: %w", n, c, err))
				}
				shown := limit
				if shown == "" {
					shown = "none"
				}
				fmt.Printf("| %d | %d | %s | %s | %s | %d | %d | %s | %s |\n", n, c, shown, bytes(float64(res.idle)), bytes(float64(res.peak)),
					res.ok, res.busy, bytes(float64(res.size)), ms(res.p50))
			}
		}
		stop()
	}
}

// apiRedis starts a redis-server holding n queues (two messages each, a
// dead letter in every tenth, ten processes) and returns its address.
func apiRedis(redisServer string, n int) (string, func(), error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "dramatiq-bench-api")
	if err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	progress("API clients: %d queues: starting redis-server", n)
	srv := exec.Command(redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := srv.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = srv.Process.Kill(); _ = srv.Wait(); os.RemoveAll(dir) }
	admin := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Minute})
	defer admin.Close()
	for i := 0; ; i++ {
		if err := admin.Ping(ctx).Err(); err == nil {
			break
		} else if i > 200 {
			stop()
			return "", nil, err
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err := fill(ctx, admin, run{queues: n, messages: 2 * n, processes: 10}); err != nil {
		stop()
		return "", nil, err
	}
	return addr, stop, nil
}

type apiResult struct {
	idle, peak, size int64
	ok, busy         int
	p50              time.Duration
}

func apiMeasure(bin, addr string, n, clients int, limit string) (*apiResult, error) {
	progress("API clients: %d queues, %d clients, GOMEMLIMIT %q", n, clients, limit)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	exp := exec.Command(bin, "--redis.url", "redis://"+addr+"/0", "--web.listen-address", "127.0.0.1:"+strconv.Itoa(port),
		"--dramatiq.max-queues", "0", "--dramatiq.discovery-interval", "1h", "--log.level", "error")
	exp.Env = os.Environ()
	if limit != "" {
		exp.Env = append(exp.Env, "GOMEMLIMIT="+limit)
	}
	exp.Stderr = os.Stderr
	if err := exp.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = exp.Process.Signal(syscall.SIGTERM); _ = exp.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	httpc := &http.Client{Timeout: 2 * time.Minute}
	// Wait until discovery lists every queue, as a long-running exporter does.
	for i := 0; ; i++ {
		body, err := scrape(httpc, base+"/metrics")
		if err == nil && strings.Contains(body, "\ndramatiq_exporter_discovery_complete 1\n") &&
			strings.Count(body, "dramatiq_queue_ready_messages{") == n {
			break
		}
		if i > 600 {
			return nil, fmt.Errorf("the exporter did not list %d queues in 2 minutes: %v", n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	res := &apiResult{idle: peakRSS(exp.Process.Pid)}
	var ok, busy atomic.Int64
	var size atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failure atomic.Value
	end := time.Now().Add(*apiFor)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				begin := time.Now()
				resp, err := httpc.Get(base + "/api/v1/status?history=1")
				if err != nil {
					failure.Store(err)
					return
				}
				got, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					failure.Store(err)
					return
				case resp.StatusCode == http.StatusOK:
					ok.Add(1)
					size.Store(got)
					mu.Lock()
					lat = append(lat, time.Since(begin))
					mu.Unlock()
				case resp.StatusCode == http.StatusServiceUnavailable:
					busy.Add(1)
					// As a client honouring Retry-After: 1 would.
					time.Sleep(time.Second)
				default:
					failure.Store(fmt.Errorf("answer %s", resp.Status))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failure.Load().(error); err != nil {
		return nil, err
	}
	res.peak = peakRSS(exp.Process.Pid)
	res.ok, res.busy, res.size = int(ok.Load()), int(busy.Load()), size.Load()
	if len(lat) > 0 {
		sortDurations(lat)
		res.p50 = lat[len(lat)/2]
	}
	return res, nil
}
