package resp

import (
	"bytes"
	"strconv"
)

// refAccepts is the reference the Validator is checked against: a plain
// recursive parser over the whole input at once, written from RESP's
// grammar and the Limits' definitions, not from the Validator's states.
// It reports whether b is a prefix of a stream of valid replies that keep
// the limits.
func refAccepts(b []byte, l Limits) bool {
	for pos := 0; pos < len(b); {
		p := &refParser{b: b, lim: l, pos: pos}
		complete, ok := p.value(0)
		// A reply's size is what it took, or all there is if unfinished.
		if !ok || int64(p.pos-pos) > l.MaxReply {
			return false
		}
		if !complete {
			return true
		}
		pos = p.pos
	}
	return true
}

type refParser struct {
	b     []byte
	lim   Limits
	pos   int
	elems int64 // announced by this reply's aggregate headers
}

// line reads a line at pos: its text after the type byte, whether it is
// complete, and whether it is (or may still become) a valid line.
func (p *refParser) line() (text []byte, complete, ok bool) {
	rest := p.b[p.pos:]
	end := bytes.IndexByte(rest, '\n')
	if end < 0 {
		p.pos = len(p.b)
		// Unfinished: it must fit, allowing for a last CR that may be
		// the start of its CRLF.
		fits := len(rest) <= p.lim.MaxLine || (len(rest) == p.lim.MaxLine+1 && rest[len(rest)-1] == '\r')
		return rest[1:], false, fits
	}
	p.pos += end + 1
	if rest[end-1] != '\r' || end-1 > p.lim.MaxLine {
		return nil, true, false
	}
	return rest[1 : end-1], true, true
}

func digits(s []byte) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// within reports whether a length header of type t and value n keeps the
// limits, given what the reply announced before it.
func (p *refParser) within(t byte, n int64) bool {
	switch t {
	case '$', '=', '!':
		return n <= p.lim.MaxBulk
	}
	// announce(t, n) >= n: checking n first keeps the sum from
	// overflowing.
	return n <= p.lim.MaxElements && p.elems+announce(t, n) <= p.lim.MaxElements
}

func announce(t byte, n int64) int64 {
	switch t {
	case '%':
		return 2 * n
	case '|':
		return 2*n + 1 // the pairs, and the value annotated
	}
	return n
}

// value parses one value at depth (the aggregates around it).
func (p *refParser) value(depth int) (complete, ok bool) {
	if p.pos == len(p.b) {
		return false, true
	}
	t := p.b[p.pos]
	switch t {
	case '+', '-', ':', ',', '#', '(', '_':
		_, complete, ok := p.line()
		return complete, ok
	case '$', '=', '!', '*', '%', '~', '>', '|':
	default:
		return false, false
	}
	text, complete, ok := p.line()
	if !ok {
		return false, false
	}
	if !complete {
		// Valid so far if some ending makes a valid header: a CR may be
		// its terminator's first byte; "-1" and numbers in bounds.
		text = bytes.TrimSuffix(text, []byte("\r"))
		switch string(text) {
		case "", "-", "-1":
			return false, true
		}
		if !digits(text) {
			return false, false
		}
		n, err := strconv.ParseInt(string(text), 10, 64)
		return false, err == nil && p.within(t, n)
	}
	var n int64
	switch {
	case string(text) == "-1" && t == '|':
		n = 0 // go-redis reads it as an empty attribute
	case string(text) == "-1":
		return true, true // null
	case len(text) > 0 && digits(text):
		var err error
		if n, err = strconv.ParseInt(string(text), 10, 64); err != nil {
			return false, false
		}
	default:
		return false, false
	}
	if !p.within(t, n) {
		return false, false
	}
	switch t {
	case '$', '=', '!':
		end := int64(p.pos) + n
		if end > int64(len(p.b)) {
			p.pos = len(p.b)
			return false, true
		}
		p.pos = int(end)
		for _, c := range []byte("\r\n") {
			if p.pos == len(p.b) {
				return false, true
			}
			if p.b[p.pos] != c {
				return false, false
			}
			p.pos++
		}
		return true, true
	}
	count := announce(t, n)
	p.elems += count
	if count > 0 && depth >= p.lim.MaxDepth {
		return false, false
	}
	for range count {
		complete, ok := p.value(depth + 1)
		if !ok || !complete {
			return complete, ok
		}
	}
	return true, true
}
