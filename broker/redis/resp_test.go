package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/resp"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// hostileReplies are replies that used to crash or bloat the process
// through go-redis's parser: a makeslice panic, a fatal out-of-memory
// error, a fatal stack overflow, unbounded growth.
var hostileReplies = []struct {
	name string
	a    testserver.Answer
	// heap bounds what the failed read may allocate.
	heap uint64
}{
	{"bulk near int64 max", testserver.Reply("$9223372036854775800\r\n"), 8 << 20},
	{"bulk of 1e12 bytes", testserver.Reply("$1000000000000\r\n"), 8 << 20},
	{"verbatim of 1e12 bytes", testserver.Reply("=1000000000000\r\n"), 8 << 20},
	{"blob error of 1e12 bytes", testserver.Reply("!1000000000000\r\n"), 8 << 20},
	{"array near int64 max", testserver.Reply("*9223372036854775807\r\n"), 8 << 20},
	{"array of 1e12", testserver.Reply("*1000000000000\r\n"), 8 << 20},
	{"map of 1e12", testserver.Reply("%1000000000000\r\n"), 8 << 20},
	{"push of 1e12", testserver.Reply(">1000000000000\r\n"), 8 << 20},
	{"20 million nested arrays", testserver.Stream("", "*1\r\n", 20_000_000), 8 << 20},
	{"20 million attributes", testserver.Stream("", "|0\r\n", 20_000_000), 8 << 20},
	{"endless line", testserver.Stream("+", "a", -1), 8 << 20},
	{"endless length header", testserver.Stream("*", "0", -1), 8 << 20},
	// Framed as RESP allows, but more than any reply the exporter
	// reads: refused at 32 MiB, instead of read to the end.
	{"a gigabyte of 1 MiB strings", testserver.Stream("*1024\r\n", "$1048576\r\n"+strings.Repeat("x", 1<<20)+"\r\n", 1024), 64 << 20},
	{"2 million elements in nested arrays", testserver.Stream("*2000\r\n", "*1000\r\n"+strings.Repeat(":1\r\n", 1000), 2000), 96 << 20},
}

// allocated runs f and returns what it allocated on the heap: an upper
// bound of how much the heap grew.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// wantRefused asserts that err is the RESP bound's, quickly.
func wantRefused(t *testing.T, err error, took time.Duration) {
	t.Helper()
	var re *resp.Error
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a refused reply", err)
	}
	if took > 5*time.Second {
		t.Fatalf("refused after %v", took)
	}
	if len(err.Error()) > 300 {
		t.Fatalf("error text of %d bytes", len(err.Error()))
	}
}

