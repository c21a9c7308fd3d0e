// Package history keeps the last hour of each queue's ready count,
// oldest-message age and dead-letter depth in memory, for the sparklines of
// the status page and the API.
//
// It is fed the States the exporter reads anyway: every read of the shared
// state, whoever asked for it (a /metrics scrape, the API, the page), ends
// in Record. It never reads Redis itself, so when nobody looks nothing is
// read and the history shows no value there. The data flows one way:
// collector.State -> History -> status -> server.
package history

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

const (
	// Resolution is the width of one slot. Several reads in one slot keep
	// one value: the latest successful read's (by when it began).
	Resolution = 15 * time.Second
	// Slots is how many slots the window holds: an hour.
	Slots = 240
	// Window is the time the history covers.
	Window = Resolution * Slots

	// DefaultMaxQueues bounds the queues with a history when the exporter
	// reports every queue (--dramatiq.max-queues=0).
	DefaultMaxQueues = 10_000

	// BytesPerQueue is the fixed storage of one queue's history: an int32
	// ready count, an int32 dead-letter count and a float32 age per slot,
	// plus the slot and read it was last seen in, and its place in the
	// list. The map entry and the name's bytes come on top (see docs/performance.md
	// for measured figures).
	BytesPerQueue = Slots*(4+4+4) + 8 + 8 + 16 + 8
)

// Read says what the reads in one slot saw.
type Read uint8

const (
	// ReadNone: nobody read in that slot. A chart joins the values on
	// either side, since nothing was learnt in between.
	ReadNone Read = iota
	// ReadOK: a read succeeded; a queue without a value there was absent.
	ReadOK
	// ReadFailed: every read in that slot failed. No queue has a value.
	ReadFailed
)

func (r Read) String() string {
	switch r {
	case ReadOK:
		return "ok"
	case ReadFailed:
		return "failed"
	}
	return "none"
}

// none marks a slot without a value in the int32 rings; NaN does in the
// float32 ring.
const none = -1

// nan32 is computed once: math.NaN() per slot cleared was a fifth of
// Record's time.
var nan32 = float32(math.NaN())

// sample is one slot of one queue. The three values of a slot sit
// together, so recording a read touches one cache line per queue, not
// three.
type sample struct {
	ready, dead int32
	age         float32
}

var empty = sample{ready: none, dead: none, age: nan32}

// series is one queue's ring, indexed by slot number modulo Slots.
type series struct {
	ring [Slots]sample
	// seen is the newest slot the queue had a value in.
	seen int64
	// gen is the last successful Record that listed the queue.
	gen uint64
	// name and at (its index in History.list) let a queue be dropped
	// while walking the list.
	name string
	at   int
}

func newSeries(name string) *series {
	s := &series{name: name}
	for i := range s.ring {
		s.ring[i] = empty
	}
	return s
}

func (s *series) clear(i int) { s.ring[i] = empty }

// Options configure New.
type Options struct {
	// MaxQueues bounds the queues with a history (0: DefaultMaxQueues).
	// Give it --dramatiq.max-queues: a read never lists more.
	MaxQueues int
	// Now is the clock that places reads in slots (nil: time.Now).
	Now func() time.Time
}

// History is safe for concurrent use. Its memory is bounded by
// MaxQueues × (BytesPerQueue + the map entry and name).
type History struct {
	now       func() time.Time
	maxQueues int

	mu      sync.Mutex
	started bool
	// newest is the slot number (Unix time / Resolution) of the newest
	// slot; the ring holds newest-Slots+1 … newest.
	newest int64
	reads  [Slots]Read
	// newestRead is when the read stored in the newest slot began.
	newestRead time.Time
	gen        uint64
	queues     map[string]*series
	// list holds the same series as queues: walking a slice is several
	// times faster than walking a map, and Record walks them all.
	list []*series
	// refused counts queues of the latest successful read left without a
	// history because MaxQueues were held by queues that read listed.
	refused int
}

