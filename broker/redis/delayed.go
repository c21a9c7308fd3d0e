package redis

// Delayed work that does not come back. Dramatiq keeps a delayed message
// (a send with a delay, or a retry in backoff) as an id in the {q}.DQ list
// and its body, with options.eta, in {q}.DQ.msgs. A worker's delay
// consumer claims ids from the list almost at once (up to threads × 1000
// per process) into its ack set __acks__.{wid}.{q}.DQ, keeps the messages
// in memory ordered by eta, and when the eta passes enqueues a copy on {q}
// and acks the DQ entry. Two faults leave delayed work behind:
//
//   - Unclaimed: ids stay in the {q}.DQ list because no process consumes
//     the queue's delay queue (or every consumer's delay prefetch is full).
//     A read reports how long the head of the list has waited:
//     now − max(when its body says it was enqueued, when a read last saw
//     the list empty). The body's time is options.requeue_timestamp for a
//     retry, else message_timestamp; the list being seen empty bounds it
//     for a message pushed back to the list by a worker that stopped
//     (whose body times are older than its wait). Since the Reader
//     started counts as "seen empty", so a restart of the exporter never
//     makes a message look older than the exporter has watched it.
//   - Overdue: a claimed message whose eta passed more than
//     DelayedOverdueGrace ago is still in a .DQ ack set (so still in
//     {q}.DQ.msgs): its holder is hung, or died and Dramatiq's random
//     maintenance has not returned it yet.
//
// Cost. The ready-list heads' round trip also takes LRANGE {q}.DQ 0 2 and
// LLEN {q}.DQ, for the queues whose previous read found delayed messages
// or a non-empty list (delayHeadSkips).
// The .DQ ack sets are the ones the ack tracker knows (acktrack.go): found
// from the heartbeat set without SCAN, and SCARDed in round trip 1. That
// round trip also checks, with one SMISMEMBER per remembered set, that the
// set still has its due ids (eta passed). Only a set that is new, changed
// size or lost a due id is listed (SMEMBERS, a second round trip); then,
// for ids not seen before only, HSTRLEN and HGET of their body in
// {q}.DQ.msgs. An eta never changes for a given Redis message id, so it is
// read once and remembered while the id is held. Bodies go under the same
// per-read byte budget and per-body cap as heads; ids under
// MaxHeldDelayedPerRead. Nothing depends on how many delayed messages wait
// unclaimed in the list.

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// The bounds live in the model so that the collector's HELP text can
// name them without importing this reader.
const (
	DelayedOverdueGrace   = broker.DelayedOverdueGrace
	MaxHeldDelayedPerRead = broker.MaxHeldDelayedPerRead
)

// delayedBody is what a delayed message's body told: immutable for its id.
type delayedBody struct {
	enqueued int64 // ms; 0 when the body gave no valid time
	eta      int64 // ms; valid when hasEta
	hasEta   bool
	outcome  headOutcome
}

// delayedQueue is what a Reader remembers of one queue's delay queue. A
// published value is never changed: a read that changes something copies
// it first, so the common case (the list still empty, the head and the
// held ids unchanged) allocates nothing per queue.
type delayedQueue struct {
	// empty: the latest read found the {q}.DQ list empty.
	empty bool
	// noDelayed: the latest read found no delayed message at all (HLEN of
	// {q}.DQ.msgs 0). With empty, the next read leaves the list out.
	noDelayed bool
	// lastEmpty bounds the wait of the list's head from below: the read
	// before the list became non-empty, or when the Reader started.
	lastEmpty time.Time
	headID    string
	head      delayedBody
	held      map[string]delayedBody // ids held in .DQ ack sets
	// shortfall: the latest read found more delayed messages outside the
	// list than in the .DQ ack sets it counted.
	shortfall bool
}

// heldSetMemo is what the latest listing of one .DQ ack set found. Never
// changed once stored.
type heldSetMemo struct {
	queue string
	card  int64    // its size at that listing
	ids   []string // its members with a body (read, or oversize)
	// gone are its members without a body (acked as it was read, or left
	// dangling by a purge): they may leave at any time, so every read
	// checks them as it checks due ids.
	gone []string
}

