package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultDetailsInterval is how long a listing is reused when the counts
// come from rabbitmq_prometheus: arguments and types rarely change, and
// consumer_timeout churn (redeliveries) builds over tens of minutes. A
// listing costs RabbitMQ about six reads of the counts.
const DefaultDetailsInterval = 5 * time.Minute

// detailsColumns are what the listing is still read for once the counts
// come from rabbitmq_prometheus (message_stats.redeliver needs the
// statistics database, the costly part of a listing).
const detailsColumns = "name,type,state,arguments,message_stats.redeliver"

// minDetailsRefresh bounds how often a queue that appeared forces a new
// listing: queues created and deleted in a loop must not make every read
// a full one. A variable for the tests.
var minDetailsRefresh = time.Minute

// detailsCache is the last listing, shared by concurrent reads; one
// listing runs at a time.
type detailsCache struct {
	mu     sync.Mutex
	queues map[string]*rq // read-only once stored
	at     time.Time
	sem    chan struct{}
}

func (r *Reader) setPrometheus(listing string, o Options) error {
	u, err := url.Parse(o.PrometheusURL)
	switch {
	case err != nil:
		return fmt.Errorf("rabbitmq prometheus URL: %w", urlErrorCause(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("rabbitmq prometheus URL: scheme must be http or https, not %q", clip(u.Scheme, 16))
	case u.User != nil:
		return errors.New("rabbitmq prometheus URL: must not carry credentials")
	case u.Host == "":
		return errors.New("rabbitmq prometheus URL: no host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("rabbitmq prometheus URL: must have no query or fragment")
	}
	if u.Scheme == "https" {
		if err := CheckTLSFiles(o.TLS); err != nil {
			return err
		}
	}
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/")
	r.prom = base + "/metrics/detailed?vhost=" + url.QueryEscape(r.o.Vhost) + "&" + promFamilies
	r.details = listing + "?columns=" + url.QueryEscape(detailsColumns)
	if r.o.DetailsInterval <= 0 {
		r.o.DetailsInterval = DefaultDetailsInterval
	}
	r.cache.sem = make(chan struct{}, 1)
	return nil
}

// readTiered takes this read's counts from rabbitmq_prometheus and the
// rest from the last listing, listing again when it is older than
// DetailsInterval or does not know a queue. The counts decide which queues
// exist: a queue deleted since the listing is gone at once.
func (r *Reader) readTiered(ctx context.Context, pw string) (*Snapshot, error) {
	counts, anomalies, promBytes, err := r.promCounts(ctx)
	if err != nil {
		return nil, err
	}
	det, at, listBytes, err := r.detailsFor(ctx, pw, counts)
	if err != nil {
		return nil, err
	}
	merged := make(map[string]*rq, len(counts))
	for name, c := range counts {
		if d := det[name]; d != nil {
			cp := *d
			cp.messages, cp.ready, cp.unacked, cp.consumers = c.messages, c.ready, c.unacked, c.consumers
			c = &cp
		}
		merged[name] = c
	}
	s := &Snapshot{
		Vhost: r.o.Vhost, RabbitMQQueues: len(counts) + anomalies, Anomalies: anomalies,
		ResponseBytes: promBytes + listBytes, DetailsAge: max(time.Since(at), 0),
	}
	s.Queues, s.Ignored = fold(merged)
	return s, nil
}

// detailsFor returns a listing fresh enough for counts, listing again if
// needed; listBytes is what this call read (0 when it reused one).
func (r *Reader) detailsFor(ctx context.Context, pw string, counts map[string]*rq) (map[string]*rq, time.Time, int64, error) {
	c := &r.cache
	fresh := func() (map[string]*rq, time.Time, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.queues == nil {
			return nil, time.Time{}, false
		}
		age := time.Since(c.at)
		if age >= r.o.DetailsInterval {
			return c.queues, c.at, false
		}
		if age >= min(minDetailsRefresh, r.o.DetailsInterval) {
			for name := range counts {
				if c.queues[name] == nil {
					return c.queues, c.at, false
				}
			}
		}
		return c.queues, c.at, true
	}
	q, at, ok := fresh()
	if ok {
		return q, at, 0, nil
	}
	select {
	case c.sem <- struct{}{}:
	default:
		if q != nil {
			// Another read is listing: this one keeps the last listing
			// rather than wait a second for the same answer.
			return q, at, 0, nil
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, time.Time{}, 0, fmt.Errorf("waiting for another read's listing: %w", ctx.Err())
		}
	}
	defer func() { <-c.sem }()
	// Another read may have listed while this one waited.
	if q, at, ok := fresh(); ok {
		return q, at, 0, nil
	}
	at = time.Now()
	queues, _, _, n, err := r.list(ctx, pw, r.details)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	c.mu.Lock()
	c.queues, c.at = queues, at
	c.mu.Unlock()
	return queues, at, n, nil
}

// promCounts GETs the per-queue counts from rabbitmq_prometheus. That
// endpoint takes no credentials, and none are sent to it.
func (r *Reader) promCounts(ctx context.Context) (map[string]*rq, int, int64, error) {
	const display = "/metrics/detailed"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.prom, nil)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: %w", display, urlErrorCause(err))
	}
	// The classic text format, not protobuf or OpenMetrics; uncompressed,
	// since compressing a megabyte costs RabbitMQ more CPU than making it.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("GET %s: %w", display, urlErrorCause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		msg := fmt.Sprintf("GET %s: %s", display, clip(resp.Status, 60))
		if resp.StatusCode == http.StatusNotFound {
			msg += "; is the prometheus URL rabbitmq_prometheus's (port 15692 by default)?"
		}
		return nil, 0, 0, errors.New(msg)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, 0, 0, fmt.Errorf("GET %s: answered %q, not the Prometheus text format", display, clip(ct, 60))
	}
	cr := &countingReader{r: io.LimitReader(resp.Body, r.o.MaxResponseBytes+1)}
	counts, anomalies, err := decodePromCounts(cr, r.o.Vhost, r.o.MaxQueues)
	if cr.n > r.o.MaxResponseBytes {
		return nil, 0, 0, fmt.Errorf("GET %s: answer larger than %d bytes (raise the limit)", display, r.o.MaxResponseBytes)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, 0, fmt.Errorf("GET %s: reading the answer: %w", display, ctx.Err())
		}
		return nil, 0, 0, fmt.Errorf("GET %s: %w", display, err)
	}
	return counts, anomalies, cr.n, nil
}
