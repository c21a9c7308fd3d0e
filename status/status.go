// Package status is the status model behind `dramatiq_exporter check`,
// GET /api/v1/status and the status page, and the one place where health
// thresholds are defined and judged. It is a projection of one
// collector.State, the same value /metrics is projected from, never of a
// second read of Redis or the database, so the views cannot disagree.
// docs/api.md documents the JSON; change it together with these types.
package status

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/version"

	"github.com/dramatiq-exporter/dramatiq_exporter/broker"
	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/history"
)

// Overall and component states.
const (
	StatusHealthy   = "healthy"
	StatusUnhealthy = "unhealthy"

	ComponentOK            = "ok"
	ComponentFailing       = "failing"
	ComponentNotConfigured = "not_configured"
	// ComponentUnknown is the processes' state when Redis could not be read.
	ComponentUnknown = "unknown"
)

// Names of checks in Failure.Check, and of per-queue problems.
const (
	CheckRedis        = "redis"
	CheckRabbitMQ     = "rabbitmq"
	CheckDatabase     = "database"
	CheckMinProcesses = "min_processes"
	CheckMaxReady     = "max_ready"
	CheckMaxOldestAge = "max_oldest_age"
	CheckNoOrphans    = "no_orphans"
	CheckTimeout      = "timeout"

	ProblemOrphaned         = "orphaned"
	ProblemDeadLetters      = "dead_letters"
	ProblemOldestAgeUnknown = "oldest_age_unknown"
	// ProblemLayout: RabbitMQ's q, q.DQ and q.XQ differ from what
	// Dramatiq declares (QueueStatus.LayoutProblems says how).
	ProblemLayout = "layout"
	// ProblemNoConsumer: ready messages and no consumer (RabbitMQ).
	ProblemNoConsumer = "no_consumer"
	// ProblemDelayedOverdue: a worker holds delayed messages well past
	// their eta (Redis): the grace is built in, so any is a problem.
	ProblemDelayedOverdue = "delayed_overdue"
)

// How ProcessesStatus.Alive is measured.
const (
	// MeasureHeartbeats: processes in Dramatiq's heartbeat set (Redis).
	MeasureHeartbeats = "heartbeats"
	// MeasureConsumers: RabbitMQ has no heartbeats; Alive is the largest
	// consumer count of a Dramatiq queue, i.e. the worker processes
	// serving the best-served queue, and Stale is always 0.
	MeasureConsumers = "consumers"
)

// Status is one look at the broker and the database.
type Status struct {
	Status string `json:"status"`
	// Broker is the broker read: "redis" or "rabbitmq".
	Broker          string        `json:"broker"`
	Time            time.Time     `json:"time"`
	DurationSeconds float64       `json:"duration_seconds"`
	Environment     string        `json:"environment"`
	Namespace       string        `json:"namespace"`
	Version         Version       `json:"version"`
	Components      Components    `json:"components"`
	ProcessesAlive  int64         `json:"processes_alive"`
	ProcessesStale  int64         `json:"processes_stale"`
	Queues          []QueueStatus `json:"queues"`
	QueuesDropped   int64         `json:"queues_dropped"`
	Collectors      []Collector   `json:"collectors"`
	Thresholds      Thresholds    `json:"thresholds"`
	Failed          []Failure     `json:"failed"`
	// MessageArgsShown tells readers whether dead letters carry args and
	// kwargs (--web.show-message-args), so "no args" is never ambiguous.
	MessageArgsShown bool `json:"message_args_shown"`
	// BacklogByActor is true when the exporter counts ready messages by
	// actor (--dramatiq.backlog-by-actor); each queue then carries its top
	// actors.
	BacklogByActor bool `json:"backlog_by_actor"`
	// History is the window of the queues' trends, when asked for
	// (Options.History); each queue then carries its own.
	History *History `json:"history,omitempty"`
}