type delayedState struct {
	mu       sync.Mutex
	queues   map[string]*delayedQueue
	sets     map[string]*heldSetMemo // .DQ ack set key → its latest listing
	lastRead time.Time               // when the latest read started
	// noMIsMember: the server has no SMISMEMBER (before Redis 6.2); a set
	// with due ids is then listed again instead.
	noMIsMember atomic.Bool
}

func (k keys) delayList(q string) string { return k.ns + ":" + q + delaySuffix }

// decodeDelayed reads the times a delayed body carries. Bodies are user
// data: anything but Dramatiq's JSON is undecodable, and a time outside
// millisTime's range is invalid.
func decodeDelayed(body string) delayedBody {
	var d struct {
		MessageTimestamp *json.Number `json:"message_timestamp"`
		Options          struct {
			Eta              any `json:"eta"`
			RequeueTimestamp any `json:"requeue_timestamp"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		return delayedBody{outcome: headUndecodable}
	}
	out := delayedBody{outcome: headOK}
	ms := func(v any) (int64, bool) {
		f, ok := v.(float64)
		if !ok {
			return 0, false
		}
		t, ok := millisTime(f)
		if !ok {
			return 0, false
		}
		return t.UnixMilli(), true
	}
	if d.MessageTimestamp != nil {
		if f, err := d.MessageTimestamp.Float64(); err == nil {
			out.enqueued, _ = ms(f)
		}
	}
	if t, ok := ms(d.Options.RequeueTimestamp); ok && t > out.enqueued {
		out.enqueued = t
	}
	// Dramatiq treats an eta that is not a number as "now" (worker.py),
	// so such a message is promoted at once and never overdue for long:
	// it is left out rather than guessed.
	out.eta, out.hasEta = ms(d.Options.Eta)
	if out.enqueued == 0 && !out.hasEta {
		out.outcome = headInvalidTime
	}
	return out
}

// delayedRead is one read's delay-queue work, filled in round trip 1.
type delayedRead struct {
	// heads are LRANGE {q}.DQ 0 headProbe-1 per queue; nil for a queue
	// delayHeadSkips left out.
	heads []*goredis.Cmd
	// lists are LLEN {q}.DQ per queue, -1 where not read.
	lists []int64
	// acks has the SCARDs of the .DQ ack sets (acktrack.go).
	acks *ackResult
	// check has the membership checks of remembered sets.
	check *heldCheck
}

// heldCheck is round trip 1's SMISMEMBER of the due ids of each
// remembered .DQ ack set: ids whose eta passed (or whose body gives none)
// are the ones a live worker acks next, so a set that still has them all
// and kept its size kept its members.
type heldCheck struct {
	sets map[string]*heldSetMemo
	cmds map[string]*goredis.BoolSliceCmd
	// unverified sets had due ids that were not checked (over the cap, or
	// a server without SMISMEMBER).
	unverified map[string]bool
	err        error // a reply that fails the read
}

// planHeldDelayed queues, on round trip 1's pipe, the membership checks of
// the remembered .DQ ack sets of reported queues. Their number of ids is
// that of the due held ids, under MaxHeldDelayedPerRead.
func (r *Reader) planHeldDelayed(ctx context.Context, pipe goredis.Pipeliner, reported map[string]bool, now time.Time) *heldCheck {
	st := r.delayed
	st.mu.Lock()
	defer st.mu.Unlock()
	c := &heldCheck{sets: st.sets}
	if len(st.sets) == 0 {
		return c
	}
	nowMs := now.UnixMilli()
	total := 0
	var args []any
	for key, m := range st.sets {
		if !reported[m.queue] {
			continue
		}
		dq := st.queues[m.queue]
		args = args[:0]
		for _, id := range m.gone {
			args = append(args, id)
		}
		for _, id := range m.ids {
			b, ok := dq.heldBody(id)
			if !ok || b.outcome != headOK || !b.hasEta || b.eta <= nowMs {
				args = append(args, id)
			}
		}
		if len(args) == 0 {
			continue
		}
		if st.noMIsMember.Load() || total+len(args) > MaxHeldDelayedPerRead {
			if c.unverified == nil {
				c.unverified = map[string]bool{}
			}
			c.unverified[key] = true
			continue
		}
		total += len(args)
		if c.cmds == nil {
			c.cmds = map[string]*goredis.BoolSliceCmd{}
		}
		c.cmds[key] = pipe.SMIsMember(ctx, key, slices.Clone(args)...)
	}
	return c
}

func (dq *delayedQueue) heldBody(id string) (delayedBody, bool) {
	if dq == nil {
		return delayedBody{}, false
	}
	b, ok := dq.held[id]
	return b, ok
}

// unchanged returns the remembered listing of ds when it still gives the
// set's members, else nil (the set is listed again).
func (c *heldCheck) unchanged(r *Reader, ds delaySetCard, an Anomalies) *heldSetMemo {
	if c == nil {
		return nil
	}
	m := c.sets[ds.key]
	if m == nil || m.queue != ds.queue || m.card != ds.card || c.unverified[ds.key] {
		return nil
	}
	cmd := c.cmds[ds.key]
	if cmd == nil {
		return m
	}
	if err := cmd.Err(); err != nil {
		if isUnknownCommand(err) {
			r.delayed.noMIsMember.Store(true)
		} else if err := an.check(err); err != nil && c.err == nil {
			c.err = err
		}
		return nil
	}
	for _, in := range cmd.Val() {
		if !in {
			return nil
		}
	}
	return m
}

// delayHeadSkips tells, per queue, whether round trip 1 may leave out the
// delay list's head: the previous read found the list empty and no delayed
// message at all, as most queues are most of the time. Such a queue's
// HLEN of {q}.DQ.msgs in the same round trip says whether anything came
// since; if so, the next read reads the head. It saves the command, its
// reply and their allocations for every idle queue (a fifth of a scrape's
// allocations at 1,000 queues).
func (r *Reader) delayHeadSkips(queues []string) []bool {
	st := r.delayed
	st.mu.Lock()
	defer st.mu.Unlock()
	skip := make([]bool, len(queues))
	for i, q := range queues {
		if dq := st.queues[q]; dq != nil && dq.empty && dq.noDelayed {
			skip[i] = true
		}
	}
	return skip
}

// readDelayed settles the unclaimed ages and overdue counts of snap's
// queues from round trip 1's delay-queue heads and the .DQ ack sets of
// the view. It keeps every other number of the read whatever happens to
// these: a failure here fails the read, as any Redis error does.
func (r *Reader) readDelayed(ctx context.Context, snap *Snapshot, v *view, dr delayedRead, now time.Time) error {
	queues := v.queues
	an := snap.Anomalies
	// The remembered state is copied out and the new one stored at the
	// end, so concurrent reads never wait on each other's round trips (a
	// lock held across them would outlast a waiting scrape's deadline).
	// The later of two concurrent reads wins; both are valid. A held map
	// is replaced, never changed, so a shallow copy is enough.
	st := r.delayed
	st.mu.Lock()
	state := make([]*delayedQueue, len(queues))
	seen := make([]bool, len(queues))      // a previous read settled the queue
	prevShort := make([]bool, len(queues)) // and found holders it did not know
	for i, q := range queues {
		state[i] = st.queues[q]
		if state[i] != nil {
			seen[i], prevShort[i] = true, state[i].shortfall
		}
	}
	prevRead := st.lastRead
	st.mu.Unlock()
	if prevRead.IsZero() {
		prevRead = r.started
	}
	unseen := &delayedQueue{lastEmpty: r.started}
	get := func(i int) *delayedQueue {
		if state[i] == nil {
			return unseen
		}
		return state[i]
	}
	owned := make([]bool, len(queues))
	mut := func(i int) *delayedQueue {
		if !owned[i] {
			c := *get(i)
			state[i], owned[i] = &c, true
		}
		return state[i]
	}
	// Forgetting the queues no longer reported bounds the memory by the
	// queue cap, as heads do.
	defer func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.lastRead = now
		if !slices.Contains(owned, true) && len(st.queues) == len(queues) {
			same := true
			for i, q := range queues {
				if st.queues[q] != state[i] {
					same = false
					break
				}
			}
			if same {
				return // nothing changed: keep the map, allocate nothing
			}
		}
		next := make(map[string]*delayedQueue, len(queues))
		for i, q := range queues {
			if state[i] != nil {
				next[q] = state[i]
			}
		}
		st.queues = next
	}()

	// Heads: which need a body read.
	type headProbeCmds struct {
		queue int
		ids   []string
		lens  []*goredis.IntCmd
	}
	var probes []headProbeCmds
	pipe := r.client.Pipeline()
	n := 0
	for i, q := range queues {
		if nd := snap.Queues[i].Delayed == 0; get(i).noDelayed != nd || state[i] == nil {
			mut(i).noDelayed = nd
		}
		c := dr.heads[i]
		if c == nil {
			if snap.Queues[i].Delayed == 0 {
				// No delayed message at all: none waits.
				snap.Queues[i].DelayedUnclaimedAge, snap.Queues[i].DelayedUnclaimedAgeKnown = 0, true
				continue
			}
			// Delayed messages came since the previous read, which found
			// none: the age is unknown until the next read reads the
			// head, and bounded by the previous read's time.
			dq := mut(i)
			dq.empty, dq.lastEmpty, dq.headID, dq.head = false, prevRead, "", delayedBody{}
			continue
		}
		if err := an.check(c.Err()); err != nil {
			return err
		}
		if c.Err() != nil { // a wrong type: counted, age absent
			continue
		}
		ids := headIDs(c)
		if len(ids) == 0 {
			if dq := get(i); !dq.empty || dq.headID != "" || state[i] == nil {
				dq = mut(i)
				dq.empty, dq.headID, dq.head = true, "", delayedBody{}
			}
			snap.Queues[i].DelayedUnclaimedAge, snap.Queues[i].DelayedUnclaimedAgeKnown = 0, true
			continue
		}
		if get(i).empty {
			// The list was empty at the previous read: nothing in it now
			// has waited longer than since then.
			dq := mut(i)
			dq.empty, dq.lastEmpty = false, prevRead
		}
		dq := get(i)
		for k, id := range ids {
			if oversizeID(id) {
				an.add(AnomalyOversizeID, 1)
				ids = ids[:k]
				break
			}
		}
		if len(ids) == 0 {
			continue
		}
		if dq.headID == ids[0] {
			an.applyUnclaimed(&snap.Queues[i], now, dq)
			continue
		}
		p := headProbeCmds{queue: i, ids: ids}
		for _, id := range ids {
			p.lens = append(p.lens, pipe.HStrLen(ctx, r.keys.delayMsgs(q), id))
			n++
		}
		probes = append(probes, p)
	}

	// Held delayed messages: the .DQ ack sets the tracker counted in
	// round trip 1 (acktrack.go), found from the heartbeat set without
	// SCAN. A set is listed (SMEMBERS) only when what the Reader
	// remembers of it may be stale: it is new, its SCARD differs from its
	// size at its last listing, or an id of it that fell due is no longer
	// in it (the SMISMEMBER of round trip 1). Otherwise its remembered ids
	// are its members: a set that keeps its size and its due ids lost none
	// of them, and any id that left and was replaced was not due, so it is
	// found when it falls due.
	var sets []delaySetCard
	if dr.acks != nil {
		sets = dr.acks.delaySets
	}
	// Built only when there is a .DQ ack set: most reads have none.
	var index map[string]int
	var explained []int64
	if len(sets) > 0 {
		index = make(map[string]int, len(queues))
		for i, q := range queues {
			index[q] = i
		}
		explained = make([]int64, len(queues))
	}
	skipped := make([]bool, len(queues)) // a set of the queue was not read
	type listedSet struct {
		queue int
		key   string
		ids   *goredis.StringSliceCmd
	}
	var listed []listedSet
	var reused []*heldSetMemo
	memos := map[string]*heldSetMemo{}
	covered := 0
	for _, ds := range sets {
		qi, ok := index[ds.queue]
		if !ok {
			continue
		}
		explained[qi] += ds.card
		if covered+int(ds.card) > MaxHeldDelayedPerRead {
			skipped[qi] = true
			continue
		}
		covered += int(ds.card)
		if m := dr.check.unchanged(r, ds, an); m != nil {
			reused = append(reused, m)
			memos[ds.key] = m
			continue
		}
		listed = append(listed, listedSet{queue: qi, key: ds.key, ids: pipe.SMembers(ctx, ds.key)})
		n++
	}
	if dr.check != nil && dr.check.err != nil {
		return dr.check.err
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}

	// Round trip: head bodies within the byte budget.
	pipe = r.client.Pipeline()
	n = 0
	budget := int64(maxHeadBytesPerRead)
	type headFetch struct {
		queue int
		id    string
		body  *goredis.StringCmd
	}
	var headFetches []headFetch
	for _, p := range probes {
		q := queues[p.queue]
		chosen, size := -1, int64(0)
		for j, c := range p.lens {
			l, err := an.count(c)
			if err != nil {
				return err
			}
			if l > 0 {
				chosen, size = j, l
				break
			}
		}
		if chosen < 0 {
			// Claimed between the round trips: absent from this read only.
			continue
		}
		dq := get(p.queue)
		id := p.ids[chosen]
		if dq.headID == id {
			an.applyUnclaimed(&snap.Queues[p.queue], now, dq)
			continue
		}
		if size > MaxHeadBodyBytes {
			dq = mut(p.queue)
			dq.headID, dq.head = id, delayedBody{outcome: headOversize}
			an.applyUnclaimed(&snap.Queues[p.queue], now, dq)
			continue
		}
		if size > budget {
			continue
		}
		budget -= size
		headFetches = append(headFetches, headFetch{queue: p.queue, id: id, body: pipe.HGet(ctx, r.keys.delayMsgs(q), id)})
		n++
	}

	// In the same round trip, the sizes of held ids not seen before; the
	// known ones keep what their body said.
	held := make([]map[string]delayedBody, len(queues))
	type newID struct {
		queue int
		id    string
		len   *goredis.IntCmd
	}
	var fresh []newID
	take := func(qi int, id string) {
		if held[qi] == nil {
			held[qi] = map[string]delayedBody{}
		}
		if b, ok := get(qi).held[id]; ok {
			held[qi][id] = b
			return
		}
		if _, dup := held[qi][id]; dup {
			return
		}
		// A placeholder keeps a second set's copy of the id from being
		// read twice; it is replaced or dropped below.
		held[qi][id] = delayedBody{outcome: -1}
		fresh = append(fresh, newID{queue: qi, id: id, len: pipe.HStrLen(ctx, r.keys.delayMsgs(queues[qi]), id)})
	}
	for _, m := range reused {
		qi := index[m.queue]
		for _, id := range m.ids {
			take(qi, id)
		}
	}
	listedIDs := make([][]string, len(listed))
	for k, s := range listed {
		if err := an.check(s.ids.Err()); err != nil {
			return err
		}
		if s.ids.Err() != nil {
			skipped[s.queue] = true // a wrong type: counted
			continue
		}
		ids := s.ids.Val()
		listedIDs[k] = ids
		for _, id := range ids {
			if oversizeID(id) {
				an.add(AnomalyOversizeID, 1)
				continue
			}
			take(s.queue, id)
		}
	}
	if n+len(fresh) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}
	for _, f := range headFetches {
		if err := an.check(f.body.Err()); err != nil {
			return err
		}
		if f.body.Err() != nil {
			continue // claimed since: absent from this read only
		}
		dq := mut(f.queue)
		dq.headID, dq.head = f.id, decodeDelayed(f.body.Val())
		an.applyUnclaimed(&snap.Queues[f.queue], now, dq)
	}
	type bodyFetch struct {
		queue int
		id    string
		body  *goredis.StringCmd
	}
	var fetches []bodyFetch
	deferred := make([]bool, len(queues)) // a body was left for a later read
	pipe = r.client.Pipeline()
	for _, f := range fresh {
		l, err := an.count(f.len)
		if err != nil {
			return err
		}
		switch {
		case l == 0:
			// Acked, or a dangling id whose body is gone: nothing held.
			delete(held[f.queue], f.id)
		case l > MaxHeadBodyBytes:
			held[f.queue][f.id] = delayedBody{outcome: headOversize}
		case l > budget:
			// Read by a later read; until then the count is unknown.
			delete(held[f.queue], f.id)
			skipped[f.queue], deferred[f.queue] = true, true
		default:
			budget -= l
			fetches = append(fetches, bodyFetch{queue: f.queue, id: f.id, body: pipe.HGet(ctx, r.keys.delayMsgs(queues[f.queue]), f.id)})
		}
	}
	if len(fetches) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}
	for _, f := range fetches {
		if err := an.check(f.body.Err()); err != nil {
			return err
		}
		if f.body.Err() != nil {
			delete(held[f.queue], f.id) // acked between the round trips
			continue
		}
		held[f.queue][f.id] = decodeDelayed(f.body.Val())
	}
	// What the next reads take without listing: a listed set whose every
	// id is settled (its body read, or gone).
	for k, s := range listed {
		ids := listedIDs[k]
		if ids == nil || deferred[s.queue] {
			continue
		}
		m := &heldSetMemo{queue: queues[s.queue], card: int64(len(ids))}
		for _, id := range ids {
			switch _, ok := held[s.queue][id]; {
			case oversizeID(id):
				// Not remembered (a hostile size): the set is listed
				// again by every read.
				m = nil
			case ok:
				m.ids = append(m.ids, id)
			default:
				m.gone = append(m.gone, id)
			}
			if m == nil {
				break
			}
		}
		if m != nil {
			memos[s.key] = m
		}
	}
	st.mu.Lock()
	st.sets = memos
	st.mu.Unlock()

	cutoff := now.Add(-DelayedOverdueGrace).UnixMilli()
	for i := range queues {
		if held[i] != nil || get(i).held != nil {
			mut(i).held = held[i]
		}
		// Known when the sets counted hold every delayed message that is
		// not in the list (HLEN .DQ.msgs − LLEN .DQ); else a holder may
		// not be known yet, and the count is absent: at the Reader's first
		// read, when a process appeared in the heartbeat set since the
		// previous read, and when the previous read fell short too. What
		// is left is a shortfall that one read alone sees while every
		// process was already known: a fetch or an ack racing the read's
		// commands (they are not atomic), or ids a known live worker just
		// fetched (it promotes what is due at once), which the next read
		// probes. Absent for those, the count would flap under load.
		inSets := snap.Queues[i].Delayed
		if dr.lists != nil && dr.lists[i] > 0 {
			inSets -= dr.lists[i]
		}
		var inKnown int64
		if explained != nil {
			inKnown = explained[i]
		}
		short := inSets > inKnown
		if get(i).shortfall != short {
			mut(i).shortfall = short
		}
		if skipped[i] || (short && (!seen[i] || prevShort[i] || dr.acks == nil || dr.acks.newMember)) {
			continue
		}
		var overdue int64
		for _, b := range held[i] {
			// Odd bodies are counted on every read, as heads are, so the
			// anomaly gauge does not depend on when a body was first read.
			switch {
			case b.outcome == headOversize:
				an.add(AnomalyOversizeBody, 1)
			case b.outcome == headUndecodable:
				an.add(AnomalyUndecodableBody, 1)
			case !b.hasEta:
				an.add(AnomalyInvalidTime, 1)
			case b.eta < cutoff:
				overdue++
			}
		}
		snap.Queues[i].DelayedOverdue, snap.Queues[i].DelayedOverdueKnown = overdue, true
	}
	return nil
}

// applyUnclaimed sets the queue's unclaimed age from its remembered head.
// A head whose body gives no time (another encoder, say) still has the
// time the list was last seen empty; only an oversize one, never read,
// leaves the age absent.
func (a Anomalies) applyUnclaimed(s *QueueStats, now time.Time, dq *delayedQueue) {
	switch dq.head.outcome {
	case headOversize:
		a.add(AnomalyOversizeBody, 1)
		return
	case headUndecodable:
		a.add(AnomalyUndecodableBody, 1)
	case headInvalidTime:
		a.add(AnomalyInvalidTime, 1)
	}
	since := dq.lastEmpty
	if dq.head.outcome == headOK && dq.head.enqueued > since.UnixMilli() {
		since = time.UnixMilli(dq.head.enqueued)
	}
	s.DelayedUnclaimedAge, s.DelayedUnclaimedAgeKnown = max(now.Sub(since), 0), true
}
