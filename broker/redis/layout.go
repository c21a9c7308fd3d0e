// Package broker reads the state that Dramatiq's RedisBroker keeps in Redis.
// It only ever sends read commands: it never runs Dramatiq's dispatch script
// (which records a heartbeat and may requeue or delete messages) and never
// uses KEYS. docs/dramatiq-redis-layout.md describes the layout and what
// the exporter relies on.
package redis

import (
	"strings"
)

// Suffixes Dramatiq appends to a canonical queue name.
const (
	delaySuffix  = ".DQ"
	deadSuffix   = ".XQ"
	msgsSuffix   = ".msgs"
	legacyAcks   = ".acks"
	heartbeatKey = "__heartbeats__"
	acksPrefix   = "__acks__."
	// Worker ids are str(uuid4()): always 36 characters.
	workerIDLen = 36
)

// keys names the Redis keys of one namespace.
type keys struct{ ns string }

func (k keys) queue(q string) string     { return k.ns + ":" + q }
func (k keys) queueMsgs(q string) string { return k.ns + ":" + q + msgsSuffix }
func (k keys) delayMsgs(q string) string { return k.ns + ":" + q + delaySuffix + msgsSuffix }
func (k keys) dead(q string) string      { return k.ns + ":" + q + deadSuffix }
func (k keys) deadMsgs(q string) string  { return k.ns + ":" + q + deadSuffix + msgsSuffix }
func (k keys) heartbeats() string        { return k.ns + ":" + heartbeatKey }
func (k keys) scanPattern() string       { return escapeGlob(k.ns) + ":*" }

// escapeGlob escapes the characters SCAN MATCH treats specially, because a
// namespace is any string and Dramatiq does not escape it either.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// canonical strips the delay-queue suffix, as dispatch.lua does.
func canonical(q string) string { return strings.TrimSuffix(q, delaySuffix) }

// keyKind is what a key of the namespace turned out to be.
type keyKind int

const (
	kindUnknown keyKind = iota
	kindQueue           // a queue's list, its .DQ list, or one of their hashes/DLQ
	kindAck             // __acks__.{wid}.{queue}
	kindHeartbeats
	kindLegacyAcks
)

// classified is one key of the namespace, understood.
type classified struct {
	kind  keyKind
	queue string // canonical queue name (kindQueue, kindAck)
	wid   string // worker id (kindAck)
	delay bool   // the ack set holds the queue's .DQ messages (kindAck)
}

// nameCheck is what a key's name alone (without the "ns:" prefix) tells.
type nameCheck int

const (
	// nameSkip: the heartbeat set, read by name on every scrape.
	nameSkip nameCheck = iota
	// nameInvalid: no Dramatiq queue name can be read from the key, whatever
	// its type. Counted as AnomalyInvalidQueueName, one per key.
	nameInvalid
	// nameTyped: a queue name can be read; classify, with the key's TYPE,
	// says whether the key is one of that queue's.
	nameTyped
)

// queueSuffixes are what Dramatiq appends to a queue name, longest first.
var queueSuffixes = [...]string{
	deadSuffix + msgsSuffix, delaySuffix + msgsSuffix, delaySuffix + legacyAcks,
	msgsSuffix, legacyAcks, deadSuffix, delaySuffix,
}

// checkName decides from a key's name alone, so that a key no queue can
// own costs no TYPE and is counted the same whatever its type. The name
// is invalid when neither the key nor the key minus one Dramatiq suffix is
// a valid queue name; an __acks__. key must be __acks__.{worker id}.{queue}.
// So foreign keys under the namespace (say "ns:cache:1", or a name with a
// space or a byte that is not UTF-8) are counted, and a key that could be
// a queue's is not, even when its type then says it is not Dramatiq's.
func checkName(rest string) nameCheck {
	if rest == heartbeatKey {
		return nameSkip
	}
	if tail, ok := strings.CutPrefix(rest, acksPrefix); ok {
		if len(tail) >= workerIDLen+2 && tail[workerIDLen] == '.' &&
			validWorkerID(tail[:workerIDLen]) && validQueueName(canonical(tail[workerIDLen+1:])) {
			return nameTyped
		}
		return nameInvalid
	}
	if validQueueName(rest) {
		return nameTyped
	}
	for _, suffix := range queueSuffixes {
		if base, ok := strings.CutSuffix(rest, suffix); ok {
			if validQueueName(base) {
				return nameTyped
			}
			break
		}
	}
	return nameInvalid
}

