package server

// The status model behind `dramatiq_exporter check`, GET /api/v1/status and
// the status page. It is built from the metric families one gather of the
// exporter's collectors produced, never from a second read of Redis or the
// database, so the three can never disagree with /metrics. docs/api.md
// documents the JSON; change it together with these types.

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	dto "github.com/prometheus/client_model/go"

	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
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
	CheckDatabase     = "database"
	CheckMinProcesses = "min_processes"
	CheckMaxReady     = "max_ready"
	CheckMaxOldestAge = "max_oldest_age"
	CheckNoOrphans    = "no_orphans"
	CheckTimeout      = "timeout"

	ProblemOrphaned         = "orphaned"
	ProblemDeadLetters      = "dead_letters"
	ProblemOldestAgeUnknown = "oldest_age_unknown"
)

// Status is one look at the broker and the database.
type Status struct {
	Status          string        `json:"status"`
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
	Redis     RedisStatus     `json:"redis"`
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
}

// QueueStatus is one queue's numbers, straight from the dramatiq_queue_*
// metrics. OldestMessageAgeSeconds is null when the head of the queue could
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
	// RecentDeadLetters is filled by the API only (it costs one bounded
	// extra read); `check` leaves it out.
	RecentDeadLetters []DeadLetter `json:"recent_dead_letters,omitzero"`
}

// DeadLetter is one recently dead-lettered message. Args and Kwargs are
// present only with --web.show-message-args.
type DeadLetter struct {
	MessageID      string    `json:"message_id"`
	Actor          string    `json:"actor"`
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
	Retries        *int      `json:"retries"`
	Traceback      string    `json:"traceback_last_line"`
	Undecodable    bool      `json:"undecodable,omitempty"`
	Args           any       `json:"args,omitempty"`
	Kwargs         any       `json:"kwargs,omitempty"`
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

// DefaultThresholds are what the API and the status page judge by: the
// defaults of `check`.
var DefaultThresholds = Thresholds{MinProcesses: 1}

// Duration marshals as Go duration text ("5m0s").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Gather runs the exporter's collectors once, within ctx, into a registry
// made for this call (like one scrape of /metrics).
func Gather(ctx context.Context, e *collector.Exporter) []*dto.MetricFamily {
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Bind(ctx))
	// A gather error (an inconsistent metric) still returns every family
	// that could be gathered; judge by those.
	mfs, _ := reg.Gather()
	return mfs
}

// families indexes gathered metric families by name.
type families map[string]*dto.MetricFamily

func (f families) metrics(name string) []*dto.Metric {
	if mf, ok := f[name]; ok {
		return mf.GetMetric()
	}
	return nil
}

