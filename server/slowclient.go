package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// A client decides how fast its answer leaves, and whether a request body
// it announced ever arrives. These bound what such a client can hold.
const (
	// WriteStall is the longest one piece of an answer (writeChunk bytes)
	// may wait for the client to take it: a client that reads less than
	// 32 KiB/s, or not at all, loses its connection after this long. Any
	// link Prometheus scrapes over moves a piece in milliseconds; 2 s also
	// covers three TCP retransmission timeouts in a row.
	WriteStall = 2 * time.Second
	// StallRelease is how long a write may block before the scrape gives
	// its slot (--web.max-requests) back: from then on it only waits on
	// the client, which costs the exporter no Redis read and no CPU.
	StallRelease = 100 * time.Millisecond
	writeChunk   = 64 << 10
)

// ErrShuttingDown is the cause with which the requests still running are
// cancelled when the shutdown's grace period is over.
var ErrShuttingDown = errors.New("the exporter is shutting down")

// guard gives every answer the write deadlines above and keeps request
// bodies, which no route reads, from holding anything. Go's server would
// otherwise read up to 256 KiB of an unread body, at the client's pace,
// before it lets the connection go (inside the handler when the answer
// is larger than its buffers, so inside a scrape slot).
func guard(h http.Handler, writeTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.ProtoMajor == 1 && r.ContentLength != 0 {
			// Closing after the answer skips the drain; the read deadline
			// ends the bounded read Go's server still makes when it closes
			// the body, so a trickling client waits for nothing.
			w.Header().Set("Connection", "close")
			_ = rc.SetReadDeadline(time.Now())
		}
		g := &guardedWriter{ResponseWriter: w, rc: rc}
		if writeTimeout > 0 {
			// The server set this deadline as the request arrived; every
			// write of ours replaces it, so each one keeps it as a ceiling.
			g.end = time.Now().Add(writeTimeout)
		}
		h.ServeHTTP(g, r)
		// What the server's buffers still hold leaves after we return.
		_ = rc.SetWriteDeadline(g.stallDeadline())
	})
}

// guardedWriter writes an answer in pieces of writeChunk bytes, each with
// WriteStall to leave, all before end.
type guardedWriter struct {
	http.ResponseWriter
	rc  *http.ResponseController
	end time.Time // zero: none

	onStall func()
	timer   *time.Timer
}

// Unwrap lets http.ResponseController reach the server's writer.
func (g *guardedWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// Flush sends what is buffered, with the same deadlines as a write.
func (g *guardedWriter) Flush() {
	g.arm()
	_ = g.rc.Flush()
	g.disarm()
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		piece := p[:min(len(p), writeChunk)]
		g.arm()
		k, err := g.ResponseWriter.Write(piece)
		g.disarm()
		n += k
		if err != nil {
			return n, err
		}
		p = p[len(piece):]
	}
	return n, nil
}

func (g *guardedWriter) stallDeadline() time.Time {
	dl := time.Now().Add(WriteStall)
	if !g.end.IsZero() && dl.After(g.end) {
		dl = g.end
	}
	return dl
}

func (g *guardedWriter) arm() {
	_ = g.rc.SetWriteDeadline(g.stallDeadline())
	if g.onStall != nil {
		if g.timer == nil {
			g.timer = time.AfterFunc(StallRelease, g.onStall)
		} else {
			g.timer.Reset(StallRelease)
		}
	}
}

// disarm puts the ceiling back, so that time the handler spends between
// writes is not taken for a stalled client.
func (g *guardedWriter) disarm() {
	if g.timer != nil {
		g.timer.Stop()
	}
	_ = g.rc.SetWriteDeadline(g.end)
}

// releaseOnStall arranges for release to run once a write of w's answer
// has waited StallRelease for the client. It returns a function that runs
// release if it has not run yet, for the handler to defer. Where w is not
// the guard's (a handler served without NewHTTPServer) the slot is simply
// kept to the end.
func releaseOnStall(w http.ResponseWriter, release func()) func() {
	var once sync.Once
	f := func() { once.Do(release) }
	if g, ok := w.(*guardedWriter); ok {
		g.onStall = f
	}
	return f
}

// finishBy brings the end of w's answer forward to t.
func finishBy(w http.ResponseWriter, t time.Time) {
	if g, ok := w.(*guardedWriter); ok && (g.end.IsZero() || t.Before(g.end)) {
		g.end = t
	}
}

// shuttingDown reports whether ctx was cancelled by the shutdown's grace
// period running out, not by the client or a deadline.
func shuttingDown(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), ErrShuttingDown)
}

// Shutdown stops srv without cutting a scrape short where it can: it stops
// accepting, lets the requests running finish for up to grace, then
// cancels those left with ErrShuttingDown (a scrape then answers 503 at
// once) through cancelRequests, the cancel of srv.BaseContext, and closes
// what is still open WriteStall later.
func Shutdown(srv *http.Server, cancelRequests context.CancelCauseFunc, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if srv.Shutdown(ctx) == nil {
		return
	}
	cancelRequests(ErrShuttingDown)
	ctx, cancel = context.WithTimeout(context.Background(), WriteStall)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		_ = srv.Close()
	}
}
