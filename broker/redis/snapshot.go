package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// headProbe is how many ids from the head of a ready list are read to find
// the oldest message. At most one body is fetched; the others are there
// for the rare scrape in which a worker fetches and acks the head between
// our round trips, so the age does not blink out (and reset an alert's
// `for:`). Bodies can be large, so we never fetch more than we need.
const headProbe = 3

// Snapshot is one read of the broker. Numbers taken in one pipelined round
// trip are close to consistent, but not atomic: ids move list → ack set →
// gone while we read, so derived values are clamped at zero.
type Snapshot struct {
	MemoryUsedBytes  float64 // NaN when INFO is not allowed
	ConnectedClients float64 // NaN when INFO is not allowed
	Queues           []QueueStats
	QueuesDropped    int
	ProcessesAlive   int
	ProcessesStale   int
	// Anomalies are the odd data this read met, every kind present.
	Anomalies Anomalies
	// DeadLetteredByActor counts the dead letters of the reported queues
	// since the Reader first read each, per actor, sorted by queue and
	// actor (see deadcount.go). DeadLetterActorSeries is how many pairs
	// count towards MaxActorSeries.
	DeadLetteredByActor   []ActorDeadLetters
	DeadLetterActorSeries int
	// AckSetsTracked is how many ack sets this read counted one by one
	// (acktrack.go); AckSetsUntracked how many it found but could not
	// remember under maxTrackedAckSets (left to discovery).
	AckSetsTracked, AckSetsUntracked int
	// AckProbes is how many unknown (worker, queue) pairs this read probed.
	AckProbes int
	// HeldUntracked counts ids of live workers' ack sets whose holding
	// time is not tracked (a set over heldSample ids, or maxHeldIDs
	// reached): LongestHeld may understate them.
	HeldUntracked int
	// Backlog is the ready messages by actor, when Options.BacklogByActor
	// is set (backlog.go); nil otherwise.
	Backlog *BacklogByActor
}

// QueueStats are one canonical queue's numbers.
type QueueStats struct {
	Name       string
	Ready      int64
	InFlight   int64
	Delayed    int64
	DeadLetter int64
	Orphaned   int64
	// DeadLettered counts the messages dead-lettered since the Reader first
	// read the queue (deadcount.go).
	DeadLettered uint64
	// DeadLetterLast is when the newest message was dead-lettered; zero when
	// the dead-letter queue is empty or the newest score is not a valid
	// time (see millisTime).
	DeadLetterLast time.Time
	// OldestAge is now minus message_timestamp of the head of the ready list;
	// 0 when the list is empty. OldestAgeKnown is false when the head could
	// not be read or decoded.
	OldestAge      time.Duration
	OldestAgeKnown bool
	// DelayedUnclaimedAge is how long the head of the {q}.DQ list has
	// waited for a worker to claim it; 0 when the list is empty (delayed.go).
	DelayedUnclaimedAge      time.Duration
	DelayedUnclaimedAgeKnown bool
	// DelayedOverdue counts the messages held in .DQ ack sets whose eta
	// passed more than DelayedOverdueGrace ago. Unknown while the .DQ
	// ack sets the Reader knows do not hold every delayed message outside
	// the list (a holder not found yet), or when they exceed the per-read
	// caps.
	DelayedOverdue      int64
	DelayedOverdueKnown bool
	// LongestHeld is how long the id held longest by a live worker (its
	// heartbeat within the timeout) has been in that worker's ack set, as
	// far as the Reader saw: since the first read that found it there. 0
	// when live workers hold nothing of the queue. LongestHeldLowerBound:
	// that id was already there when the Reader first read the set (after
	// a start, or when it first found the set), so it was held longer.
	LongestHeld           time.Duration
	LongestHeldLowerBound bool
}

// queueCmds are one queue's round-trip-1 commands. They are generic
// commands over arguments built once per discovery view (queueArgs): a
// typed go-redis command allocates its argument slice, the boxed key and
// the key string on every scrape, which made up about half of a scrape's
// allocations per queue.
type queueCmds struct {
	ready, msgs, delayed, dead, deadLast, head, delayHead, delayLen *goredis.Cmd
}

