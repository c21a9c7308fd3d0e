// Package server serves the exporter over HTTP: the metrics endpoint, with a
// registry and a deadline made for each scrape.
package server

import (
	"bufio"
	"compress/gzip"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

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
// scrape) and the exporter's projection of one read within this request's
// deadline.
func MetricsHandler(e *collector.Exporter, base prometheus.Gatherer, o MetricsOptions) http.Handler {
	var sem chan struct{}
	if o.MaxRequests > 0 {
		sem = make(chan struct{}, o.MaxRequests)
	}
	logAdapter := slog.NewLogLogger(o.Logger.Handler(), slog.LevelError)
	// The descriptors are the same in every scrape: checked here once, the
	// direct path can skip the per-scrape registration that checks them
	// again (a tenth of a small scrape's CPU, hashing every descriptor).
	prometheus.NewRegistry().MustRegister(e.Bind(context.Background()))
	return GetOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sem != nil {
			select {
			case sem <- struct{}{}:
				// A slot bounds the scrapes that read Redis and render at
				// once. One whose client stops taking the answer gives it
				// back: waiting on a client costs neither, and clients
				// that never read must not lock Prometheus out.
				defer releaseOnStall(w, func() { <-sem })()
			default:
				http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), ScrapeTimeout(r, o.Timeout, o.TimeoutOffset))
		defer cancel()
		st := e.Read(ctx, collector.ReadOptions{})
		if shuttingDown(r.Context()) {
			// Cut short, the read would report the broker down.
			http.Error(w, ErrShuttingDown.Error(), http.StatusServiceUnavailable)
			return
		}
		// Past its deadline nobody waits for the answer any more.
		dl, _ := ctx.Deadline()
		finishBy(w, dl.Add(WriteStall))
		serveMetrics(w, r, e.Project(st), base, logAdapter, true)
	}))
}

// serveMetrics answers as promhttp.HandlerFor(Gatherers{base, a registry
// of p.All()}) does. With direct, the per-queue families are written
// straight from the projection when the answer is the text format (what
// Prometheus asks for), beside the registry's other families: through a
// registry they cost more than the whole Redis read. Anything else takes
// the registry path.
func serveMetrics(w http.ResponseWriter, r *http.Request, p *collector.Projection, base prometheus.Gatherer, errLog *log.Logger, direct bool) {
	if direct && writeDirect(w, r, p, base, errLog) {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.All())
	promhttp.HandlerFor(prometheus.Gatherers{base, reg}, promhttp.HandlerOpts{
		ErrorLog:      errLog,
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP(w, r)
}

var (
	gzipPool = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
	bufPool  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
)

// writeDirect writes p as promhttp would, negotiation and headers
// included, and reports true; it writes nothing and reports false when it
// cannot be sure to give the same answer: a format other than text, a
// name[] filter, an Accept-Encoding it does not parse itself, a queue name
// repeated in the read, a family both ways, or no family at all.
func writeDirect(w http.ResponseWriter, r *http.Request, p *collector.Projection, base prometheus.Gatherer, errLog *log.Logger) bool {
	if r.URL != nil && r.URL.RawQuery != "" && len(r.URL.Query()["name[]"]) > 0 {
		return false
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	if format.FormatType() != expfmt.TypeTextPlain {
		return false
	}
	encoding, ok := plainEncoding(r.Header["Accept-Encoding"])
	if !ok {
		return false
	}
	qt, ok := p.QueueText()
	if !ok {
		return false
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(unchecked{p.Rest()})
	mfs, err := prometheus.Gatherers{base, reg}.Gather()
	if len(mfs) == 0 {
		return false
	}
	for i := range qt.Len() {
		name := qt.Name(i)
		if _, dup := slices.BinarySearchFunc(mfs, name, func(mf *dto.MetricFamily, n string) int {
			return strings.Compare(mf.GetName(), n)
		}); dup {
			return false
		}
	}
	if err != nil {
		errLog.Println("error gathering metrics:", err)
	}

	h := w.Header()
	h.Add("Vary", "Accept")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Type", string(format))
	var out io.Writer = w
	if encoding == "gzip" {
		h.Set("Content-Encoding", "gzip")
		gz := gzipPool.Get().(*gzip.Writer)
		gz.Reset(w)
		defer func() { _ = gz.Close(); gz.Reset(io.Discard); gzipPool.Put(gz) }()
		out = gz
	}
	// A client gone, or cut off by a write deadline, ends the answer:
	// rendering the rest would be work for nobody.
	sent := &sendErr{w: out}
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(sent)
	defer func() { bw.Reset(nil); bufPool.Put(bw) }()

	// Both are sorted by name, as a registry sorts its families.
	enc := expfmt.NewEncoder(bw, format)
	i := 0
	for _, mf := range mfs {
		for ; i < qt.Len() && qt.Name(i) < mf.GetName() && sent.err == nil; i++ {
			qt.Write(bw, i)
		}
		if sent.err != nil {
			break
		}
		if err := enc.Encode(mf); err != nil && sent.err == nil {
			errLog.Println("error encoding and sending metric family:", err)
		}
	}
	for ; i < qt.Len() && sent.err == nil; i++ {
		qt.Write(bw, i)
	}
	// Every error left is the client's (gone, or too slow to take the
	// answer): not worth a line per request that anyone can send.
	_ = bw.Flush()
	return true
}

// sendErr keeps the first error writing to w.
type sendErr struct {
	w   io.Writer
	err error
}

func (s *sendErr) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.err = err
	return n, err
}

// unchecked registers c without describing it. A registry that is not
// pedantic checks descriptors only when they are registered, and the
// handler checked the exporter's when it was made; the metrics themselves
// are still checked as they are gathered.
type unchecked struct{ prometheus.Collector }

func (unchecked) Describe(chan<- *prometheus.Desc) {}

// plainEncoding picks the Content-Encoding promhttp picks (offering
// identity, then gzip) for Accept-Encoding values that are plain lists of
// lower-case codings, the kind Prometheus and curl send. ok is false for
// anything else (weights, odd spacing or characters), which promhttp's
// own parser then decides.
func plainEncoding(values []string) (encoding string, ok bool) {
	identity, gzip := false, false
	for _, v := range values {
		// promhttp's parser drops a value that starts with a space.
		if v == "" || v != strings.TrimLeft(v, " \t") {
			return "", false
		}
		for _, c := range strings.Split(v, ",") {
			c = strings.Trim(c, " \t")
			if c != "*" && (c == "" || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789-") != "") {
				return "", false
			}
			switch c {
			case "identity", "*":
				identity = true
			case "gzip":
				gzip = true
			}
		}
	}
	// Every coding weighs 1, so the first offer any of them accepts wins.
	if gzip && !identity {
		return "gzip", true
	}
	return "identity", true
}
