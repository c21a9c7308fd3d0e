package redis

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"
)

// MaxRecentDeadLetters caps how many dead letters RecentDeadLetters reads per
// queue, whatever the caller asks: the status page must stay cheap on a
// dead-letter queue of millions.
const MaxRecentDeadLetters = 20

// maxTracebackLine bounds the traceback line we pass on: exception messages
// can embed arbitrarily large values.
const maxTracebackLine = 500

// DeadLetter is one dead-lettered message, newest first in the lists
// RecentDeadLetters returns. Fields a body lacks are left zero.
type DeadLetter struct {
	// RedisID is the hash field (options.redis_message_id): the id of the
	// message's last enqueue. It is kept for matching a body that could not
	// be decoded.
	RedisID        string
	MessageID      string
	Actor          string
	DeadLetteredAt time.Time
	// Retries is options.retries of the body stored at the last enqueue, nil
	// when absent. Dramatiq dead-letters the body it last enqueued, so this
	// is the failure count before the final attempt (see "Dead-letter bodies"
	// in docs/dramatiq-redis-layout.md).
	Retries *int
	// TracebackLast is the last non-empty line of options.traceback, i.e.
	// the exception of the failure that led to the last retry, if any.
	TracebackLast string
	// Args and Kwargs are user data: filled only when asked for.
	Args, Kwargs json.RawMessage
	// Undecodable is true when the body was missing or not Dramatiq JSON
	// (a custom encoder); only RedisID and DeadLetteredAt are set then.
	Undecodable bool
	// Oversize is true when the body was larger than MaxHeadBodyBytes, or
	// beyond what one read fetches in total, and so was not read; only
	// RedisID and DeadLetteredAt are set then.
	Oversize bool
}

// DeadLetterOptions configure RecentDeadLetters.
type DeadLetterOptions struct {
	// Limit per queue, at most MaxRecentDeadLetters (0: that maximum).
	Limit int
	// WithArgs decodes args and kwargs. Off by default because message
	// arguments often hold personal data or secrets.
	WithArgs bool
}

// RecentDeadLetters reads the newest dead letters of each queue in three
// pipelined round trips: ZREVRANGE of each XQ with a limit, HSTRLEN of
// exactly those ids, then one HMGET of the bodies small enough to read (a
// dead letter's body holds its arguments, of any size, like a head's). Its
// cost is bounded by queues × limit, and its memory by maxHeadBytesPerRead,
// never by the size of a dead-letter queue or of a message. Queues with none
// are left out of the map.
func (r *Reader) RecentDeadLetters(ctx context.Context, queues []string, o DeadLetterOptions) (map[string][]DeadLetter, error) {
	limit := o.Limit
	if limit <= 0 || limit > MaxRecentDeadLetters {
		limit = MaxRecentDeadLetters
	}
	out := map[string][]DeadLetter{}
	if len(queues) == 0 {
		return out, nil
	}

	pipe := r.client.Pipeline()
	ranges := make([]*goredis.ZSliceCmd, len(queues))
	for i, q := range queues {
		ranges[i] = pipe.ZRevRangeWithScores(ctx, r.keys.dead(q), 0, int64(limit-1))
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}

	// Round trip 2: the size of each body, so that none over the limit is
	// ever read.
	pipe = r.client.Pipeline()
	sizes := make([][]*goredis.IntCmd, len(queues))
	n := 0
	for i, q := range queues {
		if err := checkReply(ranges[i].Err()); err != nil {
			return nil, err
		}
		for _, z := range ranges[i].Val() {
			id, _ := z.Member.(string)
			if oversizeID(id) {
				// Not Dramatiq's: shown clipped, never sent back.
				sizes[i] = append(sizes[i], nil)
				continue
			}
			sizes[i] = append(sizes[i], pipe.HStrLen(ctx, r.keys.deadMsgs(q), id))
			n++
		}
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return nil, err
		}
	}

	// Round trip 3: the bodies that fit, newest first, within the budget.
	pipe = r.client.Pipeline()
	bodies := make([]*goredis.SliceCmd, len(queues))
	oversize := make([][]bool, len(queues))
	budget := int64(maxHeadBytesPerRead)
	n = 0
	for i, q := range queues {
		zs := ranges[i].Val()
		if len(zs) == 0 {
			continue
		}
		oversize[i] = make([]bool, len(zs))
		var ids []string
		for j, z := range zs {
			if sizes[i][j] == nil {
				oversize[i][j] = true
				continue
			}
			size, err := sizes[i][j].Result()
			if err := checkReply(err); err != nil {
				return nil, err
			}
			if size > MaxHeadBodyBytes || size > budget {
				oversize[i][j] = true
				continue
			}
			budget -= size
			id, _ := z.Member.(string)
			ids = append(ids, id)
		}
		if len(ids) > 0 {
			bodies[i] = pipe.HMGet(ctx, r.keys.deadMsgs(q), ids...)
			n++
		}
	}
	if n > 0 {
		if err := execPipe(ctx, pipe); err != nil {
			return nil, err
		}
	}
	for i, q := range queues {
		zs := ranges[i].Val()
		if len(zs) == 0 {
			continue
		}
		var vals []any
		if bodies[i] != nil {
			if err := checkReply(bodies[i].Err()); err != nil {
				return nil, err
			}
			vals = bodies[i].Val()
		}
		list := make([]DeadLetter, 0, len(zs))
		for j, z := range zs {
			id, _ := z.Member.(string)
			d := DeadLetter{RedisID: clip(id)}
			if at, ok := millisTime(z.Score); ok {
				d.DeadLetteredAt = at
			}
			if oversize[i][j] {
				d.Oversize = true
				list = append(list, d)
				continue
			}
			var body string
			if len(vals) > 0 {
				body, _ = vals[0].(string)
				vals = vals[1:]
			}
			if !decodeDeadLetter(body, o.WithArgs, &d) {
				d.Undecodable = true
			}
			list = append(list, d)
		}
		out[q] = list
	}
	return out, nil
}