// History describes the window of every QueueHistory in a Status: slot k
// of each array covers [Start + k×Resolution, Start + (k+1)×Resolution).
type History struct {
	ResolutionSeconds float64   `json:"resolution_seconds"`
	Start             time.Time `json:"start"`
	// Reads says, per slot, what the exporter's reads saw: "none" (nobody
	// read: a chart joins the values around it), "ok" (a queue without a
	// value was absent) or "failed" (Redis did not answer).
	Reads []string `json:"reads"`
}

// QueueHistory is one queue's trend, oldest slot first; null where the
// slot has no value (see History.Reads for why).
type QueueHistory struct {
	Ready                   Counts `json:"ready"`
	OldestMessageAgeSeconds Ages   `json:"oldest_message_age_seconds"`
	DeadLetter              Counts `json:"dead_letter"`
}

// Counts are counts per slot; a negative one has no value and is null in
// JSON.
type Counts []int32

// MarshalJSON writes the counts without a pointer per value.
func (c Counts) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(c)*4)
	b = append(b, '[')
	for i, v := range c {
		if i > 0 {
			b = append(b, ',')
		}
		if v < 0 {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, int64(v), 10)
		}
	}
	return append(b, ']'), nil
}

// Ages are seconds per slot; NaN (and the infinities, which JSON cannot
// carry) has no value and is null.
type Ages []float32

// MarshalJSON writes the ages at float32 precision.
func (a Ages) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(a)*6)
	b = append(b, '[')
	for i, v := range a {
		if i > 0 {
			b = append(b, ',')
		}
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendFloat(b, f, 'g', -1, 32)
		}
	}
	return append(b, ']'), nil
}

// Version identifies the exporter build.
type Version struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	GoVersion string `json:"go_version"`
}

// Components are the sources the exporter depends on.
type Components struct {
	// Redis is not_configured when the broker is RabbitMQ.
	Redis RedisStatus `json:"redis"`
	// RabbitMQ is there only when the broker is RabbitMQ.
	RabbitMQ  *RabbitMQStatus `json:"rabbitmq,omitempty"`
	Database  DatabaseStatus  `json:"database"`
	Processes ProcessesStatus `json:"processes"`
}

// RedisStatus is the broker's Redis. The INFO numbers are null when Redis
// is down or INFO is not allowed to the exporter's user.
type RedisStatus struct {
	Status           string   `json:"status"`
	Up               bool     `json:"up"`
	MemoryUsedBytes  *float64 `json:"memory_used_bytes"`
	ConnectedClients *float64 `json:"connected_clients"`
}

// RabbitMQStatus is the broker's RabbitMQ, through its management API.
type RabbitMQStatus struct {
	Status string `json:"status"`
	Up     bool   `json:"up"`
	Vhost  string `json:"vhost"`
}

// BrokerUp says whether the broker, whichever it is, answered.
func (c Components) BrokerUp() bool {
	if c.RabbitMQ != nil {
		return c.RabbitMQ.Up
	}
	return c.Redis.Up
}

// DatabaseStatus is the application's PostgreSQL, when configured.
type DatabaseStatus struct {
	Status string `json:"status"`
	Up     bool   `json:"up"`
}

// ProcessesStatus compares alive processes with the minimum required.
type ProcessesStatus struct {
	Status       string `json:"status"`
	Alive        int64  `json:"alive"`
	Stale        int64  `json:"stale"`
	MinProcesses int    `json:"min_processes"`
	// Measure says what Alive counts: MeasureHeartbeats or
	// MeasureConsumers.
	Measure string `json:"measure"`
}

