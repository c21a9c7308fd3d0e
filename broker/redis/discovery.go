package redis

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/safe"
)

// Discovery finds the namespace's queues and ack sets with SCAN, because
// Dramatiq keeps no registry of them. SCAN walks the whole keyspace, so on
// a Redis shared with a large cache one pass costs Redis seconds of its
// single thread: it runs in the background, never on a scrape's deadline,
// and is paced so that it takes a bounded share of Redis's time.
const (
	// DefaultDiscoveryDuty is the share of Redis's main thread discovery
	// may take over a whole cycle (Options.DiscoveryDuty): the next pass
	// starts no sooner than the last pass's Redis time divided by it (and
	// never sooner than --dramatiq.discovery-interval).
	DefaultDiscoveryDuty = 0.01
	// DefaultFirstPassDuty paces the first pass after start
	// (Options.FirstPassDuty): queues other than the configured ones are
	// reported only once it completes, so it may go faster than the others.
	DefaultFirstPassDuty = pageDuty
	// smallNamespace: a namespace under this share of a database of at
	// least smallNamespaceKeyspace keys makes discovery warn, once.
	smallNamespace         = 0.01
	smallNamespaceKeyspace = 100_000
	// pageDuty is that share within a pass: after each SCAN page the
	// background pass sleeps (1/pageDuty - 1) times what the page took, so
	// other clients never queue behind a burst of pages.
	pageDuty = 0.1
	// scanCount is SCAN's COUNT hint. Redis's cost is per key walked
	// (about 0.85 µs of its main thread per key with MATCH on Redis 7.0,
	// measured at 10M keys whatever the COUNT, 100 to 100,000), so COUNT
	// only sets how long one call holds Redis: about 0.85 ms at 1000
	// (85 ms at 100,000), short enough for other clients not to notice.
	scanCount = 1000
	// pageBurst is how many pages a paced pass reads back to back before
	// it waits: measured at 10M keys, Redis spent 1.3 µs a key on pages
	// read one at a time at a tenth of its time, 1.07 µs in bursts of 10,
	// 0.87 µs unpaced (caches cool down during a pause). A burst of 10
	// holds Redis about 10 ms in all, one page at a time.
	pageBurst = 10
	// floorPings is how many PINGs measure a pass's round-trip floor.
	floorPings = 3
	// pageTimeout bounds one page in the background. A pass is never
	// bounded as a whole: a page that fails or times out is retried from
	// the same cursor, so a pass over any keyspace finishes.
	pageTimeout = 10 * time.Second
)

// DiscoveryStatus describes discovery's progress and its latest completed
// pass. It is the zero value (Passes 0) until a first pass completes.
type DiscoveryStatus struct {
	// Passes counts the passes completed since start.
	Passes uint64
	// Started and Completed bound the latest completed pass (wall clock).
	Started, Completed time.Time
	// Duration is Completed - Started: pacing and retries included.
	Duration time.Duration
	// RedisTime estimates the time Redis's main thread spent on the pass.
	// With INFO, it is the usec INFO commandstats counted for SCAN and
	// TYPE during the pass (Redis's own measure; other clients' SCAN and
	// TYPE included), capped by the pass's round trips. Without INFO, it
	// is the round trips less the pass's round-trip floor (see
	// RedisTimeEstimated).
	RedisTime time.Duration
	// RedisTimeEstimated is true when INFO commandstats was refused or
	// unusable, so RedisTime is the fallback: each round trip less the
	// fastest of a few PINGs sent at the pass's start. The network and the
	// client's own time above that floor are still counted, so it stays an
	// upper bound in practice: it overstates, never much understates.
	RedisTimeEstimated bool
	// Keys is how many keys of the namespace the pass returned.
	Keys int
	// Keyspace is DBSIZE when the pass started: the keys SCAN walked. -1
	// when DBSIZE was refused.
	Keyspace int64
	// Interval is the time from this pass's start to the next one's:
	// --dramatiq.discovery-interval, or longer when the pass cost more
	// than Options.DiscoveryDuty allows.
	Interval time.Duration
}

