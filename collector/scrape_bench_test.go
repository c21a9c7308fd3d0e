package collector_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
)

// BenchmarkScrape is one whole scrape through the /metrics handler, as
// Prometheus asks for it (text, no compression): read, project, gather,
// write. Run: go test -run x -bench Scrape ./collector/
func BenchmarkScrape(b *testing.B) {
	for _, queues := range []int{10, 1000} {
		b.Run(fmt.Sprintf("queues=%d", queues), func(b *testing.B) {
			r := testserver.StartRedis(b)
			d := r.NewBroker(b, "dramatiq")
			for q := 0; q < queues; q++ {
				d.Enqueue(fmt.Sprintf("queue%05d", q), 10, time.Now())
			}
			client, err := broker.NewClient(broker.ClientOptions{URL: r.URL()})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			f := &fixture{reader: broker.NewReader(client, broker.Options{})}
			exp := newExporter(b, f.reader)
			h := server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{Timeout: time.Minute, Logger: slog.New(slog.DiscardHandler)})
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if !strings.Contains(rec.Body.String(), "\ndramatiq_redis_up 1\n") {
					b.Fatalf("scrape failed:\n%.2000s", rec.Body.String())
				}
			}
		})
	}
}