// QueueStatus is one queue's numbers, the same ones the dramatiq_queue_*
// metrics carry. OldestMessageAgeSeconds is null when the head of the queue could
// not be decoded; DeadLetterLast is null when the dead-letter queue is empty.
type QueueStatus struct {
	Name                    string     `json:"name"`
	Ready                   int64      `json:"ready"`
	InFlight                int64      `json:"in_flight"`
	Delayed                 int64      `json:"delayed"`
	DeadLetter              int64      `json:"dead_letter"`
	Orphaned                int64      `json:"orphaned"`
	OldestMessageAgeSeconds *float64   `json:"oldest_message_age_seconds"`
	DeadLetterLast          *time.Time `json:"dead_letter_last"`
	Problems                []string   `json:"problems"`
	// DeadLetteredTotal counts the messages dead-lettered since the
	// exporter started (dramatiq_queue_dead_lettered_total), and
	// DeadLetteredByActor splits it by actor, largest first.
	DeadLetteredTotal   int64              `json:"dead_lettered_total"`
	DeadLetteredByActor []ActorDeadLetters `json:"dead_lettered_by_actor"`
	// RabbitMQ only, absent on Redis: Consumers of q and of q.DQ, the
	// held part of Delayed, and how the queues differ from Dramatiq's
	// declarations.
	Consumers      *int64   `json:"consumers,omitempty"`
	DelayConsumers *int64   `json:"delay_consumers,omitempty"`
	DelayedHeld    *int64   `json:"delayed_held,omitempty"`
	LayoutProblems []string `json:"layout_problems,omitempty"`
	// What is stuck (Redis; null on RabbitMQ, listed in Unavailable), as
	// the dramatiq_queue_longest_held_message_*,
	// dramatiq_queue_delayed_unclaimed_oldest_seconds and
	// dramatiq_queue_delayed_overdue_messages series: null when the read
	// could not tell.
	LongestHeldSeconds            *float64 `json:"longest_held_seconds"`
	LongestHeldLowerBound         bool     `json:"longest_held_lower_bound"`
	DelayedUnclaimedOldestSeconds *float64 `json:"delayed_unclaimed_oldest_seconds"`
	DelayedOverdue                *int64   `json:"delayed_overdue"`
	// Unavailable lists the fields that the broker cannot give (they read
	// 0 or null here): rabbitmqUnavailable on RabbitMQ. Empty on Redis.
	Unavailable []string `json:"unavailable,omitempty"`
	// BacklogByActor is the queue's largest actors by ready messages, when
	// Status.BacklogByActor.
	BacklogByActor []ActorBacklog `json:"backlog_by_actor,omitempty"`
	// RecentDeadLetters is filled for the API and the page only (it costs
	// one bounded extra read); `check` leaves it out.
	RecentDeadLetters []DeadLetter `json:"recent_dead_letters,omitzero"`
	// History is the queue's trend, when asked for and the queue has one
	// (history.DefaultMaxQueues or --dramatiq.max-queues bound them).
	History *QueueHistory `json:"history,omitempty"`
}

// ActorDeadLetters is one actor's share of a queue's DeadLetteredTotal
// (dramatiq_actor_dead_lettered_total).
type ActorDeadLetters struct {
	Actor             string `json:"actor"`
	DeadLetteredTotal int64  `json:"dead_lettered_total"`
}

// DeadLetter is one recently dead-lettered message. Args and Kwargs are
// present only with --web.show-message-args.
type DeadLetter struct {
	MessageID string `json:"message_id"`
	Actor     string `json:"actor"`
	// DeadLetteredAt is nil when the score is not a time (see jsonTime).
	DeadLetteredAt *time.Time `json:"dead_lettered_at"`
	Retries        *int       `json:"retries"`
	Traceback      string     `json:"traceback_last_line"`
	Undecodable    bool       `json:"undecodable,omitempty"`
	// Oversize: the body was too large to read (see docs/api.md).
	Oversize bool `json:"oversize,omitempty"`
	Args     any  `json:"args,omitempty"`
	Kwargs   any  `json:"kwargs,omitempty"`
}

// Collector is one collector's outcome in this gather.
type Collector struct {
	Name            string  `json:"name"`
	Success         bool    `json:"success"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// Failure is one reason the status is unhealthy.
type Failure struct {
	Check     string  `json:"check"`
	Queue     string  `json:"queue,omitempty"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Message   string  `json:"message"`
}

