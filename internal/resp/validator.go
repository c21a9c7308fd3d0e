// Package resp bounds what a Redis or Sentinel server may send before
// go-redis parses it.
//
// go-redis sizes its buffers from the lengths a reply announces and parses
// aggregates recursively, so one reply can make it allocate terabytes,
// recurse until the stack limit (both fatal, beyond any recover) or read a
// line without end. Some of that parsing runs in go-redis's own goroutines
// (Sentinel's), where no recover of ours can reach. The only place to stop
// it is below the parser: Conn checks the RESP2/RESP3 framing of every
// byte as it is read, with a Validator, and fails the connection at the
// first byte that breaks a bound, before go-redis sees it.
package resp

import (
	"bytes"
	"fmt"
)

// Limits are the bounds a reply must keep. Each is far above what any
// reply the exporter reads needs (docs/limits.md).
type Limits struct {
	// MaxLine bounds a line in bytes, its type byte included and its CRLF
	// not: simple strings, errors, numbers and length headers.
	MaxLine int
	// MaxBulk bounds one bulk string, verbatim string or blob error, in
	// bytes. go-redis allocates that much as soon as it reads the header.
	MaxBulk int64
	// MaxElements bounds the elements the aggregate headers of one reply
	// announce, together (a map's pair counts two; an attribute's pairs,
	// and the value it annotates, too). go-redis allocates a slot for each
	// as soon as it reads the header.
	MaxElements int64
	// MaxDepth bounds how many aggregates (attributes included) may be
	// open at once. go-redis recurses once per level.
	MaxDepth int
	// MaxReply bounds one top-level reply in bytes, framing included: what
	// go-redis may hold of a reply before it returns it.
	MaxReply int64
}

// Default are the exporter's bounds (docs/limits.md).
// The largest value it asks for is a message body of at most 1 MiB (sized
// with HSTRLEN first), the largest reply an HMGET of at most 16 MiB of
// them, the deepest reply HELLO's (4 levels: map, modules, module, args),
// the longest aggregate the live heartbeat ids (one per worker process).
// Each bound is well above those, and low enough that one connection's
// reply cannot take the chart's 128 MiB: go-redis holds at most MaxReply
// of it, plus a slot per element.
var Default = Limits{
	MaxLine:     8 << 10,
	MaxBulk:     16 << 20,
	MaxElements: 1 << 20,
	MaxDepth:    16,
	MaxReply:    32 << 20,
}

// Error is a reply refused for breaking a bound or RESP's framing. Its
// text names the rule, never the server's bytes.
type Error struct{ Reason string }

func (e *Error) Error() string { return "reply refused: " + e.Reason }

// Parse states.
const (
	stType   = iota // expecting a value's type byte
	stLine          // in a simple line: + - : , # ( _
	stHeader        // in a length header: $ = ! * % ~ > |
	stBody          // in a bulk's bytes
	stBodyCR        // expecting the CR after a bulk's bytes
	stBodyLF        // expecting the LF after a bulk's bytes
)

// Validator checks a stream of RESP2/RESP3 replies fed to it in pieces of
// any size, without keeping any of it: its memory is fixed by MaxDepth.
// Any prefix of a valid stream is accepted; the first byte that makes
// the stream invalid, or breaks a bound, is refused, and so is everything
// after it.
type Validator struct {
	lim   Limits
	state int
	typ   byte
	line  int   // bytes of the current line so far, type byte included
	cr    bool  // the current line's last byte was a CR
	neg   bool  // the header started with '-'
	ndig  int   // digits in the header
	n     int64 // the header's value so far
	body  int64 // bulk bytes still to come
	size  int64 // bytes of the current top-level reply so far
	elems int64 // elements announced in the current top-level reply
	stack []int64
	err   error
}

// NewValidator returns a Validator at the start of a stream.
func NewValidator(l Limits) *Validator {
	return &Validator{lim: l, stack: make([]int64, 0, l.MaxDepth)}
}

// Feed checks the next bytes of the stream. It returns how many of them
// form, with what came before, a valid prefix, and an *Error if not all
// do. After an error every call returns it again.
func (v *Validator) Feed(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	i := 0
	for i < len(p) {
		switch v.state {
		case stBody:
			k := min(int64(len(p)-i), v.body)
			if !v.spend(k) {
				return i, v.err
			}
			v.body -= k
			i += int(k)
			if v.body == 0 {
				v.state = stBodyCR
			}
			continue
		case stLine:
			// Most of a line's bytes are text: find its end at once.
			rest := p[i:]
			end := bytes.IndexByte(rest, '\n')
			text := rest
			if end >= 0 {
				text = rest[:end]
			}
			if len(text) > 0 {
				v.line += len(text)
				v.cr = text[len(text)-1] == '\r'
				if !v.lineFits() || !v.spend(int64(len(text))) {
					return i, v.err
				}
				i += len(text)
			}
			if end < 0 {
				continue
			}
			if !v.cr {
				v.fail("line not ended by CRLF")
				return i, v.err
			}
			if !v.spend(1) {
				return i, v.err
			}
			i++
			v.done()
			continue
		}
		if !v.step(p[i]) {
			return i, v.err
		}
		i++
	}
	return i, nil
}