// queueArgs holds, for one view, every queue's command arguments. They are
// only ever read, so concurrent snapshots share them.
type queueArgs struct {
	view *view
	qs   []queueCmdArgs
	// reported are the view's queues, for the ack-set plan (acktrack.go).
	reported map[string]bool
}

type queueCmdArgs struct {
	ready, msgs, delayed, dead, deadLast, head, delayHead, delayLen []any
	msgsKey                                                         string
}

// queueArgs returns the arguments for v's queues, building them when the
// view changed since the last scrape.
func (r *Reader) queueArgs(v *view) *queueArgs {
	if a := r.args.Load(); a != nil && a.view == v {
		return a
	}
	qs := make([]queueCmdArgs, len(v.queues))
	reported := make(map[string]bool, len(v.queues))
	for i, q := range v.queues {
		reported[q] = true
		list, msgs, dead := r.keys.queue(q), r.keys.queueMsgs(q), r.keys.dead(q)
		// Command names are lower case: go-redis lowers them for Name().
		qs[i] = queueCmdArgs{
			ready:    []any{"llen", list},
			msgs:     []any{"hlen", msgs},
			delayed:  []any{"hlen", r.keys.delayMsgs(q)},
			dead:     []any{"zcard", dead},
			deadLast: []any{"zrevrange", dead, 0, 0, "withscores"},
			head:     []any{"lrange", list, 0, headProbe - 1},
			// The delay queue's head, for the unclaimed age (delayed.go).
			delayHead: []any{"lrange", r.keys.delayList(q), 0, headProbe - 1},
			// The delay list's length: what of .DQ.msgs is not held in
			// .DQ ack sets (delayed.go, acktrack.go).
			delayLen: []any{"llen", r.keys.delayList(q)},
			msgsKey:  msgs,
		}
	}
	a := &queueArgs{view: v, qs: qs, reported: reported}
	r.args.Store(a)
	return a
}

