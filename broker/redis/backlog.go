package redis

// Backlog by actor (opt-in, Options.BacklogByActor). Redis keeps no count
// of a queue's ready messages per actor: the ready list holds ids only,
// and the actor is in each id's body in the .msgs hash. So a read lists
// the ids and reads the actor of each id it has not seen before; an id's
// actor never changes (Dramatiq writes a new id on every enqueue), so it
// is remembered and a backlog that does not move costs no body read.
//
//   - A queue whose ready list holds at most BacklogExactLimit ids is read
//     whole: the counts are exact (as of that LRANGE).
//   - A longer one is sampled: backlogWindows evenly spaced LRANGE windows
//     of backlogWindowIDs ids each over the list, and each actor's count is
//     its share of the sample times the list's length. Windows, not single
//     ids, because one LRANGE reply carries many ids; many small windows,
//     not two large ones at the head and tail, because producers enqueue in
//     bursts and a window inside a burst sees one actor only.
//
// Cost per read, whatever the backlog: one MEMORY USAGE per queue read (a
// list of elements far larger than ids is not listed), at most
// BacklogSampleIDs/backlogWindowIDs windows and
// BacklogSampleIDs ids per queue, at most maxBacklogIDsPerRead ids in all
// (queues get smaller samples when many are long), and body reads under
// the head reads' caps (MaxHeadBodyBytes each, maxHeadBytesPerRead in
// all). The remembered ids are those of the latest read: at most
// maxBacklogIDsPerRead. See docs/backlog-by-actor.md.