// classify reads a key name (without the "ns:" prefix) together with its
// Redis type. A key whose name checkName finds invalid is never accepted. The type settles the one real ambiguity: queue names may
// contain dots, so "ns:foo.msgs" is either foo's hash or the list of a queue
// named "foo.msgs". Dramatiq itself cannot tell a queue named "x.DQ" from
// x's delay queue, so neither do we.
func classify(rest, typ string) classified {
	if rest == heartbeatKey {
		if typ == "zset" {
			return classified{kind: kindHeartbeats}
		}
		return classified{}
	}
	if strings.HasPrefix(rest, acksPrefix) {
		if typ != "set" {
			return classified{}
		}
		tail := rest[len(acksPrefix):]
		// {wid}.{queue}: never split on dots, the queue may have them.
		if len(tail) < workerIDLen+2 || tail[workerIDLen] != '.' {
			return classified{}
		}
		qn := tail[workerIDLen+1:]
		if !validQueueName(canonical(qn)) || !validWorkerID(tail[:workerIDLen]) {
			return classified{}
		}
		return classified{kind: kindAck, wid: tail[:workerIDLen], queue: canonical(qn), delay: strings.HasSuffix(qn, delaySuffix)}
	}
	switch typ {
	case "list":
		// The queue list or its .DQ list.
		return queueKey(canonical(rest))
	case "hash":
		// {q}.msgs or {q}.DQ.msgs. A {q}.XQ.msgs hash never comes without
		// its {q}.XQ zset, and skipping it keeps a queue literally named
		// "x.XQ" (whose hash is "x.XQ.msgs") from inventing a queue "x".
		base, ok := strings.CutSuffix(rest, msgsSuffix)
		if !ok || strings.HasSuffix(base, deadSuffix) {
			return classified{}
		}
		return queueKey(canonical(base))
	case "zset":
		if b, ok := strings.CutSuffix(rest, deadSuffix); ok {
			return queueKey(b)
		}
		if b, ok := strings.CutSuffix(rest, legacyAcks); ok && validQueueName(canonical(b)) {
			// Only the presence of legacy ack sets matters (a warning that
			// old workers run); their queue part is never a label, so it is
			// not kept.
			return classified{kind: kindLegacyAcks}
		}
	}
	return classified{}
}

// validWorkerID accepts what Dramatiq's broker ids are, str(uuid4()):
// hex digits and dashes. An ack set named otherwise was not written by
// Dramatiq, and its id, which is compared with heartbeat members, must not
// carry bytes that are not UTF-8 into the reader.
func validWorkerID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

func queueKey(q string) classified {
	if !validQueueName(q) {
		return classified{}
	}
	return classified{kind: kindQueue, queue: q}
}

// maxQueueNameLen bounds a queue name, which becomes a label on every
// queue series. Dramatiq sets no limit; real names are short. The same
// bound as the exporter's own name flags (config.MaxNameBytes).
const maxQueueNameLen = 256

// validQueueName mirrors Dramatiq's actor registration rule
// [a-zA-Z_][a-zA-Z0-9._-]*, so foreign keys in the namespace (a cache entry
// that happens to share the prefix) do not become queues. Being ASCII, a
// valid name is also valid UTF-8, which a Prometheus label must be.
func validQueueName(q string) bool {
	return len(q) <= maxQueueNameLen && queueNameChars(q)
}

// queueNameChars is validQueueName without the length bound.
func queueNameChars(q string) bool {
	if q == "" {
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
