package rabbitmq

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxNameBytes bounds a queue name: AMQP's short strings hold 255 bytes,
// so a longer name did not come from RabbitMQ.
const MaxNameBytes = 255

// maxValueText bounds a foreign value quoted in a Problem.
const maxValueText = 64

// columns are the only fields the reader asks for (the full answer is about
// seven times larger). message_stats.* appear only once non-zero.
const columns = "name,type,state,arguments,messages,messages_ready,messages_unacknowledged,consumers," +
	"message_stats.publish,message_stats.deliver_get,message_stats.redeliver"

// apiQueue is one element of GET /api/queues/{vhost}. Counts are pointers:
// RabbitMQ leaves them out of a queue whose statistics were not collected
// yet, and absent must stay absent.
type apiQueue struct {
	Name      json.RawMessage            `json:"name"`
	Type      json.RawMessage            `json:"type"`
	State     json.RawMessage            `json:"state"`
	Arguments map[string]json.RawMessage `json:"arguments"`
	Messages  *int64                     `json:"messages"`
	Ready     *int64                     `json:"messages_ready"`
	Unacked   *int64                     `json:"messages_unacknowledged"`
	Consumers *int64                     `json:"consumers"`
	// MessageStats is an object, or [] when columns= selected none of its
	// keys (an empty Erlang proplist), or absent before any statistics.
	MessageStats json.RawMessage `json:"message_stats"`
}

type messageStats struct {
	Redeliver *int64 `json:"redeliver"`
}

// rq is what is kept of one RabbitMQ queue: small and bounded, whatever
// the answer held.
type rq struct {
	name                                string
	typ, state                          string
	messages, ready, unacked, consumers Count
	redeliver                           Count
	dlx, dlrk                           *string // x-dead-letter-exchange/-routing-key; nil: not set
	badDLX, badDLRK                     bool    // set, but not a string
	maxPriority, ttl                    Count
	badMaxPriority, badTTL              bool
	others                              []string // other argument names, clipped
	// noDetails: known from counts alone (rabbitmq_prometheus), not yet
	// from a listing: type, state and arguments are unknown, not wrong.
	noDetails bool
}

// errMalformed wraps every complaint about the answer's shape.
var errMalformed = errors.New("malformed answer")

// decodeQueues streams the JSON array of GET /api/queues/{vhost}. It keeps
// only the fields above, so memory grows with the number of queues, not
// with what a hostile answer stuffs into each one (the caller bounds the
// bytes read). maxQueues bounds the elements.
func decodeQueues(r io.Reader, maxQueues int) (map[string]*rq, int, int, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, 0, 0, fmt.Errorf("%w: expected a JSON array of queues, got %s", errMalformed, tokenKind(tok))
	}
	queues := map[string]*rq{}
	n, anomalies := 0, 0
	for dec.More() {
		n++
		if n > maxQueues {
			return nil, 0, 0, fmt.Errorf("more than %d queues in the vhost (raise the limit)", maxQueues)
		}
		var a apiQueue
		if err := dec.Decode(&a); err != nil {
			return nil, 0, 0, fmt.Errorf("%w: queue %d: %v", errMalformed, n, err)
		}
		name, ok := jsonString(a.Name)
		if !ok {
			return nil, 0, 0, fmt.Errorf("%w: queue %d has no name", errMalformed, n)
		}
		if !utf8.ValidString(name) || len(name) > MaxNameBytes || name == "" {
			anomalies++
			continue
		}
		if _, dup := queues[name]; dup {
			anomalies++
			continue
		}
		q, err := keep(name, &a)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%w: queue %q: %v", errMalformed, clip(name, maxValueText), err)
		}
		queues[name] = q
	}
	if _, err := dec.Token(); err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %v", errMalformed, err)
	}
	// Nothing may follow the array.
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, 0, fmt.Errorf("%w: data after the array", errMalformed)
	}
	return queues, n, anomalies, nil
}

func tokenKind(t json.Token) string {
	switch t := t.(type) {
	case json.Delim:
		return "'" + t.String() + "'"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "something else"
}

// jsonString decodes a JSON string without the replacement of invalid
// UTF-8 that encoding/json does: a name that is not valid UTF-8 must be
// seen as such, not turned into another, valid name.
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	if !utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1]), true // invalid; the caller counts it
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func keep(name string, a *apiQueue) (*rq, error) {
	q := &rq{name: name, messages: count(a.Messages), ready: count(a.Ready), unacked: count(a.Unacked), consumers: count(a.Consumers)}
	for _, c := range []Count{q.messages, q.ready, q.unacked, q.consumers} {
		if c.OK && c.N < 0 {
			return nil, errors.New("a negative count")
		}
	}
	if ms := bytes.TrimSpace(a.MessageStats); len(ms) > 0 && !bytes.Equal(ms, []byte("null")) {
		// The object is there once the queue has any message statistic;
		// a redeliver counter is then left out only while it is zero.
		var st messageStats
		if !bytes.Equal(ms, []byte("[]")) {
			if err := json.Unmarshal(ms, &st); err != nil {
				return nil, errors.New("message_stats is not an object")
			}
		}
		q.redeliver = Count{OK: true}
		if st.Redeliver != nil {
			if *st.Redeliver < 0 {
				return nil, errors.New("a negative count")
			}
			q.redeliver.N = *st.Redeliver
		}
	}
	if s, ok := jsonString(a.Type); ok {
		q.typ = clip(s, 16)
	}
	if s, ok := jsonString(a.State); ok {
		q.state = clip(s, 16)
	}
	names := make([]string, 0, len(a.Arguments))
	for k := range a.Arguments {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := a.Arguments[k]
		switch k {
		case "x-dead-letter-exchange":
			if s, ok := jsonString(v); ok {
				q.dlx = &s
			} else {
				q.badDLX = true
			}
		case "x-dead-letter-routing-key":
			if s, ok := jsonString(v); ok {
				q.dlrk = &s
			} else {
				q.badDLRK = true
			}
		case "x-max-priority":
			q.maxPriority, q.badMaxPriority = jsonInt(v)
		case "x-message-ttl":
			q.ttl, q.badTTL = jsonInt(v)
		default:
			if len(q.others) < 4 {
				q.others = append(q.others, clip(k, maxValueText))
			}
		}
	}
	return q, nil
}

// jsonInt reads a non-negative integer argument; bad is true when the
// argument is there but is not one.
func jsonInt(raw json.RawMessage) (c Count, bad bool) {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return Count{}, true
	}
	return Count{N: int64(f), OK: true}, false
}

// clip makes s safe to quote in a message: valid UTF-8, no control
// characters, at most max bytes (on a rune boundary).
func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
