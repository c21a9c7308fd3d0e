package redis

// Dead-letter counters. Dramatiq keeps no count of failed messages, and its
// dead-letter queue forgets them after dead_message_ttl, so the depth of a
// .XQ cannot say how many died in the last hour. The score of each member
// is when a worker nacked it (the worker's clock, in ms), so the members
// whose score is newer than what a Reader saw last are the messages that
// died since. The counters are derived from them, per Reader: each new
// member is counted once, whoever reads (/metrics, the API, the page).
//
// Cost. Round trip 1 of every read already has each XQ's ZCARD and its
// newest member and score. A queue whose two values are unchanged since
// the last counted read costs no command. Otherwise one ZRANGEBYSCORE from
// the watermark reads the new members (and the few remembered ones of the
// look-back window), then HSTRLEN and HMGET read only the new members'
// bodies for their actor. Nothing ever depends on how many messages the
// dead-letter queue holds. See docs/dead-letter-counters.md.

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

const (
	// DeadLetterLookBack is how far (ms) below the newest score seen the
	// next read looks again, for members whose worker's clock is behind
	// another's. Their ids are remembered, so none is counted twice.
	DeadLetterLookBack = 5000
	// maxWindowIDs bounds the remembered ids per queue. When more members
	// than this fall in the look-back window (over 400 dead letters a
	// second on one queue), the window shrinks to the newest ones.
	maxWindowIDs = 2048
	// MaxNewDeadLettersPerQueue bounds the new members one read takes from
	// one queue. The rest are counted by the following reads, oldest first,
	// so both counters lag but never lose or double a message.
	MaxNewDeadLettersPerQueue = 1000
	// MaxActorSeries caps the {queue, actor} pairs a Reader counts. A pair
	// first seen beyond it is counted under ActorOther.
	MaxActorSeries = broker.MaxActorSeries
	// ActorUnknown counts dead letters whose actor could not be read: the
	// body was gone by the time it was read (requeued or pruned), larger
	// than MaxHeadBodyBytes, beyond the read's byte budget, or not
	// Dramatiq JSON with a string actor_name.
	//
	// The fixed values are not Python identifiers, so an actor named after
	// its function (Dramatiq's default) never meets them. Dramatiq does not
	// check an explicit actor_name, and any producer may write any body:
	// actorLabel escapes the names that could collide.
	ActorUnknown = "(unknown)"
	// ActorOther counts dead letters of actors beyond MaxActorSeries.
	ActorOther = "(other)"
	// maxActorNameBytes bounds an actor label value.
	maxActorNameBytes = 128
)

// ActorDeadLetters is how many messages of one actor of one queue were
// dead-lettered since the Reader first read the queue.
type ActorDeadLetters struct {
	Queue, Actor string
	Count        uint64
}

// deadWatch is what a Reader remembers of one queue's XQ.
type deadWatch struct {
	// The XQ's size and newest member at the last counted read: when a new
	// read sees the same, nothing was added (see the doc for the limits).
	card        int64
	newestID    string
	newestScore float64
	// Members from `from` (exclusive when fromExcl) upwards are new unless
	// their id is in ids, which holds every member of that range the
	// Reader has seen.
	from     float64
	fromExcl bool
	ids      map[string]float64
	total    uint64
}

type actorKey struct{ queue, actor string }

// deadCounter is a Reader's dead-letter state. lock is a channel so that a
// reader waiting for it gives up at its deadline.
type deadCounter struct {
	lock   chan struct{}
	queues map[string]*deadWatch
	actors map[actorKey]uint64
	named  int // keys of actors that count towards MaxActorSeries
	// startMs is when the Reader was made (ms, its clock): members scored
	// from then on died while the exporter ran.
	startMs float64
}

func newDeadCounter(start time.Time) *deadCounter {
	return &deadCounter{lock: make(chan struct{}, 1), queues: map[string]*deadWatch{}, actors: map[actorKey]uint64{},
		startMs: float64(start.UnixMilli())}
}

// deadSeen is what round trip 1 read of one queue's XQ.
type deadSeen struct {
	ok          bool // false when the XQ had the wrong type: leave it alone
	card        int64
	empty       bool
	newestID    string
	newestScore float64
}

// newestMember reads a ZREVRANGE ... 0 0 WITHSCORES reply in either
// protocol; see firstScore.
func newestMember(reply any) (string, float64, bool) {
	score, ok := firstScore(reply)
	if !ok {
		return "", 0, false
	}
	vals := reply.([]any)
	if pair, ok := vals[0].([]any); ok {
		vals = pair
	}
	id, _ := vals[0].(string)
	return id, score, true
}