// Snapshot reads every reported queue and the heartbeat set in two
// pipelined round trips (a third only after a head race). Its command
// count grows with queues and processes, never with messages.
func (r *Reader) Snapshot(ctx context.Context) (*Snapshot, error) {
	if err := r.ensureDiscovered(ctx); err != nil {
		return nil, err
	}
	v := r.view.Load()
	queues, dropped := v.queues, v.dropped
	now := r.now()
	an := newAnomalies()
	an.add(AnomalyInvalidQueueName, v.invalidNames)
	snap := &Snapshot{QueuesDropped: dropped, MemoryUsedBytes: math.NaN(), ConnectedClients: math.NaN(), Anomalies: an}

	// Round trip 1: counts, DLQ heads, ready-list heads, heartbeats, INFO.
	// No member of the heartbeat set is read: both counts are ZCOUNTs, and
	// only the owners of ack sets are looked up, by ZSCORE. A set of a
	// million members (stale ids Dramatiq removes lazily, or ids scored in
	// the future by a skewed or hostile client) costs what ten do.
	cutoffMs := now.Add(-r.opts.HeartbeatTimeout).UnixMilli()
	cutoff := strconv.FormatInt(cutoffMs, 10)
	pipe := r.client.Pipeline()
	infoMem := pipe.Info(ctx, "memory")
	infoClients := pipe.Info(ctx, "clients")
	aliveCount := pipe.ZCount(ctx, r.keys.heartbeats(), cutoff, "+inf")
	staleCount := pipe.ZCount(ctx, r.keys.heartbeats(), "-inf", "("+cutoff)
	qa := r.queueArgs(v)
	args := qa.qs
	plan := r.planAcks(ctx, pipe, v, qa.reported, now)
	heldCheck := r.planHeldDelayed(ctx, pipe, qa.reported, now)
	cmds := make([]queueCmds, len(queues))
	skipDelayHead := r.delayHeadSkips(queues)
	for i := range queues {
		a := &args[i]
		cmds[i] = queueCmds{
			ready:    pipe.Do(ctx, a.ready...),
			msgs:     pipe.Do(ctx, a.msgs...),
			delayed:  pipe.Do(ctx, a.delayed...),
			dead:     pipe.Do(ctx, a.dead...),
			deadLast: pipe.Do(ctx, a.deadLast...),
			head:     pipe.Do(ctx, a.head...),
		}
		// The delay list's head, for the unclaimed age (delayed.go).
		if !skipDelayHead[i] {
			cmds[i].delayHead = pipe.Do(ctx, a.delayHead...)
			cmds[i].delayLen = pipe.Do(ctx, a.delayLen...)
		}
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}
	snap.MemoryUsedBytes = infoField(infoMem, "used_memory")
	snap.ConnectedClients = infoField(infoClients, "connected_clients")
	aliveN, err := an.count(aliveCount)
	if err != nil {
		return nil, err
	}
	stale, err := an.count(staleCount)
	if err != nil {
		return nil, err
	}
	snap.ProcessesAlive, snap.ProcessesStale = int(aliveN), int(stale)

	snap.Queues = make([]QueueStats, len(queues))
	seenDead := make([]deadSeen, len(queues))
	for i, q := range queues {
		c := cmds[i]
		s := QueueStats{Name: q}
		var err error
		if s.Ready, err = an.countCmd(c.ready); err != nil {
			return nil, err
		}
		msgs, err := an.countCmd(c.msgs)
		if err != nil {
			return nil, err
		}
		// The .msgs hash holds every unacked message, ready or fetched, so
		// what is not in the list is in some ack set. This avoids SCARD over
		// every worker's ack set, which would need a fresh SCAN each scrape.
		s.InFlight = max(msgs-s.Ready, 0)
		if s.Delayed, err = an.countCmd(c.delayed); err != nil {
			return nil, err
		}
		if s.DeadLetter, err = an.countCmd(c.dead); err != nil {
			return nil, err
		}
		if err := an.check(c.deadLast.Err()); err != nil {
			return nil, err
		}
		ds := deadSeen{ok: c.dead.Err() == nil && c.deadLast.Err() == nil, card: s.DeadLetter, empty: true}
		if id, score, ok := newestMember(c.deadLast.Val()); ok {
			if oversizeID(id) {
				an.add(AnomalyOversizeID, 1)
			}
			ds.empty, ds.newestID, ds.newestScore = false, idKey(id), score
		}
		seenDead[i] = ds
		if score, ok := firstScore(c.deadLast.Val()); ok {
			if at, ok := millisTime(score); ok {
				s.DeadLetterLast = at
			} else {
				an.add(AnomalyInvalidTime, 1)
			}
		}
		if s.Ready == 0 {
			s.OldestAgeKnown = true
		}
		snap.Queues[i] = s
	}
	// The delay lists' lengths, -1 where not read: LRANGE of the same
	// key already counts a wrong type.
	delayLists := make([]int64, len(queues))
	for i, c := range cmds {
		delayLists[i] = -1
		if c.delayLen != nil {
			if n, err := c.delayLen.Int64(); err == nil {
				delayLists[i] = n
			} else if err := c.delayLen.Err(); failsRead(err) {
				return nil, err
			}
		}
	}
	ackRes, err := r.applyAcks(plan, an, snap.Queues, delayLists, now)
	if err != nil {
		return nil, err
	}
	if err := r.sweepStale(ctx, ackRes, an); err != nil {
		return nil, err
	}
	for i := range snap.Queues {
		q := &snap.Queues[i]
		q.Orphaned = ackRes.orphaned[q.Name]
		if h, ok := ackRes.held[q.Name]; ok {
			q.LongestHeld = max(now.Sub(h.at), 0)
			q.LongestHeldLowerBound = h.lowerBound
		}
	}
	snap.AckSetsTracked = len(plan.tracked) + len(plan.probes)
	snap.AckSetsUntracked = ackRes.untracked
	snap.AckProbes = len(plan.probes)
	snap.HeldUntracked = ackRes.heldUntracked

	// Round trip 2: HSTRLEN of the head ids of queues whose head changed
	// since the last read (ack sets were counted in round trip 1, see
	// acktrack.go). Round trip 3, only for changed heads: HGET of one body
	// per queue, if it is small enough. An unchanged head costs nothing:
	// its message_timestamp is remembered by id (see heads.go).
	pipe = r.client.Pipeline()
	n := 0
	known := r.knownHeads(queues)
	fresh := make(map[string]headInfo, len(queues))
	type probe struct {
		queue int
		ids   []string
		lens  []*goredis.IntCmd
	}
	var probes []probe
	for i, q := range queues {
		ids := headIDs(cmds[i].head)
		// Probe only the ids before the first oversize one; an oversize
		// head leaves the age absent and nothing remembered.
		for k, id := range ids {
			if oversizeID(id) {
				an.add(AnomalyOversizeID, 1)
				ids = ids[:k]
				break
			}
		}
		if snap.Queues[i].Ready == 0 || len(ids) == 0 {
			continue
		}
		if h, ok := known[q]; ok && h.id == ids[0] {
			an.applyHead(&snap.Queues[i], now, h)
			fresh[q] = h
			continue
		}
		p := probe{queue: i, ids: ids}
		for _, id := range ids {
			p.lens = append(p.lens, pipe.HStrLen(ctx, args[i].msgsKey, id))
			n++
		}
		probes = append(probes, p)
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return nil, err
		}
	}

	type fetch struct {
		queue int
		id    string
		body  *goredis.StringCmd
	}
	var fetches []fetch
	var unsettled []string
	pipe = r.client.Pipeline()
	budget := int64(maxHeadBytesPerRead)
	for _, p := range probes {
		q := queues[p.queue]
		// The first probed id that still has a body is the oldest message:
		// the ones before it were fetched by a worker since round trip 1.
		chosen, size := -1, int64(0)
		for j, c := range p.lens {
			v, err := an.count(c)
			if err != nil {
				return nil, err
			}
			if v > 0 {
				chosen, size = j, v
				break
			}
		}
		if chosen < 0 {
			an.add(AnomalyMissingHead, 1)
			continue
		}
		id := p.ids[chosen]
		if h, ok := known[q]; ok && h.id == id {
			an.applyHead(&snap.Queues[p.queue], now, h)
			fresh[q] = h
			continue
		}
		if size > MaxHeadBodyBytes {
			h := headInfo{id: id, outcome: headOversize}
			an.applyHead(&snap.Queues[p.queue], now, h)
			fresh[q] = h
			continue
		}
		if size > budget {
			// Left for the next read, which finds the others remembered.
			unsettled = append(unsettled, q)
			continue
		}
		budget -= size
		fetches = append(fetches, fetch{queue: p.queue, id: id, body: pipe.HGet(ctx, args[p.queue].msgsKey, id)})
	}
	if len(fetches) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return nil, err
		}
	}
	for _, f := range fetches {
		if err := an.check(f.body.Err()); err != nil {
			return nil, err
		}
		if f.body.Err() != nil {
			// Acked between round trips 2 and 3: a race, not odd data. The
			// age is absent from this read only.
			unsettled = append(unsettled, queues[f.queue])
			continue
		}
		h := decodeHead(f.id, f.body.Val())
		an.applyHead(&snap.Queues[f.queue], now, h)
		fresh[queues[f.queue]] = h
	}
	r.rememberHeads(fresh, unsettled)
	if err := r.countDeadLetters(ctx, snap, queues, seenDead); err != nil {
		return nil, err
	}
	dr := delayedRead{heads: make([]*goredis.Cmd, len(queues)), lists: delayLists, acks: ackRes, check: heldCheck}
	for i := range cmds {
		dr.heads[i] = cmds[i].delayHead
	}
	if err := r.readDelayed(ctx, snap, v, dr, now); err != nil {
		return nil, err
	}
	if r.opts.BacklogByActor {
		if err := r.readBacklog(ctx, snap, queues); err != nil {
			return nil, err
		}
	}
	return snap, nil
}

