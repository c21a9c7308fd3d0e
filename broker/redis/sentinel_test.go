package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// After the sentinels named a wrong server that still answers, fixing the
// sentinels (SENTINEL REMOVE and MONITOR: no failover, so no
// +switch-master) brings the reader to the right server within a couple of
// scrapes, on real redis-server sentinels. Then the same in the other
// direction with the master the reader was on now a replica.
func TestSentinelReconfiguredByHand(t *testing.T) {
	g := testserver.StartSentinelGroup(t, "mymaster")
	wrong := testserver.StartRedis(t)
	now := time.Now()
	g.Master.NewBroker(t, "dramatiq").Enqueue("q", 3, now)
	wrong.NewBroker(t, "dramatiq").Enqueue("q", 7, now)

	point := func(r *testserver.Redis) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range g.Sentinels {
			if err := s.Client.Remove(ctx, g.Name).Err(); err != nil {
				t.Fatalf("SENTINEL REMOVE on %s: %v", s.Addr, err)
			}
			if err := s.Client.Monitor(ctx, g.Name, "127.0.0.1", strconv.Itoa(r.Port), "2").Err(); err != nil {
				t.Fatalf("SENTINEL MONITOR on %s: %v", s.Addr, err)
			}
		}
		if addr := g.MasterAddr(); addr != r.Addr {
			t.Fatalf("sentinels name %q, want %s", addr, r.Addr)
		}
	}
	point(wrong)

	client, err := NewClient(ClientOptions{URL: "redis://", Timeout: 3 * time.Second,
		Sentinel: &SentinelOptions{Addrs: g.Addrs(), Master: g.Name}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true})
	ready := func() int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		snap, err := reader.Snapshot(ctx)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		return snap.Queues[0].Ready
	}
	// Several scrapes fill the pool with connections to the wrong server.
	for range 3 {
		if n := ready(); n != 7 {
			t.Fatalf("ready = %d, want 7 (the server the sentinels name)", n)
		}
	}

	// Scrapes a Prometheus-like interval apart (longer than
	// masterCheckEvery): the second after the fix reads the right server
	// at the latest, and no scrape fails on the way.
	follow := func(want int64) {
		t.Helper()
		var got []int64
		for range 2 {
			time.Sleep(masterCheckEvery + 100*time.Millisecond)
			got = append(got, ready())
			if got[len(got)-1] == want {
				return
			}
		}
		t.Fatalf("ready after the fix = %v, want %d within 2 scrapes", got, want)
	}
	point(g.Master)
	follow(3)

	// The other way round, with the server read so far turned into a
	// replica of the one the sentinels now name. Their data is then the
	// same, so the connections tell which server is read.
	if err := g.Master.Admin.ReplicaOf(context.Background(), "127.0.0.1", strconv.Itoa(wrong.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	ours := func(r *testserver.Redis) int {
		t.Helper()
		list, err := r.Admin.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "name=dramatiq_exporter ")
	}
	if ours(g.Master) == 0 || ours(wrong) != 0 {
		t.Fatalf("before: %d connections to the old master, %d to the wrong server", ours(g.Master), ours(wrong))
	}
	point(wrong)
	for i := 0; ; i++ {
		time.Sleep(masterCheckEvery + 100*time.Millisecond)
		ready()
		if ours(wrong) > 0 && ours(g.Master) == 0 {
			break
		}
		if i == 1 {
			t.Fatalf("after 2 scrapes: %d connections to the replica, %d to the named master", ours(g.Master), ours(wrong))
		}
	}
}

// Hung sentinels cost a scrape a bounded part of its deadline (the check
// gets a quarter of it, once a second at most) and the master keeps being
// read over the connections the client has.
func TestSentinelsHungAfterConnecting(t *testing.T) {
	g := testserver.StartSentinelGroup(t, "mymaster")
	g.Master.NewBroker(t, "dramatiq").Enqueue("q", 3, time.Now())
	client, err := NewClient(ClientOptions{URL: "redis://", Timeout: 3 * time.Second,
		Sentinel: &SentinelOptions{Addrs: g.Addrs(), Master: g.Name}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	reader := NewReader(client, Options{Queues: []string{"q"}, SkipDiscovery: true})
	scrape := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		begin := time.Now()
		snap, err := reader.Snapshot(ctx)
		if err == nil && snap.Queues[0].Ready != 3 {
			t.Fatalf("ready = %d, want 3", snap.Queues[0].Ready)
		}
		return time.Since(begin), err
	}
	if _, err := scrape(); err != nil {
		t.Fatal(err)
	}
	for _, s := range g.Sentinels {
		if err := s.Freeze(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Thaw() })
	}
	for range 3 {
		time.Sleep(masterCheckEvery + 100*time.Millisecond)
		took, err := scrape()
		if err != nil {
			t.Fatalf("scrape with hung sentinels: %v", err)
		}
		// A quarter of 4 s for the check, plus the reads: far below 4 s.
		if took > 2500*time.Millisecond {
			t.Fatalf("scrape with hung sentinels took %v", took)
		}
	}
}
