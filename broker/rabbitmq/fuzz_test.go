package rabbitmq

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeQueues feeds arbitrary answers to the decoder and the fold.
// Whatever it accepts must come out consistent: only Dramatiq-pattern names,
// no negative count, delayed never below its held part, every listed queue
// accounted for once (reported, ignored or an anomaly), and problem texts
// bounded and printable.
func FuzzDecodeQueues(f *testing.F) {
	f.Add([]byte("[" + dramatiqQueues("emails", 5, 2, 3, 4, 6) + "]"))
	f.Add([]byte(`[{"name":"q","arguments":{"x-dead-letter-routing-key":"q.XQ","x-max-priority":1e3}},{"name":"q.XQ"}]`))
	f.Add([]byte(`[{"name":"a.DQ","messages_ready":1},{"name":"a.XQ","messages":2,"arguments":{"x-message-ttl":-1}}]`))
	f.Add([]byte("[{\"name\":\"\xff\"},{\"name\":\"\\ud800.DQ\"},{\"name\":\".XQ\"}]"))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"name":"x","message_stats":{"redeliver":3},"consumers":1}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		queues, total, anomalies, err := decodeQueues(bytes.NewReader(data), 1000)
		if err != nil {
			return
		}
		if total > 1000 {
			t.Fatalf("%d queues past the cap", total)
		}
		out, ignored := fold(queues)
		members := 0
		for _, q := range out {
			if !ValidQueueName(q.Name) {
				t.Fatalf("reported queue name %q", q.Name)
			}
			for _, c := range []Count{q.Ready, q.InFlight, q.Delayed, q.DelayedHeld, q.DeadLetters, q.Consumers, q.DelayConsumers, q.Redeliveries, q.DelayRedeliveries} {
				if c.OK && c.N < 0 {
					t.Fatalf("%s: negative count %+v", q.Name, c)
				}
			}
			if q.Delayed.OK && q.DelayedHeld.OK && q.Delayed.N < q.DelayedHeld.N {
				t.Fatalf("%s: delayed %d < held %d", q.Name, q.Delayed.N, q.DelayedHeld.N)
			}
			if q.Ready.OK && !q.Main.Exists || q.Delayed.OK && !q.Delay.Exists || q.DeadLetters.OK && !q.Dead.Exists {
				t.Fatalf("%s: a number from a missing member", q.Name)
			}
			for _, m := range []Member{q.Main, q.Delay, q.Dead} {
				if m.Exists {
					members++
				}
			}
			if len(q.Problems) > 17 {
				t.Fatalf("%d problems", len(q.Problems))
			}
			for _, p := range q.Problems {
				if len(p) > 700 || !utf8.ValidString(p) || strings.ContainsAny(p, "\x00\n\r") {
					t.Fatalf("problem %q", p)
				}
			}
		}
		if members+ignored+anomalies != total {
			t.Fatalf("%d listed, but %d reported + %d ignored + %d anomalies", total, members, ignored, anomalies)
		}
	})
}
