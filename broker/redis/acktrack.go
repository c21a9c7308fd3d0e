package redis

import (
	"context"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Ack sets without waiting for SCAN. Discovery finds ack sets only once a
// pass over the whole keyspace completes, which takes minutes to an hour
// on a large shared Redis, so a crashed worker's orphans stayed unseen as
// long. But every ack set is named __acks__.{wid}.{q}[.DQ], and a read
// already knows both parts: the worker ids are the heartbeat set's members
// and the queues are the reported ones. So each read also
//
//   - SCARDs every ack set it knows of (found by discovery or by a probe),
//     in the same pipelined round trip as the queue counts, whatever its
//     owner's liveness: orphans cost no second round trip;
//   - probes a bounded number of (worker, queue) pairs it does not know of
//     yet, round robin, only over queues whose previous read showed
//     messages held in ack sets it does not know (in flight, which is the
//     sum of the queue's ack sets, above the sum of the known ones; the
//     same for delayed and the .DQ sets): an ack set holds ids of the
//     queue's .msgs hash, so other queues have none (but for ids a purge
//     left dangling, which discovery still finds). Once every holder is
//     known, a read probes nothing;
//   - sweeps every active pair of a worker whose heartbeat is late by more
//     than suspectAfter, once: a crashed worker is swept in the reads
//     between the moment it stops and the moment its heartbeat is older
//     than the timeout, so when it goes stale its ack sets are known and
//     its orphans show in that same read. A worker that goes from fresh to
//     stale between two reads (scrapes further apart than the timeout) is
//     swept in a second round trip of that read.
//
// The per-read cost is bounded: knownAckSets SCARDs (capped), heldSample
// ids per live worker's ack set, ackProbeBudget probes and maxSweepProbes
// sweep probes, and one ZREVRANGEBYSCORE of maxHeartbeatIDs members.
const (
	// maxTrackedAckSets caps the ack sets a Reader remembers and SCARDs on
	// every read. Beyond it, new ones are left to the next discovery pass
	// and counted (Snapshot.AckSetsUntracked).
	maxTrackedAckSets = 20_000
	// ackProbeBudget is how many unknown (worker, queue) pairs a read
	// probes with SCARD. At 1,000 active queues and 50 workers, every pair
	// is probed within 100 reads; a crash is found sooner by the sweep.
	ackProbeBudget = 1_000
	// maxSweepProbes bounds the sweep probes of one read (2 per active
	// queue per late worker). A late worker that does not fit is swept by
	// the next read.
	maxSweepProbes = 20_000
	// maxHeartbeatIDs is how many heartbeat members a read lists, most
	// recent first: live workers, then the most recently silent. Dramatiq
	// removes dead ids lazily, and a hostile client can add millions; the
	// counts of processes stay ZCOUNTs over the whole set.
	maxHeartbeatIDs = 1_000
	// heldSample is the most ids read from one live worker's ack set
	// (SRANDMEMBER with a count returns the whole set when it is smaller).
	// A set holds the worker's running and prefetched messages: 2 per
	// thread by default, so 256 covers 128 threads; a larger set is not
	// tracked and is counted as untracked.
	heldSample = 256
	// maxHeldIDs caps the held ids remembered (about 3 MB with their keys;
	// the running and prefetched messages of 10,000 threads at Dramatiq's
	// default prefetch); beyond it ids are counted as untracked. A /probe
	// target's Reader has the same caps.
	maxHeldIDs = 20_000
)

// suspectAfter is how late a heartbeat may be before its worker's ack sets
// are swept: well above Dramatiq's cadence (every 0.2 s, 1 s at most when
// idle), well below the timeout.
func suspectAfter(timeout time.Duration) time.Duration {
	return min(timeout/4, 10*time.Second)
}

// heldTimes is when reads first saw each id, by ack set, so that a set's
// times are carried to the next read whole, without a walk of the others.
type heldTimes struct {
	sets map[string]map[string]heldSince
	n    int // ids in all sets, capped by maxHeldIDs
}

func newHeldTimes(sets int) *heldTimes {
	return &heldTimes{sets: make(map[string]map[string]heldSince, sets)}
}

// heldSince is when a read first saw an id in a live worker's ack set.
// lowerBound: the id was already there the first time the exporter read
// that set (after a start, or when the set was first found), so it was
// held for longer than now - at.
type heldSince struct {
	at         time.Time
	lowerBound bool
}

type trackedSet struct {
	ackKey
	delay bool
	// membersRead: a read has listed its members since it was tracked, so
	// an id that appears later was fetched since the previous read.
	membersRead bool
	// preexisting: the set may have held its ids for long before it was
	// found: found by discovery, or by a probe of the exporter's first
	// reads. Ids in it at its first listing are then lower bounds. A set a
	// later probe finds was created at most one probe cycle earlier.
	preexisting bool
}

type hbMember struct {
	wid string
	ms  float64
}

// ackTracker is what reads remember about ack sets between reads.
type ackTracker struct {
	mu      sync.Mutex
	sets    map[string]*trackedSet
	members []hbMember       // the latest read's heartbeat list
	active  map[string]uint8 // queue → activeInFlight|activeDelayed, latest read
	swept   map[string]bool  // late workers whose active pairs were probed
	cursor  int
	held    *heldTimes
	reads   int // reads applied since start
	// membersAt is the clock of the read that listed members: liveness at
	// that read is judged against it, not against the next read's clock,
	// or reads further apart than the heartbeat timeout (a 1m scrape
	// interval at Dramatiq's default 60 s) would take every worker for
	// dead and never time what it holds.
	membersAt time.Time
}

const (
	activeInFlight uint8 = 1 << iota
	activeDelayed
)

func newAckTracker() *ackTracker {
	return &ackTracker{sets: map[string]*trackedSet{}, active: map[string]uint8{}, swept: map[string]bool{}, held: newHeldTimes(0)}
}

// ackPlan is one read's ack-set commands.
type ackPlan struct {
	tracked   []*trackedSet
	cards     []*goredis.IntCmd
	members   []*goredis.StringSliceCmd // nil where not read
	probes    []*trackedSet
	probeCmds []*goredis.IntCmd
	// probeMembers lists a probed set of a worker that was alive, so that
	// a set found is timed from the same read (nil where not read).
	probeMembers []*goredis.StringSliceCmd
	owners       []string
	scores       []*goredis.FloatCmd
	hbList       *goredis.ZSliceCmd
	untracked    int
	sweptNow     []string
}

func (r *Reader) ackKeyName(wid, q string, delay bool) string {
	k := r.opts.Namespace + ":" + acksPrefix + wid + "." + q
	if delay {
		k += delaySuffix
	}
	return k
}

// planAcks queues the ack-set commands of a read on pipe.
func (r *Reader) planAcks(ctx context.Context, pipe goredis.Pipeliner, v *view, reported map[string]bool, now time.Time) *ackPlan {
	t := r.acks
	t.mu.Lock()
	defer t.mu.Unlock()
	p := &ackPlan{}
	known := make(map[string]bool, len(t.sets)+len(v.acks))
	add := func(s *trackedSet) {
		if known[s.key] || !reported[s.queue] {
			return
		}
		if len(p.tracked) >= maxTrackedAckSets {
			p.untracked++
			return
		}
		known[s.key] = true
		p.tracked = append(p.tracked, s)
	}
	for _, s := range t.sets {
		add(s)
	}
	for _, a := range v.acks {
		if _, ok := t.sets[a.key]; !ok {
			add(&trackedSet{ackKey: a, delay: strings.HasSuffix(a.key, delaySuffix), preexisting: true})
		}
	}
	owners := map[string]bool{}
	prevAlive := map[string]bool{}
	cutoff := float64(t.membersAt.Add(-r.opts.HeartbeatTimeout).UnixMilli())
	for _, m := range t.members {
		prevAlive[m.wid] = m.ms >= cutoff
	}
	for _, s := range p.tracked {
		owners[s.wid] = true
		p.cards = append(p.cards, pipe.SCard(ctx, s.key))
		var m *goredis.StringSliceCmd
		// Members only of a live worker's own queue sets: a .DQ set holds
		// delayed messages until their eta, which is no sign of a hang.
		if alive, seen := prevAlive[s.wid]; !s.delay && (alive || !seen) {
			m = pipe.SRandMemberN(ctx, s.key, heldSample)
		}
		p.members = append(p.members, m)
	}

	// The pairs an ack set can exist for, from the latest read's counts.
	type pair struct {
		q     string
		delay bool
	}
	var pairs []pair
	for q, bits := range t.active {
		if !reported[q] {
			continue
		}
		if bits&activeInFlight != 0 {
			pairs = append(pairs, pair{q, false})
		}
		if bits&activeDelayed != 0 {
			pairs = append(pairs, pair{q, true})
		}
	}
	probe := func(wid string, pr pair) bool {
		key := r.ackKeyName(wid, pr.q, pr.delay)
		if known[key] {
			return false
		}
		known[key] = true
		s := &trackedSet{ackKey: ackKey{key: key, wid: wid, queue: pr.q}, delay: pr.delay, preexisting: t.reads <= 1}
		p.probes = append(p.probes, s)
		p.probeCmds = append(p.probeCmds, pipe.SCard(ctx, key))
		var m *goredis.StringSliceCmd
		if !pr.delay && prevAlive[wid] {
			m = pipe.SRandMemberN(ctx, key, heldSample)
		}
		p.probeMembers = append(p.probeMembers, m)
		owners[wid] = true
		return true
	}
	// Sweeps first: a late worker is the one that may have crashed.
	late := float64(now.Add(-suspectAfter(r.opts.HeartbeatTimeout)).UnixMilli())
	sweeps := 0
	for _, m := range t.members {
		if m.ms >= late || t.swept[m.wid] || sweeps+2*len(pairs) > maxSweepProbes {
			continue
		}
		for _, pr := range pairs {
			if probe(m.wid, pr) {
				sweeps++
			}
		}
		p.sweptNow = append(p.sweptNow, m.wid)
	}
	if total := len(t.members) * len(pairs); total > 0 {
		budget := ackProbeBudget
		i := 0
		for ; i < total && i < 8*ackProbeBudget && budget > 0; i++ {
			idx := (t.cursor + i) % total
			if probe(t.members[idx/len(pairs)].wid, pairs[idx%len(pairs)]) {
				budget--
			}
		}
		t.cursor = (t.cursor + i) % total
	}

	for wid := range owners {
		p.owners = append(p.owners, wid)
		p.scores = append(p.scores, pipe.ZScore(ctx, r.keys.heartbeats(), wid))
	}
	p.hbList = pipe.ZRevRangeByScoreWithScores(ctx, r.keys.heartbeats(), &goredis.ZRangeBy{Min: "-inf", Max: "+inf", Count: maxHeartbeatIDs})
	return p
}

// ackResult is what the ack-set commands of one read told.
type ackResult struct {
	orphaned map[string]int64 // queue → messages held by stale workers
	held     map[string]heldSince
	untracked,
	heldUntracked int
	stale []string // stale workers that the read must still sweep
	// delaySets are the .DQ ack sets the read counted (card > 0), for the
	// overdue count (delayed.go): it reuses these SCARDs.
	delaySets []delaySetCard
	// newMember: the heartbeat list has an id the previous read's had not
	// (a process that started, or the Reader's first read).
	newMember bool
}

type delaySetCard struct {
	key, queue string
	card       int64
}

// applyAcks reads the plan's replies. alive tells a worker's liveness by
// its ZSCORE; a worker missing from the heartbeat set is stale.
// delayLists are the queues' .DQ list lengths, -1 where not read.
func (r *Reader) applyAcks(p *ackPlan, an Anomalies, queues []QueueStats, delayLists []int64, now time.Time) (*ackResult, error) {
	cutoff := float64(now.Add(-r.opts.HeartbeatTimeout).UnixMilli())
	alive := make(map[string]bool, len(p.owners))
	for i, wid := range p.owners {
		score, err := p.scores[i].Result()
		switch {
		case err == nil:
			alive[wid] = score >= cutoff
		case err == goredis.Nil, strings.HasPrefix(err.Error(), "WRONGTYPE"):
		default:
			return nil, err
		}
	}
	var members []hbMember
	if zs, err := p.hbList.Result(); err == nil {
		for _, z := range zs {
			if wid, ok := z.Member.(string); ok && len(wid) == workerIDLen && validWorkerID(wid) {
				members = append(members, hbMember{wid: wid, ms: z.Score})
			}
		}
	} else if err != goredis.Nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		// A wrong type was counted once, by the read's ZCOUNTs.
		return nil, err
	}
	res := &ackResult{orphaned: map[string]int64{}, held: map[string]heldSince{}, untracked: p.untracked}

	t := r.acks
	t.mu.Lock()
	defer t.mu.Unlock()
	sets := make(map[string]*trackedSet, len(p.tracked)+len(p.probes))
	cards := make(map[string]int64, len(p.tracked)+len(p.probes))
	held := newHeldTimes(len(t.held.sets))
	for i, s := range p.tracked {
		card, err := an.count(p.cards[i])
		if err != nil {
			return nil, err
		}
		cards[s.key] = card
		if !alive[s.wid] {
			res.orphaned[s.queue] += card
			if card == 0 {
				// Gone: a dead worker's sets are not recreated.
				continue
			}
		}
		ns := *s
		if !s.delay && (p.members[i] == nil || !alive[s.wid]) {
			carryHeld(s, alive[s.wid], t.held, held, res)
		}
		if err := r.listHeld(&ns, p.members[i], card, alive[s.wid], t.held, held, res, an, now); err != nil {
			return nil, err
		}
		sets[s.key] = &ns
	}
	for i, s := range p.probes {
		card, err := an.count(p.probeCmds[i])
		if err != nil {
			return nil, err
		}
		if card == 0 {
			continue
		}
		cards[s.key] = card
		if !alive[s.wid] {
			res.orphaned[s.queue] += card
		}
		if len(sets) >= maxTrackedAckSets {
			res.untracked++
			continue
		}
		if err := r.listHeld(s, p.probeMembers[i], card, alive[s.wid], t.held, held, res, an, now); err != nil {
			return nil, err
		}
		sets[s.key] = s
	}
	t.sets, t.held = sets, held
	t.reads++

	// What the next read probes: queues whose messages held in ack sets
	// are not all in sets it knows. In flight is HLEN .msgs - LLEN, the
	// sum of the queue's ack sets; delayed (HLEN .DQ.msgs) is the .DQ
	// list plus the .DQ sets. So once every holder is known, a read probes
	// nothing (ids waiting unclaimed in the list included, when the read
	// had its length).
	type sums struct{ plain, delay int64 }
	explained := make(map[string]sums, len(queues))
	for _, s := range sets {
		c := cards[s.key]
		e := explained[s.queue]
		if s.delay {
			if c > 0 {
				res.delaySets = append(res.delaySets, delaySetCard{key: s.key, queue: s.queue, card: c})
			}
			e.delay += c
		} else {
			e.plain += c
		}
		explained[s.queue] = e
	}
	active := make(map[string]uint8, len(queues))
	for i, q := range queues {
		var bits uint8
		e := explained[q.Name]
		if q.InFlight > e.plain {
			bits |= activeInFlight
		}
		if q.Delayed-max(delayLists[i], 0) > e.delay {
			bits |= activeDelayed
		}
		if bits != 0 {
			active[q.Name] = bits
		}
	}
	t.active = active

	// A worker is swept once per silence: back to fresh, it may be swept
	// again when it next goes quiet.
	fresh := float64(now.Add(-suspectAfter(r.opts.HeartbeatTimeout)).UnixMilli())
	for _, wid := range p.sweptNow {
		t.swept[wid] = true
	}
	prev := make(map[string]bool, len(t.members))
	for _, m := range t.members {
		prev[m.wid] = true
	}
	swept := make(map[string]bool, len(t.swept))
	for _, m := range members {
		if !prev[m.wid] {
			res.newMember = true
		}
		if m.ms < fresh && t.swept[m.wid] {
			swept[m.wid] = true
		}
		// Fresh at the previous read, stale now: not swept yet.
		if m.ms < cutoff && !t.swept[m.wid] && wasFresh(t.members, m.wid, fresh) {
			res.stale = append(res.stale, m.wid)
		}
	}
	t.swept = swept
	t.members, t.membersAt = members, now
	return res, nil
}

