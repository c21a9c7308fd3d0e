package server

import (
	"math"
	"sort"

	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// MaxBacklogRows is how many rows "Backlog by actor" shows: the largest
// queues' top actors. assets/status.js renders the same rows.
const MaxBacklogRows = 20

type backlogRow struct {
	Queue, Actor string
	Messages     int64
	Sampled      bool
}

// backlogRows lists the top actors of the queues with the most ready
// messages, queue by queue, at most MaxBacklogRows.
func backlogRows(s *status.Status) []backlogRow {
	qs := make([]status.QueueStatus, 0, len(s.Queues))
	for _, q := range s.Queues {
		if len(q.BacklogByActor) > 0 {
			qs = append(qs, q)
		}
	}
	sort.SliceStable(qs, func(i, j int) bool { return qs[i].Ready > qs[j].Ready })
	var out []backlogRow
	for _, q := range qs {
		for _, a := range q.BacklogByActor {
			if len(out) == MaxBacklogRows {
				return out
			}
			out = append(out, backlogRow{Queue: q.Name, Actor: a.Actor, Messages: int64(math.Round(a.Messages)), Sampled: a.Estimate == "sampled"})
		}
	}
	return out
}
