package collector

import (
	"bufio"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
)

// QueueFamily is a family with one series per queue, labelled queue only.
// They are most of a scrape (seven series per queue), and going through
// client_golang (a const metric, a dto.Metric, consistency checks, sorting,
// encoding) cost more than the whole Redis read. So a projection keeps
// their samples as columns over the queues of the read, and /metrics can
// write them straight into the text format (Projection.WriteQueueFamily);
// every other format, and every other family, still goes through a
// registry (Projection.All, Projection.Rest).
type QueueFamily struct {
	name, help string
	typ        prometheus.ValueType
	desc       *prometheus.Desc
	header     string // the HELP and TYPE lines in the text format
}

// NewQueueFamily declares a per-queue family. It is called from package
// variables only, so an invalid name is a programming error: the direct
// writer writes names as they are, which only a legacy-valid name allows
// under every escaping scheme.
func NewQueueFamily(name, help string, typ prometheus.ValueType) *QueueFamily {
	if !model.LegacyValidation.IsValidMetricName(name) {
		panic("collector: per-queue family name " + strconv.Quote(name) + " is not a legacy metric name")
	}
	t := "gauge"
	switch typ {
	case prometheus.GaugeValue:
	case prometheus.CounterValue:
		t = "counter"
	default:
		panic("collector: per-queue family " + name + " must be a gauge or a counter")
	}
	return &QueueFamily{
		name: name, help: help, typ: typ,
		desc:   prometheus.NewDesc(name, help, []string{"queue"}, nil),
		header: "# HELP " + name + " " + helpEscaper.Replace(help) + "\n# TYPE " + name + " " + t + "\n",
	}
}

// Desc is the family's descriptor, for Describe.
func (f *QueueFamily) Desc() *prometheus.Desc { return f.desc }

// Name is the family's metric name.
func (f *QueueFamily) Name() string { return f.name }

// The text format's escaping, as github.com/prometheus/common/expfmt does
// it: HELP text escapes backslash and newline, label values also the
// double quote.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// queueLabel is one queue's label in both forms a scrape needs.
type queueLabel struct {
	pair []*dto.LabelPair // for the registry path
	text string           // `{queue="…"}`, escaped, for the direct writer
}

// queueLabels keeps each queue's label from one scrape to the next: at
// 1,000 queues, building them afresh was a third of a scrape's
// allocations. They are never modified once built, so concurrent scrapes
// share them.
type queueLabels struct {
	mu   sync.Mutex
	last map[string]*queueLabel // the queues of the latest scrape only
}

// labels returns the label for each name (nil when the name cannot be a
// label value: invalid UTF-8 or longer than MaxLabelValueLength) and keeps
// only these names for the next scrape, so the cache is bounded by the
// queues of one read.
func (c *queueLabels) labels(names []string) []*queueLabel {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	next := make(map[string]*queueLabel, len(names))
	out := make([]*queueLabel, len(names))
	for i, name := range names {
		l, ok := last[name]
		if !ok {
			if len(name) > MaxLabelValueLength || !utf8.ValidString(name) {
				continue
			}
			n, v := "queue", name
			l = &queueLabel{
				pair: []*dto.LabelPair{{Name: &n, Value: &v}},
				text: `{queue="` + valueEscaper.Replace(name) + `"}`,
			}
		}
		next[name] = l
		out[i] = l
	}
	c.mu.Lock()
	c.last = next
	c.mu.Unlock()
	return out
}

// queueSamples are the per-queue families of one projection: one row per
// queue of the read, one column per family.
type queueSamples struct {
	names  []string
	labels []*queueLabel // nil where the name cannot be a label value
	cols   []*queueColumn
}

type queueColumn struct {
	fam    *QueueFamily
	values []float64
	has    []bool
	n      int // rows with a sample
}

// queueRows starts the per-queue families of this projection over the
// queues names, in the read's order; samples then name a row by its index.
// A collector calls it at most once per projection.
func (m *Metrics) queueRows(cache *queueLabels, names []string) {
	m.queues = &queueSamples{names: names, labels: cache.labels(names)}
}

// queueSample adds family f's sample of row i. A queue whose name cannot
// be a label value counts as a series left out, as Gauge does.
func (m *Metrics) queueSample(f *QueueFamily, i int, v float64) {
	q := m.queues
	if q.labels[i] == nil {
		m.invalid++
		return
	}
	var col *queueColumn
	for _, c := range q.cols {
		if c.fam == f {
			col = c
			break
		}
	}
	if col == nil {
		col = &queueColumn{fam: f, values: make([]float64, len(q.names)), has: make([]bool, len(q.names))}
		q.cols = append(q.cols, col)
	}
	if !col.has[i] {
		col.n++
	}
	col.values[i], col.has[i] = v, true
}

// appendMetrics turns the samples into metrics for a registry.
func (q *queueSamples) appendMetrics(list []prometheus.Metric) []prometheus.Metric {
	if q == nil {
		return list
	}
	for _, c := range q.cols {
		for i, ok := range c.has {
			if ok {
				list = append(list, &queueMetric{fam: c.fam, value: c.values[i], labels: q.labels[i].pair})
			}
		}
	}
	return list
}

// queueMetric is one sample of a per-queue family, with the shared label.
type queueMetric struct {
	fam    *QueueFamily
	value  float64
	labels []*dto.LabelPair
}

func (g *queueMetric) Desc() *prometheus.Desc { return g.fam.desc }

func (g *queueMetric) Write(out *dto.Metric) error {
	out.Label = g.labels
	if g.fam.typ == prometheus.CounterValue {
		out.Counter = &dto.Counter{Value: &g.value}
	} else {
		out.Gauge = &dto.Gauge{Value: &g.value}
	}
	return nil
}

// sortedRows is the order a registry exposes the rows in: by label value,
// each value once. ok is false when a queue name repeats, which a registry
// reports as an error: the caller then takes the registry path, so that it
// behaves exactly as before.
func (q *queueSamples) sortedRows() (rows []int, ok bool) {
	rows = make([]int, 0, len(q.names))
	for i, l := range q.labels {
		if l != nil {
			rows = append(rows, i)
		}
	}
	less := func(a, b int) int { return strings.Compare(q.names[a], q.names[b]) }
	if !slices.IsSortedFunc(rows, less) {
		slices.SortStableFunc(rows, less)
	}
	for k := 1; k < len(rows); k++ {
		if q.names[rows[k]] == q.names[rows[k-1]] {
			return nil, false
		}
	}
	return rows, true
}

// writeText writes the column as expfmt's text encoder writes the
// registry's family: HELP, TYPE, then the samples in rows' order.
func (c *queueColumn) writeText(w *bufio.Writer, q *queueSamples, rows []int, num []byte) []byte {
	w.WriteString(c.fam.header)
	for _, i := range rows {
		if !c.has[i] {
			continue
		}
		w.WriteString(c.fam.name)
		w.WriteString(q.labels[i].text)
		w.WriteByte(' ')
		num = appendFloat(num[:0], c.values[i])
		w.Write(num)
		w.WriteByte('\n')
	}
	return num
}

// appendFloat formats f as expfmt's writeFloat does.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, '1')
	case f == 0:
		return append(b, '0')
	case f == -1:
		return append(b, "-1"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}
