package server

import (
	"bytes"
	"compress/gzip"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	brokermodel "github.com/dramatiq-exporter/dramatiq_exporter/broker"
	broker "github.com/dramatiq-exporter/dramatiq_exporter/broker/redis"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
)

// The per-queue families written straight from the state must give
// exactly the answer the registry path gives for the same state: headers,
// body byte for byte (after gzip), for the Accept and Accept-Encoding
// headers Prometheus 2 and 3, curl and odd clients send, with queue names
// that need escaping, cannot be label values, or sort unlike their order
// in the read, and families of base that sort before, between and after
// the per-queue ones. Where the direct writer cannot be sure, it must
// leave the request untouched for the registry path.
func TestDirectQueueFamiliesMatchRegistry(t *testing.T) {
	client, err := broker.NewClient(broker.ClientOptions{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	exp, err := collector.NewExporter(collector.ExporterOptions{Enabled: map[string]bool{"broker": true}, Environment: "prod", Namespace: "dramatiq"},
		collector.Sources{Broker: broker.NewReader(client, broker.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	hostile := []string{
		"default", `quo"te`, `back\slash`, "new\nline", `\n literal`, "tab\there", "队列", "emoji 🚀", "",
		"{}=,#", "zzz", "A-upper", "a b", "\xff\xfe", strings.Repeat("x", collector.MaxLabelValueLength),
		strings.Repeat("y", collector.MaxLabelValueLength+1), "default.DQ", "ümlaut", "a\u00a0nbsp", "\u2028sep",
	}
	base := prometheus.NewRegistry()
	for _, name := range []string{"a_first_total", "dramatiq_queue_e_between", "dramatiq_queue_p_between", "zzz_last"} {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "Base family, help with \\ and \n."})
		g.Set(3.5)
		base.MustRegister(g)
	}

	states := map[string]*collector.State{
		"hostile names, read order": brokerState(hostile, false),
		"hostile names, sorted":     brokerState(hostile, true),
		"no queues":                 brokerState(nil, false),
		"no valid queue":            brokerState([]string{"\xff", strings.Repeat("z", collector.MaxLabelValueLength+1)}, false),
		"repeated name":             brokerState([]string{"b", "a", "b"}, false),
		"redis down":                {Collectors: []string{"broker"}, Outcomes: []collector.Outcome{{Name: "broker"}}, Broker: &collector.BrokerState{}},
	}
	accepts := []string{
		"",
		// Prometheus 2.42 and 3.x defaults, and with native histograms.
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
		"text/plain", "text/plain;version=0.0.4", "text/plain;version=1.0.0;escaping=underscores",
		"text/plain;version=1.0.0;escaping=dots", "text/plain;version=1.0.0;escaping=values", "*/*",
		"application/openmetrics-text;version=1.0.0", "application/json",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
	}
	encodings := []string{"", "gzip", "identity", "gzip, deflate, br", "*", "br", "gzip;q=0", "GZIP", "identity;q=0, gzip", " gzip", "gzip,,identity", "gzip, identity"}
	queries := []string{"", "?name[]=dramatiq_queue_ready_messages", "?x=1"}
	errLog := log.New(io.Discard, "", 0)

	direct := 0
	for sname, st := range states {
		for _, accept := range accepts {
			for _, enc := range encodings {
				for _, query := range queries {
					req := func() *http.Request {
						r := httptest.NewRequest(http.MethodGet, "/metrics"+query, nil)
						if accept != "" {
							r.Header.Set("Accept", accept)
						}
						if enc != "" {
							r.Header["Accept-Encoding"] = []string{enc}
						}
						return r
					}
					// One projection for both paths: the label cache is shared.
					p := exp.Project(st)
					got := httptest.NewRecorder()
					took := writeDirect(got, req(), p, base, errLog)
					want := httptest.NewRecorder()
					serveMetrics(want, req(), p, base, errLog, false)
					where := sname + " | Accept: " + accept + " | Accept-Encoding: " + enc + " | " + query
					if !took {
						if len(got.Header()) != 0 || got.Body.Len() != 0 {
							t.Fatalf("%s: declined but wrote %v %q", where, got.Header(), got.Body.String())
						}
						if wantDirect(sname, accept, enc, query) {
							t.Errorf("%s: direct path declined", where)
						}
						continue
					}
					direct++
					if !wantDirect(sname, accept, enc, query) {
						t.Errorf("%s: direct path taken where the registry must answer", where)
					}
					if got.Code != want.Code {
						t.Fatalf("%s: status %d, registry %d", where, got.Code, want.Code)
					}
					for _, h := range []string{"Content-Type", "Content-Encoding", "Vary"} {
						if g, w := got.Header().Values(h), want.Header().Values(h); strings.Join(g, "|") != strings.Join(w, "|") {
							t.Errorf("%s: %s %q, registry %q", where, h, g, w)
						}
					}
					gb, wb := body(t, got), body(t, want)
					if gb != wb {
						t.Fatalf("%s: body differs\n got:\n%s\nwant:\n%s", where, gb, wb)
					}
					checkParsed(t, where, gb, st)
				}
			}
		}
	}
	if direct == 0 {
		t.Fatal("the direct path was never taken")
	}
}

// wantDirect is when the direct writer must answer: text format, no
// name[] filter, a plain Accept-Encoding, no repeated queue name.
func wantDirect(state, accept, enc, query string) bool {
	switch {
	case state == "repeated name", strings.Contains(query, "name[]"),
		strings.Contains(accept, "protobuf") && !strings.Contains(accept, "encoding=text"):
		return false
	case strings.Contains(accept, "protobuf"): // the text form of protobuf
		return false
	}
	switch enc {
	case "", "gzip", "identity", "gzip, deflate, br", "*", "br", "gzip, identity":
		return true
	}
	return false
}

func body(t *testing.T, r *httptest.ResponseRecorder) string {
	t.Helper()
	b := r.Body.Bytes()
	if r.Header().Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return string(b)
}

// checkParsed parses the direct answer as Prometheus does and checks every
// queue that can be a label value is there, once, with its own numbers.
func checkParsed(t *testing.T, where, text string, st *collector.State) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("%s: does not parse: %v\n%s", where, err, text)
	}
	if st.Broker == nil || st.Broker.Snapshot == nil {
		if _, ok := mfs["dramatiq_queue_ready_messages"]; ok {
			t.Errorf("%s: queue series without a snapshot", where)
		}
		return
	}
	ready := map[string]float64{}
	if mf := mfs["dramatiq_queue_ready_messages"]; mf != nil {
		for _, m := range mf.Metric {
			if len(m.Label) != 1 || m.Label[0].GetName() != "queue" {
				t.Fatalf("%s: labels %v", where, m.Label)
			}
			if _, dup := ready[m.Label[0].GetValue()]; dup {
				t.Fatalf("%s: queue %q twice", where, m.Label[0].GetValue())
			}
			ready[m.Label[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	valid := 0
	for _, q := range st.Broker.Snapshot.Queues {
		if len(q.Name) > collector.MaxLabelValueLength || !model.LabelValue(q.Name).IsValid() {
			if _, ok := ready[q.Name]; ok {
				t.Errorf("%s: invalid name %q exposed", where, q.Name)
			}
			continue
		}
		valid++
		if v, ok := ready[q.Name]; !ok || v != float64(q.Ready.N) {
			t.Errorf("%s: queue %q ready %v (present %v), want %d", where, q.Name, v, ok, q.Ready.N)
		}
	}
	if len(ready) != valid {
		t.Errorf("%s: %d queues exposed, want %d", where, len(ready), valid)
	}
}

// brokerState is a read that saw the named queues, with numbers that
// exercise every special case of the float format.
func brokerState(names []string, sorted bool) *collector.State {
	if sorted {
		names = append([]string(nil), names...)
		for i := range names {
			for j := i + 1; j < len(names); j++ {
				if names[j] < names[i] {
					names[i], names[j] = names[j], names[i]
				}
			}
		}
	}
	snap := &broker.Snapshot{MemoryUsedBytes: 1 << 30, ConnectedClients: math.NaN(), ProcessesAlive: 3, Anomalies: broker.Anomalies{"wrong_type": 2},
		DeadLetteredByActor: []broker.ActorDeadLetters{{Queue: "default", Actor: "we\"ird\nactor", Count: 3}, {Queue: `quo"te`, Actor: broker.ActorUnknown, Count: 1}}}
	values := []int64{0, 1, -1, 7, 1 << 53, 1<<53 + 1, 123456789012, 1e15, 42}
	for i, name := range names {
		q := broker.QueueStats{Name: name, Ready: values[i%len(values)], InFlight: int64(i), Delayed: values[(i+3)%len(values)],
			DeadLetter: int64(i % 3), Orphaned: int64(i % 2), DeadLettered: uint64(values[(i+5)%len(values)] & (1<<62 - 1)), OldestAge: time.Duration(i) * 1234567 * time.Microsecond, OldestAgeKnown: i%3 != 1}
		if i%2 == 0 {
			q.DeadLetterLast = time.UnixMilli(1_700_000_000_000 + int64(i)*1001)
		}
		snap.Queues = append(snap.Queues, q)
	}
	return &collector.State{
		Time: time.Unix(1_700_000_000, 0), Environment: "prod\"uction", Namespace: "dramatiq",
		Collectors: []string{"broker"}, Outcomes: []collector.Outcome{{Name: "broker", Success: true, Duration: 1500 * time.Microsecond}},
		Broker: &collector.BrokerState{Snapshot: broker.ToModel(snap), Discovery: &brokermodel.DiscoveryStatus{Passes: 2, Completed: time.Unix(1_700_000_000, 5e8), Keys: 10, Keyspace: -1}},
	}
}