import (
	"context"
	"sort"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

const (
	// DefaultBacklogExactLimit is the longest ready list counted exactly.
	DefaultBacklogExactLimit = 1000
	// BacklogSampleIDs is how many ids a longer list's estimate reads.
	BacklogSampleIDs = broker.BacklogSampleIDs
	// backlogWindowIDs is the width of one sampled window.
	backlogWindowIDs = 5
	// maxBacklogIDsPerRead bounds the ids one read lists over all queues,
	// and so the ids remembered, the HSTRLENs and the bodies of one read.
	maxBacklogIDsPerRead = 20_000
	// minBacklogSampleIDs is the smallest sample a queue gets when many
	// queues share maxBacklogIDsPerRead.
	minBacklogSampleIDs = 100
	// backlogFetchChunk bounds the ids of one HMGET.
	backlogFetchChunk = 500
	// backlogIDBytes is what one Dramatiq id may take in a list (36 bytes
	// and the list's own overhead, with room to spare), and
	// maxBacklogExcessBytes what the lists one read lists may hold beyond
	// that, in all.
	backlogIDBytes        = 96
	maxBacklogExcessBytes = 4 << 20
)

// ActorBacklog is how many ready messages of one actor a queue holds.
// Sampled tells an estimate from an exact count.
type ActorBacklog struct {
	Queue, Actor string
	Messages     float64
	Sampled      bool
}

// BacklogByActor is one read's backlog by actor. Queues without ready
// messages, and queues whose list could not be read, have no entry.
type BacklogByActor struct {
	// Actors are sorted by queue, then largest first.
	Actors []ActorBacklog
	// Series is how many pairs count towards MaxActorSeries.
	Series int
	// SampledIDs is how many ids the read used (exact or sampled), and
	// BodiesRead how many bodies it fetched (ids not remembered).
	SampledIDs, BodiesRead int
	// QueuesSkipped counts the queues with ready messages left out because
	// the read's id budget was spent on longer ones.
	QueuesSkipped int
}

// backlogState is what a Reader remembers between reads. lock is a
// channel so that a read waiting for it gives up at its deadline.
type backlogState struct {
	lock  chan struct{}
	ids   map[string]string // id → actor label, for the ids of the latest read
	named map[actorKey]bool // pairs that had their own series last read
}

func newBacklogState() *backlogState {
	return &backlogState{lock: make(chan struct{}, 1), ids: map[string]string{}, named: map[actorKey]bool{}}
}

// backlogPlan is one queue's listing.
type backlogPlan struct {
	queue  int
	ready  int64
	exact  bool
	size   int // ids to list
	listed []*goredis.StringSliceCmd
	ids    []string
	actors []string // by index in ids; "" while unknown
	keep   []bool   // by index in ids: the actor is remembered
}

// backlogWindows returns the LRANGE [start, stop] windows that sample a
// list of n ids with about size ids, evenly spaced from head to tail.
func backlogWindows(n int64, size int) [][2]int64 {
	w := int64(backlogWindowIDs)
	k := int64(size) / w
	if k < 1 {
		k = 1
	}
	if n <= int64(size) {
		return [][2]int64{{0, n}} // the whole list (one more id tells it grew)
	}
	out := make([][2]int64, 0, k)
	for i := int64(0); i < k; i++ {
		// Window i starts at the i-th of k even positions; the last ends at
		// the tail.
		start := i * (n - w) / max(k-1, 1)
		out = append(out, [2]int64{start, start + w - 1})
	}
	return out
}

// readBacklog fills snap.Backlog from round trip 1's ready counts, in up to
// four more pipelined round trips: the lists' sizes in bytes, the
// listings, then HSTRLEN and HMGET of the ids whose actor is not
// remembered.
func (r *Reader) readBacklog(ctx context.Context, snap *Snapshot, queues []string) error {
	bs := r.backlog
	select {
	case bs.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-bs.lock }()

	exactLimit := r.opts.BacklogExactLimit
	if exactLimit <= 0 {
		exactLimit = DefaultBacklogExactLimit
	}
	long := 0
	for _, q := range snap.Queues {
		if q.Ready > 0 {
			long++
		}
	}
	out := &BacklogByActor{}
	snap.Backlog = out
	if long == 0 {
		bs.ids, bs.named = map[string]string{}, map[actorKey]bool{}
		return nil
	}
	share := max(maxBacklogIDsPerRead/long, minBacklogSampleIDs)
	budget := maxBacklogIDsPerRead

	// The longest queues first: when more queues hold ready messages than
	// the budget can sample (over maxBacklogIDsPerRead/minBacklogSampleIDs),
	// the shortest have no series in this read.
	order := make([]int, 0, long)
	for i, q := range snap.Queues {
		if q.Ready > 0 {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return snap.Queues[order[a]].Ready > snap.Queues[order[b]].Ready })
	var plans []*backlogPlan
	for _, i := range order {
		q := snap.Queues[i]
		if budget <= 0 {
			out.QueuesSkipped++
			continue
		}
		size := min(BacklogSampleIDs, share, budget)
		exact := q.Ready <= int64(exactLimit) && q.Ready <= int64(min(share, budget))
		if exact {
			size = int(q.Ready)
		}
		plans = append(plans, &backlogPlan{queue: i, ready: q.Ready, exact: exact, size: size})
		budget -= size
	}

	// A ready list's elements are ids, 36 bytes each from Dramatiq, but
	// anyone can push 12 MiB elements, and hundreds of LRANGE windows over
	// such a list would bring gigabytes. MEMORY USAGE (SAMPLES 0: exact,
	// O(list nodes)) tells the list's bytes before any is read: a list
	// holding more than backlogIDBytes per element beyond
	// maxBacklogExcessBytes in all is not read, counted as oversize ids.
	pipe := r.client.Pipeline()
	usage := make([]*goredis.IntCmd, len(plans))
	for k, p := range plans {
		usage[k] = pipe.MemoryUsage(ctx, r.keys.queue(queues[p.queue]), 0)
	}
	if err := execPipe(ctx, pipe); err != nil && !isServerError(err) {
		return err
	}
	excess := int64(maxBacklogExcessBytes)
	kept := plans[:0]
	for k, p := range plans {
		used, err := usage[k].Result()
		if err != nil {
			// Not allowed (NOPERM) or gone since: the list is not read.
			out.QueuesSkipped++
			continue
		}
		if extra := used - p.ready*backlogIDBytes; extra > excess {
			snap.Anomalies.add(AnomalyOversizeID, 1)
			out.QueuesSkipped++
			continue
		} else if extra > 0 {
			excess -= extra
		}
		kept = append(kept, p)
	}
	plans = kept

	pipe = r.client.Pipeline()
	for _, p := range plans {
		for _, w := range backlogWindows(p.ready, p.size) {
			p.listed = append(p.listed, pipe.LRange(ctx, r.keys.queue(queues[p.queue]), w[0], w[1]))
		}
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}

	// Ids seen in two windows (the list moved between them) count once.
	pipe = r.client.Pipeline()
	type probe struct {
		plan *backlogPlan
		j    int
		size *goredis.IntCmd
	}
	var probes []probe
	for _, p := range plans {
		seen := map[string]bool{}
		for _, c := range p.listed {
			if err := snap.Anomalies.check(c.Err()); err != nil {
				return err
			}
			for _, id := range c.Val() {
				if len(p.ids) == int(p.ready) && p.exact {
					// The list grew since round trip 1: what was listed is
					// still every id that was ready then, or close to it.
					break
				}
				key := idKey(id)
				if seen[key] {
					continue
				}
				seen[key] = true
				p.ids = append(p.ids, key)
				p.actors = append(p.actors, "")
				p.keep = append(p.keep, false)
				j := len(p.ids) - 1
				if key != id {
					snap.Anomalies.add(AnomalyOversizeID, 1)
					p.actors[j] = ActorUnknown
					continue
				}
				if a, ok := bs.ids[id]; ok {
					p.actors[j], p.keep[j] = a, true
					continue
				}
				probes = append(probes, probe{plan: p, j: j, size: pipe.HStrLen(ctx, r.keys.queueMsgs(queues[p.queue]), id)})
			}
		}
	}
	if len(probes) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}

	// One HMGET per queue (in chunks) rather than one HGET per id: a
	// command object per body was most of a first read's memory.
	type fetch struct {
		plan *backlogPlan
		js   []int
		cmd  *goredis.SliceCmd
	}
	var fetches []fetch
	pipe = r.client.Pipeline()
	bytes := int64(maxHeadBytesPerRead)
	var cur *fetch
	var curIDs []string
	flush := func() {
		if cur != nil && len(curIDs) > 0 {
			cur.cmd = pipe.HMGet(ctx, r.keys.queueMsgs(queues[cur.plan.queue]), curIDs...)
			fetches = append(fetches, *cur)
		}
		cur, curIDs = nil, nil
	}
	for _, pr := range probes {
		n, err := snap.Anomalies.count(pr.size)
		if err != nil {
			return err
		}
		switch {
		case n == 0:
			// Acked since it was listed, or never had a body (a hostile
			// or broken producer): no actor to tell.
			pr.plan.actors[pr.j] = ActorUnknown
		case n > MaxHeadBodyBytes:
			snap.Anomalies.add(AnomalyOversizeBody, 1)
			pr.plan.actors[pr.j], pr.plan.keep[pr.j] = ActorUnknown, true
		case n > bytes:
			// Beyond this read's byte budget: left out of this read's
			// sample (the queue is then an estimate), read by a later one.
			pr.plan.exact = false
		default:
			bytes -= n
			if cur != nil && (cur.plan != pr.plan || len(curIDs) == backlogFetchChunk) {
				flush()
			}
			if cur == nil {
				cur = &fetch{plan: pr.plan}
			}
			cur.js = append(cur.js, pr.j)
			curIDs = append(curIDs, pr.plan.ids[pr.j])
		}
	}
	flush()
	if len(fetches) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}
	for _, f := range fetches {
		if err := snap.Anomalies.check(f.cmd.Err()); err != nil {
			return err
		}
		vals := f.cmd.Val()
		out.BodiesRead += len(f.js)
		for k, j := range f.js {
			body := ""
			if k < len(vals) {
				body, _ = vals[k].(string)
			}
			if body == "" {
				f.plan.actors[j] = ActorUnknown
				continue
			}
			name, ok := actorName(body)
			if !ok {
				snap.Anomalies.add(AnomalyUndecodableBody, 1)
				name = ActorUnknown
			}
			f.plan.actors[j], f.plan.keep[j] = name, true
		}
	}

	// Remember the actors read from bodies (or from their size): an id
	// with no body is not remembered, as it may be a race with a producer.
	ids := make(map[string]string, len(bs.ids))
	for _, p := range plans {
		counts := map[string]int{}
		total := 0
		for j, a := range p.actors {
			if a == "" {
				continue
			}
			counts[a]++
			total++
			if p.keep[j] {
				ids[p.ids[j]] = a
			}
		}
		out.SampledIDs += total
		if total == 0 {
			continue
		}
		q := snap.Queues[p.queue].Name
		for a, c := range counts {
			v := float64(c)
			if !p.exact {
				v = float64(c) * float64(p.ready) / float64(total)
			}
			out.Actors = append(out.Actors, ActorBacklog{Queue: q, Actor: a, Messages: v, Sampled: !p.exact})
		}
	}
	bs.ids = ids
	out.Actors, out.Series = bs.capActors(out.Actors)
	return nil
}

