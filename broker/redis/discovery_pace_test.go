package redis

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func TestDiscoveryPacingMath(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name        string
		redis       time.Duration
		duty        float64
		least, want time.Duration
	}{
		{"a costly pass spaces the next one out", 10 * time.Second, 0.01, 30 * time.Second, 1000 * time.Second},
		{"a cheap pass waits for the configured interval", 100 * ms, 0.01, 30 * time.Second, 30 * time.Second},
		{"duty 1 runs passes back to back", 10 * time.Second, 1, 0, 10 * time.Second},
		{"duty 0.05", 8 * time.Second, 0.05, time.Second, 160 * time.Second},
	} {
		if got := nextInterval(c.redis, c.duty, c.least); got != c.want {
			t.Errorf("%s: nextInterval(%v, %g, %v) = %v, want %v", c.name, c.redis, c.duty, c.least, got, c.want)
		}
	}
	if got := pageWait(ms, 0.1); got != 9*ms {
		t.Errorf("pageWait(1ms, 0.1) = %v, want 9ms: the page then takes a tenth of the time", got)
	}
	if got := pageWait(ms, 1); got != 0 {
		t.Errorf("pageWait(1ms, 1) = %v, want 0 (unpaced)", got)
	}
	if got := overFloor(ms, 100*time.Microsecond, 2); got != 800*time.Microsecond {
		t.Errorf("overFloor(1ms, 100µs, 2 trips) = %v, want 800µs", got)
	}
	if got := overFloor(150*time.Microsecond, 100*time.Microsecond, 2); got != 0 {
		t.Errorf("overFloor under the floor = %v, want 0", got)
	}
	for _, c := range []struct {
		name              string
		usec              float64
		client, overFloor time.Duration
		want              time.Duration
		estimated         bool
	}{
		{"commandstats is Redis's own measure", 500_000, 2 * time.Second, time.Second, 500 * ms, false},
		{"other clients' SCANs are capped by our round trips", 5_000_000, 2 * time.Second, time.Second, 2 * time.Second, false},
		{"no INFO: round trips less their floor", math.NaN(), 2 * time.Second, time.Second, time.Second, true},
		{"counters reset by a restart", -5, 2 * time.Second, time.Second, time.Second, true},
	} {
		got, est := redisTime(c.usec, c.client, c.overFloor)
		if got != c.want || est != c.estimated {
			t.Errorf("%s: redisTime = %v (estimated %v), want %v (%v)", c.name, got, est, c.want, c.estimated)
		}
	}
}

// redisSide reads what Redis itself measured: the usec INFO commandstats
// counted for SCAN and TYPE, and its main thread's CPU time.
func redisSide(t *testing.T, admin *goredis.Client) (busy, cpu time.Duration) {
	t.Helper()
	info, err := admin.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	usec := scanUsec(goredis.NewStringResult(info, nil))
	if math.IsNaN(usec) {
		t.Fatalf("no commandstats in %q", info)
	}
	var secs float64
	for _, line := range strings.Split(info, "\n") {
		for _, k := range []string{"used_cpu_user_main_thread:", "used_cpu_sys_main_thread:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), k); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				secs += f
			}
		}
	}
	return time.Duration(usec * float64(time.Microsecond)), time.Duration(secs * float64(time.Second))
}

// noInfoURL creates a read-only user that may not run INFO, as some
// managed Redis offerings have it.
func noInfoURL(t *testing.T, r *testserver.Redis) string {
	t.Helper()
	res, err := r.Admin.Do(context.Background(), "ACL", "SETUSER", "noinfo", "reset", "on", ">pw", "~*",
		"-@all", "+@read", "-keys", "+ping", "+hello", "+auth", "+select", "+client|setname", "+client|getname").Result()
	if err != nil || res != "OK" {
		t.Fatalf("ACL SETUSER: %v %v", res, err)
	}
	return fmt.Sprintf("redis://noinfo:pw@%s/0", r.Addr)
}

