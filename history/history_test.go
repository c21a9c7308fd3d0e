package history

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// clock is a settable clock for the history.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_800_000_000, 0)} } // a slot boundary
func q(name string, ready int64) broker.QueueStats {
	return broker.QueueStats{Name: name, Ready: ready, DeadLetter: ready / 10, OldestAge: time.Duration(ready) * time.Second, OldestAgeKnown: true}
}

func ok(c *clock, qs ...broker.QueueStats) *collector.State {
	return &collector.State{Time: c.t, Broker: &collector.BrokerState{Snapshot: broker.ToModel(&broker.Snapshot{Queues: qs})}}
}

func failed(c *clock) *collector.State {
	return &collector.State{Time: c.t, Broker: &collector.BrokerState{Err: errors.New("connection refused")}}
}

// last returns the newest slot's values of queue name.
func last(t *testing.T, h *History, name string) (ready, dead int32, age float32, read Read) {
	t.Helper()
	tr := h.Trend([]string{name})
	s := tr.Queues[name]
	if s == nil {
		return none, none, float32(math.NaN()), tr.Reads[Slots-1]
	}
	return s.Ready[Slots-1], s.DeadLetter[Slots-1], s.OldestAge[Slots-1], tr.Reads[Slots-1]
}

func TestSlotsKeepTheLatestSuccessfulRead(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(ok(c, q("a", 10)))
	c.add(5 * time.Second)
	h.Record(ok(c, q("a", 20)))
	c.add(5 * time.Second)
	// A failed read does not replace a good one in its slot.
	h.Record(failed(c))
	if r, d, a, read := last(t, h, "a"); r != 20 || d != 2 || a != 20 || read != ReadOK {
		t.Fatalf("slot = ready %d dead %d age %g read %v, want 20 2 20 ok", r, d, a, read)
	}
	// A read that began before the one already in the slot (overlapping
	// reads finishing out of order) does not replace it.
	older := ok(c, q("a", 99))
	older.Time = c.t.Add(-8 * time.Second)
	h.Record(older)
	if r, _, _, _ := last(t, h, "a"); r != 20 {
		t.Fatalf("ready = %d after an older read finished late, want 20", r)
	}

	// The next slot: the previous one is kept, this one is new.
	c.add(5 * time.Second)
	h.Record(ok(c, q("a", 30)))
	tr := h.Trend(nil)
	s := tr.Queues["a"]
	if s.Ready[Slots-2] != 20 || s.Ready[Slots-1] != 30 || tr.Reads[Slots-2] != ReadOK {
		t.Fatalf("last two slots = %d %d, want 20 30", s.Ready[Slots-2], s.Ready[Slots-1])
	}
	if want := c.t.Truncate(Resolution).Add(-(Slots - 1) * Resolution); !tr.Start.Equal(want) {
		t.Fatalf("start = %v, want %v", tr.Start, want)
	}
	for k := 0; k < Slots-2; k++ {
		if s.Ready[k] != none || tr.Reads[k] != ReadNone {
			t.Fatalf("slot %d = %d (%v) before anything was read", k, s.Ready[k], tr.Reads[k])
		}
	}
}

// A failed read, a queue missing from a read and a slot nobody read in
// are gaps, never zeros, and they are told apart.
func TestGapsAreNeverZeros(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(ok(c, q("a", 5), q("b", 7)))
	c.add(Resolution)
	h.Record(failed(c))
	c.add(Resolution)
	h.Record(ok(c, q("a", 6))) // b missing
	c.add(Resolution)
	// nobody reads
	c.add(Resolution)
	unknownAge := q("a", 8)
	unknownAge.OldestAgeKnown = false
	h.Record(ok(c, unknownAge, q("b", 9)))

	tr := h.Trend([]string{"a", "b", "never"})
	if _, ok := tr.Queues["never"]; ok {
		t.Fatal("a queue never read has a series")
	}
	a, b := tr.Queues["a"], tr.Queues["b"]
	base := Slots - 5
	wantReads := []Read{ReadOK, ReadFailed, ReadOK, ReadNone, ReadOK}
	wantA := []int32{5, none, 6, none, 8}
	wantB := []int32{7, none, none, none, 9}
	for k := range 5 {
		if tr.Reads[base+k] != wantReads[k] || a.Ready[base+k] != wantA[k] || b.Ready[base+k] != wantB[k] {
			t.Errorf("slot %d: read %v a %d b %d, want %v %d %d", k, tr.Reads[base+k], a.Ready[base+k], b.Ready[base+k], wantReads[k], wantA[k], wantB[k])
		}
	}
	if !math.IsNaN(float64(a.OldestAge[Slots-1])) || a.Ready[Slots-1] != 8 {
		t.Errorf("unknown age stored as %g", a.OldestAge[Slots-1])
	}
	if b.OldestAge[Slots-1] != 9 || b.DeadLetter[base+1] != none || !math.IsNaN(float64(b.OldestAge[base+1])) {
		t.Errorf("b = %v / %v", b.OldestAge[Slots-1], b.DeadLetter[base+1])
	}

	// A second successful read in a slot that lacks a queue the first one
	// listed leaves that queue without a value there.
	h.Record(ok(c, q("a", 9)))
	if r, _, _, _ := last(t, h, "b"); r != none {
		t.Errorf("b = %d after a later read in the slot did not list it", r)
	}
}