// capActors puts the pairs under MaxActorSeries, with ActorOther taking
// the rest of a queue. Pairs that had a series last read keep it; the
// free places go to the largest new pairs, so a label does not move from
// one read to the next while the set of actors stays the same.
func (bs *backlogState) capActors(in []ActorBacklog) ([]ActorBacklog, int) {
	order := make([]int, len(in))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ia, ib := in[order[a]], in[order[b]]
		ka, kb := bs.named[actorKey{ia.Queue, ia.Actor}], bs.named[actorKey{ib.Queue, ib.Actor}]
		if ka != kb {
			return ka
		}
		return ia.Messages > ib.Messages
	})
	named := map[actorKey]bool{}
	other := map[string]*ActorBacklog{}
	var out []ActorBacklog
	for _, i := range order {
		a := in[i]
		k := actorKey{a.Queue, a.Actor}
		if isNamed(a.Actor) {
			if len(named) < MaxActorSeries {
				named[k] = true
				out = append(out, a)
				continue
			}
			a.Actor = ActorOther
		}
		if a.Actor == ActorUnknown {
			out = append(out, a)
			continue
		}
		if o := other[a.Queue]; o != nil {
			o.Messages += a.Messages
			continue
		}
		c := a
		other[a.Queue] = &c
	}
	for _, o := range other {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Queue != out[j].Queue {
			return out[i].Queue < out[j].Queue
		}
		if out[i].Messages != out[j].Messages {
			return out[i].Messages > out[j].Messages
		}
		return out[i].Actor < out[j].Actor
	})
	bs.named = named
	return out, len(named)
}
