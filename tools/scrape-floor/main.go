// Command scrape-floor is the yardstick `make bench` sets beside the
// exporter: the least work a scrape of the same per-queue numbers can do.
// With the queue names given up front (no discovery), each GET /metrics
// reads the minimal set in two pipelined round trips and writes a
// hand-made Prometheus text exposition with strconv into one buffer:
//
//	round trip 1, per queue: LLEN q, HLEN q.msgs, HLEN q.DQ.msgs, ZCARD q.XQ,
//	  ZREVRANGE q.XQ 0 0 WITHSCORES, LINDEX q 0; plus ZRANGEBYSCORE and
//	  ZCOUNT of the heartbeat set;
//	round trip 2: HGET q.msgs <head id> for every non-empty queue.
//
// It does none of what makes the exporter safe to run (deadlines from the
// scrape, anomaly accounting, label validation, head races, orphans), so
// it is a floor to measure against, never a product.
//
//	scrape-floor -redis 127.0.0.1:6379 -queues-file names.txt -listen 127.0.0.1:9999
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	ns := flag.String("namespace", "dramatiq", "Dramatiq namespace")
	file := flag.String("queues-file", "", "file with one queue name a line")
	listen := flag.String("listen", "127.0.0.1:9999", "HTTP listen address")
	heartbeat := flag.Duration("heartbeat-timeout", time.Minute, "heartbeat timeout")
	flag.Parse()

	queues, err := readLines(*file)
	if err != nil {
		log.Fatal(err)
	}
	f := &floor{
		client:    redis.NewClient(&redis.Options{Addr: *addr, MaxRetries: -1}),
		ns:        *ns,
		queues:    queues,
		heartbeat: *heartbeat,
	}
	http.Handle("/metrics", f)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

type floor struct {
	client    *redis.Client
	ns        string
	queues    []string
	heartbeat time.Duration
}

type queueCmds struct {
	ready, msgs, delayed, dead *redis.IntCmd
	deadLast                   *redis.ZSliceCmd
	head                       *redis.StringCmd
}

func (f *floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := time.Now()
	cutoff := strconv.FormatInt(now.Add(-f.heartbeat).UnixMilli(), 10)
	hb := f.ns + ":__heartbeats__"
	pipe := f.client.Pipeline()
	alive := pipe.ZRangeByScore(ctx, hb, &redis.ZRangeBy{Min: cutoff, Max: "+inf"})
	stale := pipe.ZCount(ctx, hb, "-inf", "("+cutoff)
	cmds := make([]queueCmds, len(f.queues))
	for i, q := range f.queues {
		k := f.ns + ":" + q
		cmds[i] = queueCmds{
			ready:    pipe.LLen(ctx, k),
			msgs:     pipe.HLen(ctx, k+".msgs"),
			delayed:  pipe.HLen(ctx, k+".DQ.msgs"),
			dead:     pipe.ZCard(ctx, k+".XQ"),
			deadLast: pipe.ZRevRangeWithScores(ctx, k+".XQ", 0, 0),
			head:     pipe.LIndex(ctx, k, 0),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pipe = f.client.Pipeline()
	bodies := make([]*redis.StringCmd, len(f.queues))
	for i, q := range f.queues {
		if id, err := cmds[i].head.Result(); err == nil {
			bodies[i] = pipe.HGet(ctx, f.ns+":"+q+".msgs", id)
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}

	b := make([]byte, 0, 64+len(f.queues)*7*80)
	b = append(b, "# TYPE dramatiq_redis_up gauge\ndramatiq_redis_up 1\n"...)
	b = append(b, "# TYPE dramatiq_processes gauge\ndramatiq_processes{state=\"alive\"} "...)
	b = strconv.AppendInt(b, int64(len(alive.Val())), 10)
	b = append(b, "\ndramatiq_processes{state=\"stale\"} "...)
	b = strconv.AppendInt(b, stale.Val(), 10)
	b = append(b, '\n')
	family := func(name string, v func(i int) (float64, bool)) {
		b = append(b, "# TYPE "...)
		b = append(b, name...)
		b = append(b, " gauge\n"...)
		for i, q := range f.queues {
			x, ok := v(i)
			if !ok {
				continue
			}
			b = append(b, name...)
			b = append(b, `{queue="`...)
			b = append(b, q...) // names here are known to need no escaping
			b = append(b, `"} `...)
			b = strconv.AppendFloat(b, x, 'g', -1, 64)
			b = append(b, '\n')
		}
	}
	family("dramatiq_queue_ready_messages", func(i int) (float64, bool) { return float64(cmds[i].ready.Val()), true })
	family("dramatiq_queue_inflight_messages", func(i int) (float64, bool) {
		return float64(max(cmds[i].msgs.Val()-cmds[i].ready.Val(), 0)), true
	})
	family("dramatiq_queue_delayed_messages", func(i int) (float64, bool) { return float64(cmds[i].delayed.Val()), true })
	family("dramatiq_queue_dead_letter_messages", func(i int) (float64, bool) { return float64(cmds[i].dead.Val()), true })
	family("dramatiq_queue_dead_letter_last_timestamp_seconds", func(i int) (float64, bool) {
		zs := cmds[i].deadLast.Val()
		if len(zs) == 0 {
			return 0, false
		}
		return zs[0].Score / 1000, true
	})
	family("dramatiq_queue_oldest_message_age_seconds", func(i int) (float64, bool) {
		if cmds[i].ready.Val() == 0 {
			return 0, true
		}
		if bodies[i] == nil {
			return 0, false
		}
		ms, ok := timestamp(bodies[i].Val())
		if !ok {
			return 0, false
		}
		return max(float64(now.UnixMilli())-ms, 0) / 1000, true
	})
	family("dramatiq_queue_orphaned_messages", func(int) (float64, bool) { return 0, true })
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b)
}

// timestamp reads message_timestamp, the last key of Dramatiq's encoding.
func timestamp(body string) (float64, bool) {
	const key = `,"message_timestamp":`
	i := strings.LastIndex(body, key)
	if i < 0 || !strings.HasSuffix(body, "}") {
		return 0, false
	}
	ms, err := strconv.ParseInt(body[i+len(key):len(body)-1], 10, 64)
	return float64(ms), err == nil
}

func readLines(path string) ([]string, error) {
	if path == "" {
		return nil, fmt.Errorf("-queues-file is required")
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []string
	s := bufio.NewScanner(fh)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out, s.Err()
}
