package history

import (
	"fmt"
	"runtime"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// MeasureBytesPerQueue fills a history with n queues (names like
// "myapp.queue-000123", every slot of the window read) and returns the
// live heap it holds per queue: the rings, the map and the names it keeps
// alive once the reads are gone. It is what `make bench` reports; it
// allocates and collects garbage, so it is not for a serving process.
func MeasureBytesPerQueue(n int) float64 {
	before := liveHeap()
	h := filled(n)
	after := liveHeap()
	runtime.KeepAlive(h)
	return float64(after-before) / float64(n)
}

func filled(n int) *History {
	qs := make([]broker.Queue, n)
	for i := range qs {
		qs[i] = broker.Queue{Name: fmt.Sprintf("myapp.queue-%06d", i), Ready: broker.Known(int64(i)), DeadLetter: broker.Known(1),
			OldestAge: time.Second, OldestAgeKnown: true}
	}
	t := time.Unix(1_800_000_000, 0)
	st := &collector.State{Broker: &collector.BrokerState{Snapshot: &broker.Snapshot{Broker: broker.Redis, Queues: qs}}}
	h := New(Options{MaxQueues: n, Now: func() time.Time { return t }})
	for range Slots {
		st.Time = t
		h.Record(st)
		t = t.Add(Resolution)
	}
	return h
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
