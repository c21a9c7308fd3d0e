package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// StatusOptions configure a StatusSource.
type StatusOptions struct {
	Exporter   *collector.Exporter
	Thresholds status.Thresholds
	// ShowMessageArgs puts args and kwargs of dead letters in the API and
	// the page. They are user data, so it is off by default.
	ShowMessageArgs bool
	// Timeout bounds one status read, like a scrape.
	Timeout time.Duration
	// MaxRequests limits concurrent status reads (0: no limit).
	MaxRequests int
	// TelemetryPath is linked from the page.
	TelemetryPath string
	// History, when set, gives the page its sparklines and the API its
	// ?history=1. It must be fed by the Exporter's OnRead.
	History *history.History
	Logger  *slog.Logger
	// Broker is the broker configured, for a read whose broker part did
	// not finish (empty: Redis).
	Broker broker.Kind
}

// StatusSource serves the status projection of the exporter's state to the
// API and the page.
type StatusSource struct {
	o          StatusOptions
	sem        chan struct{}
	historySem chan struct{} // MaxHistoryAnswers
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
	s := &StatusSource{o: o, historySem: make(chan struct{}, MaxHistoryAnswers)}
	if o.MaxRequests > 0 {
		s.sem = make(chan struct{}, o.MaxRequests)
	}
	return s
}

// MaxTrendQueues bounds the queues one API answer carries a history for,
// so that a call to an exporter with 10,000 queues does not copy and
// encode 30 MB of trends. The page carries those of the queues it shows.
const MaxTrendQueues = 1000

// Status reads the exporter's state within ctx (sharing a read in
// progress), with the newest dead letters of the queues that have any, and
// projects it; withHistory adds the queues' trends, this read included.
func (s *StatusSource) Status(ctx context.Context, withHistory bool) *status.Status {
	st := s.o.Exporter.Read(ctx, collector.ReadOptions{RecentDeadLetters: true, DeadLetterArgs: s.o.ShowMessageArgs})
	if st.Broker != nil && st.Broker.DeadLettersErr != nil {
		s.o.Logger.Warn("reading recent dead letters failed", "err", st.Broker.DeadLettersErr)
	}
	o := status.Options{Thresholds: s.o.Thresholds, ShowMessageArgs: s.o.ShowMessageArgs, RecentDeadLetters: true, Broker: s.o.Broker}
	if withHistory && s.o.History != nil {
		names := []string{} // no queue listed: no series to copy
		if st.Broker != nil && st.Broker.Snapshot != nil {
			for _, q := range st.Broker.Snapshot.Queues {
				names = append(names, q.Name)
			}
		}
		// The first MaxTrendQueues in the API's order (by name): each
		// costs about 3 KB to copy, and more in JSON.
		sort.Strings(names)
		o.History = s.o.History.Trend(names[:min(len(names), MaxTrendQueues)])
	}
	return status.From(st, o)
}

// MaxHistoryAnswers bounds the ?history=1 answers (and page renders, which
// carry the trends too) built at once. One holds a copy of up to
// MaxTrendQueues trends (about 3 MB) while it is written; more requests
// wait for a turn during the first half of their deadline, then get 503
// with Retry-After, so that 40 clients cannot take the process past its
// memory limit.
const MaxHistoryAnswers = 2

// read runs Status under the request's deadline and the concurrency limit.
// ok is false when a limit turned the request away.
func (s *StatusSource) read(w http.ResponseWriter, r *http.Request, withHistory bool) (*status.Status, func(), bool) {
	return s.readWith(w, r, withHistory, func(ctx context.Context) *status.Status { return s.Status(ctx, withHistory) })
}