// scoreArg formats a ZRANGEBYSCORE bound. 'g' with precision -1 is the
// shortest form that parses back to the same double.
func scoreArg(f float64, excl bool) string {
	var s string
	switch {
	case math.IsInf(f, 1):
		s = "+inf"
	case math.IsInf(f, -1):
		s = "-inf"
	default:
		s = strconv.FormatFloat(f, 'g', -1, 64)
	}
	if excl {
		return "(" + s
	}
	return s
}

// deadPlan is one queue's pending dead-letter read.
type deadPlan struct {
	queue string
	seen  deadSeen
	w     *deadWatch
	limit int64
	rng   *goredis.ZSliceCmd
	fresh []goredis.Z // new members, ascending, at most MaxNewDeadLettersPerQueue
	sizes []*goredis.IntCmd
	// stop is the lowest score this read did not settle: members at or
	// above it may not have been read (+Inf when everything was).
	stop float64
	// take is how many of fresh this read counts (a prefix); actors holds
	// their actors.
	take   int
	actors []string
}

// countDeadLetters updates the counters from round trip 1's view of each
// queue's XQ (seen, by queue index) and fills the snapshot's counts. It
// sends commands only for queues whose XQ changed.
func (r *Reader) countDeadLetters(ctx context.Context, snap *Snapshot, queues []string, seen []deadSeen) error {
	dc := r.dead
	select {
	case dc.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-dc.lock }()

	var plans []*deadPlan
	watched := 0
	for i, q := range queues {
		s := seen[i]
		w := dc.queues[q]
		if w == nil && !s.ok {
			// Not a dead-letter queue (yet): its watermark is set from the
			// first read that finds one, so what it holds then is not
			// counted either.
			continue
		}
		watched++
		if w == nil {
			// First read of the queue: members scored before the Reader
			// started are not counted, however many there are, and cost
			// nothing when the newest is one of them. Those scored since
			// died while the exporter ran, before discovery found the
			// queue or before the first scrape: they are read now.
			w = &deadWatch{card: s.card, newestID: s.newestID, newestScore: s.newestScore, ids: map[string]float64{}, from: dc.startMs}
			dc.queues[q] = w
			if s.empty || s.newestScore < dc.startMs || !validMillis(s.newestScore) {
				continue
			}
		} else if !s.ok || (s.card == w.card && s.newestID == w.newestID && s.newestScore == w.newestScore) {
			continue
		}
		plans = append(plans, &deadPlan{queue: q, seen: s, w: w, limit: int64(len(w.ids) + MaxNewDeadLettersPerQueue)})
	}
	if len(plans) > 0 {
		if err := r.readDeadLetters(ctx, snap.Anomalies, plans); err != nil {
			return err
		}
	}
	for _, p := range plans {
		dc.commit(p)
	}
	if len(dc.queues) > watched {
		dc.forget(queues)
	}
	for i, q := range queues {
		if w := dc.queues[q]; w != nil {
			snap.Queues[i].DeadLettered = w.total
		}
	}
	snap.DeadLetteredByActor = dc.byActor(queues)
	snap.DeadLetterActorSeries = dc.series()
	return nil
}