func wasFresh(members []hbMember, wid string, fresh float64) bool {
	for _, m := range members {
		if m.wid == wid {
			return m.ms >= fresh
		}
	}
	return false
}

// listHeld times the ids of a live worker's set from its SRANDMEMBER reply
// c (nil when not read), carrying over from prev what earlier reads saw,
// into next and the per-queue longest in res; it marks the set listed.
func (r *Reader) listHeld(s *trackedSet, c *goredis.StringSliceCmd, card int64, alive bool, prev, next *heldTimes, res *ackResult, an Anomalies, now time.Time) error {
	if c == nil || !alive {
		return nil
	}
	ids, err := c.Result()
	if err := an.check(err); err != nil {
		return err
	}
	switch {
	case err != nil:
		return nil
	case int64(len(ids)) < card:
		// Larger than heldSample: a sample would make ids come and go, so
		// none is timed.
		res.heldUntracked += int(card)
		return nil
	}
	before := prev.sets[s.key]
	if unchanged(before, ids) {
		// The steady state, a worker still on the same messages: the
		// set's times go on as they are, with no map built.
		next.sets[s.key] = before
		next.n += len(before)
		for _, h := range before {
			res.noteHeld(s.queue, h)
		}
		s.membersRead = true
		return nil
	}
	times := make(map[string]heldSince, len(ids))
	for _, id := range ids {
		if oversizeID(id) {
			an.add(AnomalyOversizeID, 1)
			continue
		}
		h, ok := before[id]
		if !ok {
			if next.n >= maxHeldIDs {
				res.heldUntracked++
				continue
			}
			h = heldSince{at: now, lowerBound: !s.membersRead && s.preexisting}
		}
		times[id] = h
		next.n++
		res.noteHeld(s.queue, h)
	}
	if len(times) > 0 {
		next.sets[s.key] = times
	}
	s.membersRead = true
	return nil
}