// checkReply is Anomalies.check for reads that report no anomalies.
func checkReply(err error) error { return Anomalies{}.check(err) }

// decodeDeadLetter fills d from a Dramatiq JSON body, field by field: a
// field of an unexpected type (options.retries as a string, an actor name
// that is a number) is left zero, and the others are still decoded. The
// body is undecodable only when it is not a JSON object at all. Only the
// fields shown are decoded; args and kwargs are not even kept unless
// withArgs.
func decodeDeadLetter(body string, withArgs bool, d *DeadLetter) bool {
	var top map[string]json.RawMessage
	if body == "" || json.Unmarshal([]byte(body), &top) != nil || top == nil {
		return false
	}
	d.MessageID = clip(jsonString(top["message_id"]))
	d.Actor = clip(jsonString(top["actor_name"]))
	var opts map[string]json.RawMessage
	if json.Unmarshal(top["options"], &opts) == nil {
		var n int64
		if json.Unmarshal(opts["retries"], &n) == nil && opts["retries"] != nil && n >= 0 && n <= math.MaxInt32 {
			r := int(n)
			d.Retries = &r
		}
		if tb := jsonString(opts["traceback"]); tb != "" {
			d.TracebackLast = lastLine(tb)
		}
	}
	if withArgs {
		d.Args, d.Kwargs = validJSON(top["args"]), validJSON(top["kwargs"])
	}
	return true
}

// jsonString decodes a JSON string, or returns "" for anything else. The
// decoder turns invalid UTF-8 into U+FFFD, so the result is valid UTF-8.
func jsonString(raw json.RawMessage) string {
	var s string
	if raw == nil || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func validJSON(raw json.RawMessage) json.RawMessage {
	if raw == nil || !json.Valid(raw) {
		return nil
	}
	return raw
}

// maxIDLen bounds ids and actor names handed on: a writer can make them
// any size, and they end up in the API and on the status page.
const maxIDLen = 256

// clip shortens s to maxIDLen bytes on a rune boundary and makes it valid
// UTF-8 (a hash field, unlike a JSON string, is raw bytes).
func clip(s string) string { return clipTo(s, maxIDLen) }

// clipTo makes s valid UTF-8 and, when longer than max bytes, cuts it on a
// rune boundary at or below max and marks the cut with "…".
func clipTo(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// lastLine returns the last non-blank line, which in a Python traceback is
// "ExceptionType: message".
func lastLine(s string) string {
	s = strings.TrimRight(s, " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > maxTracebackLine {
		cut := maxTracebackLine
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