func TestWindowSlidesAndVanishedQueuesAreDropped(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(ok(c, q("gone", 1), q("stays", 1)))
	for k := 1; k < Slots; k++ {
		c.add(Resolution)
		h.Record(ok(c, q("stays", int64(k+1))))
	}
	tr := h.Trend(nil)
	if tr.Queues["gone"] == nil || tr.Queues["gone"].Ready[0] != 1 {
		t.Fatal("a queue dropped while it still has a value in the window")
	}
	for k := range Slots {
		if tr.Queues["stays"].Ready[k] != int32(k+1) {
			t.Fatalf("slot %d = %d, want %d", k, tr.Queues["stays"].Ready[k], k+1)
		}
	}
	c.add(Resolution)
	h.Record(ok(c, q("stays", 0)))
	if h.Len() != 1 || h.Trend(nil).Queues["gone"] != nil {
		t.Fatalf("a queue with no value left in the window is kept (%d queues)", h.Len())
	}
	// A long silence empties the window but keeps the ring's shape.
	c.add(3 * Window)
	tr = h.Trend(nil)
	if len(tr.Queues) != 0 {
		t.Fatalf("%d queues after a silence longer than the window", len(tr.Queues))
	}
	h.Record(ok(c, q("stays", 4)))
	if r, _, _, read := last(t, h, "stays"); r != 4 || read != ReadOK {
		t.Fatalf("after the silence: %d %v", r, read)
	}
}

func TestBoundedQueues(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now, MaxQueues: 3})
	h.Record(ok(c, q("a", 1), q("b", 1), q("c", 1), q("d", 1)))
	if h.Len() != 3 || h.Refused() != 1 {
		t.Fatalf("len %d refused %d, want 3 1", h.Len(), h.Refused())
	}
	// New queues take the place of queues the latest read did not list,
	// those seen longest ago first; queues still listed are never evicted.
	c.add(Resolution)
	h.Record(ok(c, q("a", 2), q("b", 2)))
	c.add(Resolution)
	h.Record(ok(c, q("a", 3), q("e", 3), q("f", 3)))
	tr := h.Trend(nil)
	if len(tr.Queues) != 3 || tr.Queues["a"] == nil || tr.Queues["e"] == nil || tr.Queues["f"] == nil || h.Refused() != 0 {
		t.Fatalf("queues %v refused %d, want a e f, 0", keys(tr.Queues), h.Refused())
	}
	if tr.Queues["a"].Ready[Slots-3] != 1 {
		t.Fatal("a kept queue lost its history")
	}
	// The default bound.
	if New(Options{}).maxQueues != DefaultMaxQueues {
		t.Fatal("default bound")
	}
}