// The duty is what Redis spends over what the schedule allows: a pass's
// RedisTime must be close to the time Redis's main thread really spent on
// it, as Redis measures it, with INFO and without. Overstated, passes are
// spaced out for nothing (new queues show late); understated, discovery
// takes more than its duty of a production Redis.
func TestDiscoveryRedisTimeMatchesWhatRedisSpent(t *testing.T) {
	r := testserver.StartRedis(t)
	r.Populate(t, 300_000, "cache:")
	b := r.NewBroker(t, "dramatiq")
	for _, q := range []string{"a", "b", "c"} {
		b.Enqueue(q, 1, time.Now())
	}
	for _, c := range []struct {
		name      string
		url       string
		estimated bool
		// most is how far RedisTime may exceed Redis's own measure.
		most float64
	}{
		// Redis's own usec, capped by the round trips.
		{"INFO allowed", r.URL(), false, 1.5},
		// Round trips less the PING floor: the client's time above the
		// floor is still counted, so it overstates, by little.
		{"INFO refused", noInfoURL(t, r), true, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, err := NewClient(ClientOptions{URL: c.url, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			reader := NewReader(client, Options{DiscoveryDuty: 0.01, DiscoveryInterval: time.Millisecond})
			busy0, cpu0 := redisSide(t, r.Admin)
			if err := reader.Discover(context.Background()); err != nil {
				t.Fatal(err)
			}
			busy1, cpu1 := redisSide(t, r.Admin)
			busy, cpu := busy1-busy0, cpu1-cpu0
			st := reader.DiscoveryStatus()
			t.Logf("RedisTime %v, Redis's SCAN+TYPE usec %v, main-thread CPU %v, pass %v, interval %v", st.RedisTime, busy, cpu, st.Duration, st.Interval)
			if st.RedisTimeEstimated != c.estimated {
				t.Errorf("RedisTimeEstimated = %v, want %v", st.RedisTimeEstimated, c.estimated)
			}
			if st.Keys != 3*2 {
				t.Errorf("the pass found %d namespace keys, want 6", st.Keys)
			}
			// Never understated by more than 2×, against either measure
			// (commandstats counts wall time inside the command, CPU only
			// what ran).
			if st.RedisTime < busy/2 || st.RedisTime < cpu/4 {
				t.Errorf("RedisTime %v understates what Redis spent: %v in SCAN and TYPE, %v of main-thread CPU", st.RedisTime, busy, cpu)
			}
			if float64(st.RedisTime) > c.most*float64(busy) {
				t.Errorf("RedisTime %v overstates Redis's %v in SCAN and TYPE by more than %g×", st.RedisTime, busy, c.most)
			}
			// The next pass is scheduled so that the realized share of
			// Redis's time is the duty, within the same factors.
			if want := nextInterval(st.RedisTime, 0.01, time.Millisecond); st.Interval != want {
				t.Errorf("Interval %v, want RedisTime / duty = %v", st.Interval, want)
			}
			if duty := float64(busy) / float64(st.Interval); duty > 0.02 || duty < 0.01/(2*c.most) {
				t.Errorf("realized duty %.4f for a configured 0.01", duty)
			}
		})
	}
}

// A paced pass takes its pace of Redis's time while it runs: pages wait
// for what they cost Redis, not for their round trips, so a pass is not
// slowed further than the pace asks, nor sped past it.
func TestDiscoveryPagesKeepThePace(t *testing.T) {
	r := testserver.StartRedis(t)
	r.Populate(t, 150_000, "cache:")
	r.NewBroker(t, "dramatiq").Enqueue("a", 1, time.Now())
	client, err := NewClient(ClientOptions{URL: noInfoURL(t, r), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const pace = 0.1
	reader := NewReader(client, Options{FirstPassDuty: pace})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	busy0, _ := redisSide(t, r.Admin)
	reader.Start(ctx)
	for reader.DiscoveryStatus().Passes == 0 {
		if ctx.Err() != nil {
			t.Fatal("the first paced pass did not complete in 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	busy1, _ := redisSide(t, r.Admin)
	st := reader.DiscoveryStatus()
	busy := busy1 - busy0
	share := float64(busy) / float64(st.Duration)
	t.Logf("pass %v, Redis's SCAN+TYPE usec %v: %.3f of the pass (pace %g); RedisTime %v", st.Duration, busy, share, pace, st.RedisTime)
	// Over the pace means pages did not wait for what they cost; far
	// under it means they waited for the network as well (or a slow
	// machine stretched the pass: hence the wide margin).
	if share > 2*pace || share < pace/8 {
		t.Errorf("the pass took %.3f of Redis's time while it ran, want about %g", share, pace)
	}
}

// A queue created after the first pass shows as soon as a page of the next
// pass finds it, not when that pass ends: on a large keyspace the end of a
// paced pass is minutes later. The first pass still reports nothing until
// it completes.
func TestDiscoveryReportsANewQueueBeforeThePassEnds(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	r.Populate(t, 20_000, "cache:")
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("old", 1, time.Now())
	reader, _ := newTestReader(t, r, Options{})
	has := func(q string) bool {
		queues, _, _ := reader.queueList()
		return slices.Contains(queues, q)
	}
	// Page by page through the first pass: "old" only once it completes.
	for reader.DiscoveryStatus().Passes == 0 {
		if has("old") {
			t.Fatal("the first pass reported a queue before it completed")
		}
		if _, _, err := reader.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !has("old") {
		t.Fatal("the first pass did not find queue old")
	}
	// 20 new queues: their keys spread over the pass's 20-odd pages.
	var fresh []string
	for i := range 20 {
		q := fmt.Sprintf("new%02d", i)
		fresh = append(fresh, q)
		b.Enqueue(q, 1, time.Now())
	}
	pages := 0
	for reader.DiscoveryStatus().Passes == 1 {
		if _, _, err := reader.step(ctx); err != nil {
			t.Fatal(err)
		}
		pages++
		if slices.ContainsFunc(fresh, has) && reader.DiscoveryStatus().Passes == 1 {
			t.Logf("a new queue showed after %d pages of the second pass", pages)
			return
		}
	}
	t.Fatalf("no new queue showed before the second pass completed (%d pages)", pages)
}
