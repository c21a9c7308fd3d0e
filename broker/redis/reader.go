package redis

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
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
	// DiscoveryInterval is the shortest time between the starts of two
	// discovery passes (SCANs of the namespace for queues and ack sets).
	// Passes that cost Redis more are spaced further apart; see
	// DiscoveryDuty.
	DiscoveryInterval time.Duration
	// DiscoveryDuty is the share of Redis's main-thread time discovery may
	// take over a whole cycle, in (0, 1] (0: DefaultDiscoveryDuty).
	DiscoveryDuty float64
	// FirstPassDuty is the share of Redis's time the first pass after start
	// takes while it runs, in (0, 1]: 1 runs it unpaced (0:
	// DefaultFirstPassDuty).
	FirstPassDuty float64
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
	// BacklogByActor reads each queue's ready messages by actor, exactly
	// up to BacklogExactLimit ids (0: DefaultBacklogExactLimit) and from a
	// sample above (backlog.go).
	BacklogByActor    bool
	BacklogExactLimit int
}

// Anomaly kinds, counted rather than failing the scrape.
const (
	AnomalyUndecodableBody = "undecodable_body"
	AnomalyMissingHead     = "missing_head"
	AnomalyWrongType       = "wrong_type"
	// A key of the namespace whose queue part cannot be a Dramatiq queue
	// name (not [a-zA-Z_][a-zA-Z0-9._-]*, so also not valid UTF-8, or longer
	// than maxQueueNameLen): skipped by discovery, so it never becomes a
	// label.
	AnomalyInvalidQueueName = "invalid_queue_name"
	// A dead-letter score or message_timestamp that is not a time between
	// 1970 and 9999 (see millisTime): the time is left absent.
	AnomalyInvalidTime = "invalid_time"
	// A head body larger than MaxHeadBodyBytes: not fetched, and the
	// queue's oldest age is absent.
	AnomalyOversizeBody = "oversize_body"
	// A ready-list element or dead-letter member longer than MaxIDBytes:
	// not a Dramatiq message id, so it is neither used nor remembered; the
	// queue's oldest age is absent when it is the head.
	AnomalyOversizeID = "oversize_id"
)

// AnomalyKinds lists every kind, in a stable order.
var AnomalyKinds = []string{AnomalyUndecodableBody, AnomalyMissingHead, AnomalyWrongType, AnomalyInvalidQueueName, AnomalyInvalidTime, AnomalyOversizeBody, AnomalyOversizeID}

type ackKey struct {
	key   string
	wid   string
	queue string // canonical
}

// Reader reads one Dramatiq namespace of one Redis. It is shared by every
// scrape and safe for concurrent use.
type Reader struct {
	client goredis.UniversalClient
	opts   Options
	keys   keys
	now    func() time.Time
	logger *slog.Logger

	configured map[string]bool // read-only after NewReader

	// Discovery's state: one page at a time, under sem.
	sem       chan struct{}
	pass      pass
	seen      map[string]time.Time // queue → when discovery last found a key of it
	legacyLog bool
	smallLog  bool // the small-namespace warning was logged

	headsMu sync.Mutex
	heads   map[string]headInfo // queue → its head, as the latest read saw it

	dead *deadCounter // dead-letter counters (deadcount.go)
	acks *ackTracker  // ack sets found without SCAN (acktrack.go)

	started time.Time     // when the Reader was built
	delayed *delayedState // delay-queue heads and held etas (delayed.go)
	backlog *backlogState // backlog by actor (backlog.go)

	background atomic.Bool // Start or Run was called: reads never discover
	view       atomic.Pointer[view]
	status     atomic.Pointer[DiscoveryStatus]
	args       atomic.Pointer[queueArgs] // the view's commands, built once per view
}

// NewReader builds a Reader around a client the caller owns.
func NewReader(client goredis.UniversalClient, opts Options) *Reader {
	if opts.Namespace == "" {
		opts.Namespace = "dramatiq"
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 60 * time.Second
	}
	if opts.DiscoveryInterval <= 0 {
		opts.DiscoveryInterval = 30 * time.Second
	}
	if opts.DiscoveryDuty <= 0 || opts.DiscoveryDuty > 1 {
		opts.DiscoveryDuty = DefaultDiscoveryDuty
	}
	if opts.FirstPassDuty <= 0 || opts.FirstPassDuty > 1 {
		opts.FirstPassDuty = DefaultFirstPassDuty
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
		sem:        make(chan struct{}, 1),
		seen:       map[string]time.Time{},
		dead:       newDeadCounter(opts.Now()),
		started:    opts.Now(),
		delayed:    &delayedState{},
		acks:       newAckTracker(),
		backlog:    newBacklogState(),
	}
	for _, q := range opts.Queues {
		r.configured[q] = true
	}
	r.view.Store(r.buildView(nil))
	r.status.Store(&DiscoveryStatus{Keyspace: -1})
	return r
}

// Options returns the options the Reader runs with.
func (r *Reader) Options() Options { return r.opts }

// Anomalies counts odd broker data by kind, in one read. A Snapshot carries
// the counts of its own read, so their value does not depend on how many
// readers there are or how often they read (a counter incremented on every
// read would). invalid_queue_name comes from discovery's latest completed
// pass, which is the read that saw those keys.
type Anomalies map[string]int

func newAnomalies() Anomalies {
	a := make(Anomalies, len(AnomalyKinds))
	for _, k := range AnomalyKinds {
		a[k] = 0
	}
	return a
}

func (a Anomalies) add(kind string, n int) { a[kind] += n }

// isServerError tells an error Redis replied with (WRONGTYPE, NOPERM, nil)
// from a failure to talk to Redis at all.
func isServerError(err error) bool {
	var re goredis.Error
	return errors.As(err, &re)
}