// count reads an integer reply. A key of an unexpected type reads as 0 and
// is counted as an anomaly; other server errors (NOPERM, say) fail the read.
func (a Anomalies) count(c *goredis.IntCmd) (int64, error) {
	v, err := c.Result()
	if err := a.check(err); err != nil {
		return 0, err
	}
	return v, nil
}

// countCmd is count for a generic command.
func (a Anomalies) countCmd(c *goredis.Cmd) (int64, error) {
	if err := a.check(c.Err()); err != nil || c.Err() != nil {
		return 0, err
	}
	return c.Int64()
}

// headIDs are the ids an LRANGE reply holds (none for a wrong type).
func headIDs(c *goredis.Cmd) []string {
	vals, ok := c.Val().([]any)
	if !ok {
		return nil
	}
	ids := make([]string, 0, len(vals))
	for _, v := range vals {
		if s, ok := v.(string); ok {
			ids = append(ids, s)
		}
	}
	return ids
}

// firstScore reads the score of a ZREVRANGE ... 0 0 WITHSCORES reply in
// either protocol: RESP2 sends [member, score-string], RESP3 [[member,
// double]]. ok is false for an empty set; a score that does not parse is
// NaN, which millisTime refuses and counts.
func firstScore(reply any) (float64, bool) {
	vals, ok := reply.([]any)
	if !ok || len(vals) == 0 {
		return 0, false
	}
	if pair, ok := vals[0].([]any); ok { // RESP3
		vals = pair
	}
	if len(vals) < 2 {
		return math.NaN(), true
	}
	switch s := vals[1].(type) {
	case float64:
		return s, true
	case string:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return math.NaN(), true
		}
		return f, true
	}
	return math.NaN(), true
}

