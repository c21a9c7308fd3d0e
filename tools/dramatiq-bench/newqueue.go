package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// slowCall is the slowlog threshold the stuck benchmark sets on its own
// redis-server: every SCAN that holds Redis's thread longer is logged, so
// the longest single call is read from the server, not from the client's
// round trips.
const slowCall = 500 * time.Microsecond

// redisBusy is the time Redis's main thread spent running SCAN and TYPE,
// as Redis measures it (redisCost's usec). The bench's server has no other
// client that runs them, so the difference over a run is discovery's own.
func redisBusy(ctx context.Context, c *redis.Client) (time.Duration, error) {
	usec, _, err := redisCost(ctx, c)
	return time.Duration(usec * float64(time.Microsecond)), err
}

// watchSlowScans makes the server log every command over slowCall.
func watchSlowScans(ctx context.Context, c *redis.Client) error {
	for _, kv := range [][2]string{{"slowlog-log-slower-than", strconv.FormatInt(slowCall.Microseconds(), 10)}, {"slowlog-max-len", "100000"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			return err
		}
	}
	return c.SlowLogReset(ctx).Err()
}

// slowScans returns the longest SCAN the server logged, and how many
// SCANs took longer than 1 ms and 5 ms.
func slowScans(ctx context.Context, c *redis.Client) (longest time.Duration, over1ms, over5ms int, err error) {
	entries, err := c.SlowLogGet(ctx, 100000).Result()
	if err != nil {
		return 0, 0, 0, err
	}
	for _, e := range entries {
		if len(e.Args) == 0 || !strings.EqualFold(e.Args[0], "scan") {
			continue
		}
		longest = max(longest, e.Duration)
		if e.Duration > time.Millisecond {
			over1ms++
		}
		if e.Duration > 5*time.Millisecond {
			over5ms++
		}
	}
	return longest, over1ms, over5ms, nil
}

// noInfoUser creates a read-only ACL user that may not run INFO, as some
// managed Redis offerings configure it: discovery then has only its own
// round trips to estimate Redis's time with.
func noInfoUser(ctx context.Context, c *redis.Client, addr string) (string, error) {
	res, err := c.Do(ctx, "ACL", "SETUSER", "bench-noinfo", "reset", "on", ">bench-noinfo", "~*",
		"-@all", "+@read", "-keys", "+ping", "+hello", "+auth", "+select", "+client|setname", "+client|getname").Result()
	if err != nil || res != "OK" {
		return "", fmt.Errorf("ACL SETUSER: %v %v", res, err)
	}
	return "redis://bench-noinfo:bench-noinfo@" + addr + "/0", nil
}
