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
// Cost. The ready-list heads' round trip also takes LRANGE {q}.DQ 0 2,
// for the queues whose previous read found delayed messages or a non-empty
// list (delayHeadSkips).
// The rest needs the .DQ ack sets discovery found: SCARD of each, then
// SMEMBERS of those within the caps, then, for ids not seen before only,
// HSTRLEN and HGET of their body in {q}.DQ.msgs. An eta never changes for
// a given Redis message id, so it is read once and remembered while the id
// is held. Bodies go under the same per-read byte budget and per-body cap
// as heads; ids under MaxHeldDelayedPerRead. Nothing depends on how many
// delayed messages wait unclaimed in the list.

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
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
}

type delayedState struct {
	mu       sync.Mutex
	queues   map[string]*delayedQueue
	lastRead time.Time // when the latest read started
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
	for i, q := range queues {
		state[i] = st.queues[q]
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

	// Held delayed messages: only once discovery has listed the ack sets;
	// before that, and without discovery, the count is unknown.
	overdueKnown := !r.opts.SkipDiscovery && r.status.Load().Passes > 0
	var index map[string]int // built at the first .DQ ack set
	type heldSet struct {
		queue int
		key   string
		card  *goredis.IntCmd
		ids   *goredis.StringSliceCmd
	}
	var sets []heldSet
	if overdueKnown {
		for _, a := range v.acks {
			if !strings.HasSuffix(a.key, delaySuffix) {
				continue
			}
			if index == nil {
				index = make(map[string]int, len(queues))
				for i, q := range queues {
					index[q] = i
				}
			}
			qi, ok := index[a.queue]
			if !ok {
				continue
			}
			sets = append(sets, heldSet{queue: qi, key: a.key, card: pipe.SCard(ctx, a.key)})
			n++
		}
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}

	// Round trip: head bodies within the byte budget, and the members of
	// the sets within the id cap.
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
	skipped := make([]bool, len(queues)) // a set of the queue was not listed
	listed := 0
	for k := range sets {
		s := &sets[k]
		card, err := an.count(s.card)
		if err != nil {
			return err
		}
		if card == 0 {
			continue
		}
		if listed+int(card) > MaxHeldDelayedPerRead {
			skipped[s.queue] = true
			continue
		}
		listed += int(card)
		s.ids = pipe.SMembers(ctx, s.key)
		n++
	}
	if n > 0 {
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

	if !overdueKnown {
		return nil
	}
	// Which held ids are new; the known ones keep what their body said.
	held := make([]map[string]delayedBody, len(queues))
	type newID struct {
		queue int
		id    string
		len   *goredis.IntCmd
	}
	var fresh []newID
	pipe = r.client.Pipeline()
	for _, s := range sets {
		if s.ids == nil {
			continue
		}
		if err := an.check(s.ids.Err()); err != nil {
			return err
		}
		if held[s.queue] == nil {
			held[s.queue] = map[string]delayedBody{}
		}
		known := get(s.queue).held
		for _, id := range s.ids.Val() {
			if oversizeID(id) {
				an.add(AnomalyOversizeID, 1)
				continue
			}
			if b, ok := known[id]; ok {
				held[s.queue][id] = b
				continue
			}
			if _, dup := held[s.queue][id]; dup {
				continue
			}
			// A placeholder keeps a second set's copy of the id from
			// being read twice; it is replaced or dropped below.
			held[s.queue][id] = delayedBody{outcome: -1}
			fresh = append(fresh, newID{queue: s.queue, id: id, len: pipe.HStrLen(ctx, r.keys.delayMsgs(queues[s.queue]), id)})
		}
	}
	if len(fresh) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}
	type bodyFetch struct {
		queue int
		id    string
		body  *goredis.StringCmd
	}
	var fetches []bodyFetch
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
			skipped[f.queue] = true
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
	cutoff := now.Add(-DelayedOverdueGrace).UnixMilli()
	for i := range queues {
		if held[i] != nil || get(i).held != nil {
			mut(i).held = held[i]
		}
		if skipped[i] {
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