// New returns an empty history.
func New(o Options) *History {
	if o.MaxQueues <= 0 {
		o.MaxQueues = DefaultMaxQueues
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &History{now: o.Now, maxQueues: o.MaxQueues, queues: map[string]*series{}}
}

// slotOf is t's slot number.
func slotOf(t time.Time) int64 {
	sec := t.Unix()
	res := int64(Resolution / time.Second)
	s := sec / res
	if sec%res < 0 {
		s--
	}
	return s
}

func index(slot int64) int {
	i := int(slot % Slots)
	if i < 0 {
		i += Slots
	}
	return i
}

// place moves the window to now and returns the slot a read recorded now
// goes in. Reads are placed by the time they are recorded, under the lock,
// so they only move forward unless the wall clock steps back: a step of up
// to one slot is held in the newest slot until the clock catches up; a
// larger one restarts the history, so that no value is ever shown at a
// time it was not read.
func (h *History) place(now time.Time) int64 {
	s := slotOf(now)
	switch {
	case !h.started:
		h.started, h.newest = true, s
	case s > h.newest:
		h.advance(s)
	case s >= h.newest-1:
		// This slot, or a clock one slot behind it.
	default:
		h.restart(s)
	}
	return h.newest
}

// advance empties the slots between the newest one and s, makes s the
// newest, and forgets the queues with no value left in the window.
func (h *History) advance(s int64) {
	n := min(s-h.newest, Slots)
	for k := int64(1); k <= n; k++ {
		h.reads[index(h.newest+k)] = ReadNone
	}
	h.newest = s
	h.newestRead = time.Time{}
	for j := 0; j < len(h.list); {
		q := h.list[j]
		if q.seen <= h.newest-Slots {
			h.remove(q)
			continue // the last one moved to j
		}
		for k := int64(0); k < n; k++ {
			q.clear(index(s - k))
		}
		j++
	}
}

func (h *History) restart(s int64) {
	h.reads = [Slots]Read{}
	h.queues = map[string]*series{}
	h.list = nil
	h.newest, h.newestRead, h.refused = s, time.Time{}, 0
}

func (h *History) add(q *series) {
	q.at = len(h.list)
	h.list = append(h.list, q)
	h.queues[q.name] = q
}

// remove drops q, moving the last of the list into its place.
func (h *History) remove(q *series) {
	last := h.list[len(h.list)-1]
	h.list[q.at], last.at = last, q.at
	h.list[len(h.list)-1] = nil
	h.list = h.list[:len(h.list)-1]
	delete(h.queues, q.name)
}

// Record adds one read. A read whose broker part failed marks its slot
// failed unless a successful read is already there; a queue absent from a
// successful read gets no value in that slot. Never a zero for either.
func (h *History) Record(st *collector.State) {
	if st == nil {
		return
	}
	var snap *broker.Snapshot
	if st.Broker != nil {
		snap = st.Broker.Snapshot
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.place(now)
	i := index(s)
	if snap == nil {
		if h.reads[i] == ReadNone {
			h.reads[i] = ReadFailed
		}
		return
	}
	// Reads that overlap may finish out of order: the one that began
	// last holds the slot.
	if h.reads[i] == ReadOK && st.Time.Before(h.newestRead) {
		return
	}
	if h.reads[i] == ReadOK {
		// An earlier read in this slot may have listed queues this one
		// does not.
		for _, q := range h.list {
			q.clear(i)
		}
	}
	h.reads[i], h.newestRead = ReadOK, st.Time
	h.gen++

	var fresh []broker.Queue
	for _, qs := range snap.Queues {
		q := h.queues[qs.Name]
		if q == nil {
			fresh = append(fresh, qs)
			continue
		}
		q.set(i, s, h.gen, qs)
	}
	h.refused = 0
	if room := h.maxQueues - len(h.queues); len(fresh) > room {
		h.evict(len(fresh) - room)
	}
	for _, qs := range fresh {
		if len(h.queues) >= h.maxQueues {
			h.refused++
			continue
		}
		if q := h.queues[qs.Name]; q != nil {
			// Listed twice in one read: the last one counts.
			q.set(i, s, h.gen, qs)
			continue
		}
		q := newSeries(qs.Name)
		q.set(i, s, h.gen, qs)
		h.add(q)
	}
}

// evict forgets up to n queues that the latest read did not list, those
// seen longest ago first (then by name, so the choice is deterministic).
func (h *History) evict(n int) {
	var cs []*series
	for _, q := range h.list {
		if q.gen != h.gen {
			cs = append(cs, q)
		}
	}
	sort.Slice(cs, func(a, b int) bool {
		if cs[a].seen != cs[b].seen {
			return cs[a].seen < cs[b].seen
		}
		return cs[a].name < cs[b].name
	})
	for _, q := range cs[:min(n, len(cs))] {
		h.remove(q)
	}
}

func (q *series) set(i int, slot int64, gen uint64, qs broker.Queue) {
	v := sample{ready: count32(qs.Ready), dead: count32(qs.DeadLetter), age: nan32}
	if qs.OldestAgeKnown {
		if a := float32(qs.OldestAge.Seconds()); !math.IsInf(float64(a), 0) {
			v.age = a
		}
	}
	q.ring[i] = v
	q.seen, q.gen = slot, gen
}

// count32 is clamp32 of a present count, and -1 (no value) for an absent
// one: a number the broker cannot give is never charted as 0.
func count32(c broker.Count) int32 {
	if !c.OK {
		return -1
	}
	return clamp32(c.N)
}

// clamp32 fits a count into the int32 ring: counts past 2^31-1 show as
// 2^31-1, and a negative count (which Redis never returns) as 0.
func clamp32(v int64) int32 {
	return int32(min(max(v, 0), math.MaxInt32))
}

// Len is how many queues have a history.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.queues)
}

// Refused is how many queues of the latest successful read have no
// history because MaxQueues queues already had one.
func (h *History) Refused() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// Trend is a copy of the window, oldest slot first.
type Trend struct {
	// Start is when the oldest slot begins; slot k covers
	// [Start + k×Resolution, Start + (k+1)×Resolution).
	Start time.Time
	Reads [Slots]Read
	// Queues holds the series of the queues asked for that have one.
	Queues map[string]*Series
}

// Series is one queue's values, oldest slot first. A slot without a
// value holds -1 (Ready, DeadLetter) or NaN (OldestAge, also when the age
// was unknown in that read).
type Series struct {
	Ready      [Slots]int32
	DeadLetter [Slots]int32
	OldestAge  [Slots]float32 // seconds
}

// Trend copies the window for the named queues (all of them when names
// is nil). It moves the window to now first, so a history nobody fed for
// a while shows those slots empty.
func (h *History) Trend(names []string) *Trend {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	t := &Trend{Queues: map[string]*Series{}}
	if !h.started {
		s := slotOf(now)
		t.Start = time.Unix((s-Slots+1)*int64(Resolution/time.Second), 0).UTC()
		return t
	}
	s := h.place(now)
	t.Start = time.Unix((s-Slots+1)*int64(Resolution/time.Second), 0).UTC()
	first := index(s + 1) // the oldest slot
	copy(t.Reads[:], h.reads[first:])
	copy(t.Reads[Slots-first:], h.reads[:first])
	add := func(name string, q *series) {
		out := &Series{}
		for k := range Slots {
			v := q.ring[(first+k)%Slots]
			out.Ready[k], out.DeadLetter[k], out.OldestAge[k] = v.ready, v.dead, v.age
		}
		t.Queues[name] = out
	}
	if names == nil {
		for _, q := range h.list {
			add(q.name, q)
		}
		return t
	}
	for _, name := range names {
		if q := h.queues[name]; q != nil {
			add(name, q)
		}
	}
	return t
}