// Thresholds decide health beyond "Redis and the database answer".
type Thresholds struct {
	// MinProcesses alive processes are required (0: none).
	MinProcesses int `json:"min_processes"`
	// MaxReady caps ready messages; key AllQueues applies to every queue
	// without a key of its own. Absent: no cap.
	MaxReady map[string]int64 `json:"max_ready,omitempty"`
	// MaxOldestAge caps the age of the oldest ready message, keyed like
	// MaxReady.
	MaxOldestAge map[string]Duration `json:"max_oldest_age,omitempty"`
	// NoOrphans fails on any orphaned message.
	NoOrphans bool `json:"no_orphans"`
}

// AllQueues keys a threshold for every queue. Dramatiq queue names cannot
// contain it.
const AllQueues = "*"

// databaseCollector is the name the database health collector registers.
const databaseCollector = "database"

// DefaultMinProcesses is the default of --check.min-processes, and what the
// API and the page require.
const DefaultMinProcesses = 1

// DefaultThresholds are what the API and the status page judge by: the
// defaults of `check`.
func DefaultThresholds() Thresholds { return Thresholds{MinProcesses: DefaultMinProcesses} }

// Duration marshals as Go duration text ("5m0s").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Options say how to project a State.
type Options struct {
	Thresholds Thresholds
	// ShowMessageArgs puts args and kwargs of dead letters in the status.
	// They are user data, so it is off by default.
	ShowMessageArgs bool
	// RecentDeadLetters lists every queue's recent dead letters (empty when
	// none, or when they could not be read): the State must have been read
	// with collector.ReadOptions.RecentDeadLetters.
	RecentDeadLetters bool
	// History, when set, adds every queue's trend from it.
	History *history.Trend
	// Broker is the broker configured, for a State that has no broker
	// part (a read that timed out); empty: Redis.
	Broker broker.Kind
}

// From projects one State into the status and judges it.
func From(st *collector.State, o Options) *Status {
	s := &Status{
		Time:            st.Time.UTC(),
		DurationSeconds: st.Duration.Seconds(),
		Environment:     st.Environment,
		Namespace:       st.Namespace,
		Version: Version{
			Version: version.Version, Revision: version.GetRevision(),
			Branch: version.Branch, GoVersion: version.GoVersion,
		},
		Queues:           []QueueStatus{},
		Collectors:       []Collector{},
		Failed:           []Failure{},
		Thresholds:       o.Thresholds,
		MessageArgsShown: o.ShowMessageArgs,
	}
	for _, out := range st.Outcomes {
		s.Collectors = append(s.Collectors, Collector{Name: out.Name, Success: out.Success, DurationSeconds: out.Duration.Seconds()})
	}
	sort.Slice(s.Collectors, func(i, j int) bool { return s.Collectors[i].Name < s.Collectors[j].Name })

	// Redis: no snapshot means the broker collector is off, failed or
	// never finished, which is as bad as down for a Dramatiq health check.
	redis := RedisStatus{Status: ComponentFailing}
	var snap *broker.Snapshot
	kind := broker.Redis
	if st.Broker != nil {
		snap = st.Broker.Snapshot
		if st.Broker.Kind != "" {
			kind = st.Broker.Kind
		}
	}
	if o.Broker != "" {
		kind = o.Broker
	}
	s.Broker = string(kind)
	if kind == broker.RabbitMQ {
		redis.Status = ComponentNotConfigured
		s.Components.RabbitMQ = &RabbitMQStatus{Status: ComponentFailing}
	}
	if snap != nil {
		actors := map[string][]ActorDeadLetters{}
		switch {
		case snap.Redis != nil:
			redis.Status, redis.Up = ComponentOK, true
			redis.MemoryUsedBytes = known(snap.Redis.MemoryUsedBytes)
			redis.ConnectedClients = known(snap.Redis.ConnectedClients)
			s.ProcessesAlive, s.ProcessesStale = int64(snap.Redis.ProcessesAlive), int64(snap.Redis.ProcessesStale)
			for _, a := range snap.Redis.DeadLetteredByActor {
				actors[a.Queue] = append(actors[a.Queue], ActorDeadLetters{Actor: a.Actor, DeadLetteredTotal: int64(a.Count)})
			}
		case snap.RabbitMQ != nil && s.Components.RabbitMQ != nil:
			s.Components.RabbitMQ.Status, s.Components.RabbitMQ.Up = ComponentOK, true
			s.Components.RabbitMQ.Vhost = snap.RabbitMQ.Vhost
			s.ProcessesAlive, _ = snap.MaxConsumers()
		}
		s.QueuesDropped = int64(snap.QueuesDropped)
		backlog := topBacklog(snap)
		s.BacklogByActor = backlog != nil
		for _, q := range snap.Queues {
			qs := queueStatus(q, kind)
			qs.BacklogByActor = backlog[q.Name]
			if list := actors[q.Name]; len(list) > 0 {
				sort.SliceStable(list, func(i, j int) bool { return list[i].DeadLetteredTotal > list[j].DeadLetteredTotal })
				qs.DeadLetteredByActor = list
			}
			s.Queues = append(s.Queues, qs)
		}
		sort.Slice(s.Queues, func(i, j int) bool { return s.Queues[i].Name < s.Queues[j].Name })
	}
	s.Components.Redis = redis

	db := DatabaseStatus{Status: ComponentNotConfigured}
	if _, running := st.Outcome(databaseCollector); running || st.Database != nil {
		db.Status = ComponentFailing
		if st.Database != nil && st.Database.Up {
			db.Status, db.Up = ComponentOK, true
		}
	}
	s.Components.Database = db

	if o.RecentDeadLetters {
		for i := range s.Queues {
			q := &s.Queues[i]
			q.RecentDeadLetters = deadLetters(st.Broker.RecentDeadLetters[q.Name], o.ShowMessageArgs)
		}
	}
	if o.History != nil {
		s.addHistory(o.History)
	}
	s.judge()
	return s
}

