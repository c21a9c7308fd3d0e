package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

func hostileReader(t *testing.T, r *testserver.Redis, now time.Time) *Reader {
	t.Helper()
	client, err := NewClient(ClientOptions{URL: r.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return NewReader(client, Options{Now: func() time.Time { return now }})
}

// Keys are arbitrary bytes. invalid_queue_name counts, once per key and
// whatever the key's type, every key of the namespace from which no queue
// name can be read: every Dramatiq key shape built on a queue part that is
// not [a-zA-Z_][a-zA-Z0-9._-]* of at most 256 bytes (bytes that are not
// UTF-8, valid UTF-8 outside that set, over-long, empty), ack sets with a
// worker id that is not a uuid, foreign keys. None becomes a queue, none
// costs a TYPE, and the good queue beside them is read as usual.
func TestInvalidQueueNamesAreSkippedAndCounted(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("good", 2, now.Add(-time.Minute))
	wid := testserver.UUID()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(key, typ string) {
		t.Helper()
		switch typ {
		case "list":
			must(r.Admin.RPush(ctx, key, "rid").Err())
		case "hash":
			must(r.Admin.HSet(ctx, key, "rid", "{}").Err())
		case "zset":
			must(r.Admin.ZAdd(ctx, key, goredis.Z{Score: 1, Member: "rid"}).Err())
		case "set":
			must(r.Admin.SAdd(ctx, key, "rid").Err())
		case "string":
			must(r.Admin.Set(ctx, key, "x", 0).Err())
		default:
			t.Fatalf("type %s", typ)
		}
	}
	// Each shape Dramatiq writes, with the type it writes it with.
	shapes := []struct{ format, typ string }{
		{"%s", "list"}, {"%s.msgs", "hash"}, {"%s.DQ", "list"}, {"%s.DQ.msgs", "hash"},
		{"%s.XQ", "zset"}, {"%s.XQ.msgs", "hash"}, {"%s.acks", "zset"}, {"%s.DQ.acks", "zset"},
		{"__acks__." + wid + ".%s", "set"}, {"__acks__." + wid + ".%s.DQ", "set"},
	}
	badQueues := []string{
		"q\xff\xfebad", // not UTF-8
		"caf\xc3",      // truncated UTF-8
		"caf\u00e9",    // UTF-8, but not a queue name
		"has space", "cache:entry", "nul\x00byte", "a\n\"b\"",
		"1nvalid", ".hidden", "", // a bad first character, or none
		strings.Repeat("q", maxQueueNameLen+1), // one byte too long
		strings.Repeat("x", 1<<20),
	}
	hostile := 0
	for _, q := range badQueues {
		for i, sh := range shapes {
			// Half the keys have a type Dramatiq never gives that shape:
			// the count must not depend on it.
			typ := sh.typ
			if i%2 == 1 {
				typ = "string"
			}
			write("dramatiq:"+fmt.Sprintf(sh.format, q), typ)
			hostile++
		}
	}
	// Ack sets whose worker id is not what Dramatiq writes, on a good queue.
	for _, k := range []string{
		"__acks__.short.good", "__acks__.worker-1-not-a-uuid-but-36-bytes-xyz.good",
		"__acks__.0000000\xb50000000000000000000000000000.good", "__acks__." + wid, "__acks__.",
	} {
		write("dramatiq:"+k, "set")
		hostile++
	}
	// Keys that a queue could own but whose type says otherwise, the
	// heartbeat set of the wrong type and keys of other namespaces are
	// not counted: they are no invalid name.
	typed := []string{"dramatiq:good2", "dramatiq:good3.msgs", "dramatiq:good4.XQ"}
	for _, k := range typed {
		write(k, "string")
	}
	write("dramatiq:__heartbeats__", "string")
	write("other:q\xff", "list")
	write("dramatiqx:q\xff", "list")

	typesBefore := r.CommandCalls(t, "type")
	reader := hostileReader(t, r, now)
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Queues) != 1 || snap.Queues[0].Name != "good" || snap.Queues[0].Ready != 2 {
		t.Fatalf("queues = %v", snap.Queues)
	}
	if n := snap.Anomalies[AnomalyInvalidQueueName]; n != hostile {
		t.Fatalf("invalid_queue_name = %d, want %d, one per hostile key (%v)", n, hostile, snap.Anomalies)
	}
	// TYPE for dramatiq:good and good.msgs, and the three typed foreign keys.
	if n := r.CommandCalls(t, "type") - typesBefore; n != 2+len(typed) {
		t.Errorf("TYPE calls = %d, want %d: only keys a queue could own are typed", n, 2+len(typed))
	}
}

// Scores and timestamps a writer can set to anything are rejected in one
// place (millisTime): the newest dead-letter time and the oldest age are
// then absent, never garbage such as -9.2e15, and every time handed on can
// be marshalled to JSON.
func TestAbsurdScoresAndTimestamps(t *testing.T) {
	for _, score := range []float64{253402300800000, 1e300, math.Inf(1), math.Inf(-1), -1e15, -1} {
		t.Run(strings.ReplaceAll(json.Number(formatFloat(score)).String(), "+", ""), func(t *testing.T) {
			r := testserver.StartRedis(t)
			ctx := context.Background()
			now := time.Now()
			if err := r.Admin.ZAdd(ctx, "dramatiq:q.XQ", goredis.Z{Score: score, Member: "rid"}).Err(); err != nil {
				t.Fatal(err)
			}
			if err := r.Admin.HSet(ctx, "dramatiq:q.XQ.msgs", "rid", `{"message_id":"m","actor_name":"a","options":{},"message_timestamp":1}`).Err(); err != nil {
				t.Fatal(err)
			}
			// And a ready message whose message_timestamp is the same value.
			body := `{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"message_id":"m2","message_timestamp":` + formatFloat(score) + `}`
			if math.IsInf(score, 0) {
				body = `{"message_id":"m2","message_timestamp":1e400}`
			}
			r.Admin.HSet(ctx, "dramatiq:q.msgs", "head", body)
			r.Admin.RPush(ctx, "dramatiq:q", "head")
			reader := hostileReader(t, r, now)
			snap, err := reader.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			q := snap.Queues[0]
			if !q.DeadLetterLast.IsZero() || q.DeadLetter != 1 {
				t.Fatalf("dead letter last = %v (%d), want absent", q.DeadLetterLast, q.DeadLetter)
			}
			if q.OldestAgeKnown {
				t.Fatalf("oldest age = %v, want absent", q.OldestAge)
			}
			if n := snap.Anomalies[AnomalyInvalidTime]; n != 2 {
				t.Fatalf("invalid_time = %d, want 2", n)
			}
			dls, err := reader.RecentDeadLetters(ctx, []string{"q"}, DeadLetterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d := dls["q"]; len(d) != 1 || !d[0].DeadLetteredAt.IsZero() || d[0].MessageID != "m" {
				t.Fatalf("dead letters = %+v", dls)
			}
			if _, err := json.Marshal(dls); err != nil {
				t.Fatalf("marshal: %v", err)
			}
		})
	}
}

// Valid extremes are kept as they are.
func TestTimeBounds(t *testing.T) {
	for ms, ok := range map[float64]bool{0: true, 1795727878791: true, 253402300799999: true, 253402300800000: false, -0.5: false, math.NaN(): false} {
		at, got := millisTime(ms)
		if got != ok {
			t.Errorf("millisTime(%v) ok = %v", ms, got)
		}
		if got {
			if _, err := at.MarshalJSON(); err != nil {
				t.Errorf("millisTime(%v) = %v: %v", ms, at, err)
			}
		}
	}
}

func formatFloat(f float64) string {
	b, _ := json.Marshal(f)
	if math.IsInf(f, 0) {
		return "inf"
	}
	return string(b)
}

// The anomaly counts describe the data, not the audience: however many
// readers read, and however often, each read reports the same counts.
func TestAnomaliesIndependentOfReaders(t *testing.T) {
	r := testserver.StartRedis(t)
	ctx := context.Background()
	now := time.Now()
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("good", 1, now)
	r.Admin.HSet(ctx, "dramatiq:pickled.msgs", "rid", "\x80\x04\x95pickled")
	r.Admin.RPush(ctx, "dramatiq:pickled", "rid")
	r.Admin.SAdd(ctx, "dramatiq:__acks__."+testserver.UUID()+".q\xff\xfebad", "rid")
	r.Admin.Set(ctx, "dramatiq:wrong", "x", 0)
	want := map[string]int{AnomalyUndecodableBody: 1, AnomalyInvalidQueueName: 1}

	readers := []*Reader{hostileReader(t, r, now), hostileReader(t, r, now), hostileReader(t, r, now)}
	// Discover once per reader, then read many times, concurrently.
	for _, rd := range readers {
		if err := rd.Discover(ctx); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		a   Anomalies
		err error
	}
	results := make(chan result, 3*10)
	for _, rd := range readers {
		for i := 0; i < 10; i++ {
			go func() {
				s, err := rd.Snapshot(ctx)
				if err != nil {
					results <- result{err: err}
					return
				}
				results <- result{a: s.Anomalies}
			}()
		}
	}
	for i := 0; i < cap(results); i++ {
		res := <-results
		if res.err != nil {
			t.Fatal(res.err)
		}
		for _, k := range AnomalyKinds {
			if res.a[k] != want[k] {
				t.Fatalf("read %d: anomalies %v, want %v", i, res.a, want)
			}
		}
	}
}
