// Package server serves the exporter over HTTP: the metrics endpoint, with a
// registry and a deadline made for each scrape.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// MetricsOptions configure MetricsHandler.
type MetricsOptions struct {
	// Timeout bounds every scrape, whatever Prometheus allows.
	Timeout time.Duration
	// TimeoutOffset is kept back from Prometheus's own scrape timeout so the
	// reply arrives before Prometheus gives up.
	TimeoutOffset time.Duration
	// MaxRequests limits concurrent scrapes (0: no limit).
	MaxRequests int
	Logger      *slog.Logger
}

// ScrapeTimeout derives one scrape's budget from Prometheus's
// X-Prometheus-Scrape-Timeout-Seconds header, the offset and our own cap.
func ScrapeTimeout(r *http.Request, limit, offset time.Duration) time.Duration {
	h := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds")
	if h == "" {
		return limit
	}
	secs, err := strconv.ParseFloat(h, 64)
	// !(secs > 0) also refuses NaN. Compared in float seconds, before any
	// conversion: 9.3e9 s or Inf do not fit a time.Duration, and its
	// overflow once made the deadline 100 ms.
	if err != nil || !(secs > 0) || secs >= limit.Seconds()+offset.Seconds() {
		return limit
	}
	// A header smaller than the offset still leaves a sliver to try.
	return min(limit, max(time.Duration(secs*float64(time.Second))-offset, 100*time.Millisecond))
}

// MetricsHandler gathers base (process, Go and build info, shared by every
// scrape) and the exporter's collectors bound to this request's deadline.
func MetricsHandler(e *collector.Exporter, base prometheus.Gatherer, o MetricsOptions) http.Handler {
	var sem chan struct{}
	if o.MaxRequests > 0 {
		sem = make(chan struct{}, o.MaxRequests)
	}
	logAdapter := slog.NewLogLogger(o.Logger.Handler(), slog.LevelError)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sem != nil {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			default:
				http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), ScrapeTimeout(r, o.Timeout, o.TimeoutOffset))
		defer cancel()
		reg := prometheus.NewRegistry()
		reg.MustRegister(e.Bind(ctx))
		promhttp.HandlerFor(prometheus.Gatherers{base, reg}, promhttp.HandlerOpts{
			ErrorLog:      logAdapter,
			ErrorHandling: promhttp.ContinueOnError,
		}).ServeHTTP(w, r)
	})
}
