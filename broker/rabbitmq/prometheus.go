package rabbitmq

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// The per-queue families of rabbitmq_prometheus's /metrics/detailed that
// the reader asks for, and the series it keeps from them. They are the
// same numbers as the management API's messages, messages_ready,
// messages_unacknowledged and consumers (both come from the queue
// processes' periodic statistics), at a tenth of the cost to RabbitMQ:
// see docs/performance-rabbitmq.md.
const (
	promFamilies = "family=queue_coarse_metrics&family=queue_consumer_count"
	// promProof is a line only that endpoint, asked for these families,
	// writes (even for a vhost without queues): an answer without it is
	// from something else, and must not read as "no queues".
	promProof = "# TYPE rabbitmq_detailed_queue_messages_ready gauge"
	// maxPromLine bounds one line of the answer: a series is two labels
	// of at most MaxNameBytes each (escaped, at most twice as long) and a
	// number; HELP lines are short.
	maxPromLine = 4 << 10
)

var promSeries = map[string]int{
	"rabbitmq_detailed_queue_messages":         0,
	"rabbitmq_detailed_queue_messages_ready":   1,
	"rabbitmq_detailed_queue_messages_unacked": 2,
	"rabbitmq_detailed_queue_consumers":        3,
}

// decodePromCounts streams the Prometheus text answer of /metrics/detailed
// and keeps, per RabbitMQ queue of vhost, its four counts. Series of
// another vhost are skipped (an older node may ignore the vhost filter).
// Any line that is not a comment or a well-formed sample is an error, so
// that a page from something else never reads as zero queues. Memory grows
// with the queues (bounded by maxQueues), not with the lines.
func decodePromCounts(r io.Reader, vhost string, maxQueues int) (map[string]*rq, int, error) {
	br := bufio.NewReaderSize(r, maxPromLine)
	queues := map[string]*rq{}
	bad := map[string]bool{}
	proof := false
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, 0, fmt.Errorf("%w: line %d longer than %d bytes", errMalformed, lineNo, maxPromLine)
		}
		if err != nil && err != io.EOF {
			return nil, 0, err
		}
		if len(line) > 0 {
			if perr := promLine(bytes.TrimRight(line, "\r\n"), vhost, queues, bad, &proof, maxQueues); perr != nil {
				return nil, 0, fmt.Errorf("%w: line %d: %v", errMalformed, lineNo, perr)
			}
		}
		if err == io.EOF {
			break
		}
	}
	if !proof {
		return nil, 0, fmt.Errorf("%w: not rabbitmq_prometheus's per-queue metrics (no %q line)", errMalformed, promProof)
	}
	return queues, len(bad), nil
}

func promLine(line []byte, vhost string, queues map[string]*rq, bad map[string]bool, proof *bool, maxQueues int) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	if line[0] == '#' {
		if string(line) == promProof {
			*proof = true
		}
		return nil
	}
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		i++
	}
	name := line[:i]
	if len(name) == 0 {
		return errors.New("no metric name")
	}
	var l promLabelSet
	rest := line[i:]
	if len(rest) > 0 && rest[0] == '{' {
		var err error
		if rest, err = l.parse(rest[1:]); err != nil {
			return err
		}
	}
	fields := bytes.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return errors.New("not a sample")
	}
	idx, ours := promSeries[string(name)] // no allocation: a lookup
	if !ours {
		if !bytes.HasPrefix(name, []byte("rabbitmq_detailed_queue_")) {
			// Another family of the endpoint (build info, telemetry):
			// only its shape is checked.
			if _, err := strconv.ParseFloat(string(fields[0]), 64); err != nil {
				return errors.New("the value is not a number")
			}
		}
		return nil // or another per-queue series (process reductions)
	}
	if l.vhost == nil || l.queue == nil {
		return fmt.Errorf("%s without vhost and queue labels", name)
	}
	if string(l.vhost) != vhost {
		return nil
	}
	n, err := promCount(fields[0])
	if err != nil {
		return err
	}
	q := l.queue
	if !utf8.Valid(q) || len(q) > MaxNameBytes || len(q) == 0 {
		if !bad[string(q)] && len(bad) < maxQueues {
			bad[string(q)] = true
		}
		return nil
	}
	m := queues[string(q)]
	if m == nil {
		if len(queues) >= maxQueues {
			return fmt.Errorf("more than %d queues in the vhost (raise the limit)", maxQueues)
		}
		m = &rq{name: string(q), noDetails: true}
		queues[m.name] = m
	}
	c := [...]*Count{&m.messages, &m.ready, &m.unacked, &m.consumers}[idx]
	if c.OK {
		return fmt.Errorf("%s of a queue listed twice", name)
	}
	*c = Count{N: n, OK: true}
	return nil
}

// promLabelSet keeps the two labels the reader needs; the others are only
// checked for syntax. Values point into the line unless they had escapes.
type promLabelSet struct {
	vhost, queue []byte
	n            int
}

// parse reads `k="v",...}` (the text format's escapes: \\, \" and \n)
// and returns what follows the closing brace.
func (l *promLabelSet) parse(b []byte) ([]byte, error) {
	for {
		b = bytes.TrimLeft(b, " ")
		if len(b) > 0 && b[0] == '}' {
			return b[1:], nil
		}
		eq := bytes.IndexByte(b, '=')
		if eq <= 0 || eq+1 >= len(b) || b[eq+1] != '"' {
			return nil, errors.New("a malformed label")
		}
		key := bytes.TrimSpace(b[:eq])
		b = b[eq+2:]
		end, escaped := -1, false
		for j := 0; j < len(b); j++ {
			if b[j] == '\\' {
				escaped = true
				j++
				continue
			}
			if b[j] == '"' {
				end = j
				break
			}
		}
		if end < 0 {
			return nil, errors.New("an unterminated label value")
		}
		v := b[:end]
		b = b[end+1:]
		if escaped {
			var err error
			if v, err = unescapeLabel(v); err != nil {
				return nil, err
			}
		}
		if l.n++; l.n > 16 {
			return nil, errors.New("too many labels")
		}
		var dst *[]byte
		switch string(key) {
		case "vhost":
			dst = &l.vhost
		case "queue":
			dst = &l.queue
		}
		if dst != nil {
			if *dst != nil {
				return nil, errors.New("a label given twice")
			}
			if v == nil {
				v = []byte{}
			}
			*dst = v
		}
		b = bytes.TrimLeft(b, " ")
		if len(b) > 0 && b[0] == ',' {
			b = b[1:]
		}
	}
}

func unescapeLabel(v []byte) ([]byte, error) {
	out := make([]byte, 0, len(v))
	for j := 0; j < len(v); j++ {
		c := v[j]
		if c == '\\' {
			if j+1 >= len(v) {
				return nil, errors.New("an unterminated escape in a label value")
			}
			j++
			switch v[j] {
			case '\\', '"':
				c = v[j]
			case 'n':
				c = '\n'
			default:
				return nil, errors.New("an unknown escape in a label value")
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// promCount reads a sample value that must be a count: a non-negative
// integer (the format writes floats; RabbitMQ writes integers).
func promCount(b []byte) (int64, error) {
	if len(b) > 0 && len(b) <= 15 {
		// The usual case, without a conversion to string: digits only.
		var n int64
		digits := true
		for _, c := range b {
			if c < '0' || c > '9' {
				digits = false
				break
			}
			n = n*10 + int64(c-'0')
		}
		if digits {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return 0, fmt.Errorf("the count %q is not a non-negative integer", clip(string(b), maxValueText))
	}
	return int64(f), nil
}
