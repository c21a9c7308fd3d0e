package redis

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The fast path of the body decoder must agree with a full JSON parse on
// every valid body, and no input may panic it or yield a time outside
// 1970–9999 once millisTime has accepted it.
func FuzzMessageTimestamp(f *testing.F) {
	for _, s := range []string{
		`{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"message_id":"x","message_timestamp":1795727878791}`,
		`{"message_timestamp":1.7e12,"queue_name":"q"}`,
		`{"args":[",\"message_timestamp\":1}"],"message_timestamp":1700000000001}`,
		`{"message_timestamp":1,"message_timestamp":2}`,
		`{"a":{"message_timestamp":5}}`,
		`{"message_timestamp":253402300800000}`,
		`{"message_timestamp":-1e15}`,
		`{"message_timestamp":1e400}`,
		"\x80\x04\x95pickle",
		``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ms, ok := messageTimestamp(body)
		var full struct {
			MessageTimestamp *json.Number `json:"message_timestamp"`
		}
		if json.Valid([]byte(body)) && json.Unmarshal([]byte(body), &full) == nil && full.MessageTimestamp != nil {
			want, err := full.MessageTimestamp.Float64()
			if err != nil {
				want = math.Inf(1)
			}
			if !ok || (ms != want && !(math.IsNaN(ms) && math.IsNaN(want))) {
				t.Fatalf("messageTimestamp(%q) = %v %v, a full parse says %v", body, ms, ok, want)
			}
		}
		h := decodeHead("id", body)
		if h.outcome == headOK {
			checkTime(t, time.UnixMilli(h.ms))
		}
	})
}

// Whatever a dead-letter body holds, the decoder never panics and hands on
// only valid UTF-8 of bounded length and a non-negative retry count.
func FuzzDecodeDeadLetter(f *testing.F) {
	for _, s := range []string{
		`{"queue_name":"q","actor_name":"send","args":["a"],"kwargs":{},"options":{"redis_message_id":"r","retries":3,"traceback":"Traceback\nValueError: x\n"},"message_id":"m","message_timestamp":1}`,
		`{"actor_name":"send","options":{"retries":"3"},"message_id":"m1"}`,
		`{"actor_name":42,"options":[1,2],"message_id":{"x":1}}`,
		"{\"actor_name\":\"s\xffnd\",\"message_id\":\"m\"}",
		`{"options":{"retries":-4,"traceback":null}}`,
		`{"options":{"retries":1e99}}`,
		`[]`, `null`, ``, "\x80\x04pickle",
	} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, body string, withArgs bool) {
		var d DeadLetter
		ok := decodeDeadLetter(body, withArgs, &d)
		var obj map[string]json.RawMessage
		if isObject := json.Unmarshal([]byte(body), &obj) == nil && obj != nil; ok != isObject {
			t.Fatalf("decodeDeadLetter(%q) = %v, but is a JSON object: %v", body, ok, isObject)
		}
		for name, s := range map[string]string{"MessageID": d.MessageID, "Actor": d.Actor} {
			if !utf8.ValidString(s) || len(s) > maxIDLen+len("…") {
				t.Fatalf("%s = %q (%d bytes)", name, s, len(s))
			}
		}
		if !utf8.ValidString(d.TracebackLast) || len(d.TracebackLast) > maxTracebackLine+len("…") || strings.Contains(d.TracebackLast, "\n") {
			t.Fatalf("TracebackLast = %q", d.TracebackLast)
		}
		if d.Retries != nil && *d.Retries < 0 {
			t.Fatalf("Retries = %d", *d.Retries)
		}
		if !withArgs && (d.Args != nil || d.Kwargs != nil) {
			t.Fatal("args decoded without WithArgs")
		}
		if d.Args != nil && !json.Valid(d.Args) || d.Kwargs != nil && !json.Valid(d.Kwargs) {
			t.Fatalf("invalid JSON handed on: %s %s", d.Args, d.Kwargs)
		}
	})
}

// Whatever bytes a key holds, classification never panics, and whatever it
// accepts as a queue is a valid, bounded queue name: valid UTF-8, so a
// label can carry it.
func FuzzClassify(f *testing.F) {
	const wid = "d6983b7f-ea1b-4058-9567-f011eba61602"
	for _, s := range []string{
		"emails", "emails.DQ", "emails.msgs", "emails.DQ.msgs", "emails.XQ", "emails.XQ.msgs", "emails.acks",
		"__heartbeats__", "__acks__." + wid + ".emails", "__acks__." + wid + ".emails.DQ",
		"__acks__." + wid + ".q\xff\xfebad", "q\xff\xfebad", "caf\xc3\xa9", strings.Repeat("q", 300), "", ".DQ", "__acks__.",
	} {
		for _, typ := range []string{"list", "hash", "zset", "set"} {
			f.Add(s, typ)
		}
	}
	f.Fuzz(func(t *testing.T, rest, typ string) {
		c := classify(rest, typ)
		switch c.kind {
		case kindQueue, kindAck:
			if !validQueueName(c.queue) {
				t.Fatalf("classify(%q, %q) = queue %q, not a valid queue name", rest, typ, c.queue)
			}
			if !utf8.ValidString(c.queue) || len(c.queue) > maxQueueNameLen {
				t.Fatalf("classify(%q, %q) = queue %q", rest, typ, c.queue)
			}
			if c.kind == kindAck && len(c.wid) != workerIDLen {
				t.Fatalf("classify(%q, %q) = worker id %q", rest, typ, c.wid)
			}
		case kindLegacyAcks:
			if c.queue != "" {
				t.Fatalf("a legacy ack set carries queue %q", c.queue)
			}
		}
		if !utf8.ValidString(rest) && (c.kind == kindQueue || c.kind == kindAck) {
			t.Fatalf("classify(%q, %q) accepted a key that is not valid UTF-8", rest, typ)
		}
	})
}

