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
	name := string(line[:i])
	if name == "" {
		return errors.New("no metric name")
	}
	var labels map[string]string
	rest := line[i:]
	if len(rest) > 0 && rest[0] == '{' {
		var err error
		labels, rest, err = promLabels(rest[1:])
		if err != nil {
			return err
		}
	}
	fields := bytes.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return errors.New("not a sample")
	}
	idx, ours := promSeries[name]
	if !ours && !bytes.HasPrefix(line, []byte("rabbitmq_detailed_queue_")) {
		// Another family of the endpoint (build info, telemetry): only its
		// shape is checked.
		if _, err := strconv.ParseFloat(string(fields[0]), 64); err != nil {
			return errors.New("the value is not a number")
		}
		return nil
	}
	if !ours {
		return nil // another per-queue series (process reductions)
	}
	v, ok := labels["vhost"]
	q, okq := labels["queue"]
	if !ok || !okq {
		return fmt.Errorf("%s without vhost and queue labels", name)
	}
	if v != vhost {
		return nil
	}
	n, err := promCount(fields[0])
	if err != nil {
		return err
	}
	if !utf8.ValidString(q) || len(q) > MaxNameBytes || q == "" {
		if !bad[q] && len(bad) < maxQueues {
			bad[q] = true
		}
		return nil
	}
	m := queues[q]
	if m == nil {
		if len(queues) >= maxQueues {
			return fmt.Errorf("more than %d queues in the vhost (raise the limit)", maxQueues)
		}
		m = &rq{name: q, noDetails: true}
		queues[q] = m
	}
	c := []*Count{&m.messages, &m.ready, &m.unacked, &m.consumers}[idx]
	if c.OK {
		return fmt.Errorf("%s of a queue listed twice", name)
	}
	*c = Count{N: n, OK: true}
	return nil
}

// promLabels parses `k="v",...}` (the text format's escapes: \\, \" and
// \n) and returns what follows the closing brace.
func promLabels(b []byte) (map[string]string, []byte, error) {
	labels := map[string]string{}
	for {
		b = bytes.TrimLeft(b, " ")
		if len(b) > 0 && b[0] == '}' {
			return labels, b[1:], nil
		}
		eq := bytes.IndexByte(b, '=')
		if eq <= 0 || eq+1 >= len(b) || b[eq+1] != '"' {
			return nil, nil, errors.New("a malformed label")
		}
		key := string(bytes.TrimSpace(b[:eq]))
		b = b[eq+2:]
		var v []byte
		closed := false
		for len(b) > 0 {
			c := b[0]
			b = b[1:]
			if c == '"' {
				closed = true
				break
			}
			if c == '\\' {
				if len(b) == 0 {
					break
				}
				switch b[0] {
				case '\\', '"':
					c = b[0]
				case 'n':
					c = '\n'
				default:
					return nil, nil, errors.New("an unknown escape in a label value")
				}
				b = b[1:]
			}
			v = append(v, c)
		}
		if !closed {
			return nil, nil, errors.New("an unterminated label value")
		}
		if _, dup := labels[key]; dup {
			return nil, nil, errors.New("a label given twice")
		}
		if len(labels) >= 16 {
			return nil, nil, errors.New("too many labels")
		}
		labels[key] = string(v)
		b = bytes.TrimLeft(b, " ")
		if len(b) > 0 && b[0] == ',' {
			b = b[1:]
		}
	}
}

// promCount reads a sample value that must be a count: a non-negative
// integer (the format writes floats; RabbitMQ writes integers).
func promCount(b []byte) (int64, error) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return 0, fmt.Errorf("the count %q is not a non-negative integer", clip(string(b), maxValueText))
	}
	return int64(f), nil
}