// lineFits reports whether the line so far can still end within MaxLine:
// a trailing CR may be the terminator's, so it is allowed one byte over.
func (v *Validator) lineFits() bool {
	if v.line > v.lim.MaxLine+1 || (v.line == v.lim.MaxLine+1 && !v.cr) {
		v.fail(fmt.Sprintf("line longer than %d bytes", v.lim.MaxLine))
		return false
	}
	return true
}

func (v *Validator) fail(reason string) bool {
	v.err = &Error{Reason: reason}
	return false
}

// spend counts k more bytes of the current reply.
func (v *Validator) spend(k int64) bool {
	v.size += k
	if v.size > v.lim.MaxReply {
		return v.fail("reply longer than " + human(v.lim.MaxReply))
	}
	return true
}

// step takes one byte in the states that look at every byte.
func (v *Validator) step(b byte) bool {
	switch v.state {
	case stType:
		if len(v.stack) == 0 {
			v.size, v.elems = 0, 0
		}
		if !v.spend(1) {
			return false
		}
		v.typ, v.line, v.cr = b, 1, false
		switch b {
		case '+', '-', ':', ',', '#', '(', '_':
			v.state = stLine
		case '$', '=', '!', '*', '%', '~', '>', '|':
			v.state, v.neg, v.ndig, v.n = stHeader, false, 0, 0
		default:
			return v.fail(fmt.Sprintf("unknown type byte 0x%02x", b))
		}
		return true
	case stHeader:
		if !v.spend(1) {
			return false
		}
		if v.cr {
			if b != '\n' {
				return v.fail("length header not ended by CRLF")
			}
			return v.header()
		}
		v.line++
		if b == '\r' {
			v.cr = true
			return v.lineFits()
		}
		if !v.lineFits() {
			return false
		}
		switch {
		case b == '-' && v.line == 2:
			v.neg = true
		case b >= '0' && b <= '9':
			if v.neg && (v.ndig > 0 || b != '1') {
				return v.fail("negative length other than -1")
			}
			v.ndig++
			if !v.neg {
				v.n = v.n*10 + int64(b-'0')
				return v.bounded()
			}
		default:
			return v.fail("length header is not a number")
		}
		return true
	case stBodyCR:
		if !v.spend(1) {
			return false
		}
		if b != '\r' {
			return v.fail("bulk string not ended by CRLF")
		}
		v.state = stBodyLF
		return true
	case stBodyLF:
		if !v.spend(1) {
			return false
		}
		if b != '\n' {
			return v.fail("bulk string not ended by CRLF")
		}
		v.done()
		return true
	}
	panic("resp: unreachable state")
}

// announced is how many elements a header of the current type and value
// announces.
func (v *Validator) announced() int64 {
	switch v.typ {
	case '%':
		return 2 * v.n
	case '|':
		return 2*v.n + 1
	}
	return v.n
}

// bounded checks the header's value so far: more digits only make it
// larger, so it is refused as soon as it is too large.
func (v *Validator) bounded() bool {
	switch v.typ {
	case '$', '=', '!':
		if v.n > v.lim.MaxBulk {
			return v.fail("bulk string longer than " + human(v.lim.MaxBulk))
		}
	default:
		// elems is at most MaxElements, and n at most ten times that plus
		// 9 (it was within the bound before this digit): no overflow.
		if v.elems+v.announced() > v.lim.MaxElements {
			return v.fail(fmt.Sprintf("more than %d aggregate elements in one reply", v.lim.MaxElements))
		}
	}
	return true
}

// header acts on a complete length header.
func (v *Validator) header() bool {
	if v.ndig == 0 {
		return v.fail("length header is not a number")
	}
	if v.neg {
		if v.typ != '|' { // -1: a null, complete in itself
			v.done()
			return true
		}
		// go-redis reads a null attribute as an empty one: the value
		// after it is the one it annotates.
		v.n = 0
		if !v.bounded() {
			return false
		}
	}
	switch v.typ {
	case '$', '=', '!':
		v.state, v.body = stBody, v.n
		if v.n == 0 {
			v.state = stBodyCR
		}
		return true
	}
	c := v.announced()
	v.elems += c
	if c == 0 {
		v.done()
		return true
	}
	if len(v.stack) >= v.lim.MaxDepth {
		return v.fail(fmt.Sprintf("aggregates nested deeper than %d", v.lim.MaxDepth))
	}
	v.stack = append(v.stack, c)
	v.state = stType
	return true
}

// done closes a value: it counts as one element of the aggregate around
// it, which may close in turn. An attribute's frame counts the value it
// annotates among its elements, so it closes with that value.
func (v *Validator) done() {
	v.state = stType
	for len(v.stack) > 0 {
		top := len(v.stack) - 1
		v.stack[top]--
		if v.stack[top] > 0 {
			return
		}
		v.stack = v.stack[:top]
	}
}

// human writes a byte count in MiB or KiB when it is a whole number of
// them.
func human(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