// pass is the state of the pass in progress; it outlives an interrupted
// page so that the next page resumes from the cursor.
type pass struct {
	active     bool
	cursor     uint64
	began      time.Time // wall clock, for durations and scheduling
	seenAt     time.Time // r.now(), for the seen marks queue retention reads
	found      map[string]bool
	acks       []ackKey
	legacy     bool
	invalid    int // keys skipped for a queue name that cannot be a label
	keys       int
	client     time.Duration // sum of page round trips, sleeps excluded
	overFloor  time.Duration // the same, less floor per round trip
	floor      time.Duration // fastest PING at the pass's start
	usecBefore float64       // SCAN+TYPE usec from commandstats; NaN if unknown
	keyspace   int64
	runID      string // INFO server run_id at the start; "" if unknown
	// unpublished: queues found for the first time that scrapes do not
	// report yet; published: when publishNew last rebuilt the view.
	unpublished bool
	published   time.Time
}

// view is what scrapes read: built by discovery, replaced whole, never
// modified, so scrapes take no lock.
type view struct {
	queues  []string
	dropped int
	acks    []ackKey
	// invalidNames counts the keys the pass skipped for a queue name that
	// cannot be a label (AnomalyInvalidQueueName).
	invalidNames int
}

// lock takes the discovery lock, or gives up when ctx ends. A channel,
// not a sync.Mutex, so that no caller waits past its deadline.
func (r *Reader) lock(ctx context.Context) error {
	select {
	case r.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Reader) unlock() { <-r.sem }

// DiscoveryStatus returns discovery's latest completed pass. It never
// waits.
func (r *Reader) DiscoveryStatus() DiscoveryStatus { return *r.status.Load() }

// DiscoveryEnabled tells whether this Reader discovers queues at all.
func (r *Reader) DiscoveryEnabled() bool { return !r.opts.SkipDiscovery }

// Start runs discovery in the background until ctx ends, beginning at
// once. From then on scrapes never discover: until the first pass
// completes they report the configured queues, and after it what the
// latest pass found.
func (r *Reader) Start(ctx context.Context) {
	if r.opts.SkipDiscovery {
		return
	}
	r.background.Store(true)
	go r.Run(ctx)
}

// Run is Start's loop, for callers that run it in their own goroutine.
// Pages are paced, the interval between passes adapts to their cost, and
// a failed page is retried from its cursor with backoff.
func (r *Reader) Run(ctx context.Context) {
	if r.opts.SkipDiscovery {
		return
	}
	r.background.Store(true)
	var backoff, owed time.Duration
	pages := 0
	for {
		pctx, cancel := context.WithTimeout(ctx, pageTimeout)
		rtt, done, err := r.backgroundStep(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		switch {
		case err != nil:
			backoff = min(max(2*backoff, time.Second), max(r.opts.DiscoveryInterval, time.Second))
			r.logger.Warn("queue discovery failed; it resumes where it stopped", "err", err, "retry_in", backoff)
			wait = backoff
		case done:
			backoff, owed, pages = 0, 0, 0
			st := r.status.Load()
			wait = time.Until(st.Started.Add(st.Interval))
		default:
			backoff = 0
			// Pages go in bursts of pageBurst, then wait for what the burst
			// cost: a burst finds Redis's caches warm, so a key costs it
			// about a fifth less than after a pause. Other clients' commands
			// still run between two pages.
			owed += rtt
			if pages++; pages%pageBurst == 0 {
				wait, owed = pageWait(owed, r.pagePace()), 0
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// backgroundStep is step for Run's goroutine, which no caller guards: a
// panic is logged and becomes a failed page, retried with backoff like any
// other, instead of the end of the process.
func (r *Reader) backgroundStep(ctx context.Context) (rtt time.Duration, done bool, err error) {
	defer safe.Recover(r.logger, "queue discovery", func(e error) { err = e })
	return r.step(ctx)
}

// Discover completes a pass that starts no earlier than this call, unpaced,
// within ctx: for one-shot readers and tests. A pass already in progress
// (in the background, say) is finished first. If ctx ends first, the next
// call resumes from where this one stopped.
func (r *Reader) Discover(ctx context.Context) error {
	if err := r.lock(ctx); err != nil {
		return err
	}
	target := r.status.Load().Passes + 1
	if r.pass.active {
		target++
	}
	r.unlock()
	return r.discoverUntil(ctx, target)
}

func (r *Reader) discoverUntil(ctx context.Context, passes uint64) error {
	for r.status.Load().Passes < passes {
		if _, _, err := r.step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ensureDiscovered lets a Reader without background discovery (the check
// command, one-shot tools) complete one pass on its first read. With
// background discovery a read never waits for it.
func (r *Reader) ensureDiscovered(ctx context.Context) error {
	if r.opts.SkipDiscovery || r.background.Load() {
		return nil
	}
	return r.discoverUntil(ctx, 1)
}

// step reads one SCAN page of the current pass, starting a pass if none is
// in progress. The cursor advances only once the page is fully classified,
// so a failed page is read again, not skipped. rtt is the page's round
// trips less their floor: its estimate of Redis's time, which paces pages.
func (r *Reader) step(ctx context.Context) (rtt time.Duration, done bool, err error) {
	if err := r.lock(ctx); err != nil {
		return 0, false, err
	}
	defer r.unlock()
	p := &r.pass
	if !p.active {
		if err := r.beginPass(ctx); err != nil {
			return 0, false, err
		}
	}
	begin := time.Now()
	trips := 1
	batch, next, err := r.client.Scan(ctx, p.cursor, r.keys.scanPattern(), scanCount).Result()
	if err != nil {
		return time.Since(begin), false, fmt.Errorf("scan: %w", err)
	}
	prefix := r.opts.Namespace + ":"
	var candidates []string
	for _, k := range batch {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		switch checkName(rest) {
		case nameTyped:
			candidates = append(candidates, k)
		case nameInvalid:
			p.invalid++
		}
	}
	var found []classified
	var foundKeys []string
	if len(candidates) > 0 {
		pipe := r.client.Pipeline()
		types := make([]*goredis.StatusCmd, len(candidates))
		for i, k := range candidates {
			types[i] = pipe.Type(ctx, k)
		}
		trips++
		// TYPE has no expected error reply: NOPERM or NOAUTH here would
		// otherwise hide a queue, so the page fails and is read again.
		if _, err := pipe.Exec(ctx); err != nil {
			return time.Since(begin), false, fmt.Errorf("type: %w", err)
		}
		for i, k := range candidates {
			c := classify(k[len(prefix):], types[i].Val())
			if c.kind != kindUnknown {
				found = append(found, c)
				foundKeys = append(foundKeys, k)
			}
		}
	}
	rtt = time.Since(begin)
	// The page is paced by its estimate of Redis's time, not by its round
	// trips: over a slow network those are mostly the network's.
	rtt = overFloor(rtt, p.floor, trips)
	for i, c := range found {
		switch c.kind {
		case kindQueue:
			p.found[c.queue] = true
		case kindAck:
			p.found[c.queue] = true
			p.acks = append(p.acks, ackKey{key: foundKeys[i], wid: c.wid, queue: c.queue})
		case kindLegacyAcks:
			p.legacy = true
		}
	}
	p.keys += len(batch)
	p.client += time.Since(begin)
	p.overFloor += rtt
	p.cursor = next
	if next != 0 {
		r.publishNew(found)
		return rtt, false, nil
	}
	return rtt, r.finishPass(ctx), nil
}

// publishNew reports at once the queues a page finds that no pass has
// found before, instead of at the pass's end: a pass paced over a large
// keyspace ends R / pace later (1.5 minutes at 10M keys), which would add
// to every new queue's delay. Only after the first pass, so that until it
// completes scrapes report the configured queues, as documented. Queues
// are only ever added here; what is gone is dropped by finishPass as
// before. Called with the discovery lock held.
func (r *Reader) publishNew(found []classified) {
	if r.status.Load().Passes == 0 {
		return
	}
	p := &r.pass
	for _, c := range found {
		if c.kind != kindQueue && c.kind != kindAck || r.configured[c.queue] {
			continue
		}
		if _, ok := r.seen[c.queue]; !ok {
			r.seen[c.queue] = p.seenAt
			p.unpublished = true
		}
	}
	// A view costs a sort of every queue: at most one a second, whatever
	// a hostile keyspace makes each page find. The pass's end publishes
	// the rest.
	if !p.unpublished || time.Since(p.published) < time.Second {
		return
	}
	p.unpublished, p.published = false, time.Now()
	old := r.view.Load()
	v := r.buildView(old.acks)
	v.invalidNames = old.invalidNames
	r.view.Store(v)
}

// beginPass records where the pass starts: DBSIZE, the SCAN and TYPE
// counters of INFO commandstats to measure Redis's own time, and the
// server's run_id. A user may be refused any of them; the pass then goes
// on without.
func (r *Reader) beginPass(ctx context.Context) error {
	pipe := r.client.Pipeline()
	size := pipe.DBSize(ctx)
	stats := pipe.Info(ctx, "commandstats")
	server := pipe.Info(ctx, "server")
	if _, err := pipe.Exec(ctx); err != nil && !isServerError(err) {
		return fmt.Errorf("dbsize: %w", err)
	}
	floor, err := r.pingFloor(ctx)
	if err != nil {
		return err
	}
	r.pass = pass{
		active:     true,
		began:      time.Now(),
		seenAt:     r.now(),
		found:      map[string]bool{},
		floor:      floor,
		usecBefore: scanUsec(stats),
		keyspace:   -1,
		runID:      runID(server),
	}
	if n, err := size.Result(); err == nil {
		r.pass.keyspace = n
	}
	return nil
}

// pingFloor is the fastest of floorPings PINGs: the network's and the
// client's share of a round trip that costs Redis next to nothing. A
// user refused PING gets a floor of 0, so its estimate stays the whole
// round trip.
func (r *Reader) pingFloor(ctx context.Context) (time.Duration, error) {
	floor := time.Duration(math.MaxInt64)
	for range floorPings {
		begin := time.Now()
		err := r.client.Ping(ctx).Err()
		d := time.Since(begin)
		if err != nil {
			if isServerError(err) {
				return 0, nil
			}
			return 0, fmt.Errorf("ping: %w", err)
		}
		floor = min(floor, d)
	}
	return floor, nil
}

// overFloor estimates Redis's share of a page of trips round trips that
// took rtt in all: what each took above the floor.
func overFloor(rtt, floor time.Duration, trips int) time.Duration {
	return max(rtt-time.Duration(trips)*floor, 0)
}

// redisTime is a pass's Redis time: usec, the SCAN and TYPE usec INFO
// commandstats counted during it (NaN when unknown), when it can be
// trusted, else the round trips less their floor. client, the whole round
// trips, bounds both.
func redisTime(usec float64, client, overFloor time.Duration) (d time.Duration, estimated bool) {
	// A restart in between resets the counters: a negative difference.
	if usec >= 0 && !math.IsNaN(usec) {
		return min(client, time.Duration(usec*float64(time.Microsecond))), false
	}
	return min(client, overFloor), true
}

// nextInterval is the time from a pass's start to the next one's: its
// Redis time over the duty, so that discovery takes that share of Redis's
// time over a cycle, and never less than least (the configured interval).
func nextInterval(redisTime time.Duration, duty float64, least time.Duration) time.Duration {
	return max(least, time.Duration(float64(redisTime)/duty))
}

// pageWait is the pause after a page that cost Redis about redisTime, so
// that a pass takes pace of Redis's time while it runs.
func pageWait(redisTime time.Duration, pace float64) time.Duration {
	return time.Duration(float64(redisTime) * (1/pace - 1))
}

// finishPass publishes a completed pass: a new view for scrapes and a new
// status. A pass that spanned a restart or a failover resumed a cursor on
// another server, whose table it does not describe: it may have missed
// keys, so it is dropped, and false tells the caller a new one starts.
// Called with the discovery lock held.
func (r *Reader) finishPass(ctx context.Context) bool {
	p := r.pass
	r.pass = pass{}
	ended := time.Now()

	pipe := r.client.Pipeline()
	stats := pipe.Info(ctx, "commandstats")
	server := pipe.Info(ctx, "server")
	_, _ = pipe.Exec(ctx) // each reply is checked on its own below
	if id := runID(server); id != "" && p.runID != "" && id != p.runID {
		r.logger.Info("Redis restarted or failed over during queue discovery; the pass starts over")
		return false
	}
	redisTime, estimated := redisTime(scanUsec(stats)-p.usecBefore, p.client, p.overFloor)

	for q := range p.found {
		r.seen[q] = p.seenAt
	}
	if ret := r.opts.QueueRetention; ret > 0 {
		for q, at := range r.seen {
			if p.seenAt.Sub(at) > ret && !r.configured[q] {
				delete(r.seen, q)
			}
		}
	}
	r.forgetOverflow(p.seenAt)
	v := r.buildView(p.acks)
	v.invalidNames = p.invalid
	r.view.Store(v)
	if p.legacy && !r.legacyLog {
		r.legacyLog = true
		r.logger.Warn("found pre-1.2 Dramatiq .acks keys; messages in them are not counted", "namespace", r.opts.Namespace)
	}

	interval := nextInterval(redisTime, r.opts.DiscoveryDuty, r.opts.DiscoveryInterval)
	prev := r.status.Load()
	r.status.Store(&DiscoveryStatus{
		Passes:             prev.Passes + 1,
		Started:            p.began,
		Completed:          ended,
		Duration:           ended.Sub(p.began),
		RedisTime:          redisTime,
		RedisTimeEstimated: estimated,
		Keys:               p.keys,
		Keyspace:           p.keyspace,
		Interval:           interval,
	})
	if p.keyspace >= smallNamespaceKeyspace && float64(p.keys) < smallNamespace*float64(p.keyspace) && !r.smallLog {
		r.smallLog = true
		r.logger.Warn("the Dramatiq namespace is a tiny part of this Redis database, and discovery's SCAN walks all of it: give Dramatiq a database of its own (redis://host:6379/1, say) to find new queues sooner at less cost",
			"namespace_keys", p.keys, "keyspace", p.keyspace, "redis_time", redisTime, "interval", interval)
	}
	if estimated && prev.Passes == 0 {
		r.logger.Info("INFO commandstats is refused or unusable: discovery's Redis time is estimated from its round trips less the network's floor, an overestimate that spaces passes out more than needed",
			"redis_time", redisTime)
	}
	if interval > r.opts.DiscoveryInterval && prev.Interval <= r.opts.DiscoveryInterval {
		r.logger.Info("queue discovery is costly on this Redis; passes are spaced out to keep its share of Redis's time low",
			"redis_time", redisTime, "keyspace", p.keyspace, "interval", interval)
	}
	return true
}

// pagePace is the share of Redis's time a pass takes while it runs: the
// first pass's (Options.FirstPassDuty) until one completes, then pageDuty,
// or the cycle's duty when that is higher.
func (r *Reader) pagePace() float64 {
	if r.status.Load().Passes == 0 {
		return r.opts.FirstPassDuty
	}
	return max(pageDuty, r.opts.DiscoveryDuty)
}

// runID reads run_id from INFO server: it changes when Redis restarts, and
// differs between a master and the replica a failover promotes.
func runID(c *goredis.StringCmd) string {
	s, err := c.Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	return ""
}

// scanUsec sums the usec INFO commandstats reports for SCAN and TYPE, or
// NaN when INFO was refused or lacks them.
func scanUsec(c *goredis.StringCmd) float64 {
	s, err := c.Result()
	if err != nil {
		return math.NaN()
	}
	total, seen := 0.0, false
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		var rest string
		var ok bool
		if rest, ok = strings.CutPrefix(line, "cmdstat_scan:"); !ok {
			if rest, ok = strings.CutPrefix(line, "cmdstat_type:"); !ok {
				continue
			}
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				if n, err := strconv.ParseFloat(v, 64); err == nil {
					total += n
					seen = true
				}
			}
		}
	}
	if !seen {
		// Neither command has run since Redis started (or the stats were
		// reset): that is a count of zero only if INFO answered at all.
		if strings.Contains(s, "# Commandstats") {
			return 0
		}
		return math.NaN()
	}
	return total
}

// buildView lists the queues to report, sorted, and how many the cap
// drops: configured queues first, then the queues that exist now, then
// the most recently seen. Called with the discovery lock held.
func (r *Reader) buildView(acks []ackKey) *view {
	var queues []string
	for q := range r.configured {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	queues = append(queues, r.byRecency()...)
	dropped := 0
	if m := r.opts.MaxQueues; m > 0 && len(queues) > m {
		dropped = len(queues) - m
		queues = queues[:m]
	}
	sort.Strings(queues)
	return &view{queues: queues, dropped: dropped, acks: acks}
}

// queueList returns what the latest pass found (or only the configured
// queues before the first). It never waits.
func (r *Reader) queueList() (queues []string, dropped int, acks []ackKey) {
	v := r.view.Load()
	return v.queues, v.dropped, v.acks
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