// value returns the single sample of an unlabelled gauge.
func (f families) value(name string) (float64, bool) {
	ms := f.metrics(name)
	if len(ms) == 0 {
		return 0, false
	}
	return sampleValue(ms[0]), true
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// BuildOptions say how to read one gather.
type BuildOptions struct {
	Thresholds Thresholds
	// Collectors are the names of the collectors that ran
	// (Exporter.Names): a collector that ran but sent no health gauge
	// counts as failing, one that is not running as not configured.
	Collectors []string
	Now        time.Time
	Took       time.Duration
}

// FromMetrics builds the status from one gather and judges it.
func FromMetrics(mfs []*dto.MetricFamily, o BuildOptions) *Status {
	t, now, took := o.Thresholds, o.Now, o.Took
	running := map[string]bool{}
	for _, name := range o.Collectors {
		running[name] = true
	}
	f := families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	s := &Status{
		Time:            now.UTC(),
		DurationSeconds: took.Seconds(),
		Version: Version{
			Version: version.Version, Revision: version.GetRevision(),
			Branch: version.Branch, GoVersion: version.GoVersion,
		},
		Queues:     []QueueStatus{},
		Collectors: []Collector{},
		Failed:     []Failure{},
		Thresholds: t,
	}
	for _, m := range f.metrics("dramatiq_exporter_info") {
		s.Environment, s.Namespace = label(m, "environment"), label(m, "namespace")
	}

	durations := map[string]float64{}
	for _, m := range f.metrics("dramatiq_exporter_collector_duration_seconds") {
		durations[label(m, "collector")] = sampleValue(m)
	}
	for _, m := range f.metrics("dramatiq_exporter_collector_success") {
		name := label(m, "collector")
		s.Collectors = append(s.Collectors, Collector{Name: name, Success: sampleValue(m) == 1, DurationSeconds: durations[name]})
	}
	sort.Slice(s.Collectors, func(i, j int) bool { return s.Collectors[i].Name < s.Collectors[j].Name })

	// Redis: absent dramatiq_redis_up means the broker collector is off or
	// never ran, which is as bad as down for a Dramatiq health check.
	up, _ := f.value("dramatiq_redis_up")
	redis := RedisStatus{Status: ComponentFailing, Up: up == 1}
	if redis.Up {
		redis.Status = ComponentOK
		if v, ok := f.value("dramatiq_redis_memory_used_bytes"); ok {
			redis.MemoryUsedBytes = &v
		}
		if v, ok := f.value("dramatiq_redis_connected_clients"); ok {
			redis.ConnectedClients = &v
		}
	}
	s.Components.Redis = redis

	db := DatabaseStatus{Status: ComponentNotConfigured}
	if v, ok := f.value("dramatiq_database_up"); ok || running[databaseCollector] {
		db.Up = v == 1
		db.Status = ComponentFailing
		if db.Up {
			db.Status = ComponentOK
		}
	}
	s.Components.Database = db

	for _, m := range f.metrics("dramatiq_processes") {
		switch label(m, "state") {
		case "alive":
			s.ProcessesAlive = int64(sampleValue(m))
		case "stale":
			s.ProcessesStale = int64(sampleValue(m))
		}
	}
	if v, ok := f.value("dramatiq_exporter_queues_dropped"); ok {
		s.QueuesDropped = int64(v)
	}

	queues := map[string]*QueueStatus{}
	queue := func(m *dto.Metric) *QueueStatus {
		name := label(m, "queue")
		q, ok := queues[name]
		if !ok {
			q = &QueueStatus{Name: name, Problems: []string{}}
			queues[name] = q
		}
		return q
	}
	// Every reported queue has a ready series; the others fill in.
	for _, m := range f.metrics("dramatiq_queue_ready_messages") {
		queue(m).Ready = int64(sampleValue(m))
	}
	for _, m := range f.metrics("dramatiq_queue_inflight_messages") {
		queue(m).InFlight = int64(sampleValue(m))
	}
	for _, m := range f.metrics("dramatiq_queue_delayed_messages") {
		queue(m).Delayed = int64(sampleValue(m))
	}
	for _, m := range f.metrics("dramatiq_queue_dead_letter_messages") {
		queue(m).DeadLetter = int64(sampleValue(m))
	}
	for _, m := range f.metrics("dramatiq_queue_orphaned_messages") {
		queue(m).Orphaned = int64(sampleValue(m))
	}
	for _, m := range f.metrics("dramatiq_queue_oldest_message_age_seconds") {
		v := sampleValue(m)
		queue(m).OldestMessageAgeSeconds = &v
	}
	for _, m := range f.metrics("dramatiq_queue_dead_letter_last_timestamp_seconds") {
		v := sampleValue(m)
		ts := time.UnixMilli(int64(math.Round(v * 1000))).UTC()
		queue(m).DeadLetterLast = &ts
	}
	for _, q := range queues {
		s.Queues = append(s.Queues, *q)
	}
	sort.Slice(s.Queues, func(i, j int) bool { return s.Queues[i].Name < s.Queues[j].Name })

	s.judge()
	return s
}

// judge fills component states, per-queue problems and failures.
func (s *Status) judge() {
	t := s.Thresholds
	fail := func(f Failure) { s.Failed = append(s.Failed, f) }

	if !s.Components.Redis.Up {
		fail(Failure{Check: CheckRedis, Threshold: 1, Message: "the broker's Redis did not answer"})
	}
	if s.Components.Database.Status == ComponentFailing {
		fail(Failure{Check: CheckDatabase, Threshold: 1, Message: "the database did not answer"})
	}

	p := ProcessesStatus{Alive: s.ProcessesAlive, Stale: s.ProcessesStale, MinProcesses: t.MinProcesses, Status: ComponentOK}
	switch {
	case !s.Components.Redis.Up:
		p.Status = ComponentUnknown
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
		if q.DeadLetter > 0 {
			q.Problems = append(q.Problems, ProblemDeadLetters)
		}
		if q.OldestMessageAgeSeconds == nil {
			q.Problems = append(q.Problems, ProblemOldestAgeUnknown)
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

// TimedOut is the status when the gather did not return in time. Nothing
// of it is known, so every configured source counts as failing.
func TimedOut(o BuildOptions) *Status {
	s := FromMetrics(nil, o)
	s.Failed = append([]Failure{{Check: CheckTimeout, Value: o.Took.Seconds(), Threshold: o.Took.Seconds(),
		Message: fmt.Sprintf("the collectors did not finish within %s", o.Took)}}, s.Failed...)
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
