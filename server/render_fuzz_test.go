package server

import (
	"bytes"
	"encoding/json"
	"html/template"
	"io"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	brokermodel "github.com/dramatiq-exporter/dramatiq_exporter/broker"
	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// fuzzStatus builds the status of a broker holding one queue with one dead
// letter, every field of which comes from the fuzzer: anything a broker can
// hold reaches the renderers this way.
func fuzzStatus(queue, actor, msgID, traceback string, args []byte, ready, deadLetterMs, ageMs int64, memory float64, showArgs bool) *status.Status {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// The broker reader hands over args only as valid JSON.
	var raw json.RawMessage
	if json.Valid(args) {
		raw = args
	}
	retries := int(ready % 1000)
	other := "default"
	if runesAsJSON(queue) == other {
		other = "other"
	}
	snap := &broker.Snapshot{
		MemoryUsedBytes: memory, ConnectedClients: math.NaN(), ProcessesAlive: int(ready % 7), ProcessesStale: 1,
		Queues: []broker.QueueStats{
			{
				Name: queue, Ready: ready, InFlight: -ready, Delayed: ready / 3, DeadLetter: 1, Orphaned: ready % 2,
				DeadLetterLast: time.UnixMilli(deadLetterMs), OldestAge: time.Duration(ageMs) * time.Millisecond,
				OldestAgeKnown: ageMs%5 != 0,
			},
			{Name: other, Ready: 1, OldestAgeKnown: true},
		},
		// The actor names the counters hand on are sanitised by the reader;
		// the renderers must cope with any string anyway.
		DeadLetteredByActor: []broker.ActorDeadLetters{{Queue: queue, Actor: actor, Count: uint64(ready)}, {Queue: other, Actor: msgID, Count: 1}},
	}
	snap.Queues[0].DeadLettered = uint64(ready)
	// What is stuck, from the same values: any duration, known or not.
	q0 := &snap.Queues[0]
	q0.LongestHeld, q0.LongestHeldLowerBound = time.Duration(ageMs)*time.Millisecond, ready%2 == 0
	q0.DelayedUnclaimedAge, q0.DelayedUnclaimedAgeKnown = time.Duration(deadLetterMs)*time.Millisecond, ageMs%3 != 0
	q0.DelayedOverdue, q0.DelayedOverdueKnown = ready, ready%5 != 0
	st := &collector.State{
		Time: now, Duration: time.Duration(ageMs), Environment: actor, Namespace: queue,
		Collectors: []string{"broker"}, Outcomes: []collector.Outcome{{Name: "broker", Success: true}},
		Broker: &collector.BrokerState{
			Snapshot: broker.ToModel(snap),
			RecentDeadLetters: map[string][]brokermodel.DeadLetter{queue: {{
				MessageID: msgID, Actor: actor, DeadLetteredAt: time.UnixMilli(deadLetterMs),
				Retries: &retries, TracebackLast: traceback, Undecodable: ready%3 == 0,
				Args: raw, Kwargs: raw,
			}}},
		},
	}
	// A history of a few reads: this one, one that failed, one that did
	// not list the fuzzed queue, and this one again.
	clock := now.Add(-time.Hour)
	h := history.New(history.Options{Now: func() time.Time { return clock }})
	h.Record(st)
	clock = clock.Add(history.Resolution)
	h.Record(&collector.State{Time: clock})
	clock = clock.Add(history.Resolution)
	h.Record(&collector.State{Time: clock, Broker: &collector.BrokerState{Snapshot: broker.ToModel(&broker.Snapshot{Queues: snap.Queues[1:]})}})
	clock = now
	h.Record(st)
	return status.From(st, status.Options{
		Thresholds:      status.Thresholds{MinProcesses: 1, MaxReady: map[string]int64{queue: ready / 2}},
		ShowMessageArgs: showArgs, RecentDeadLetters: true, History: h.Trend(nil),
	})
}

func addSeeds(f *testing.F) {
	f.Add("default", "send_email", "0d4f0f5c-6d0b-4c4b-9b8e-1b0c2f6d7a10", "ValueError: boom", []byte(`[1, "a"]`), int64(5), int64(1767225600000), int64(90000), 1024.0, true)
	f.Add("q\xff\xfebad", "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "</time><script>x</script>", []byte(`{"</script>": "\u2028"}`), int64(-1), int64(253402300800000), int64(-5), math.Inf(1), true)
	f.Add("<b>q</b>", "a>b", "<i>", "<svg", []byte(`["<td>"]`), int64(3), int64(1767225600000), int64(61000), 0.0, true)
	f.Add("", "", "", "", []byte(nil), int64(math.MaxInt64), int64(math.MinInt64), int64(math.MaxInt64), math.NaN(), false)
}

// runesAsJSON is what encoding/json makes of a string: each invalid byte
// becomes U+FFFD.
func runesAsJSON(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		b.WriteRune(r)
		s = s[n:]
	}
	return b.String()
}

// The API's JSON either encodes, and then decodes to the same names, or
// fails with an error only for a time JSON cannot carry.
func FuzzStatusJSON(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, queue, actor, msgID, traceback string, args []byte, ready, deadLetterMs, ageMs int64, memory float64, showArgs bool) {
		st := fuzzStatus(queue, actor, msgID, traceback, args, ready, deadLetterMs, ageMs, memory, showArgs)
		body, err := EncodeStatus(st)
		if err != nil {
			// Times JSON cannot carry are absent, NaN is never a number:
			// nothing a broker holds may fail the answer.
			t.Fatalf("encoding failed: %v", err)
		}
		// Args and kwargs are the message's own JSON, whose numbers may
		// be beyond float64 (a Python int of 700 digits): a client decodes
		// them as numbers of any size, as json.Number does.
		var back status.Status
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("the API's JSON does not decode: %v\n%s", err, body)
		}
		if !utf8.Valid(body) {
			t.Fatalf("the API's JSON is not valid UTF-8")
		}
		if back.History == nil || len(back.History.Reads) != history.Slots {
			t.Fatalf("history = %+v", back.History)
		}
		var found bool
		for _, q := range back.Queues {
			if h := q.History; h == nil || len(h.Ready) != history.Slots || len(h.DeadLetter) != history.Slots || len(h.OldestMessageAgeSeconds) != history.Slots {
				t.Fatalf("queue %q history = %+v", q.Name, q.History)
			}
			if q.Name != runesAsJSON(queue) {
				continue
			}
			found = true
			if q.Ready != ready {
				t.Errorf("ready = %d, want %d", q.Ready, ready)
			}
			if len(q.RecentDeadLetters) != 1 {
				t.Fatalf("recent dead letters = %v", q.RecentDeadLetters)
			}
			d := q.RecentDeadLetters[0]
			if d.Actor != runesAsJSON(actor) || d.MessageID != runesAsJSON(msgID) || d.Traceback != runesAsJSON(traceback) {
				t.Errorf("dead letter changed in JSON: %+v", d)
			}
			if d.Args != nil && !showArgs {
				t.Errorf("args shown without show-args: %v", d.Args)
			}
		}
		if !found {
			t.Errorf("queue %q missing from the JSON", queue)
		}
	})
}

