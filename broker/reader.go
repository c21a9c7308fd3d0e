package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configure a Reader.
type Options struct {
	// Namespace is RedisBroker's namespace argument ("dramatiq").
	Namespace string
	// HeartbeatTimeout must match the workers' heartbeat_timeout: a process
	// whose last heartbeat is older counts as stale, and what it holds as
	// orphaned.
	HeartbeatTimeout time.Duration
	// Queues are always reported, found in Redis or not.
	Queues []string
	// DiscoveryInterval is how often Run SCANs the namespace for queues and
	// ack sets. SCAN walks the whole keyspace, so it stays off the scrape path.
	DiscoveryInterval time.Duration
	// MaxQueues caps how many queues are reported (0: no cap).
	MaxQueues int
	// QueueRetention forgets a discovered queue whose keys have been gone this
	// long (0: never). Configured queues are never forgotten.
	QueueRetention time.Duration
	Logger         *slog.Logger
	// SkipDiscovery reads only Queues and never SCANs: for one-shot reads
	// (the check command) against a Redis shared with a large keyspace.
	// Without the ack sets discovery finds, orphaned messages read as 0.
	SkipDiscovery bool
	// Now is the clock ages are measured against (time.Now when nil).
	Now func() time.Time
}

// Anomaly kinds, counted rather than failing the scrape.
const (
	AnomalyUndecodableBody = "undecodable_body"
	AnomalyMissingHead     = "missing_head"
	AnomalyWrongType       = "wrong_type"
)

// AnomalyKinds lists every kind, in a stable order.
var AnomalyKinds = []string{AnomalyUndecodableBody, AnomalyMissingHead, AnomalyWrongType}

type ackKey struct {
	key   string
	wid   string
	queue string // canonical
}

// Reader reads one Dramatiq namespace of one Redis. It is shared by every
// scrape and safe for concurrent use.
type Reader struct {
	client redis.UniversalClient
	opts   Options
	keys   keys
	now    func() time.Time
	logger *slog.Logger

	discoverMu sync.Mutex // one discovery at a time

	mu         sync.Mutex
	configured map[string]bool
	seen       map[string]time.Time // queue → when discovery last found a key of it
	ackKeys    []ackKey
	discovered time.Time // last successful discovery
	legacyLog  bool

	anomalies map[string]*atomic.Uint64
}

// NewReader builds a Reader around a client the caller owns.
func NewReader(client redis.UniversalClient, opts Options) *Reader {
	if opts.Namespace == "" {
		opts.Namespace = "dramatiq"
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 60 * time.Second
	}
	if opts.DiscoveryInterval <= 0 {
		opts.DiscoveryInterval = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Reader{
		client:     client,
		opts:       opts,
		keys:       keys{ns: opts.Namespace},
		now:        opts.Now,
		logger:     opts.Logger,
		configured: map[string]bool{},
		seen:       map[string]time.Time{},
		anomalies:  map[string]*atomic.Uint64{},
	}
	for _, q := range opts.Queues {
		r.configured[q] = true
	}
	for _, k := range AnomalyKinds {
		r.anomalies[k] = new(atomic.Uint64)
	}
	return r
}

// Options returns the options the Reader runs with.
func (r *Reader) Options() Options { return r.opts }

// Anomalies returns how often each kind of odd data was seen since start.
func (r *Reader) Anomalies() map[string]uint64 {
	out := make(map[string]uint64, len(r.anomalies))
	for k, v := range r.anomalies {
		out[k] = v.Load()
	}
	return out
}

func (r *Reader) anomaly(kind string, n int) {
	if n > 0 {
		r.anomalies[kind].Add(uint64(n))
	}
}

// Run rediscovers queues every DiscoveryInterval until ctx ends.
func (r *Reader) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.DiscoveryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A pass may take longer than one interval on a huge keyspace; give it
		// room, but never let it hang forever.
		dctx, cancel := context.WithTimeout(ctx, max(r.opts.DiscoveryInterval, time.Minute))
		if err := r.Discover(dctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("queue discovery failed", "err", err)
		}
		cancel()
	}
}