// A Redis whose replies break RESP's bounds fails the read at once, with
// the process whole and its heap bounded; the same client reads again
// once the address serves a real Redis.
func TestHostileRepliesFailTheReadAndRecover(t *testing.T) {
	real := testserver.StartRedis(t)
	b := real.NewBroker(t, "dramatiq")
	b.Enqueue("default", 3, time.Now().Add(-time.Minute))
	for _, c := range hostileReplies {
		t.Run(c.name, func(t *testing.T) {
			h := testserver.StartHostile(t, c.a)
			client, err := NewClient(ClientOptions{URL: h.URL(), Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			reader := NewReader(client, Options{Queues: []string{"default"}, SkipDiscovery: true})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// The generic parser (Do), which used to recurse and
			// allocate as told, and the reader's own pipeline.
			var err1, err2 error
			var took time.Duration
			heap := allocated(func() {
				begin := time.Now()
				err1 = client.Do(ctx, "get", "x").Err()
				_, err2 = reader.Snapshot(ctx)
				took = time.Since(begin)
			})
			wantRefused(t, err1, took)
			// The pipeline's first command expects a bulk string: go-redis
			// may refuse an aggregate header itself, before a bound does.
			if err2 == nil {
				t.Fatal("the reader's read succeeded")
			}
			if heap > c.heap {
				t.Fatalf("the failed reads allocated %d MiB, want at most %d", heap>>20, c.heap>>20)
			}
			t.Logf("refused in %v, %.1f MiB allocated: %v", took, float64(heap)/(1<<20), err1)

			h.Heal(real.Addr)
			snap, err := reader.Snapshot(ctx)
			if err != nil {
				t.Fatalf("after healing: %v", err)
			}
			if len(snap.Queues) != 1 || snap.Queues[0].Ready != 3 {
				t.Fatalf("after healing: %+v", snap.Queues)
			}
		})
	}
}

// A Sentinel is parsed by go-redis too, partly in goroutines of its own:
// a hostile answer to get-master-addr-by-name fails the read, and a
// hostile message on the +switch-master subscription closes that
// subscription; neither reaches the parser.
func TestHostileSentinelFailsTheReadAndRecovers(t *testing.T) {
	real := testserver.StartRedis(t)
	b := real.NewBroker(t, "dramatiq")
	b.Enqueue("default", 2, time.Now().Add(-time.Minute))
	host, port, _ := net.SplitHostPort(real.Addr)
	for _, c := range hostileReplies[:12] {
		t.Run(c.name, func(t *testing.T) {
			h := testserver.StartHostile(t, testserver.SentinelAnswer(c.a))
			client, err := NewClient(ClientOptions{
				URL: "redis://localhost/0", Timeout: 10 * time.Second,
				Sentinel: &SentinelOptions{Addrs: []string{h.Addr}, Master: "mymaster"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			reader := NewReader(client, Options{Queues: []string{"default"}, SkipDiscovery: true})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			begin := time.Now()
			_, err = reader.Snapshot(ctx)
			took := time.Since(begin)
			// go-redis reads the answer as strings: it may refuse an
			// aggregate header itself, before a bound does.
			if err == nil {
				t.Fatal("the read succeeded")
			}
			if took > 5*time.Second {
				t.Fatalf("failed after %v", took)
			}
			h.Set(testserver.SentinelAnswer(testserver.MasterAddr(host, port)))
			snap, err := reader.Snapshot(ctx)
			if err != nil {
				t.Fatalf("after healing: %v", err)
			}
			if len(snap.Queues) != 1 || snap.Queues[0].Ready != 2 {
				t.Fatalf("after healing: %+v", snap.Queues)
			}
		})
	}

	t.Run("hostile +switch-master message", func(t *testing.T) {
		master := testserver.MasterAddr(host, port)
		h := testserver.StartHostile(t, func(w io.Writer, cmd []string) error {
			if strings.EqualFold(cmd[0], "subscribe") {
				// The subscription's confirmation, then a message no
				// parser should see.
				if err := testserver.SentinelAnswer(master)(w, cmd); err != nil {
					return err
				}
				_, err := io.WriteString(w, ">3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n"+strings.Repeat("*1\r\n", 20_000_000))
				return err
			}
			return testserver.SentinelAnswer(master)(w, cmd)
		})
		client, err := NewClient(ClientOptions{
			URL: "redis://localhost/0", Timeout: 10 * time.Second,
			Sentinel: &SentinelOptions{Addrs: []string{h.Addr}, Master: "mymaster"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		reader := NewReader(client, Options{Queues: []string{"default"}, SkipDiscovery: true})
		begin := time.Now()
		// go-redis's subscription goroutine reads the message while
		// these reads go on; the process must outlive it. Without the
		// bound, its recursion overflows the stack (fatal) within a
		// second or two here.
		for i := 0; time.Since(begin) < 4*time.Second; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			snap, err := reader.Snapshot(ctx)
			cancel()
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			if len(snap.Queues) != 1 || snap.Queues[0].Ready != 2 {
				t.Fatalf("read %d: %+v", i, snap.Queues)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// Real replies of every shape the exporter meets pass the bound: RESP2
// and RESP3, TLS aside, pipelined, a 1 MiB body, a HELLO, nested
// replies, a transaction, pub/sub.
func TestRealRepliesPassTheBound(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	body := strings.Repeat("b", MaxHeadBodyBytes)
	if err := r.Admin.HSet(ctx, "h", "big", body, "small", "x").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		r.Admin.ZAdd(ctx, "z", goredis.Z{Score: float64(i), Member: fmt.Sprint("m", i)})
	}
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("RESP", proto), func(t *testing.T) {
			client, err := NewClient(ClientOptions{URL: fmt.Sprintf("%s?protocol=%d", r.URL(), proto), Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if got, err := client.HGet(ctx, "h", "big").Result(); err != nil || got != body {
				t.Fatalf("HGET of 1 MiB: %d bytes, %v", len(got), err)
			}
			pipe := client.Pipeline()
			cmds := []goredis.Cmder{
				pipe.Do(ctx, "hello", proto),
				pipe.ZRangeWithScores(ctx, "z", 0, -1),
				pipe.Do(ctx, "zrange", "z", 0, -1, "withscores"),
				pipe.HGetAll(ctx, "h"),
				pipe.Info(ctx, "all"),
				pipe.Do(ctx, "command", "info", "get", "zrange"),
				pipe.Do(ctx, "client", "info"),
				pipe.Do(ctx, "memory", "stats"),
				pipe.Scan(ctx, 0, "*", 1000),
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			for _, c := range cmds {
				if c.Err() != nil {
					t.Fatalf("%v: %v", c.Args(), c.Err())
				}
			}
			tx, err := client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
				p.ZRange(ctx, "z", 0, 10)
				p.HGet(ctx, "h", "small")
				return nil
			})
			if err != nil || len(tx) != 2 {
				t.Fatalf("MULTI/EXEC: %v", err)
			}
			sub := client.Subscribe(ctx, "ch")
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.Admin.Publish(ctx, "ch", body).Err(); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.ReceiveMessage(ctx)
			if err != nil || msg.Payload != body {
				t.Fatalf("pub/sub message: %v", err)
			}
		})
	}
}

// A unix:// URL goes through the bound too.
func TestUnixSocketRepliesAreBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "redis.sock")
	h := testserver.StartHostileUnix(t, path, testserver.Reply("$1000000000000\r\n"))
	client, err := NewClient(ClientOptions{URL: "unix://" + path + "?db=0", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	err = client.Do(ctx, "get", "x").Err()
	wantRefused(t, err, time.Since(begin))
	h.Set(testserver.Reply("$2\r\nok\r\n"))
	if got, err := client.Do(ctx, "get", "x").Text(); err != nil || got != "ok" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
}

// panicOnce is a go-redis hook that panics in the first SCAN, as a bug in
// the client or the reader would.
type panicOnce struct{ done bool }

func (h *panicOnce) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *panicOnce) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() == "scan" && !h.done {
			h.done = true
			panic("a bug in SCAN")
		}
		return next(ctx, cmd)
	}
}
func (h *panicOnce) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// Background discovery runs in a goroutine of its own: a panic there is a
// failed page, retried, not the end of the process.
func TestBackgroundDiscoveryPanicIsAFailedPage(t *testing.T) {
	r := testserver.StartRedis(t)
	r.NewBroker(t, "dramatiq").Enqueue("reports", 1, time.Now())
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.AddHook(&panicOnce{})
	reader := NewReader(client, Options{DiscoveryInterval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reader.Start(ctx)
	deadline := time.Now().Add(time.Minute)
	for reader.DiscoveryStatus().Passes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no pass completed after the panic")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if queues, _, _ := reader.queueList(); len(queues) != 1 || queues[0] != "reports" {
		t.Fatalf("queues %v", queues)
	}
}
