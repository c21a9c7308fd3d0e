package status

import "github.com/dramatiq-exporter/dramatiq_exporter/history"

// AddHistory adds the trends of t to s after From: the status page asks
// for the trends of the queues it shows only, which it knows once the
// status is judged.
func (s *Status) AddHistory(t *history.Trend) { s.addHistory(t) }
