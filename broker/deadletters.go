package broker

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
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
}

// DeadLetterOptions configure RecentDeadLetters.
type DeadLetterOptions struct {
	// Limit per queue, at most MaxRecentDeadLetters (0: that maximum).
	Limit int
	// WithArgs decodes args and kwargs. Off by default because message
	// arguments often hold personal data or secrets.
	WithArgs bool
}

// RecentDeadLetters reads the newest dead letters of each queue in two
// pipelined round trips: ZREVRANGE of each XQ with a limit, then one HMGET of
// exactly those ids. Its cost is bounded by queues × limit, never by the
// size of a dead-letter queue. Queues with none are left out of the map.
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
	ranges := make([]*redis.ZSliceCmd, len(queues))
	for i, q := range queues {
		ranges[i] = pipe.ZRevRangeWithScores(ctx, r.keys.dead(q), 0, int64(limit-1))
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}

	pipe = r.client.Pipeline()
	bodies := make([]*redis.SliceCmd, len(queues))
	n := 0
	for i, q := range queues {
		if err := r.check(ranges[i].Err()); err != nil {
			return nil, err
		}
		zs := ranges[i].Val()
		if len(zs) == 0 {
			continue
		}
		ids := make([]string, 0, len(zs))
		for _, z := range zs {
			id, _ := z.Member.(string)
			ids = append(ids, id)
		}
		bodies[i] = pipe.HMGet(ctx, r.keys.deadMsgs(q), ids...)
		n++
	}
	if n == 0 {
		return out, nil
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}
	for i, q := range queues {
		if bodies[i] == nil {
			continue
		}
		if err := r.check(bodies[i].Err()); err != nil {
			return nil, err
		}
		zs := ranges[i].Val()
		vals := bodies[i].Val()
		list := make([]DeadLetter, 0, len(zs))
		for j, z := range zs {
			id, _ := z.Member.(string)
			d := DeadLetter{RedisID: id, DeadLetteredAt: time.UnixMilli(int64(z.Score))}
			var body string
			if j < len(vals) {
				body, _ = vals[j].(string)
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

// decodeDeadLetter fills d from a Dramatiq JSON body. Only the fields shown
// are decoded; args and kwargs are not even kept unless withArgs.
func decodeDeadLetter(body string, withArgs bool, d *DeadLetter) bool {
	if body == "" {
		return false
	}
	var m struct {
		MessageID string `json:"message_id"`
		ActorName string `json:"actor_name"`
		Options   struct {
			Retries   *json.Number `json:"retries"`
			Traceback *string      `json:"traceback"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.MessageID == "" {
		return false
	}
	d.MessageID = m.MessageID
	d.Actor = m.ActorName
	if m.Options.Retries != nil {
		if v, err := m.Options.Retries.Int64(); err == nil {
			n := int(v)
			d.Retries = &n
		}
	}
	if m.Options.Traceback != nil {
		d.TracebackLast = lastLine(*m.Options.Traceback)
	}
	if withArgs {
		var a struct {
			Args   json.RawMessage `json:"args"`
			Kwargs json.RawMessage `json:"kwargs"`
		}
		if json.Unmarshal([]byte(body), &a) == nil {
			d.Args, d.Kwargs = a.Args, a.Kwargs
		}
	}
	return true
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
