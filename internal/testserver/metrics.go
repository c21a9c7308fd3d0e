package testserver

import dto "github.com/prometheus/client_model/go"

// Samples returns the values of a family's gauge, counter or untyped
// samples whose labels include every pair of labels.
func Samples(mf *dto.MetricFamily, labels map[string]string) []float64 {
	var out []float64
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			out = append(out, m.GetGauge().GetValue())
		case m.Counter != nil:
			out = append(out, m.GetCounter().GetValue())
		case m.Untyped != nil:
			out = append(out, m.GetUntyped().GetValue())
		}
	}
	return out
}