// renderPage draws st's page as the server does, unfiltered.
func renderPage(w io.Writer, st *status.Status) error {
	return pageTmpl.Execute(w, pageData{
		S: st, V: newPageView(st, selectQueues(st, ""), "", PageQueues),
		CSS: template.CSS(pageCSS), JS: template.JS(pageJS), RefreshSeconds: RefreshSeconds, PageQueues: PageQueues,
		TelemetryPath: "/metrics", MetricsHref: "./metrics",
	})
}

// The page renders whatever the broker holds, and nothing from the broker
// becomes markup: the only script element is the page's own.
func FuzzStatusHTML(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, queue, actor, msgID, traceback string, args []byte, ready, deadLetterMs, ageMs int64, memory float64, showArgs bool) {
		st := fuzzStatus(queue, actor, msgID, traceback, args, ready, deadLetterMs, ageMs, memory, showArgs)
		var buf bytes.Buffer
		if err := renderPage(&buf, st); err != nil {
			t.Fatalf("rendering failed: %v", err)
		}
		page := strings.ToLower(buf.String())
		if n := strings.Count(page, "<script"); n != 1 {
			t.Fatalf("%d script elements, want the page's own only", n)
		}
		// Three sparklines per queue, each a whole image with its text
		// alternative, and nothing else of SVG.
		want := 3 * len(st.Queues)
		if o, c, img := strings.Count(page, "<svg"), strings.Count(page, "</svg>"), strings.Count(page, `role="img" aria-label="`); o != want || c != want || img != want {
			t.Fatalf("%d <svg, %d </svg>, %d labelled images; want %d each", o, c, img, want)
		}
		if n := strings.Count(page, "<title>"); n != want+1 {
			t.Fatalf("%d title elements, want the page's and one per sparkline (%d)", n, want+1)
		}
		for _, tag := range []string{"<path", "<title"} {
			if strings.Count(page, tag) > want+1 {
				t.Fatalf("too many %s: broker text became SVG", tag)
			}
		}
		// Escaped broker text carries no < or >: the page has exactly as
		// many as the page of the same texts with those two replaced.
		// (Looking for the texts themselves in the page mistakes the
		// page's own markup, "<svg" or the ">" before a cell, for them.)
		var base bytes.Buffer
		tame := strings.NewReplacer("<", "_", ">", "_").Replace
		plain := fuzzStatus(tame(queue), tame(actor), tame(msgID), tame(traceback), []byte(tame(string(args))), ready, deadLetterMs, ageMs, memory, showArgs)
		if err := renderPage(&base, plain); err != nil {
			t.Fatalf("rendering the tamed page failed: %v", err)
		}
		for _, c := range []string{"<", ">"} {
			if n, want := strings.Count(buf.String(), c), strings.Count(base.String(), c); n != want {
				t.Fatalf("%d %q in the page, %d with the texts tamed: broker text reached the page unescaped", n, c, want)
			}
		}
	})
}

// What the encoder refuses is an error with a message, never an empty
// answer: the API turns it into a 500 with that reason, check into a line
// on stderr.
func TestEncodeStatusError(t *testing.T) {
	nan := math.NaN()
	st := &status.Status{Components: status.Components{Redis: status.RedisStatus{MemoryUsedBytes: &nan}}}
	body, err := EncodeStatus(st)
	if err == nil || err.Error() == "" || body != nil {
		t.Fatalf("EncodeStatus(NaN) = %q, %v", body, err)
	}
}
