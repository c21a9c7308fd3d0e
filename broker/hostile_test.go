package broker

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

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

// Keys are arbitrary bytes: a key whose queue part is not valid UTF-8, or
// absurdly long, is skipped at classification and counted; it never
// becomes a queue, and the good queue beside it is read as usual.
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
	must(r.Admin.SAdd(ctx, "dramatiq:__acks__."+wid+".q\xff\xfebad", "rid").Err())
	must(r.Admin.RPush(ctx, "dramatiq:bad\xc0queue", "rid").Err())
	must(r.Admin.HSet(ctx, "dramatiq:"+strings.Repeat("long", 1000)+".msgs", "rid", "{}").Err())
	reader := hostileReader(t, r, now)
	snap, err := reader.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Queues) != 1 || snap.Queues[0].Name != "good" || snap.Queues[0].Ready != 2 {
		t.Fatalf("queues = %v", snap.Queues)
	}
	for _, q := range snap.Queues {
		if !utf8.ValidString(q.Name) {
			t.Fatalf("queue name %q is not valid UTF-8", q.Name)
		}
	}
	if n := snap.Anomalies[AnomalyInvalidQueueName]; n != 3 {
		t.Fatalf("invalid_queue_name = %d, want 3 (%v)", n, snap.Anomalies)
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
			if err := r.Admin.ZAdd(ctx, "dramatiq:q.XQ", redis.Z{Score: score, Member: "rid"}).Err(); err != nil {
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