func (s *Status) addHistory(t *history.Trend) {
	h := &History{ResolutionSeconds: history.Resolution.Seconds(), Start: t.Start.UTC(), Reads: make([]string, len(t.Reads))}
	for i, r := range t.Reads {
		h.Reads[i] = r.String()
	}
	s.History = h
	for i := range s.Queues {
		q := &s.Queues[i]
		if ser := t.Queues[q.Name]; ser != nil {
			q.History = &QueueHistory{Ready: Counts(ser.Ready[:]), OldestMessageAgeSeconds: Ages(ser.OldestAge[:]), DeadLetter: Counts(ser.DeadLetter[:])}
		}
	}
}

// known is nil for NaN, the snapshot's "not allowed to read it", and for
// the infinities JSON has no number for.
func known(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// rabbitmqUnavailable are the queue fields RabbitMQ cannot give read-only
// (docs/dramatiq-rabbitmq-layout.md says why).
var rabbitmqUnavailable = []string{"orphaned", "oldest_message_age_seconds", "dead_letter_last", "dead_lettered_total", "dead_lettered_by_actor", "recent_dead_letters",
	"longest_held_seconds", "delayed_unclaimed_oldest_seconds", "delayed_overdue"}

func queueStatus(q broker.Queue, kind broker.Kind) QueueStatus {
	out := QueueStatus{
		Name: q.Name, Ready: q.Ready.N, InFlight: q.InFlight.N, Delayed: q.Delayed.N,
		DeadLetter: q.DeadLetter.N, Orphaned: q.Orphaned.N, Problems: []string{},
		DeadLetteredTotal: q.DeadLettered.N, DeadLetteredByActor: []ActorDeadLetters{},
		Consumers: ptr(q.Consumers), DelayConsumers: ptr(q.DelayConsumers), DelayedHeld: ptr(q.DelayedHeld),
		LayoutProblems: q.LayoutProblems,
	}
	if kind == broker.RabbitMQ {
		out.Unavailable = rabbitmqUnavailable
	} else {
		out.LongestHeldSeconds, out.LongestHeldLowerBound = seconds(q.LongestHeld, true), q.LongestHeldLowerBound
		out.DelayedOverdue = ptr(q.DelayedOverdue)
		out.DelayedUnclaimedOldestSeconds = seconds(q.DelayedUnclaimedAge, q.DelayedUnclaimedAgeKnown)
	}
	out.OldestMessageAgeSeconds = seconds(q.OldestAge, q.OldestAgeKnown)
	if !q.DeadLetterLast.IsZero() {
		// The precision /metrics has: milliseconds.
		out.DeadLetterLast = jsonTime(time.UnixMilli(q.DeadLetterLast.UnixMilli()))
	}
	return out
}

// seconds is d in seconds, or nil when it is not known.
func seconds(d time.Duration, known bool) *float64 {
	if !known {
		return nil
	}
	s := d.Seconds()
	return &s
}

func ptr(c broker.Count) *int64 {
	if !c.OK {
		return nil
	}
	n := c.N
	return &n
}

// jsonTime is t in UTC, or nil when t is zero (unknown) or outside the
// years JSON's RFC 3339 can carry. The broker reader already refuses such
// times; this keeps one odd value from failing the whole answer.
func jsonTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return nil
	}
	u := t.UTC()
	return &u
}

