package collector

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// FuzzLabelValues: whatever bytes a Redis key or a flag holds, adding a
// series never panics, and a series that is kept has valid, bounded label
// values and encodes in the text exposition format.
func FuzzLabelValues(f *testing.F) {
	for _, seed := range []string{"", "default", "q\xff\xfebad", "\xc3\x28", "a\x00b", "line\nbreak", `quo"te\`, "émoji 🎉", string(make([]byte, MaxLabelValueLength+1))} {
		f.Add(seed)
	}
	desc := prometheus.NewDesc("dramatiq_fuzz_messages", "Fuzzed.", []string{"queue"}, nil)
	f.Fuzz(func(t *testing.T, value string) {
		m := &Metrics{}
		m.Gauge(desc, 1, value)
		m.Counter(desc, 2, value)
		valid := utf8.ValidString(value) && len(value) <= MaxLabelValueLength
		if valid != (len(m.list) == 2) || valid != (m.Invalid() == 0) {
			t.Fatalf("value %q (valid %v): kept %d, invalid %d", value, valid, len(m.list), m.Invalid())
		}
		for _, c := range m.list {
			var pb dto.Metric
			if err := c.Write(&pb); err != nil {
				t.Fatalf("write: %v", err)
			}
			typ := dto.MetricType_GAUGE
			if pb.Counter != nil {
				typ = dto.MetricType_COUNTER
			}
			name, help := "dramatiq_fuzz_messages", "Fuzzed."
			mf := &dto.MetricFamily{Name: &name, Help: &help, Type: &typ, Metric: []*dto.Metric{&pb}}
			var buf bytes.Buffer
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				t.Fatalf("encode %q: %v", value, err)
			}
			if !utf8.Valid(buf.Bytes()) {
				t.Fatalf("exposition of %q is not UTF-8", value)
			}
		}
	})
}
