package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// StatusOptions configure a StatusSource.
type StatusOptions struct {
	Exporter *collector.Exporter
	// Reader reads the recent dead letters, the one thing the metrics do
	// not carry. Nil: none are shown.
	Reader     *broker.Reader
	Thresholds Thresholds
	// ShowMessageArgs puts args and kwargs of dead letters in the API and
	// the page. They are user data, so it is off by default.
	ShowMessageArgs bool
	// Timeout bounds one status read, like a scrape.
	Timeout time.Duration
	// MaxRequests limits concurrent status reads (0: no limit).
	MaxRequests int
	// TelemetryPath is linked from the page.
	TelemetryPath string
	Logger        *slog.Logger
}

// StatusSource builds the status for the API and the page.
type StatusSource struct {
	o   StatusOptions
	sem chan struct{}
}

// NewStatusSource checks o and fills defaults.
func NewStatusSource(o StatusOptions) *StatusSource {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.TelemetryPath == "" {
		o.TelemetryPath = "/metrics"
	}
	s := &StatusSource{o: o}
	if o.MaxRequests > 0 {
		s.sem = make(chan struct{}, o.MaxRequests)
	}
	return s
}

// Status gathers the collectors once, within ctx, then reads the newest
// dead letters of the queues that have any.
func (s *StatusSource) Status(ctx context.Context) *Status {
	begin := time.Now()
	mfs := Gather(ctx, s.o.Exporter)
	st := FromMetrics(mfs, BuildOptions{
		Thresholds: s.o.Thresholds, Collectors: s.o.Exporter.Names(), Now: begin, Took: time.Since(begin),
	})
	st.MessageArgsShown = s.o.ShowMessageArgs
	for i := range st.Queues {
		st.Queues[i].RecentDeadLetters = []DeadLetter{}
	}
	if s.o.Reader == nil || !st.Components.Redis.Up {
		return st
	}
	var withDead []string
	index := map[string]int{}
	for i, q := range st.Queues {
		if q.DeadLetter > 0 {
			withDead = append(withDead, q.Name)
			index[q.Name] = i
		}
	}
	if len(withDead) == 0 {
		return st
	}
	dls, err := s.o.Reader.RecentDeadLetters(ctx, withDead, broker.DeadLetterOptions{WithArgs: s.o.ShowMessageArgs})
	if err != nil {
		s.o.Logger.Warn("reading recent dead letters failed", "err", err)
		return st
	}
	for q, list := range dls {
		out := make([]DeadLetter, 0, len(list))
		for _, d := range list {
			dl := DeadLetter{
				MessageID: d.MessageID, Actor: d.Actor, DeadLetteredAt: d.DeadLetteredAt.UTC(),
				Retries: d.Retries, Traceback: d.TracebackLast, Undecodable: d.Undecodable,
			}
			if s.o.ShowMessageArgs {
				if len(d.Args) > 0 {
					dl.Args = d.Args
				}
				if len(d.Kwargs) > 0 {
					dl.Kwargs = d.Kwargs
				}
			}
			out = append(out, dl)
		}
		st.Queues[index[q]].RecentDeadLetters = out
	}
	st.DurationSeconds = time.Since(begin).Seconds()
	return st
}

// read runs Status under the request's deadline and the concurrency limit.
// ok is false when the limit turned the request away.
func (s *StatusSource) read(w http.ResponseWriter, r *http.Request) (*Status, bool) {
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		default:
			http.Error(w, "too many concurrent status requests", http.StatusServiceUnavailable)
			return nil, false
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.Timeout)
	defer cancel()
	return s.Status(ctx), true
}

// APIHandler serves GET /api/v1/status: the status as JSON (docs/api.md).
// It answers 200 whatever the health, like /metrics does: the body says
// whether things are healthy, the HTTP status whether the exporter works.
func (s *StatusSource) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		st, ok := s.read(w, r)
		if !ok {
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			s.o.Logger.Debug("writing status failed", "err", err)
		}
	})
}
