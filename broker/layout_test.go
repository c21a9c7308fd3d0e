package broker

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
		{"__acks__.0000000\xb50000000000000000000000000000.A", "set", classified{kind: kindInvalidName}},
		{"__acks__.worker-1-not-a-uuid-but-36-bytes-xyz.emails", "set", classified{kind: kindInvalidName}},
		{"__acks__." + wid + ".emails", "list", classified{}},
		{"some-cache:entry", "string", classified{}},
		{"1nvalid", "list", classified{kind: kindInvalidName}},
		{"has space", "list", classified{kind: kindInvalidName}},
		{"q\xff\xfebad", "list", classified{kind: kindInvalidName}},
		{"q\xff\xfebad.msgs", "hash", classified{kind: kindInvalidName}},
		{"q\xff.XQ", "zset", classified{kind: kindInvalidName}},
		{"__acks__." + wid + ".q\xff\xfebad", "set", classified{kind: kindInvalidName}},
		{"__acks__." + wid + ".\xc3\xa9mails", "set", classified{kind: kindInvalidName}},
		{strings.Repeat("q", maxQueueNameLen), "list", classified{kind: kindQueue, queue: strings.Repeat("q", maxQueueNameLen)}},
		{strings.Repeat("q", maxQueueNameLen+1), "list", classified{kind: kindInvalidName}},
		{"__acks__." + wid + "." + strings.Repeat("q", maxQueueNameLen+1), "set", classified{kind: kindInvalidName}},
		{"other.hash", "hash", classified{}},
	}
	for _, tc := range cases {
		if got := classify(tc.rest, tc.typ); got != tc.want {
			t.Errorf("classify(%q, %q) = %+v, want %+v", tc.rest, tc.typ, got, tc.want)
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
