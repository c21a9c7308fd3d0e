package testserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Broker writes Dramatiq state into a test Redis exactly as Dramatiq's
// broker script does (docs/dramatiq-redis-layout.md), so that tests can set
// up any situation without running Python. The conformance suite checks the
// same numbers against real Dramatiq.
type Broker struct {
	T  testing.TB
	C  *redis.Client
	NS string
}

// NewBroker builds state in namespace ns of r.
func (r *Redis) NewBroker(t testing.TB, ns string) *Broker {
	return &Broker{T: t, C: r.Admin, NS: ns}
}

// UUID returns a random 36-character uuid4 string, like Dramatiq's ids.
func UUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Message is what a Dramatiq message body holds, for tests that need
// other values than Body's.
type Message struct {
	Queue, Actor, ID string
	Args             []any
	Kwargs, Options  map[string]any
	Created          time.Time
}

// JSON is the body as Dramatiq's default encoder writes it: the fields in
// the order of its Message dataclass, compact, so that message_timestamp is
// the last key (a map would sort it elsewhere). Options gets
// redis_message_id rid, as the Redis broker adds it.
func (m Message) JSON(rid string) string {
	opts := map[string]any{"redis_message_id": rid}
	for k, v := range m.Options {
		opts[k] = v
	}
	kwargs := m.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	b, _ := json.Marshal(struct {
		QueueName        string         `json:"queue_name"`
		ActorName        string         `json:"actor_name"`
		Args             []any          `json:"args"`
		Kwargs           map[string]any `json:"kwargs"`
		Options          map[string]any `json:"options"`
		MessageID        string         `json:"message_id"`
		MessageTimestamp int64          `json:"message_timestamp"`
	}{m.Queue, m.Actor, m.Args, kwargs, opts, m.ID, m.Created.UnixMilli()})
	return string(b)
}

// Body is the body of a message of actor "task" with one argument, a new
// message id, created at created.
func Body(queue, rid string, created time.Time, options map[string]any) string {
	return Message{Queue: queue, Actor: "task", ID: UUID(), Args: []any{"secret-arg"}, Options: options, Created: created}.JSON(rid)
}

func (b *Broker) key(s string) string { return b.NS + ":" + s }

func (b *Broker) must(err error) {
	b.T.Helper()
	if err != nil {
		b.T.Fatal(err)
	}
}

// Enqueue adds n messages to queue q (or q.DQ for a delayed send) created
// at created, like the enqueue command: HSET .msgs then RPUSH.
func (b *Broker) Enqueue(q string, n int, created time.Time) []string {
	b.T.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	pipe := b.C.Pipeline()
	for i := range ids {
		ids[i] = UUID()
		pipe.HSet(ctx, b.key(q+".msgs"), ids[i], Body(q, ids[i], created, nil))
		pipe.RPush(ctx, b.key(q), ids[i])
	}
	_, err := pipe.Exec(ctx)
	b.must(err)
	return ids
}

// Fetch moves up to n ids from the head of q's list into worker wid's ack
// set, like the fetch command, and heartbeats wid at now.
func (b *Broker) Fetch(wid, q string, n int, now time.Time) []string {
	b.T.Helper()
	ctx := context.Background()
	var got []string
	for i := 0; i < n; i++ {
		id, err := b.C.LPop(ctx, b.key(q)).Result()
		if err == redis.Nil {
			break
		}
		b.must(err)
		b.must(b.C.SAdd(ctx, b.key("__acks__."+wid+"."+q), id).Err())
		got = append(got, id)
	}
	b.Heartbeat(wid, now)
	return got
}

// Ack removes a fetched message, like the ack command.
func (b *Broker) Ack(wid, q, id string) {
	b.T.Helper()
	ctx := context.Background()
	if n, _ := b.C.SRem(ctx, b.key("__acks__."+wid+"."+q), id).Result(); n > 0 {
		b.must(b.C.HDel(ctx, b.key(q+".msgs"), id).Err())
	}
}

// Heartbeat records a dispatch call of process wid at t.
func (b *Broker) Heartbeat(wid string, t time.Time) {
	b.T.Helper()
	b.must(b.C.ZAdd(context.Background(), b.key("__heartbeats__"), redis.Z{Score: float64(t.UnixMilli()), Member: wid}).Err())
}

// DeadLetter adds a dead-lettered message to q's XQ, nacked at at.
func (b *Broker) DeadLetter(q string, at time.Time, options map[string]any) string {
	b.T.Helper()
	ctx := context.Background()
	id := UUID()
	b.must(b.C.ZAdd(ctx, b.key(q+".XQ"), redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err())
	b.must(b.C.HSet(ctx, b.key(q+".XQ.msgs"), id, Body(q, id, at.Add(-time.Minute), options)).Err())
	return id
}

// Purge deletes every key of queue q, as Redis does when they empty out.
func (b *Broker) Purge(q string) {
	b.T.Helper()
	b.must(b.C.Del(context.Background(), b.key(q), b.key(q+".msgs"), b.key(q+".DQ"), b.key(q+".DQ.msgs"), b.key(q+".XQ"), b.key(q+".XQ.msgs")).Err())
}
