package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
)

// historyBench measures the status page's trends: the heap the history of
// n queues holds with every slot of its hour filled (rings, map and names),
// and what recording one read costs, which every read of the exporter
// pays before its callers get it.
func historyBench(sizes string) {
	fmt.Printf("\nTrends history (%d slots of %s per queue; %d bytes of rings per queue by construction):\n\n",
		history.Slots, history.Resolution, history.BytesPerQueue)
	fmt.Println("| queues | heap / queue | heap total | Record per read (p50) |")
	fmt.Println("|---:|---:|---:|---:|")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fatal(fmt.Errorf("--history: %q is not a positive number", s))
		}
		per := history.MeasureBytesPerQueue(n)
		fmt.Printf("| %d | %.0f B | %.1f MiB | %s |\n", n, per, per*float64(n)/(1<<20), recordCost(n))
	}
}

// recordCost is the median time of Record over a full window of reads of
// n queues, each read in a slot of its own.
func recordCost(n int) string {
	qs := make([]broker.Queue, n)
	for i := range qs {
		qs[i] = broker.Queue{Name: fmt.Sprintf("myapp.queue-%06d", i), Ready: broker.Known(int64(i)), DeadLetter: broker.Known(0), OldestAgeKnown: true}
	}
	t := time.Unix(1_800_000_000, 0)
	h := history.New(history.Options{MaxQueues: n, Now: func() time.Time { return t }})
	st := &collector.State{Broker: &collector.BrokerState{Snapshot: &broker.Snapshot{Broker: broker.Redis, Queues: qs}}}
	var took []time.Duration
	for range history.Slots {
		st.Time = t
		begin := time.Now()
		h.Record(st)
		took = append(took, time.Since(begin))
		t = t.Add(history.Resolution)
	}
	sortDurations(took)
	return ms(took[len(took)/2])
}
