package redis

import "crypto/sha256"

// Head bodies are user data of any size: a message whose argument is a
// 5 MB document is a 5 MB body. The oldest-message age needs one number
// from it, message_timestamp, which never changes for a given Redis
// message id (Dramatiq writes a new id on every enqueue). So a read
// remembers, per queue, the head's id and what its body said, and an
// unchanged head costs no command at all. A new head is measured with
// HSTRLEN first and read with HGET only if it is at most MaxHeadBodyBytes.
const (
	// MaxHeadBodyBytes is the largest head body a read fetches. A larger
	// head is counted as AnomalyOversizeBody and its queue's oldest age is
	// absent (not taken from the next message, which is younger and would
	// understate how long the queue has been waiting). Dramatiq's own
	// bodies are a few hundred bytes plus the arguments.
	MaxHeadBodyBytes = 1 << 20
	// maxHeadBytesPerRead bounds the bodies one read fetches in total.
	// Heads beyond it are fetched by the next reads, the others being
	// remembered by then; it matters only when thousands of queues change
	// heads at once (at start-up, say).
	maxHeadBytesPerRead = 16 << 20
	// MaxIDBytes is the longest message id a read uses. Dramatiq's ids are
	// uuid4 strings (36 bytes), so a longer list element or dead-letter
	// member was not written by Dramatiq: it is counted as
	// AnomalyOversizeID, never sent back to Redis as an argument and never
	// remembered, so that a 64 MiB element costs one reply, not memory for
	// good.
	MaxIDBytes = 256
)

// oversizeID tells an id no read uses (see MaxIDBytes).
func oversizeID(id string) bool { return len(id) > MaxIDBytes }

// idKey is what a Reader remembers of an id: the id itself, or for an
// oversize one a fixed-size digest, which still tells two ids apart.
func idKey(id string) string {
	if !oversizeID(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return oversizeIDPrefix + string(sum[:])
}

// oversizeIDPrefix starts every digest idKey makes; the NUL keeps it apart
// from any id Dramatiq writes (uuid4 text).
const oversizeIDPrefix = "\x00oversize-id:"

type headOutcome int8

const (
	headOK headOutcome = iota
	headUndecodable
	headInvalidTime
	headOversize
)

// headInfo is what a head body told: immutable for its id.
type headInfo struct {
	id      string
	ms      int64 // message_timestamp, valid when outcome is headOK
	outcome headOutcome
}

// decodeHead reads a head body once; the result is remembered.
func decodeHead(id, body string) headInfo {
	ms, ok := messageTimestamp(body)
	if !ok {
		return headInfo{id: id, outcome: headUndecodable}
	}
	t, ok := millisTime(ms)
	if !ok {
		return headInfo{id: id, outcome: headInvalidTime}
	}
	return headInfo{id: id, ms: t.UnixMilli(), outcome: headOK}
}

// knownHeads returns what is remembered about the heads of queues.
func (r *Reader) knownHeads(queues []string) map[string]headInfo {
	r.headsMu.Lock()
	defer r.headsMu.Unlock()
	out := make(map[string]headInfo, len(r.heads))
	for _, q := range queues {
		if h, ok := r.heads[q]; ok {
			out[q] = h
		}
	}
	return out
}

// rememberHeads keeps the heads this read settled, and those it left
// unsettled (a race, or the per-read budget) as they were, and forgets
// every other queue: empty ones and those it did not report. The memory is
// so bounded by the reported queues (the queue cap), whatever the churn of
// queue names.
func (r *Reader) rememberHeads(fresh map[string]headInfo, unsettled []string) {
	r.headsMu.Lock()
	defer r.headsMu.Unlock()
	for _, q := range unsettled {
		if h, ok := r.heads[q]; ok {
			fresh[q] = h
		}
	}
	r.heads = fresh
}
