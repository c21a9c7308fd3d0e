package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	brokermodel "github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// rabbitReader serves model reads of a RabbitMQ broker whose emails
// backlog is ready (the reader itself is tested against real RabbitMQ).
type rabbitReader struct{ ready atomic.Int64 }

func (r *rabbitReader) Kind() brokermodel.Kind                  { return brokermodel.RabbitMQ }
func (r *rabbitReader) Discovery() *brokermodel.DiscoveryStatus { return nil }
func (r *rabbitReader) ReadSnapshot(context.Context, brokermodel.ReadOptions) (*brokermodel.Snapshot, error) {
	k := brokermodel.Known
	return &brokermodel.Snapshot{Broker: brokermodel.RabbitMQ, RabbitMQ: &brokermodel.RabbitMQState{Vhost: "apps"},
		Queues: []brokermodel.Queue{{Name: "emails", Ready: k(r.ready.Load()), InFlight: k(2), Delayed: k(3), DelayedHeld: k(1),
			DeadLetter: k(4), Consumers: k(2), DelayConsumers: k(2)}}}, nil
}

// The page on RabbitMQ, refreshed by its script: the RabbitMQ card, the
// processes as consumers, and n/a (never 0) where RabbitMQ cannot answer.
func TestRabbitMQStatusPageInBrowser(t *testing.T) {
	bin := testserver.LookPath(t, "chromium")
	rd := &rabbitReader{}
	rd.ready.Store(5)
	hist := history.New(history.Options{})
	exp, err := collector.NewExporter(collector.ExporterOptions{Environment: "staging", Namespace: "dramatiq", OnRead: hist.Record},
		collector.Sources{Broker: rd})
	if err != nil {
		t.Fatal(err)
	}
	src := server.NewStatusSource(server.StatusOptions{Exporter: exp, Thresholds: status.DefaultThresholds(),
		Timeout: 3 * time.Second, TelemetryPath: "/metrics", History: hist, Broker: brokermodel.RabbitMQ})
	mux := http.NewServeMux()
	mux.Handle("/metrics", server.MetricsHandler(exp, prometheus.NewRegistry(), server.MetricsOptions{Timeout: 3 * time.Second, Logger: discard()}))
	mux.Handle("/api/v1/status", src.APIHandler())
	mux.Handle("/", src.PageHandler())
	var served atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mux.ServeHTTP(w, req)
		// After the first paint the backlog grows: only the script's
		// refresh (which fetches the page again) can show 9.
		if req.URL.Path == "/" && !served.Swap(true) {
			rd.ready.Store(9)
		}
	}))
	t.Cleanup(srv.Close)

	dom := chromium(t, bin, "--virtual-time-budget=8000", "--dump-dom", srv.URL+"/")
	if !strings.Contains(dom, `data-source="refresh"`) {
		t.Fatalf("the script did not refresh the page:\n%s", dom)
	}
	for field, want := range map[string]string{"ready": "9", "in_flight": "2", "delayed": "3", "dead_letter": "4", "oldest": "n/a", "orphaned": "n/a"} {
		if got := cell(t, dom, "emails", field); got != want {
			t.Errorf("emails %s = %q, want %q", field, got, want)
		}
	}
	for _, want := range []string{`id="card-rabbitmq"`, `data-field="rabbitmq-status">OK<`, `data-field="processes-alive">2<`, "consuming",
		"Not available on RabbitMQ", "Healthy"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if strings.Contains(dom, `id="card-redis"`) {
		t.Error("a Redis card on RabbitMQ")
	}
}