func keys(m map[string]*Series) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestClockGoingBackwards(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(ok(c, q("a", 1)))
	c.add(Resolution)
	h.Record(ok(c, q("a", 2)))
	began := c.t
	// A step back of less than a slot: held in the newest slot.
	c.add(-Resolution / 2)
	st := ok(c, q("a", 3))
	// What a State's time says in the exporter: it carries the monotonic
	// clock, which no wall-clock step moves back.
	st.Time = began.Add(time.Second)
	h.Record(st)
	tr := h.Trend(nil)
	if s := tr.Queues["a"]; s.Ready[Slots-1] != 3 || s.Ready[Slots-2] != 1 {
		t.Fatalf("after a small step back: %d %d, want 1 3", s.Ready[Slots-2], s.Ready[Slots-1])
	}
	// A step back of ten minutes restarts the history: nothing is shown
	// at a time it was not read.
	c.add(-10 * time.Minute)
	h.Record(ok(c, q("a", 4)))
	tr = h.Trend(nil)
	s := tr.Queues["a"]
	for k := 0; k < Slots-1; k++ {
		if s.Ready[k] != none || tr.Reads[k] != ReadNone {
			t.Fatalf("slot %d kept %d after the clock stepped back", k, s.Ready[k])
		}
	}
	if s.Ready[Slots-1] != 4 || !tr.Start.Equal(c.t.Truncate(Resolution).Add(-(Slots-1)*Resolution)) {
		t.Fatalf("after the restart: %d from %v", s.Ready[Slots-1], tr.Start)
	}
	// Before the Unix epoch too (slot numbers are floored).
	c.t = time.Unix(-7, 0)
	h.Record(ok(c, q("a", 5)))
	if tr := h.Trend(nil); !tr.Start.Equal(time.Unix(-15-(Slots-1)*15, 0)) || tr.Queues["a"].Ready[Slots-1] != 5 {
		t.Fatalf("before 1970: start %v", tr.Start)
	}
}

func TestValuesAreClamped(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	huge := broker.QueueStats{Name: "x", Ready: math.MaxInt64, DeadLetter: -3, OldestAge: math.MaxInt64, OldestAgeKnown: true}
	h.Record(ok(c, huge))
	r, d, a, _ := last(t, h, "x")
	if r != math.MaxInt32 || d != 0 || math.IsNaN(float64(a)) || math.IsInf(float64(a), 0) {
		t.Fatalf("clamped to %d %d %g", r, d, a)
	}
}

func TestNilAndEmpty(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now})
	h.Record(nil)
	if tr := h.Trend(nil); len(tr.Queues) != 0 || tr.Reads[Slots-1] != ReadNone {
		t.Fatal("empty history has data")
	}
	h.Record(&collector.State{Time: c.t}) // broker collector off
	if tr := h.Trend(nil); tr.Reads[Slots-1] != ReadFailed {
		t.Fatalf("a read without the broker part is %v, want failed", tr.Reads[Slots-1])
	}
}

// Memory: the history of n queues, every slot filled.
func BenchmarkHistoryMemory(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var per float64
			for range b.N {
				per = MeasureBytesPerQueue(n)
			}
			b.ReportMetric(per, "bytes/queue")
			b.ReportMetric(per*float64(n)/(1<<20), "MiB")
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	const n = 1000
	c := newClock()
	h := New(Options{Now: c.now})
	qs := make([]broker.QueueStats, n)
	for i := range qs {
		qs[i] = q(fmt.Sprintf("queue-%05d", i), int64(i))
	}
	st := ok(c, qs...)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.add(Resolution)
		st.Time = c.t
		h.Record(st)
	}
}

// Dropping several queues in one pass (the list is compacted while it is
// walked) keeps the list and the map in step.
func TestManyVanishAtOnce(t *testing.T) {
	c := newClock()
	h := New(Options{Now: c.now, MaxQueues: 6})
	h.Record(ok(c, q("a", 1), q("b", 1), q("c", 1), q("d", 1), q("e", 1)))
	c.add(Window)
	h.Record(ok(c, q("c", 2), q("f", 2)))
	if tr := h.Trend(nil); h.Len() != 2 || tr.Queues["c"] == nil || tr.Queues["f"] == nil || len(h.list) != 2 {
		t.Fatalf("after the window: %v (list %d)", keys(tr.Queues), len(h.list))
	}
	for i, s := range h.list {
		if s.at != i || h.queues[s.name] != s {
			t.Fatalf("list[%d] = %s at %d", i, s.name, s.at)
		}
	}
	c.add(Resolution)
	h.Record(ok(c, q("g", 1), q("h", 1), q("i", 1), q("j", 1), q("k", 1)))
	// Room for 6, and 7 want it: one of c and f (neither listed) goes,
	// c (seen in the same slot, so by name); g..k take the rest.
	if tr := h.Trend(nil); h.Len() != 6 || tr.Queues["c"] != nil || tr.Queues["f"] == nil || tr.Queues["k"] == nil {
		t.Fatalf("after eviction: %v", keys(tr.Queues))
	}
	for i, s := range h.list {
		if s.at != i || h.queues[s.name] != s {
			t.Fatalf("list[%d] = %s at %d", i, s.name, s.at)
		}
	}
}