func deadLetters(list []broker.DeadLetter, withArgs bool) []DeadLetter {
	out := make([]DeadLetter, 0, len(list))
	for _, d := range list {
		dl := DeadLetter{
			MessageID: d.MessageID, Actor: d.Actor, DeadLetteredAt: jsonTime(d.DeadLetteredAt),
			Retries: d.Retries, Traceback: d.TracebackLast, Undecodable: d.Undecodable, Oversize: d.Oversize,
		}
		if withArgs {
			if len(d.Args) > 0 {
				dl.Args = validUTF8JSON(d.Args)
			}
			if len(d.Kwargs) > 0 {
				dl.Kwargs = validUTF8JSON(d.Kwargs)
			}
		}
		out = append(out, dl)
	}
	return out
}

// judge fills component states, per-queue problems and failures.
func (s *Status) judge() {
	t := s.Thresholds
	fail := func(f Failure) { s.Failed = append(s.Failed, f) }

	brokerUp := s.Components.BrokerUp()
	switch {
	case s.Components.RabbitMQ != nil && !brokerUp:
		fail(Failure{Check: CheckRabbitMQ, Threshold: 1, Message: "the broker's RabbitMQ management API did not answer"})
	case !brokerUp:
		fail(Failure{Check: CheckRedis, Threshold: 1, Message: "the broker's Redis did not answer"})
	}
	if s.Components.Database.Status == ComponentFailing {
		fail(Failure{Check: CheckDatabase, Threshold: 1, Message: "the database did not answer"})
	}

	p := ProcessesStatus{Alive: s.ProcessesAlive, Stale: s.ProcessesStale, MinProcesses: t.MinProcesses, Status: ComponentOK, Measure: MeasureHeartbeats}
	if s.Components.RabbitMQ != nil {
		p.Measure = MeasureConsumers
	}
	switch {
	case !brokerUp:
		p.Status = ComponentUnknown
	case s.ProcessesAlive < int64(t.MinProcesses) && p.Measure == MeasureConsumers:
		p.Status = ComponentFailing
		fail(Failure{Check: CheckMinProcesses, Value: float64(s.ProcessesAlive), Threshold: float64(t.MinProcesses),
			Message: fmt.Sprintf("at most %d %s consuming a queue, at least %d required", s.ProcessesAlive, plural(s.ProcessesAlive, "worker process", "worker processes"), t.MinProcesses)})
	case s.ProcessesAlive < int64(t.MinProcesses):
		p.Status = ComponentFailing
		fail(Failure{Check: CheckMinProcesses, Value: float64(s.ProcessesAlive), Threshold: float64(t.MinProcesses),
			Message: fmt.Sprintf("%d %s alive, at least %d required", s.ProcessesAlive, plural(s.ProcessesAlive, "process", "processes"), t.MinProcesses)})
	}
	s.Components.Processes = p

	for i := range s.Queues {
		q := &s.Queues[i]
		if q.Orphaned > 0 {
			q.Problems = append(q.Problems, ProblemOrphaned)
			if t.NoOrphans {
				fail(Failure{Check: CheckNoOrphans, Queue: q.Name, Value: float64(q.Orphaned),
					Message: fmt.Sprintf("queue %s: %d orphaned %s held by dead processes", q.Name, q.Orphaned, plural(q.Orphaned, "message", "messages"))})
			}
		}
		if q.DelayedOverdue != nil && *q.DelayedOverdue > 0 {
			q.Problems = append(q.Problems, ProblemDelayedOverdue)
		}
		if q.DeadLetter > 0 {
			q.Problems = append(q.Problems, ProblemDeadLetters)
		}
		if q.OldestMessageAgeSeconds == nil && !unavailable(q, "oldest_message_age_seconds") {
			q.Problems = append(q.Problems, ProblemOldestAgeUnknown)
		}
		if len(q.LayoutProblems) > 0 {
			q.Problems = append(q.Problems, ProblemLayout)
		}
		if q.Consumers != nil && *q.Consumers == 0 && q.Ready > 0 {
			q.Problems = append(q.Problems, ProblemNoConsumer)
		}
		if limit, ok := lookup(t.MaxReady, q.Name); ok && q.Ready > limit {
			q.Problems = append(q.Problems, CheckMaxReady)
			fail(Failure{Check: CheckMaxReady, Queue: q.Name, Value: float64(q.Ready), Threshold: float64(limit),
				Message: fmt.Sprintf("queue %s: %d ready messages, at most %d allowed", q.Name, q.Ready, limit)})
		}
		if limit, ok := lookup(t.MaxOldestAge, q.Name); ok && q.OldestMessageAgeSeconds != nil {
			if age := *q.OldestMessageAgeSeconds; age > time.Duration(limit).Seconds() {
				q.Problems = append(q.Problems, CheckMaxOldestAge)
				fail(Failure{Check: CheckMaxOldestAge, Queue: q.Name, Value: age, Threshold: time.Duration(limit).Seconds(),
					Message: fmt.Sprintf("queue %s: oldest message waited %s, at most %s allowed", q.Name,
						(time.Duration(age) * time.Second).Round(time.Second), time.Duration(limit))})
			}
		}
	}

	s.Status = StatusHealthy
	if len(s.Failed) > 0 {
		s.Status = StatusUnhealthy
	}
}

