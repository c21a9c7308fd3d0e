package collector_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// BenchmarkScrape is one whole scrape as the handler does it: bind, gather,
// encode as text. Run: go test -run x -bench Scrape ./collector/
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
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				reg := prometheus.NewRegistry()
				reg.MustRegister(exp.Bind(context.Background()))
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