// millisTime is the one gate for times read from Redis: what it accepts is
// between 1970 and 9999 and can be marshalled to JSON; NaN and ±Inf never
// pass.
func FuzzMillisTime(f *testing.F) {
	for _, v := range []float64{0, 1795727878791, 253402300799999, 253402300800000, 1e300, -1e15, -1, math.Inf(1), math.Inf(-1), math.NaN(), 0.5, math.Copysign(0, -1)} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, ms float64) {
		at, ok := millisTime(ms)
		if !ok {
			if !at.IsZero() {
				t.Fatalf("millisTime(%v) rejected but returned %v", ms, at)
			}
			if ms >= 0 && ms <= maxMillis {
				t.Fatalf("millisTime(%v) rejected a time in range", ms)
			}
			return
		}
		if math.IsNaN(ms) || math.IsInf(ms, 0) {
			t.Fatalf("millisTime(%v) accepted", ms)
		}
		checkTime(t, at)
	})
}

func checkTime(t *testing.T, at time.Time) {
	t.Helper()
	if y := at.UTC().Year(); y < 1970 || y > 9999 {
		t.Fatalf("time %v out of range", at)
	}
	if _, err := at.MarshalJSON(); err != nil {
		t.Fatalf("time %v: %v", at, err)
	}
}

// Whatever a dead letter's body holds, its actor is either not found or a
// non-empty, valid UTF-8 label value of bounded length that is never one
// of the fixed values, and a full parse of a valid body agrees with it.
func FuzzActorName(f *testing.F) {
	for _, s := range []string{
		`{"queue_name":"q","actor_name":"send_email","args":["a"],"kwargs":{},"options":{},"message_id":"m","message_timestamp":1}`,
		`{"args":[{"actor_name":"inner"}],"actor_name":"outer"}`,
		`{"actor_name":7}`,
		`{"actor_name":""}`,
		`{"actor_name":"__unknown__"}`,
		"{\"actor_name\":\"s\xffnd\"}",
		`{"actor_name":"a","actor_name":"b"}`,
		`{"queue_name":"q",`,
		`["actor_name","x"]`,
		"\x80\x04\x95pickle",
		``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		name, ok := actorName(body)
		if fast, fok := actorNameFast(body); fok {
			if slow, sok := actorNameStream(body); !sok || slow != fast {
				t.Fatalf("actorName(%q): fast path %q, streaming decoder %q %v", body, fast, slow, sok)
			}
		}
		if !ok {
			return
		}
		if name == "" || !utf8.ValidString(name) || len(name) > maxActorNameBytes+len("…") || name == ActorUnknown || name == ActorOther {
			t.Fatalf("actorName(%q) = %q", body, name)
		}
		var full struct {
			ActorName *string `json:"actor_name"`
		}
		// A full parse keeps the last of duplicate keys; the stream the
		// first. Only bodies with one actor_name, and no escape that could
		// spell another, must agree. encoding/json also matches keys case
		// insensitively ("ACTOR_NAME"), where Dramatiq's Python json does
		// not, so such a body has no Go reference either.
		if json.Valid([]byte(body)) && strings.Count(strings.ToLower(body), `"actor_name"`) == 1 && !strings.Contains(body, `\u`) && json.Unmarshal([]byte(body), &full) == nil && full.ActorName != nil {
			if want := actorLabel(*full.ActorName); want != name {
				t.Fatalf("actorName(%q) = %q, a full parse says %q", body, name, want)
			}
		}
	})
}

// Two actor names that clipping keeps apart are never merged into one label
// value, and no name becomes a fixed value.
func FuzzActorLabel(f *testing.F) {
	for _, p := range [][2]string{
		{"__other__", "(other)"},
		{"(other)", "(other)_"},
		{"(other)_", "(other)__"},
		{"(unknown)", "(unknown)_"},
		{"(other)x", "(other)"},
		{"send_email", "(unknown)"},
		{strings.Repeat("_", maxActorNameBytes-len("(other)")), "(other)" + strings.Repeat("_", maxActorNameBytes-len("(other)"))},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		la, lb := actorLabel(a), actorLabel(b)
		for _, l := range []string{la, lb} {
			if l == ActorUnknown || l == ActorOther {
				t.Fatalf("actorLabel gave the fixed value %q", l)
			}
		}
		if la == lb && clipTo(a, maxActorNameBytes) != clipTo(b, maxActorNameBytes) {
			t.Fatalf("actorLabel(%q) = actorLabel(%q) = %q", a, b, la)
		}
	})
}
