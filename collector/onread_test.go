package collector_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// OnRead sees every read once, whoever shares it, before any caller gets
// it back; a read every caller abandoned is not passed on; a panic in
// OnRead costs no caller its answer.
func TestOnReadSeesEachSharedReadOnce(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("default", 5, time.Now())
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := broker.NewReader(client, broker.Options{Namespace: "dramatiq"})

	var mu sync.Mutex
	var seen []*collector.State
	panicNext := false
	exp, err := collector.NewExporter(collector.ExporterOptions{Namespace: "dramatiq", OnRead: func(st *collector.State) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, st)
		if panicNext {
			panicNext = false
			panic("observer bug")
		}
	}}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}

	// Scrapes, API calls and page views that overlap share one read.
	pause(t, r, time.Second)
	var wg sync.WaitGroup
	states := make([]*collector.State, 6)
	for i := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if i%2 == 0 {
				reg := prometheus.NewRegistry()
				reg.MustRegister(exp.Bind(ctx))
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
				}
				return
			}
			states[i] = exp.Read(ctx, collector.ReadOptions{})
			// The observer ran before this caller got the read.
			mu.Lock()
			defer mu.Unlock()
			found := false
			for _, s := range seen {
				found = found || s == states[i]
			}
			if !found {
				t.Errorf("caller %d got a read OnRead has not seen", i)
			}
		}()
	}
	wg.Wait()
	if n := count(); n != 1 {
		t.Fatalf("OnRead ran %d times for one shared read, want 1", n)
	}
	if q := seen[0].Broker.Snapshot.Queues; len(q) != 1 || q[0].Ready.N != 5 {
		t.Fatalf("OnRead saw %+v", seen[0].Broker)
	}

	// Every caller gave up: the read is cancelled and not passed on.
	pause(t, r, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		exp.Read(ctx, collector.ReadOptions{})
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	// Wait out the pause, then read again: only that read is seen.
	time.Sleep(time.Second)
	mu.Lock()
	panicNext = true
	mu.Unlock()
	st := exp.Read(context.Background(), collector.ReadOptions{})
	if o, _ := st.Outcome("broker"); !o.Success {
		t.Fatalf("a panicking observer failed the read: %+v", o)
	}
	if n := count(); n != 2 {
		t.Fatalf("OnRead ran %d times, want 2 (the abandoned read is not passed on)", n)
	}
}
