package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// deadLetter writes one XQ entry the way nack does (ZADD score=ms, HSET body).
func deadLetter(t *testing.T, r *testserver.Redis, q, rid string, at time.Time, body string) {
	t.Helper()
	ctx := context.Background()
	if err := r.Admin.ZAdd(ctx, "dramatiq:"+q+".XQ", goredis.Z{Score: float64(at.UnixMilli()), Member: rid}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Admin.HSet(ctx, "dramatiq:"+q+".XQ.msgs", rid, body).Err(); err != nil {
		t.Fatal(err)
	}
}

func dramatiqBody(q, rid, msgID, actor string, options map[string]any) string {
	opts := map[string]any{"redis_message_id": rid}
	for k, v := range options {
		opts[k] = v
	}
	b, _ := json.Marshal(map[string]any{
		"queue_name": q, "actor_name": actor, "args": []any{"alice@example.com", 42},
		"kwargs": map[string]any{"token": "tok-SECRET"}, "options": opts,
		"message_id": msgID, "message_timestamp": 1795727878791,
	})
	return string(b)
}

// readerFor returns a reader that logs in as a user who may read, but may
// not run any command that walks a whole hash, so the test fails if
// RecentDeadLetters ever does.
func readerFor(t *testing.T, r *testserver.Redis) *broker.Reader {
	t.Helper()
	url := r.ReadOnlyUser(t, "status", "pw-status")
	ctx := context.Background()
	if res, err := r.Admin.Do(ctx, "ACL", "SETUSER", "status", "-hgetall", "-hscan", "-hvals", "-hkeys", "-zrange", "-zrangebyscore").Result(); err != nil || res != "OK" {
		t.Fatalf("ACL SETUSER: %v %v", res, err)
	}
	r.Admin.Do(ctx, "ACL", "LOG", "RESET")
	t.Cleanup(func() {
		if log := r.Admin.Do(context.Background(), "ACL", "LOG").Val(); log != nil && len(log.([]any)) > 0 {
			t.Errorf("a command outside the bounded read set was sent: %v", log)
		}
	})
	client, err := broker.NewClient(broker.ClientOptions{URL: url, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return broker.NewReader(client, broker.Options{})
}

func TestRecentDeadLetters(t *testing.T) {
	r := testserver.StartRedis(t)
	base := time.UnixMilli(1795727800000)
	// 25 in "emails": only the 20 newest come back, newest first.
	for i := 0; i < 25; i++ {
		rid := fmt.Sprintf("rid-%02d", i)
		deadLetter(t, r, "emails", rid, base.Add(time.Duration(i)*time.Second),
			dramatiqBody("emails", rid, fmt.Sprintf("msg-%02d", i), "send_email", map[string]any{
				"retries":           3,
				"traceback":         "Traceback (most recent call last):\n  File \"tasks.py\", line 9, in send_email\n    raise RuntimeError('boom %d')\nRuntimeError: boom " + fmt.Sprint(i) + "\n\n",
				"requeue_timestamp": 1795727881805,
			}))
	}
	// Dead-lettered without retrying: no retries, no traceback.
	deadLetter(t, r, "default", "rid-plain", base, dramatiqBody("default", "rid-plain", "msg-plain", "fail_no_retry", nil))
	// Another encoder's body, and an id whose body is gone.
	deadLetter(t, r, "default", "rid-pickle", base.Add(time.Second), "\x80\x04\x95pickled")
	if err := r.Admin.ZAdd(context.Background(), "dramatiq:default.XQ", goredis.Z{Score: float64(base.Add(2 * time.Second).UnixMilli()), Member: "rid-gone"}).Err(); err != nil {
		t.Fatal(err)
	}

	reader := readerFor(t, r)
	got, err := reader.RecentDeadLetters(context.Background(), []string{"default", "emails", "empty"}, broker.DeadLetterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["empty"]; ok || len(got) != 2 {
		t.Fatalf("queues = %v, want default and emails only", keysOf(got))
	}
	emails := got["emails"]
	if len(emails) != 20 {
		t.Fatalf("emails: %d dead letters, want 20", len(emails))
	}
	first, last := emails[0], emails[19]
	if first.MessageID != "msg-24" || last.MessageID != "msg-05" {
		t.Fatalf("order: first %s last %s, want msg-24 … msg-05", first.MessageID, last.MessageID)
	}
	if !first.DeadLetteredAt.Equal(base.Add(24*time.Second)) || first.Actor != "send_email" ||
		first.Retries == nil || *first.Retries != 3 || first.TracebackLast != "RuntimeError: boom 24" || first.RedisID != "rid-24" {
		t.Fatalf("first = %+v", first)
	}
	if first.Args != nil || first.Kwargs != nil {
		t.Fatalf("args decoded without WithArgs: %s %s", first.Args, first.Kwargs)
	}

	def := got["default"]
	if len(def) != 3 {
		t.Fatalf("default: %+v", def)
	}
	if d := def[0]; d.RedisID != "rid-gone" || !d.Undecodable || d.MessageID != "" {
		t.Fatalf("missing body: %+v", d)
	}
	if d := def[1]; d.RedisID != "rid-pickle" || !d.Undecodable {
		t.Fatalf("pickled body: %+v", d)
	}
	if d := def[2]; d.Undecodable || d.MessageID != "msg-plain" || d.Actor != "fail_no_retry" || d.Retries != nil || d.TracebackLast != "" {
		t.Fatalf("plain: %+v", d)
	}
}

func TestRecentDeadLettersArgsOnlyWhenAsked(t *testing.T) {
	r := testserver.StartRedis(t)
	deadLetter(t, r, "q", "rid", time.Now(), dramatiqBody("q", "rid", "m", "a", nil))
	reader := readerFor(t, r)
	got, err := reader.RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{WithArgs: true, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	d := got["q"][0]
	if string(d.Args) != `["alice@example.com",42]` || string(d.Kwargs) != `{"token":"tok-SECRET"}` {
		t.Fatalf("args %s kwargs %s", d.Args, d.Kwargs)
	}
}

func TestRecentDeadLettersLimit(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	for i := 0; i < 30; i++ {
		rid := fmt.Sprint(i)
		deadLetter(t, r, "q", rid, now.Add(time.Duration(i)*time.Millisecond), dramatiqBody("q", rid, rid, "a", nil))
	}
	reader := readerFor(t, r)
	for _, tc := range []struct{ limit, want int }{{3, 3}, {0, broker.MaxRecentDeadLetters}, {1000, broker.MaxRecentDeadLetters}} {
		got, err := reader.RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got["q"]) != tc.want {
			t.Errorf("limit %d: got %d, want %d", tc.limit, len(got["q"]), tc.want)
		}
	}
}

func TestRecentDeadLettersLongTraceback(t *testing.T) {
	r := testserver.StartRedis(t)
	huge := "ValueError: " + strings.Repeat("é", 2000)
	deadLetter(t, r, "q", "rid", time.Now(), dramatiqBody("q", "rid", "m", "a", map[string]any{"traceback": "Traceback …\n" + huge + "\n"}))
	got, err := readerFor(t, r).RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	line := got["q"][0].TracebackLast
	if !strings.HasPrefix(line, "ValueError: é") || !strings.HasSuffix(line, "…") || len(line) > 510 || !json.Valid([]byte(fmt.Sprintf("%q", line))) {
		t.Fatalf("line of %d bytes: %.40q…", len(line), line)
	}
}

func TestRecentDeadLettersRedisDown(t *testing.T) {
	r := testserver.StartRedis(t)
	client, err := broker.NewClient(broker.ClientOptions{URL: r.URL(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	reader := broker.NewReader(client, broker.Options{})
	r.Stop()
	if _, err := reader.RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{}); err == nil {
		t.Fatal("no error with Redis down")
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A field of an unexpected type blanks only that field: id, actor and time
// are still decoded.
func TestRecentDeadLettersUnexpectedFieldTypes(t *testing.T) {
	r := testserver.StartRedis(t)
	at := time.UnixMilli(1795727800000)
	bodies := map[string]string{
		"rid-retries-string": `{"queue_name":"q","actor_name":"send","args":[],"kwargs":{},"options":{"retries":"3","traceback":"Traceback\nValueError: x\n"},"message_id":"m1","message_timestamp":1}`,
		"rid-options-list":   `{"actor_name":"send","options":[1,2],"message_id":"m2"}`,
		"rid-actor-number":   `{"actor_name":42,"options":{"retries":2,"traceback":{"not":"a string"}},"message_id":"m3"}`,
		"rid-bad-utf8":       "{\"actor_name\":\"s\xffnd\",\"options\":{\"retries\":-4},\"message_id\":\"m4\"}",
	}
	i := 0
	for rid, body := range bodies {
		deadLetter(t, r, "q", rid, at.Add(time.Duration(i)*time.Second), body)
		i++
	}
	got, err := readerFor(t, r).RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]broker.DeadLetter{}
	for _, d := range got["q"] {
		byID[d.RedisID] = d
		if d.Undecodable || d.DeadLetteredAt.IsZero() {
			t.Errorf("%s: %+v", d.RedisID, d)
		}
	}
	if d := byID["rid-retries-string"]; d.MessageID != "m1" || d.Actor != "send" || d.Retries != nil || d.TracebackLast != "ValueError: x" {
		t.Errorf("retries as a string: %+v", d)
	}
	if d := byID["rid-options-list"]; d.MessageID != "m2" || d.Actor != "send" {
		t.Errorf("options as a list: %+v", d)
	}
	if d := byID["rid-actor-number"]; d.MessageID != "m3" || d.Actor != "" || d.Retries == nil || *d.Retries != 2 || d.TracebackLast != "" {
		t.Errorf("actor as a number: %+v", d)
	}
	if d := byID["rid-bad-utf8"]; d.MessageID != "m4" || d.Actor != "s\uFFFDnd" || d.Retries != nil {
		t.Errorf("invalid UTF-8: %+v", d)
	}
}

// A dead letter's body holds its arguments, of any size: one over
// MaxHeadBodyBytes is never read (its size is taken with HSTRLEN), and the
// others around it still decode.
func TestRecentDeadLettersOversizeBodyIsNotRead(t *testing.T) {
	r := testserver.StartRedis(t)
	now := time.Now()
	deadLetter(t, r, "q", "small-old", now.Add(-2*time.Second), dramatiqBody("q", "small-old", "m1", "first", nil))
	huge := dramatiqBody("q", "huge", "m2", "second", map[string]any{"pad": strings.Repeat("x", broker.MaxHeadBodyBytes)})
	deadLetter(t, r, "q", "huge", now.Add(-time.Second), huge)
	deadLetter(t, r, "q", "small-new", now, dramatiqBody("q", "small-new", "m3", "third", nil))
	before := r.CommandCalls(t, "hmget")
	got, err := readerFor(t, r).RecentDeadLetters(context.Background(), []string{"q"}, broker.DeadLetterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list := got["q"]
	if len(list) != 3 {
		t.Fatalf("got %d dead letters, want 3", len(list))
	}
	if list[0].Actor != "third" || list[2].Actor != "first" {
		t.Errorf("the small bodies did not decode: %+v", list)
	}
	if d := list[1]; !d.Oversize || d.Actor != "" || d.RedisID != "huge" || d.DeadLetteredAt.IsZero() {
		t.Errorf("oversize dead letter: %+v", d)
	}
	if n := r.CommandCalls(t, "hmget") - before; n != 1 {
		t.Errorf("%d HMGET calls, want 1 (of the two small bodies)", n)
	}
}