// unchanged tells whether ids are exactly the ids times has.
func unchanged(times map[string]heldSince, ids []string) bool {
	if len(times) == 0 || len(times) != len(ids) {
		return false
	}
	for _, id := range ids {
		if _, ok := times[id]; !ok {
			return false
		}
	}
	return true
}

// carryHeld keeps the times of a set whose members this read did not list:
// a stale worker's (what it holds is orphaned now, but held since then
// should it come back) or a live one's that looked stale at the previous
// read. Without it, what such a worker holds would look newly held at a
// later read. A set that fits is carried whole: no read changes a set's
// times once built.
func carryHeld(s *trackedSet, alive bool, prev, next *heldTimes, res *ackResult) {
	times := prev.sets[s.key]
	if len(times) == 0 {
		return
	}
	if next.n+len(times) > maxHeldIDs {
		fits := make(map[string]heldSince, max(maxHeldIDs-next.n, 0))
		for id, h := range times {
			if next.n >= maxHeldIDs {
				if alive {
					res.heldUntracked++
				}
				continue
			}
			fits[id] = h
			next.n++
		}
		times = fits
	} else {
		next.n += len(times)
	}
	if len(times) > 0 {
		next.sets[s.key] = times
	}
	if alive {
		for _, h := range times {
			res.noteHeld(s.queue, h)
		}
	}
}

