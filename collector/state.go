package collector

import (
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
)

// State is one read of every enabled source. /metrics, /api/v1/status, the
// status page and `check` are projections of it (Exporter.Collect here, the
// status package for the others), so they cannot disagree about what one
// read saw. A State is never modified after Exporter.Read returns it: many
// callers may share it.
type State struct {
	// Time is when the read began; Duration how long it took.
	Time     time.Time
	Duration time.Duration
	// Environment and Namespace are the exporter's, for the info series.
	Environment string
	Namespace   string
	// Collectors are the names of the collectors that ran, sorted.
	Collectors []string
	// Outcomes has one entry per name in Collectors, in the same order.
	Outcomes []Outcome

	// Each collector fills its own part. A part is nil when its collector
	// is not enabled, or did not finish by the caller's deadline.
	Broker           *BrokerState
	Database         *DatabaseState
	DatabaseActivity *DatabaseActivityState
}

// Outcome is how one collector's read went.
type Outcome struct {
	Name     string
	Success  bool
	Duration time.Duration
	// Err is for logs only: it may quote the source's own message and is
	// never a label, and never shown on the page or the API.
	Err error
}

// Outcome returns the named collector's outcome; ok is false when it did
// not run.
func (s *State) Outcome(name string) (o Outcome, ok bool) {
	for _, o := range s.Outcomes {
		if o.Name == name {
			return o, true
		}
	}
	return Outcome{}, false
}

// BrokerState is the broker collector's part.
type BrokerState struct {
	// Kind is the broker read, answered or not.
	Kind broker.Kind
	// Snapshot is nil when the broker did not answer (Err says why).
	Snapshot *broker.Snapshot
	Err      error
	// Discovery is the background discovery's progress; nil when the
	// reader does not discover (named queues only).
	Discovery *broker.DiscoveryStatus
	// RecentDeadLetters holds the newest dead letters of each queue that
	// has any, when the read asked for them (ReadOptions.RecentDeadLetters)
	// and they could be read; DeadLettersErr says why not otherwise. Their
	// failure does not fail the collector: the metrics do not carry them.
	RecentDeadLetters map[string][]broker.DeadLetter
	DeadLettersErr    error
}

// DatabaseState is the database collector's part.
type DatabaseState struct {
	// Up is true when a connection and SELECT 1 succeeded.
	Up   bool
	Ping time.Duration
	// Details is nil when the status query failed (or Up is false).
	Details *DatabaseDetails
}

// DatabaseDetails are the server's identity, capacity and role.
type DatabaseDetails struct {
	ServerVersion  string // first word of server_version
	Name           string // current_database()
	MaxConnections float64
	InRecovery     bool
	// ReplicationLag is nil on a primary, and on a replica that is behind
	// but has not replayed a commit yet.
	ReplicationLag *float64
	SizeBytes      float64
}

// DatabaseActivityState is the database_activity collector's part.
type DatabaseActivityState struct {
	// Connections counts client sessions by pg_stat_activity.state.
	Connections          map[string]float64
	OldestTransactionAge float64 // seconds
	Blocked              float64
}
