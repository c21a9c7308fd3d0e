package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
	"github.com/dramatiq-exporter/dramatiq_exporter/server"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// The streamed answer is byte for byte what encoding/json makes of the
// whole value, indented without a history and compact with one.
func TestWriteStatusIsTheEncoding(t *testing.T) {
	age := 12.5
	mk := func(n int, withHistory bool) *status.Status {
		st := &status.Status{Status: "healthy", Environment: `"queues": null <tag>`, Queues: []status.QueueStatus{},
			Failed: []status.Failure{{Check: "max_ready", Queue: "q0", Message: "m"}}}
		for i := range n {
			q := status.QueueStatus{Name: fmt.Sprintf("q%d", i), Ready: int64(i), Problems: []string{"orphaned"},
				OldestMessageAgeSeconds: &age, DeadLetteredByActor: []status.ActorDeadLetters{{Actor: "a&b", DeadLetteredTotal: 2}}}
			if withHistory {
				q.History = &status.QueueHistory{Ready: status.Counts{1, -1}, OldestMessageAgeSeconds: status.Ages{1.5}, DeadLetter: status.Counts{}}
			}
			st.Queues = append(st.Queues, q)
		}
		if withHistory {
			st.History = &status.History{ResolutionSeconds: 15, Reads: []string{"ok"}}
		}
		return st
	}
	for _, n := range []int{0, 1, 3} {
		for _, withHistory := range []bool{false, true} {
			st := mk(n, withHistory)
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			if !withHistory {
				enc.SetIndent("", "  ")
			}
			if err := enc.Encode(st); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := server.WriteStatus(&got, st); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("%d queues, history %v:\ngot  %s\nwant %s", n, withHistory, got.String(), want.String())
			}
		}
	}
}

// Forty clients asking for ?history=1 at once at 1,000 queues all get
// their answer, and the heap never holds forty answers: at most
// MaxHistoryAnswers are built at a time, each streamed. Before, forty
// answers of 4 MB each pushed RSS to 488 MiB.
func TestHistoryAnswersBoundMemory(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	pipe := r.Admin.Pipeline()
	const queues = 1000
	for i := range queues {
		pipe.RPush(ctx, fmt.Sprintf("dramatiq:q%05d", i), "m")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader := broker.NewReader(client, broker.Options{})
	// Fill every slot of the hour, as a long-running exporter has.
	clock := &atomic.Int64{}
	clock.Store(time.Now().Add(-history.Window).UnixNano())
	hist := history.New(history.Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	exp, err := collector.NewExporter(collector.ExporterOptions{Namespace: "dramatiq", OnRead: hist.Record}, collector.Sources{Broker: reader})
	if err != nil {
		t.Fatal(err)
	}
	for range history.Slots {
		exp.Read(ctx, collector.ReadOptions{})
		clock.Add(int64(history.Resolution))
	}
	src := server.NewStatusSource(server.StatusOptions{Exporter: exp, Thresholds: status.DefaultThresholds(), Timeout: time.Minute, History: hist})
	srv := httptest.NewServer(src.APIHandler())
	defer srv.Close()

	base := heapInuse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	const clients = 40
	var wg sync.WaitGroup
	var failed atomic.Int32
	var size atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "?history=1")
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			n, _ := io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				failed.Add(1)
			}
			size.Store(n)
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d clients got no answer", n, clients)
	}
	if size.Load() < 2<<20 {
		t.Fatalf("an answer is %d bytes; want the full history of %d queues", size.Load(), queues)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("answer %d bytes; heap in use %d MiB before, peak %d MiB", size.Load(), base>>20, peak.Load()>>20)
	// Forty whole answers are over 160 MB of JSON alone.
	if grew > 64<<20 {
		t.Fatalf("the heap grew by %d MiB under %d concurrent history clients", grew>>20, clients)
	}
}

func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A client that waited for its turn among the MaxHistoryAnswers still has
// time to read: under forty clients, each answer is a 503 (no turn in
// time) or a status read whole, never "Redis failed" because the turn
// came with the deadline spent.
func TestHistoryTurnLeavesTimeToRead(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	pipe := r.Admin.Pipeline()
	const queues = 2000
	for i := range queues {
		pipe.RPush(ctx, fmt.Sprintf("dramatiq:q%05d", i), "m")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hist := history.New(history.Options{})
	exp, err := collector.NewExporter(collector.ExporterOptions{Namespace: "dramatiq", OnRead: hist.Record},
		collector.Sources{Broker: broker.NewReader(client, broker.Options{MaxQueues: 0})})
	if err != nil {
		t.Fatal(err)
	}
	src := server.NewStatusSource(server.StatusOptions{Exporter: exp, Thresholds: status.DefaultThresholds(), Timeout: 2 * time.Second, History: hist})
	srv := httptest.NewServer(src.APIHandler())
	defer srv.Close()
	var wg sync.WaitGroup
	var ok, busy, failed atomic.Int32
	for range 3 {
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(srv.URL + "?history=1")
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var st status.Status
				switch resp.StatusCode {
				case 503:
					busy.Add(1)
				case 200:
					if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
						t.Error(err)
					} else if !st.Components.Redis.Up {
						failed.Add(1)
					} else {
						ok.Add(1)
					}
				default:
					t.Errorf("answer %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("%d answers whole, %d turned away, %d with a failed read", ok.Load(), busy.Load(), failed.Load())
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Errorf("%d answers say Redis failed (%d whole, %d turned away)", failed.Load(), ok.Load(), busy.Load())
	}
}