// Discover SCANs the namespace once and records the queues and ack sets it
// finds. Its cost grows with the size of the whole keyspace, not only the
// namespace, which is why scrapes use its cached result.
func (r *Reader) Discover(ctx context.Context) error {
	r.discoverMu.Lock()
	defer r.discoverMu.Unlock()
	return r.discover(ctx)
}

func (r *Reader) discover(ctx context.Context) error {
	started := r.now()
	prefix := r.opts.Namespace + ":"
	found := map[string]bool{}
	var acks []ackKey
	legacy := false

	var cursor uint64
	for {
		batch, next, err := r.client.Scan(ctx, cursor, r.keys.scanPattern(), 1000).Result()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if len(batch) > 0 {
			pipe := r.client.Pipeline()
			types := make([]*redis.StatusCmd, len(batch))
			for i, k := range batch {
				types[i] = pipe.Type(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil && !isServerError(err) {
				return fmt.Errorf("type: %w", err)
			}
			for i, k := range batch {
				typ, err := types[i].Result()
				if err != nil || !strings.HasPrefix(k, prefix) {
					continue
				}
				c := classify(k[len(prefix):], typ)
				switch c.kind {
				case kindQueue:
					found[c.queue] = true
				case kindAck:
					found[c.queue] = true
					acks = append(acks, ackKey{key: k, wid: c.wid, queue: c.queue})
				case kindLegacyAcks:
					legacy = true
				}
			}
		}
		cursor = next
		if cursor == 0 {
			break
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for q := range found {
		r.seen[q] = started
	}
	if ret := r.opts.QueueRetention; ret > 0 {
		for q, at := range r.seen {
			if started.Sub(at) > ret && !r.configured[q] {
				delete(r.seen, q)
			}
		}
	}
	r.forgetOverflow(started)
	r.ackKeys = acks
	r.discovered = started
	if legacy && !r.legacyLog {
		r.legacyLog = true
		r.logger.Warn("found pre-1.2 Dramatiq .acks keys; messages in them are not counted", "namespace", r.opts.Namespace)
	}
	return nil
}

// byRecency lists the discovered, unconfigured queues: those found by the
// latest discovery first, then the most recently seen, then by name.
func (r *Reader) byRecency() []string {
	var rest []string
	for q := range r.seen {
		if !r.configured[q] {
			rest = append(rest, q)
		}
	}
	sort.Slice(rest, func(i, j int) bool {
		a, b := r.seen[rest[i]], r.seen[rest[j]]
		if !a.Equal(b) {
			return a.After(b)
		}
		return rest[i] < rest[j]
	})
	return rest
}

// forgetOverflow keeps memory bounded under the queue cap: of the queues
// whose keys are gone (they would only report zeros), it remembers no more
// than the cap leaves room for. Queues that exist now are all kept, so the
// overflow they cause is counted, not hidden.
func (r *Reader) forgetOverflow(now time.Time) {
	m := r.opts.MaxQueues
	if m <= 0 || len(r.seen) <= m {
		return
	}
	room := max(m-len(r.configured), 0)
	forgotten := 0
	for i, q := range r.byRecency() {
		if i >= room && !r.seen[q].Equal(now) {
			delete(r.seen, q)
			forgotten++
		}
	}
	if forgotten > 0 {
		r.logger.Warn("queue cap reached: forgot queues whose keys are gone", "forgotten", forgotten, "max_queues", m)
	}
}

// queueList returns the queues to report, sorted, and how many the cap
// dropped. Configured queues come first, then the queues that exist now,
// then the most recently seen.
func (r *Reader) queueList() (queues []string, dropped int, acks []ackKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for q := range r.configured {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	queues = append(queues, r.byRecency()...)
	if m := r.opts.MaxQueues; m > 0 && len(queues) > m {
		dropped = len(queues) - m
		queues = queues[:m]
	}
	sort.Strings(queues)
	return queues, dropped, r.ackKeys
}

// isServerError tells an error Redis replied with (WRONGTYPE, NOPERM, nil)
// from a failure to talk to Redis at all.
func isServerError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}
