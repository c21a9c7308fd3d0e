package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

type benchTrips struct{ n atomic.Int64 }

func (h *benchTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *benchTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *benchTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// BenchmarkSnapshotHeldDelayed measures a steady-state scrape while
// workers hold delayed messages in .DQ ack sets: 100 queues, 20 workers
// each holding 20 delayed messages (eta an hour ahead) in the .DQ sets of
// 10 queues, so 200 sets and 4,000 held ids. It reports round trips per
// read. Run: go test -run x -bench SnapshotHeldDelayed ./broker/redis/
func BenchmarkSnapshotHeldDelayed(b *testing.B) {
	const queues, workers, setsPerWorker, perSet = 100, 20, 10, 20
	r := testserver.StartRedis(b)
	d := r.NewBroker(b, "dramatiq")
	ctx := context.Background()
	now := time.Now()
	for q := 0; q < queues; q++ {
		d.Enqueue(fmt.Sprintf("queue%03d", q), 10, now)
	}
	for w := 0; w < workers; w++ {
		wid := testserver.UUID()
		pipe := r.Admin.Pipeline()
		for s := 0; s < setsPerWorker; s++ {
			q := fmt.Sprintf("queue%03d", (w*setsPerWorker+s)%queues)
			for i := 0; i < perSet; i++ {
				id := testserver.UUID()
				pipe.HSet(ctx, "dramatiq:"+q+".DQ.msgs", id, testserver.Body(q+".DQ", id, now, map[string]any{"eta": now.Add(time.Hour).UnixMilli()}))
				pipe.SAdd(ctx, "dramatiq:__acks__."+wid+"."+q+".DQ", id)
			}
		}
		// Far in the future: alive for the whole run.
		pipe.ZAdd(ctx, "dramatiq:__heartbeats__", goredis.Z{Score: float64(now.Add(time.Hour).UnixMilli()), Member: wid})
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	trips := &benchTrips{}
	client.AddHook(trips)
	reader := broker.NewReader(client, broker.Options{})
	if err := reader.Discover(ctx); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := reader.Snapshot(ctx); err != nil {
			b.Fatal(err)
		}
	}
	trips.n.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := reader.Snapshot(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(trips.n.Load())/float64(b.N), "trips/op")
}
