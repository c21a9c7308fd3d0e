package redis

import (
	"fmt"
	"math"
	"strconv"

	"context"
	goredis "github.com/redis/go-redis/v9"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// errorReader builds a reader of queue "q" that always reads it (no SCAN).
func errorReader(t *testing.T, url string) *Reader {
	t.Helper()
	client, err := NewClient(ClientOptions{URL: url, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true})
}

func wantReadError(t *testing.T, r *Reader, class string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := r.Snapshot(ctx)
	if err == nil {
		t.Fatalf("%s: Snapshot returned no error: %+v", class, snap)
	}
	if !strings.Contains(err.Error(), class) {
		t.Fatalf("Snapshot error = %v, want %s", err, class)
	}
}

func TestErrorNOAUTHAfterRestartWithPassword(t *testing.T) {
	r := testserver.StartRedis(t)
	reader := errorReader(t, r.URL())
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("q", 3, time.Now())
	if _, err := reader.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Redis now demands a password the exporter does not have; the pooled
	// connection was authenticated before, so also drop it.
	if err := r.Admin.ConfigSet(context.Background(), "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	r.Admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	wantReadError(t, reader, "NOAUTH")
}

func TestErrorNOAUTHOnFreshConnection(t *testing.T) {
	r := testserver.StartRedis(t, "--requirepass", "s3cret")
	reader := errorReader(t, r.URL())
	wantReadError(t, reader, "NOAUTH")
	if dls, err := reader.RecentDeadLetters(context.Background(), []string{"q"}, DeadLetterOptions{}); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("RecentDeadLetters = %v, %v; want NOAUTH", dls, err)
	}
}

func TestErrorNOPERM(t *testing.T) {
	r := testserver.StartRedis(t)
	url := r.ReadOnlyUser(t, "ro", "pw")
	ctx := context.Background()
	if res, err := r.Admin.Do(ctx, "ACL", "SETUSER", "ro", "-llen").Result(); err != nil || res != "OK" {
		t.Fatalf("ACL SETUSER: %v %v", res, err)
	}
	r.NewBroker(t, "dramatiq").Enqueue("q", 2, time.Now())
	wantReadError(t, errorReader(t, url), "NOPERM")
}

// Denying INFO only leaves the Redis gauges absent (NaN); the queue numbers
// are still read. Denying anything else fails the read (TestErrorNOPERM).
func TestInfoDeniedIsAbsentNotAFailure(t *testing.T) {
	r := testserver.StartRedis(t)
	url := r.ReadOnlyUser(t, "ro", "pw")
	if res, err := r.Admin.Do(context.Background(), "ACL", "SETUSER", "ro", "-info").Result(); err != nil || res != "OK" {
		t.Fatalf("ACL SETUSER: %v %v", res, err)
	}
	r.NewBroker(t, "dramatiq").Enqueue("q", 2, time.Now())
	snap, err := errorReader(t, url).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Queues[0].Ready != 2 || !math.IsNaN(snap.MemoryUsedBytes) || !math.IsNaN(snap.ConnectedClients) {
		t.Fatalf("snapshot = %+v, memory %v clients %v", snap.Queues, snap.MemoryUsedBytes, snap.ConnectedClients)
	}
}

// A script that runs past busy-reply-threshold makes Redis answer BUSY to
// everyone else.
func TestErrorBUSY(t *testing.T) {
	r := testserver.StartRedis(t, "--busy-reply-threshold", "50")
	r.NewBroker(t, "dramatiq").Enqueue("q", 2, time.Now())
	reader := errorReader(t, r.URL())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Returns with an error once SCRIPT KILL stops it.
		r.Admin.Eval(context.Background(), "while true do end", nil)
	}()
	t.Cleanup(func() { <-done })
	killer := goredis.NewClient(&goredis.Options{Addr: r.Addr, MaxRetries: -1})
	defer killer.Close()
	defer killer.ScriptKill(context.Background())
	// Wait until the script is past the threshold.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(fmt.Sprint(killer.Ping(context.Background()).Err()), "BUSY") {
		if time.Now().After(deadline) {
			t.Fatal("Redis never answered BUSY")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantReadError(t, reader, "BUSY")
}

// A replica that may not serve stale data answers MASTERDOWN while its
// master is gone.
func TestErrorMASTERDOWN(t *testing.T) {
	gone := testserver.FreePort(t)
	r := testserver.StartRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(gone), "--replica-serve-stale-data", "no")
	wantReadError(t, errorReader(t, r.URL()), "MASTERDOWN")
}

// A restarted Redis answers LOADING until its RDB is in memory.
// key-load-delay (a Redis test knob) slows loading down to a few seconds,
// and a small events interval lets Redis answer while it loads.
func TestErrorLOADING(t *testing.T) {
	r := testserver.StartRedis(t, "--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024")
	ctx := context.Background()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("q", 5, time.Now())
	pipe := r.Admin.Pipeline()
	for i := 0; i < 3000; i++ {
		pipe.Set(ctx, fmt.Sprintf("filler:%d", i), strings.Repeat("x", 100), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Admin.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	reader := errorReader(t, r.URL())
	r.Restart()
	wantReadError(t, reader, "LOADING")
}