func unavailable(q *QueueStatus, field string) bool {
	for _, f := range q.Unavailable {
		if f == field {
			return true
		}
	}
	return false
}

// TimedOut is the status when the read did not return in time. Nothing of
// it is known, so every configured source counts as failing.
func TimedOut(collectors []string, begin time.Time, took time.Duration, o Options) *Status {
	st := &collector.State{Time: begin, Duration: took, Collectors: collectors}
	for _, name := range collectors {
		st.Outcomes = append(st.Outcomes, collector.Outcome{Name: name, Duration: took})
	}
	s := From(st, o)
	s.Failed = append([]Failure{{Check: CheckTimeout, Value: took.Seconds(), Threshold: took.Seconds(),
		Message: fmt.Sprintf("the collectors did not finish within %s", took)}}, s.Failed...)
	s.Status = StatusUnhealthy
	return s
}

// lookup finds a queue's own threshold, else the one for every queue.
func lookup[V any](m map[string]V, queue string) (V, bool) {
	if v, ok := m[queue]; ok {
		return v, true
	}
	v, ok := m[AllQueues]
	return v, ok
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// FailureSummary is one line for logs and the page's title.
func (s *Status) FailureSummary() string {
	var msgs []string
	for _, f := range s.Failed {
		msgs = append(msgs, f.Message)
	}
	return strings.Join(msgs, "; ")
}

// validUTF8JSON passes raw JSON on with any byte that is not UTF-8
// replaced by U+FFFD. JSON allows such bytes inside strings (a message body
// is whatever bytes its producer wrote), but a JSON answer must be UTF-8,
// and encoding/json passes a RawMessage on verbatim.
func validUTF8JSON(raw json.RawMessage) json.RawMessage {
	if utf8.Valid(raw) {
		return raw
	}
	return json.RawMessage(strings.ToValidUTF8(string(raw), "\uFFFD"))
}
