package redis

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	const wid = "d6983b7f-ea1b-4058-9567-f011eba61602"
	cases := []struct {
		rest, typ string
		want      classified
	}{
		{"__heartbeats__", "zset", classified{kind: kindHeartbeats}},
		{"__heartbeats__", "string", classified{}},
		{"emails", "list", classified{kind: kindQueue, queue: "emails"}},
		{"emails.DQ", "list", classified{kind: kindQueue, queue: "emails"}},
		{"emails.msgs", "hash", classified{kind: kindQueue, queue: "emails"}},
		{"emails.DQ.msgs", "hash", classified{kind: kindQueue, queue: "emails"}},
		{"emails.XQ", "zset", classified{kind: kindQueue, queue: "emails"}},
		{"emails.XQ.msgs", "hash", classified{}},
		{"app.emails.v2.DQ.msgs", "hash", classified{kind: kindQueue, queue: "app.emails.v2"}},
		{"foo.msgs", "list", classified{kind: kindQueue, queue: "foo.msgs"}},
		{"foo.XQ", "list", classified{kind: kindQueue, queue: "foo.XQ"}},
		{"emails.acks", "zset", classified{kind: kindLegacyAcks}},
		{"__acks__." + wid + ".emails", "set", classified{kind: kindAck, wid: wid, queue: "emails"}},
		{"__acks__." + wid + ".app.emails.v2.DQ", "set", classified{kind: kindAck, wid: wid, queue: "app.emails.v2", delay: true}},
		{"__acks__.short.emails", "set", classified{}},
		// 36 bytes, but not a uuid4 as Dramatiq writes them.
		{"__acks__.0000000\xb50000000000000000000000000000.A", "set", classified{}},
		{"__acks__.worker-1-not-a-uuid-but-36-bytes-xyz.emails", "set", classified{}},
		{"__acks__." + wid + ".emails", "list", classified{}},
		{"some-cache:entry", "string", classified{}},
		{"1nvalid", "list", classified{}},
		{"has space", "list", classified{}},
		{"q\xff\xfebad", "list", classified{}},
		{"q\xff\xfebad.msgs", "hash", classified{}},
		{"q\xff.XQ", "zset", classified{}},
		{"__acks__." + wid + ".q\xff\xfebad", "set", classified{}},
		{"__acks__." + wid + ".\xc3\xa9mails", "set", classified{}},
		{strings.Repeat("q", maxQueueNameLen), "list", classified{kind: kindQueue, queue: strings.Repeat("q", maxQueueNameLen)}},
		{strings.Repeat("q", maxQueueNameLen+1), "list", classified{}},
		{"__acks__." + wid + "." + strings.Repeat("q", maxQueueNameLen+1), "set", classified{}},
		{"other.hash", "hash", classified{}},
	}
	for _, tc := range cases {
		if got := classify(tc.rest, tc.typ); got != tc.want {
			t.Errorf("classify(%q, %q) = %+v, want %+v", tc.rest, tc.typ, got, tc.want)
		}
	}
}

// Every key name under the namespace is one of three: the heartbeat set,
// a name a queue's key may have (TYPE decides), or a name no queue can
// own, counted once whatever its type.
func TestCheckName(t *testing.T) {
	const wid = "d6983b7f-ea1b-4058-9567-f011eba61602"
	long := strings.Repeat("q", maxQueueNameLen)
	typed := []string{
		"emails", "emails.DQ", "emails.msgs", "emails.DQ.msgs", "emails.XQ", "emails.XQ.msgs",
		"emails.acks", "emails.DQ.acks", "foo.msgs.msgs", "_", "a.b-c_d.9",
		long, long + ".DQ", long + ".msgs", long + ".DQ.msgs", long + ".XQ", long + ".XQ.msgs", long + ".acks",
		"__acks__." + wid + ".emails", "__acks__." + wid + ".emails.DQ", "__acks__." + wid + "." + long,
		"__heartbeats__x", "__heartbeats__.msgs",
	}
	invalid := []string{
		"", ".msgs", ".DQ", ".XQ.msgs", "1nvalid", "1nvalid.msgs", "-q", ".q",
		"has space", "has space.DQ.msgs", "cache:entry:1", "caf\u00e9", "caf\u00e9.XQ", "tab\t", "nul\x00",
		"q\xff\xfebad", "q\xff.msgs", "q\xff.DQ", "q\xff.DQ.msgs", "q\xff.XQ", "q\xff.XQ.msgs", "q\xff.acks", "q\xff.DQ.acks",
		long + "q", long + "q.msgs", long + "q.DQ.msgs", long + "q.XQ", long + ".msgs.msgs",
		"__acks__.", "__acks__.short.emails", "__acks__." + wid, "__acks__." + wid + ".",
		"__acks__." + wid + ".q\xff", "__acks__." + wid + ".has space", "__acks__." + wid + "." + long + "q",
		"__acks__.worker-1-not-a-uuid-but-36-bytes-xyz.emails", "__acks__.0000000\xb50000000000000000000000000000.A",
	}
	for want, names := range map[nameCheck][]string{nameTyped: typed, nameInvalid: invalid, nameSkip: {"__heartbeats__"}} {
		for _, rest := range names {
			if got := checkName(rest); got != want {
				t.Errorf("checkName(%q) = %d, want %d", rest, got, want)
			}
		}
	}
}

func TestEscapeGlob(t *testing.T) {
	for in, want := range map[string]string{"dramatiq": "dramatiq", "a*b?c[d]e\\": `a\*b\?c\[d\]e\\`} {
		if got := escapeGlob(in); got != want {
			t.Errorf("escapeGlob(%q) = %q, want %q", in, got, want)
		}
	}
}