func (a Anomalies) check(err error) error {
	switch {
	case err == nil, err == goredis.Nil:
		return nil
	case strings.HasPrefix(err.Error(), "WRONGTYPE"):
		a.add(AnomalyWrongType, 1)
		return nil
	}
	return err
}

// applyHead sets the queue's oldest age from what its head told, or
// counts why it cannot.
func (a Anomalies) applyHead(q *QueueStats, now time.Time, h headInfo) {
	switch h.outcome {
	case headOK:
		q.OldestAge = max(now.Sub(time.UnixMilli(h.ms)), 0)
		q.OldestAgeKnown = true
	case headUndecodable:
		a.add(AnomalyUndecodableBody, 1)
	case headInvalidTime:
		a.add(AnomalyInvalidTime, 1)
	case headOversize:
		a.add(AnomalyOversizeBody, 1)
	}
}

// messageTimestamp reads message_timestamp (ms) from a body, unchecked:
// millisTime decides whether it is a time. Bodies are user data and can be
// large, so Dramatiq's own encoding, which writes message_timestamp as the
// last top-level key, is read from its tail without parsing the rest; any
// other JSON takes the full parser.
func messageTimestamp(body string) (float64, bool) {
	const key = `,"message_timestamp":`
	if strings.HasSuffix(body, "}") {
		if i := strings.LastIndex(body, key); i >= 0 {
			digits := body[i+len(key) : len(body)-1]
			if ms, err := strconv.ParseInt(digits, 10, 64); err == nil && strings.HasPrefix(body, "{") {
				return float64(ms), true
			}
		}
	}
	var decoded struct {
		MessageTimestamp *json.Number `json:"message_timestamp"`
	}
	if err := json.Unmarshal([]byte(body), &decoded); err != nil || decoded.MessageTimestamp == nil {
		return 0, false
	}
	ms, err := decoded.MessageTimestamp.Float64()
	if err != nil {
		// A number too large for float64 (1e400) is no time either.
		return math.Inf(1), true
	}
	return ms, true
}

// infoField reads one numeric field of an INFO section, or NaN.
func infoField(c *goredis.StringCmd, field string) float64 {
	s, err := c.Result()
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return math.NaN()
}

// String is for logs: never includes message data.
func (s QueueStats) String() string {
	return fmt.Sprintf("%s ready=%d inflight=%d delayed=%d dead=%d orphaned=%d", s.Name, s.Ready, s.InFlight, s.Delayed, s.DeadLetter, s.Orphaned)
}