// noteHeld keeps, per queue, the id held longest (a lower bound wins a tie).
func (res *ackResult) noteHeld(queue string, h heldSince) {
	if cur, ok := res.held[queue]; !ok || h.at.Before(cur.at) || (h.at.Equal(cur.at) && h.lowerBound) {
		res.held[queue] = h
	}
}

// sweepStale probes, in a second round trip, the active ack sets of
// workers that went from fresh to stale between two reads, and adds their
// orphans. Rare: only when reads are further apart than the heartbeat
// timeout less suspectAfter.
func (r *Reader) sweepStale(ctx context.Context, res *ackResult, an Anomalies) error {
	if len(res.stale) == 0 {
		return nil
	}
	t := r.acks
	t.mu.Lock()
	var keys []*trackedSet
	for _, wid := range res.stale {
		for q, bits := range t.active {
			for _, delay := range []bool{false, true} {
				if (delay && bits&activeDelayed == 0) || (!delay && bits&activeInFlight == 0) {
					continue
				}
				k := r.ackKeyName(wid, q, delay)
				if _, ok := t.sets[k]; ok || len(keys) >= maxSweepProbes {
					continue
				}
				keys = append(keys, &trackedSet{ackKey: ackKey{key: k, wid: wid, queue: q}, delay: delay, preexisting: true})
			}
		}
		t.swept[wid] = true
	}
	t.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	pipe := r.client.Pipeline()
	cmds := make([]*goredis.IntCmd, len(keys))
	for i, s := range keys {
		cmds[i] = pipe.SCard(ctx, s.key)
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, s := range keys {
		card, err := an.count(cmds[i])
		if err != nil {
			return err
		}
		if card == 0 {
			continue
		}
		res.orphaned[s.queue] += card
		if s.delay {
			res.delaySets = append(res.delaySets, delaySetCard{key: s.key, queue: s.queue, card: card})
		}
		if len(t.sets) < maxTrackedAckSets {
			t.sets[s.key] = s
		} else {
			res.untracked++
		}
	}
	return nil
}