// readWith is read with the status built by build; withHistory takes a
// turn among the MaxHistoryAnswers.
func (s *StatusSource) readWith(w http.ResponseWriter, r *http.Request, withHistory bool, build func(context.Context) *status.Status) (*status.Status, func(), bool) {
	release := func() {}
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
			release = func() { <-s.sem }
		default:
			http.Error(w, "too many concurrent status requests", http.StatusServiceUnavailable)
			return nil, nil, false
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.Timeout)
	defer cancel()
	if withHistory && s.o.History != nil {
		// A turn is waited for during half the budget at most: a request
		// that got its turn with no time left would read nothing and
		// answer that Redis failed (and log it), under load only.
		wait, stop := context.WithTimeout(ctx, s.o.Timeout/2)
		defer stop()
		select {
		case s.historySem <- struct{}{}:
			outer := release
			release = func() { <-s.historySem; outer() }
		case <-wait.Done():
			release()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many concurrent history requests", http.StatusServiceUnavailable)
			return nil, nil, false
		}
	}
	return build(ctx), release, true
}

// APIHandler serves GET /api/v1/status: the status as JSON (docs/api.md).
// It answers 200 whatever the health, like /metrics does: the body says
// whether things are healthy, the HTTP status whether the exporter works.
// ?history=1 adds each queue's trend (about 3.5 KB of compact JSON per
// queue).
func (s *StatusSource) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		withHistory := false
		if v := r.URL.Query().Get("history"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				http.Error(w, "history must be 1 or 0", http.StatusBadRequest)
				return
			}
			withHistory = b
		}
		st, release, ok := s.read(w, r, withHistory)
		if !ok {
			return
		}
		defer release()
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// Streamed queue by queue: the answer is never held whole (4 MB at
		// 1,000 queues with trends). What JSON cannot carry fails before
		// the first byte when it is outside the queues; inside one, the
		// connection is cut, so a client never takes a cut body for whole.
		if err := WriteStatus(w, st); err != nil {
			s.o.Logger.Error("encoding the status failed", "err", err)
			if !errors.Is(err, errWritten) {
				http.Error(w, "cannot encode the status: "+err.Error(), http.StatusInternalServerError)
				return
			}
			panic(http.ErrAbortHandler)
		}
	})
}

// EncodeStatus is the API's JSON of st, indented, with a final newline;
// compact when st carries a history, whose 240-slot arrays indented would
// put every value on a line of its own and triple the answer.
func EncodeStatus(st *status.Status) ([]byte, error) {
	var buf bytes.Buffer
	if err := WriteStatus(&buf, st); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// errWritten marks an encoding error met after part of the answer was
// written.
var errWritten = errors.New("part of the answer was written")

// WriteStatus writes EncodeStatus's bytes to w, one queue at a time, so
// that only one queue's JSON is held at once.
func WriteStatus(w io.Writer, st *status.Status) error {
	indent := st.History == nil
	top := *st
	top.Queues = nil
	var head []byte
	var err error
	if indent {
		head, err = json.MarshalIndent(&top, "", "  ")
	} else {
		head, err = json.Marshal(&top)
	}
	if err != nil {
		return err
	}
	key := []byte(`"queues":null`)
	if indent {
		key = []byte(`"queues": null`)
	}
	// Every quote inside a string value is escaped, so the first match
	// is the key.
	at := bytes.Index(head, key)
	if at < 0 {
		return errors.New("status JSON without queues")
	}
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 32<<10)
	bw.Write(head[:at+len(key)-len("null")])
	bw.WriteByte('[')
	for i := range st.Queues {
		var q []byte
		if indent {
			q, err = json.MarshalIndent(&st.Queues[i], "    ", "  ")
		} else {
			q, err = json.Marshal(&st.Queues[i])
		}
		if err != nil {
			if cw.n == 0 {
				return err
			}
			return fmt.Errorf("%w: %w", errWritten, err)
		}
		switch {
		case i > 0 && indent:
			bw.WriteString(",\n    ")
		case i > 0:
			bw.WriteByte(',')
		case indent:
			bw.WriteString("\n    ")
		}
		if _, err := bw.Write(q); err != nil {
			return fmt.Errorf("%w: %w", errWritten, err)
		}
	}
	if indent && len(st.Queues) > 0 {
		bw.WriteString("\n  ")
	}
	bw.WriteByte(']')
	bw.Write(head[at+len(key):])
	bw.WriteByte('\n')
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errWritten, err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
