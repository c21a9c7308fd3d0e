package status

import (
	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// MaxBacklogActors is how many actors of one queue's backlog the status
// shows (the metrics carry them all): the page answers "who fills this
// queue", which the top few do.
const MaxBacklogActors = 3

// ActorBacklog is one actor's share of a queue's ready messages
// (dramatiq_queue_ready_messages_by_actor). Estimate is "exact" or
// "sampled", as the metric's label.
type ActorBacklog struct {
	Actor    string  `json:"actor"`
	Messages float64 `json:"messages"`
	Estimate string  `json:"estimate"`
}

// topBacklog returns each queue's largest actors, at most
// MaxBacklogActors; nil when the read did not count the backlog by actor.
func topBacklog(snap *broker.Snapshot) map[string][]ActorBacklog {
	if snap == nil || snap.Redis == nil || snap.Redis.Backlog == nil {
		return nil
	}
	out := map[string][]ActorBacklog{}
	// The reader sorts by queue, then largest first.
	for _, a := range snap.Redis.Backlog.Actors {
		if len(out[a.Queue]) == MaxBacklogActors {
			continue
		}
		e := "exact"
		if a.Sampled {
			e = "sampled"
		}
		out[a.Queue] = append(out[a.Queue], ActorBacklog{Actor: a.Actor, Messages: a.Messages, Estimate: e})
	}
	return out
}