// readDeadLetters reads the new members of the planned queues and their
// actors in three pipelined round trips.
func (r *Reader) readDeadLetters(ctx context.Context, an Anomalies, plans []*deadPlan) error {
	pipe := r.client.Pipeline()
	for _, p := range plans {
		p.rng = pipe.ZRangeByScoreWithScores(ctx, r.keys.dead(p.queue), &goredis.ZRangeBy{
			Min: scoreArg(p.w.from, p.w.fromExcl), Max: "+inf", Count: p.limit,
		})
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}
	pipe = r.client.Pipeline()
	n := 0
	for _, p := range plans {
		if err := an.check(p.rng.Err()); err != nil {
			return err
		}
		items := p.rng.Val()
		p.stop = math.Inf(1)
		if int64(len(items)) == p.limit {
			p.stop = items[len(items)-1].Score
		}
		for _, z := range items {
			id, _ := z.Member.(string)
			key := idKey(id)
			if _, known := p.w.ids[key]; known {
				continue
			}
			if len(p.fresh) == MaxNewDeadLettersPerQueue {
				p.stop = min(p.stop, z.Score)
				break
			}
			if key != id {
				// Not Dramatiq's: it died all the same, under an unknown
				// actor, and is never sent back as an argument. The newest
				// member was counted by round trip 1 already.
				if key != p.seen.newestID {
					an.add(AnomalyOversizeID, 1)
				}
				z.Member = key
				p.fresh = append(p.fresh, z)
				p.sizes = append(p.sizes, nil)
				continue
			}
			p.fresh = append(p.fresh, z)
			p.sizes = append(p.sizes, pipe.HStrLen(ctx, r.keys.deadMsgs(p.queue), id))
			n++
		}
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}

	// Bodies: only the new members', each at most MaxHeadBodyBytes, within
	// one read's budget. A queue whose next body does not fit the budget
	// stops there; the rest is counted by the next read (so the two
	// counters stay equal), never under ActorUnknown.
	type fetch struct {
		plan  *deadPlan
		index []int
		cmd   *goredis.SliceCmd
	}
	var fetches []fetch
	pipe = r.client.Pipeline()
	budget := int64(maxHeadBytesPerRead)
	for _, p := range plans {
		p.actors = make([]string, len(p.fresh))
		var ids []string
		var index []int
		for j, c := range p.sizes {
			if c == nil { // an oversize id
				p.actors[j] = ActorUnknown
				p.take = j + 1
				continue
			}
			size, err := an.count(c)
			if err != nil {
				return err
			}
			if size > 0 && size <= MaxHeadBodyBytes && size > budget {
				break
			}
			switch {
			case size == 0:
				// Removed since the range was read: it did die, but its
				// body is gone.
				p.actors[j] = ActorUnknown
			case size > MaxHeadBodyBytes:
				an.add(AnomalyOversizeBody, 1)
				p.actors[j] = ActorUnknown
			default:
				budget -= size
				id, _ := p.fresh[j].Member.(string)
				ids = append(ids, id)
				index = append(index, j)
			}
			p.take = j + 1
		}
		if p.take < len(p.fresh) {
			p.stop = min(p.stop, p.fresh[p.take].Score)
		}
		if len(ids) > 0 {
			fetches = append(fetches, fetch{plan: p, index: index, cmd: pipe.HMGet(ctx, r.keys.deadMsgs(p.queue), ids...)})
		}
	}
	if len(fetches) > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return err
		}
	}
	for _, f := range fetches {
		if err := an.check(f.cmd.Err()); err != nil {
			return err
		}
		vals := f.cmd.Val()
		for k, j := range f.index {
			body := ""
			if k < len(vals) {
				body, _ = vals[k].(string)
			}
			name, ok := actorName(body)
			switch {
			case body == "":
				f.plan.actors[j] = ActorUnknown
			case !ok:
				an.add(AnomalyUndecodableBody, 1)
				f.plan.actors[j] = ActorUnknown
			default:
				f.plan.actors[j] = name
			}
		}
	}
	for _, p := range plans {
		for _, z := range p.fresh[:p.take] {
			if _, ok := millisTime(z.Score); !ok {
				an.add(AnomalyInvalidTime, 1)
			}
		}
	}
	return nil
}

// commit counts the members p takes and moves the queue's window.
func (dc *deadCounter) commit(p *deadPlan) {
	if p.rng.Err() != nil {
		// A wrong type: nothing read, nothing counted.
		return
	}
	w := p.w
	complete := math.IsInf(p.stop, 1)
	present := make(map[string]bool, len(p.rng.Val()))
	for _, z := range p.rng.Val() {
		id, _ := z.Member.(string)
		present[idKey(id)] = true
	}
	// A remembered id missing from the range was removed (pruned, requeued,
	// purged), unless it lies where this read did not look.
	ids := make(map[string]float64, len(w.ids)+p.take)
	wm := math.Inf(-1)
	// A score that is not a time (1e300, +inf: written by hand) is counted
	// but moves no window, or it would hide every later dead letter.
	for id, s := range w.ids {
		if present[id] || s >= p.stop {
			ids[id] = s
			if validMillis(s) {
				wm = max(wm, s)
			}
		}
	}
	for j, z := range p.fresh[:p.take] {
		id, _ := z.Member.(string)
		ids[id] = z.Score
		if validMillis(z.Score) {
			wm = max(wm, z.Score)
		}
		w.total++
		dc.countActor(p.queue, p.actors[j])
	}
	// The window starts DeadLetterLookBack below the newest score counted,
	// but never above a member this read left for the next.
	if from := min(wm-DeadLetterLookBack, p.stop); !math.IsInf(wm, -1) && from > w.from {
		w.from, w.fromExcl = from, false
	}
	for id, s := range ids {
		if s < w.from || (w.fromExcl && s == w.from) {
			delete(ids, id)
		}
	}
	if len(ids) > maxWindowIDs {
		scores := make([]float64, 0, len(ids))
		for _, s := range ids {
			scores = append(scores, s)
		}
		sort.Sort(sort.Reverse(sort.Float64Slice(scores)))
		cut := scores[maxWindowIDs]
		w.from, w.fromExcl = cut, true
		for id, s := range ids {
			if s <= cut {
				delete(ids, id)
			}
		}
	}
	w.ids = ids
	w.card, w.newestID, w.newestScore = p.seen.card, p.seen.newestID, p.seen.newestScore
	if !complete {
		// Members are left for the next read: make it look again even if
		// the set has not changed by then.
		w.card = -1
	}
}

