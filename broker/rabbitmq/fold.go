package rabbitmq

import (
	"fmt"
	"sort"
	"strings"
)

// ValidQueueName reports whether q matches the pattern Dramatiq enforces on
// actors' queue names, [a-zA-Z_][a-zA-Z0-9._-]*. ASCII only, so also a
// valid label value.
func ValidQueueName(q string) bool {
	if q == "" || len(q) > MaxNameBytes {
		return false
	}
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// canonical strips Dramatiq's .DQ or .XQ suffix, as its q_name does.
func canonical(name string) (string, byte) {
	switch {
	case strings.HasSuffix(name, ".DQ"):
		return name[:len(name)-3], 'D'
	case strings.HasSuffix(name, ".XQ"):
		return name[:len(name)-3], 'X'
	}
	return name, 'Q'
}

type group struct{ q, dq, xq *rq }

// IsDramatiq is the rule that tells a Dramatiq queue among a vhost's
// queues. A canonical name c (a name with any .DQ/.XQ suffix removed) is a
// Dramatiq queue when c matches Dramatiq's queue-name pattern and
//
//   - at least two of c, c.DQ and c.XQ exist (Dramatiq always declares the
//     three together), or
//   - c or c.DQ exists and dead-letters to c.XQ (x-dead-letter-routing-key),
//     as only Dramatiq's declarations do.
//
// Anything else in the vhost (another application's queues, a lone
// "x.XQ") is ignored and only counted.
func (g group) isDramatiq(c string) bool {
	if !ValidQueueName(c) {
		return false
	}
	n := 0
	for _, m := range []*rq{g.q, g.dq, g.xq} {
		if m != nil {
			n++
		}
	}
	if n >= 2 {
		return true
	}
	for _, m := range []*rq{g.q, g.dq} {
		if m != nil && m.dlrk != nil && *m.dlrk == c+".XQ" {
			return true
		}
	}
	return false
}

// fold groups the RabbitMQ queues into Dramatiq queues.
func fold(queues map[string]*rq) (out []Queue, ignored int) {
	groups := map[string]*group{}
	for name, q := range queues {
		c, kind := canonical(name)
		g := groups[c]
		if g == nil {
			g = &group{}
			groups[c] = g
		}
		switch kind {
		case 'D':
			g.dq = q
		case 'X':
			g.xq = q
		default:
			g.q = q
		}
	}
	for c, g := range groups {
		if !g.isDramatiq(c) {
			for _, m := range []*rq{g.q, g.dq, g.xq} {
				if m != nil {
					ignored++
				}
			}
			continue
		}
		out = append(out, g.queue(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ignored
}

func (g group) queue(c string) Queue {
	q := Queue{Name: c}
	if m := g.q; m != nil {
		q.Ready, q.InFlight, q.Consumers, q.Redeliveries = m.ready, m.unacked, m.consumers, m.redeliver
	}
	if m := g.dq; m != nil {
		q.Delayed = m.ready.plus(m.unacked)
		q.DelayedHeld, q.DelayConsumers, q.DelayRedeliveries = m.unacked, m.consumers, m.redeliver
	}
	if m := g.xq; m != nil {
		q.DeadLetters = m.messages
		if !q.DeadLetters.OK {
			q.DeadLetters = m.ready.plus(m.unacked)
		}
	}
	q.Main, q.Delay, q.Dead = member(g.q), member(g.dq), member(g.xq)
	q.Problems = g.problems(c)
	return q
}

func member(m *rq) Member {
	if m == nil {
		return Member{}
	}
	return Member{Exists: true, Type: m.typ, State: m.state, MaxPriority: m.maxPriority, MessageTTL: m.ttl}
}

// problems compares the three queues with what Dramatiq declares
// (docs/dramatiq-rabbitmq-layout.md). The sentences are fixed; only
// clipped names and values vary.
func (g group) problems(c string) []string {
	var p []string
	add := func(format string, a ...any) { p = append(p, fmt.Sprintf(format, a...)) }
	for _, x := range []struct {
		suffix string
		m      *rq
	}{{"", g.q}, {".DQ", g.dq}, {".XQ", g.xq}} {
		if x.m == nil {
			add("%s is missing", c+x.suffix)
		}
	}
	for _, x := range []struct {
		suffix string
		m      *rq
	}{{"", g.q}, {".DQ", g.dq}} {
		m := x.m
		if m == nil || m.noDetails {
			continue
		}
		name := c + x.suffix
		switch {
		case m.badDLX:
			add("%s: x-dead-letter-exchange is not a string", name)
		case m.dlx == nil:
			add("%s: no x-dead-letter-exchange (dead letters would be dropped)", name)
		case *m.dlx != "":
			add("%s: x-dead-letter-exchange is %q, not the default exchange", name, clip(*m.dlx, maxValueText))
		}
		switch {
		case m.badDLRK:
			add("%s: x-dead-letter-routing-key is not a string", name)
		case m.dlrk == nil:
			add("%s: no x-dead-letter-routing-key (dead letters would not reach %s.XQ)", name, c)
		case *m.dlrk != c+".XQ":
			add("%s: x-dead-letter-routing-key is %q, not %q", name, clip(*m.dlrk, maxValueText), c+".XQ")
		}
		if m.badMaxPriority {
			add("%s: x-max-priority is not a non-negative integer", name)
		}
		if m.badTTL {
			add("%s: x-message-ttl is not a non-negative integer", name)
		} else if m.ttl.OK {
			add("%s: x-message-ttl is set (%d ms): messages would expire before a worker runs them", name, m.ttl.N)
		}
		for _, o := range m.others {
			add("%s: unexpected argument %q", name, o)
		}
	}
	if g.q != nil && g.dq != nil && !g.q.noDetails && !g.dq.noDetails && g.q.maxPriority != g.dq.maxPriority {
		add("%s and %s.DQ: x-max-priority differs", c, c)
	}
	if m := g.xq; m != nil && !m.noDetails {
		name := c + ".XQ"
		switch {
		case m.badTTL:
			add("%s: x-message-ttl is not a non-negative integer", name)
		case !m.ttl.OK:
			add("%s: no x-message-ttl (dead letters are kept forever)", name)
		}
		if m.dlx != nil || m.dlrk != nil || m.badDLX || m.badDLRK {
			add("%s: has a dead-letter route (Dramatiq drops expired dead letters)", name)
		}
		if m.maxPriority.OK || m.badMaxPriority {
			add("%s: unexpected argument %q", name, "x-max-priority")
		}
		for _, o := range m.others {
			add("%s: unexpected argument %q", name, o)
		}
	}
	// Names in the sentences are pattern-valid (ASCII) and at most
	// MaxNameBytes+3; values are clipped. Bound the list too.
	if len(p) > 16 {
		p = append(p[:16], fmt.Sprintf("and %d more", len(p)-16))
	}
	return p
}
