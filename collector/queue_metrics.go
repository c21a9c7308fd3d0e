package collector

import (
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// queueLabels keeps each queue's label pair from one scrape to the next.
// The per-queue families are seven series per queue, and a const metric
// builds its label pairs afresh for every series: at 1,000 queues that was
// about a third of a scrape's allocations. The pairs are never modified
// once built, so concurrent scrapes share them.
type queueLabels struct {
	mu   sync.Mutex
	last map[string][]*dto.LabelPair // the queues of the latest scrape only
}

// pairs returns the queue label for each name (nil when the name cannot be
// a label value: invalid UTF-8 or longer than MaxLabelValueLength) and
// keeps only these names for the next scrape, so the cache is bounded by
// the queues of one read.
func (c *queueLabels) pairs(names []string) [][]*dto.LabelPair {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	next := make(map[string][]*dto.LabelPair, len(names))
	out := make([][]*dto.LabelPair, len(names))
	for i, name := range names {
		p, ok := last[name]
		if !ok {
			if len(name) > MaxLabelValueLength || !utf8.ValidString(name) {
				continue
			}
			n, v := "queue", name
			p = []*dto.LabelPair{{Name: &n, Value: &v}}
		}
		next[name] = p
		out[i] = p
	}
	c.mu.Lock()
	c.last = next
	c.mu.Unlock()
	return out
}

// queueGauge is one sample of a per-queue family, with the shared label.
type queueGauge struct {
	desc   *prometheus.Desc
	value  float64
	labels []*dto.LabelPair
}

func (g *queueGauge) Desc() *prometheus.Desc { return g.desc }

func (g *queueGauge) Write(out *dto.Metric) error {
	out.Label = g.labels
	out.Gauge = &dto.Gauge{Value: &g.value}
	return nil
}

// queueCounter is queueGauge for a per-queue counter family.
type queueCounter queueGauge

func (c *queueCounter) Desc() *prometheus.Desc { return c.desc }

func (c *queueCounter) Write(out *dto.Metric) error {
	out.Label = c.labels
	out.Counter = &dto.Counter{Value: &c.value}
	return nil
}

// queueCounter adds a per-queue counter sample, as queueGauge does.
func (m *Metrics) queueCounter(d *prometheus.Desc, v float64, labels []*dto.LabelPair) {
	if labels == nil {
		m.invalid++
		return
	}
	m.list = append(m.list, &queueCounter{desc: d, value: v, labels: labels})
}

// queueGauge adds a per-queue sample; labels nil counts it as left out,
// as Gauge does for a label value that cannot be exposed.
func (m *Metrics) queueGauge(d *prometheus.Desc, v float64, labels []*dto.LabelPair) {
	if labels == nil {
		m.invalid++
		return
	}
	m.list = append(m.list, &queueGauge{desc: d, value: v, labels: labels})
}
