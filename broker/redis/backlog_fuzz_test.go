package redis

import (
	"math"
	"testing"
)

// FuzzBacklogCap: whatever the pairs, at most MaxActorSeries have their own
// series, a queue's total is kept (the rest goes to (other)), no pair is
// reported twice, and the same input twice gives the same labels.
func FuzzBacklogCap(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5}, uint16(3))
	f.Add([]byte("\xff\xfe(other)(unknown)"), uint16(600))
	f.Fuzz(func(t *testing.T, seed []byte, n uint16) {
		if len(seed) == 0 {
			return
		}
		n %= 2000
		var in []ActorBacklog
		seen := map[actorKey]bool{}
		want := map[string]float64{}
		for i := 0; i < int(n); i++ {
			b := seed[i%len(seed)]
			q := string(rune('a' + int(b)%3))
			a := actorLabel(string(seed[:1+i%len(seed)]) + string(rune('A'+i%700)))
			switch b % 17 {
			case 0:
				a = ActorUnknown
			case 1:
				a = ActorOther
			}
			k := actorKey{q, a}
			if seen[k] {
				continue
			}
			seen[k] = true
			v := float64(b) + 1
			in = append(in, ActorBacklog{Queue: q, Actor: a, Messages: v})
			want[q] += v
		}
		bs := newBacklogState()
		out, series := bs.capActors(append([]ActorBacklog(nil), in...))
		if series > MaxActorSeries {
			t.Fatalf("%d series", series)
		}
		got := map[string]float64{}
		dup := map[actorKey]bool{}
		for _, a := range out {
			k := actorKey{a.Queue, a.Actor}
			if dup[k] {
				t.Fatalf("pair %v twice", k)
			}
			dup[k] = true
			got[a.Queue] += a.Messages
		}
		for q, v := range want {
			if math.Abs(got[q]-v) > 1e-6 {
				t.Fatalf("queue %s: %v, want %v", q, got[q], v)
			}
		}
		again, _ := bs.capActors(append([]ActorBacklog(nil), in...))
		if len(again) != len(out) {
			t.Fatalf("labels moved: %d then %d", len(out), len(again))
		}
		for i := range out {
			if again[i] != out[i] {
				t.Fatalf("labels moved: %+v then %+v", out[i], again[i])
			}
		}
	})
}

// FuzzBacklogWindows: the windows stay inside the list and their number
// and ids are bounded by the sample size, whatever the list's length.
func FuzzBacklogWindows(f *testing.F) {
	f.Add(int64(1), 1000)
	f.Add(int64(1)<<40, 100)
	f.Add(int64(1001), 7)
	f.Fuzz(func(t *testing.T, n int64, size int) {
		if n <= 0 || size <= 0 || size > 100_000 {
			return
		}
		ws := backlogWindows(n, size)
		ids := int64(0)
		for _, w := range ws {
			if w[0] < 0 || w[1] < w[0] || (n > int64(size) && w[1] >= n) {
				t.Fatalf("n=%d size=%d: window %v", n, size, w)
			}
			ids += w[1] - w[0] + 1
		}
		if len(ws) > max(size/backlogWindowIDs, 1) || (n > int64(size) && ids > int64(max(size, backlogWindowIDs))) {
			t.Fatalf("n=%d size=%d: %d windows, %d ids", n, size, len(ws), ids)
		}
	})
}
