package server

import (
	"net/http"
	"sync/atomic"
)

// Route serves the metrics at exactly telemetryPath and everything else
// through mux. The path is a user's setting, so it is compared as a
// literal: registered in an http.ServeMux it would be a pattern, and
// "/{", "/a b" or "/{path...}" would panic at start or shadow other pages.
func Route(telemetryPath string, metrics http.Handler, mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == telemetryPath {
			metrics.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// GetOnly answers 405 to any method but GET and HEAD, as every route
// does, before h runs: a scrape handler takes a slot and never reads a
// body, so a POST must not get that far.
func GetOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func methodNotAllowed(w http.ResponseWriter) {
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

// Health answers /-/healthy and /-/ready, as Prometheus does. Neither
// touches Redis or the database: an orchestrator acting on them must not
// restart or unroute the exporter because the broker it reports on is down,
// and a probe every few seconds must cost the broker nothing.
type Health struct {
	ready atomic.Bool
}

// SetReady marks the exporter ready (configuration loaded, every listener
// bound) or not (shutting down).
func (h *Health) SetReady(ready bool) { h.ready.Store(ready) }

// Register adds /-/healthy and /-/ready to mux.
func (h *Health) Register(mux *http.ServeMux) {
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		plain(w, r, http.StatusOK, "Healthy.\n")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !h.ready.Load() {
			plain(w, r, http.StatusServiceUnavailable, "Not ready.\n")
			return
		}
		plain(w, r, http.StatusOK, "Ready.\n")
	})
}

func plain(w http.ResponseWriter, r *http.Request, code int, body string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(body))
	}
}