func (dc *deadCounter) countActor(queue, actor string) {
	k := actorKey{queue, actor}
	if _, ok := dc.actors[k]; !ok && isNamed(actor) {
		if dc.named >= MaxActorSeries {
			k.actor = ActorOther
		} else {
			dc.named++
		}
	}
	dc.actors[k]++
}

// isNamed tells the pairs that count towards MaxActorSeries from the fixed
// ones, which are at most two per queue.
func isNamed(actor string) bool { return actor != ActorUnknown && actor != ActorOther }

func validMillis(ms float64) bool {
	_, ok := millisTime(ms)
	return ok
}

// series is how many pairs count towards MaxActorSeries.
func (dc *deadCounter) series() int { return dc.named }

// forget drops queues the read did not report, so memory is bounded by the
// reported queues whatever the churn of queue names. A queue reported again
// later starts from zero, which rate() reads as a counter reset.
// The caller skips it when the map holds only queues of this read.
func (dc *deadCounter) forget(queues []string) {
	keep := make(map[string]bool, len(queues))
	for _, q := range queues {
		keep[q] = true
	}
	for q := range dc.queues {
		if !keep[q] {
			delete(dc.queues, q)
		}
	}
	for k := range dc.actors {
		if !keep[k.queue] {
			delete(dc.actors, k)
			if isNamed(k.actor) {
				dc.named--
			}
		}
	}
}

func (dc *deadCounter) byActor(queues []string) []ActorDeadLetters {
	if len(dc.actors) == 0 {
		return nil
	}
	out := make([]ActorDeadLetters, 0, len(dc.actors))
	for k, n := range dc.actors {
		if _, ok := dc.queues[k.queue]; ok {
			out = append(out, ActorDeadLetters{Queue: k.queue, Actor: k.actor, Count: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Queue != out[j].Queue {
			return out[i].Queue < out[j].Queue
		}
		return out[i].Actor < out[j].Actor
	})
	return out
}

// actorName reads actor_name from a Dramatiq body without decoding the
// rest: Dramatiq writes it second, before the arguments, which can be
// large. ok is false for a body that is not a JSON object with a
// non-empty string actor_name before any syntax error.
func actorName(body string) (string, bool) {
	if name, ok := actorNameFast(body); ok {
		return name, true
	}
	return actorNameStream(body)
}

// actorNameFast reads the body as Dramatiq's encoder writes it,
// {"queue_name":"Q","actor_name":"A",..., when both strings are plain (no
// escape, no control character, valid UTF-8, so their JSON text is their
// value); ok is false for anything else, which actorNameStream then reads.
// It is a few times cheaper than a streaming decoder.
func actorNameFast(body string) (string, bool) {
	const head, sep = `{"queue_name":"`, `","actor_name":"`
	rest, found := strings.CutPrefix(body, head)
	if !found {
		return "", false
	}
	i := strings.IndexByte(rest, '"')
	if i < 0 || !plainJSONString(rest[:i]) {
		return "", false
	}
	rest, found = strings.CutPrefix(rest[i:], sep)
	if !found {
		return "", false
	}
	j := strings.IndexByte(rest, '"')
	if j <= 0 || !plainJSONString(rest[:j]) {
		return "", false
	}
	return actorLabel(rest[:j]), true
}

func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.ValidString(s)
}

// actorNameStream is actorName for any JSON: a streaming decoder that stops
// at actor_name.
func actorNameStream(body string) (string, bool) {
	dec := json.NewDecoder(strings.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := t.(string)
		if key == "actor_name" {
			var name string
			if err := dec.Decode(&name); err != nil || name == "" {
				return "", false
			}
			return actorLabel(name), true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// actorLabel makes an actor name a label value: valid UTF-8 (the decoder
// already replaced invalid bytes), at most maxActorNameBytes, cut on a rune
// boundary, and never one of the fixed values. A name that is a fixed value
// followed by zero or more "_" gets one more "_": "(other)" becomes
// "(other)_" and a real "(other)_" becomes "(other)__", so no two names
// that were distinct after clipping are merged.
func actorLabel(name string) string {
	name = clipTo(name, maxActorNameBytes)
	for _, fixed := range [...]string{ActorUnknown, ActorOther} {
		if rest, ok := strings.CutPrefix(name, fixed); ok && strings.Trim(rest, "_") == "" {
			return name + "_"
		}
	}
	return name
}
