package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// BenchmarkSnapshot measures one scrape's reads against a real redis-server
// at several queue counts (10 messages each; the cost does not depend on
// messages, see `make bench`). Run: go test -run x -bench Snapshot ./broker/
func BenchmarkSnapshot(b *testing.B) {
	for _, queues := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("queues=%d", queues), func(b *testing.B) {
			r := testserver.StartRedis(b)
			d := r.NewBroker(b, "dramatiq")
			now := time.Now()
			for q := 0; q < queues; q++ {
				d.Enqueue(fmt.Sprintf("queue%05d", q), 10, now)
			}
			for p := 0; p < 100; p++ {
				d.Fetch(testserver.UUID(), fmt.Sprintf("queue%05d", p%queues), 1, now)
			}
			client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 30 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			reader := broker.NewReader(client, broker.Options{})
			ctx := context.Background()
			if _, err := reader.Snapshot(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := reader.Snapshot(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
