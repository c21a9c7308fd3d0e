// Package mixin generates the shipped Prometheus rules, the example
// Alertmanager configuration and the Grafana dashboards of dramatiq_exporter
// from one Config, in the spirit of a monitoring mixin. The generated files are
// committed; `go run ./alerts/gen` rewrites them and a test fails when they are
// out of date.
//
// It is Go rather than jsonnet so that building and testing need nothing but
// the Go toolchain; it also writes the same rules and dashboards as a jsonnet
// monitoring mixin into mixin/ (jsonnet.go, docs/mixin.md).
package mixin

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Config is the one place where the job selector and every threshold are set.
type Config struct {
	// Selector is added to every series selector of every rule. It names the
	// scrape job of the exporter; change it to match your scrape config.
	Selector string
	// WorkersSelector selects the series of Dramatiq's own Prometheus
	// middleware (dramatiq.middleware.prometheus). Prometheus scrapes those
	// from the worker processes under the workers' scrape job, not the
	// exporter's, so it is a separate selector; change it to match your
	// scrape config.
	WorkersSelector string
	// RunbookURL is the address of alerts/RUNBOOK.md; each alert links to the
	// section named after it.
	RunbookURL string
	// ForScale multiplies every `for:` duration (1 for the shipped rules). Tests
	// against a live Prometheus use a small value so alerts fire in seconds.
	ForScale float64

	ExporterDownFor     time.Duration
	CollectorFailingFor time.Duration
	QueuesDroppedFor    time.Duration
	RedisDownFor        time.Duration
	DatabaseDownFor     time.Duration

	NoAliveProcessesFor time.Duration
	// QueueNotConsumedFor is how long a queue may hold ready messages while
	// no live worker holds any of its messages.
	QueueNotConsumedFor time.Duration
	// QueueLatencyThreshold is the age of the oldest ready message.
	QueueLatencyThreshold time.Duration
	QueueLatencyFor       time.Duration
	// BacklogGrowthWindow is the range of the linear fit; BacklogGrowthMin is
	// the growth (messages over that window) below which a rise is noise.
	BacklogGrowthWindow time.Duration
	BacklogGrowthMin    int
	BacklogGrowthFor    time.Duration
	OrphanedFor         time.Duration
	// HeldMessageThreshold is how long a live worker may hold a message
	// (running or prefetched) before DramatiqMessageHeldTooLong fires:
	// above Dramatiq's default time_limit of 10 minutes, with room for the
	// prefetched messages that wait behind running ones (RUNBOOK.md).
	HeldMessageThreshold time.Duration
	HeldMessageFor       time.Duration
	// WorkersDying fires when the stale process count rose by at least
	// WorkersDyingMinIncrease over WorkersDyingWindow, for WorkersDyingFor.
	// A one-off step (one deploy) stays in the window for less than the
	// window, so with For >= Window only sustained dying fires.
	WorkersDyingWindow      time.Duration
	WorkersDyingMinIncrease int
	WorkersDyingFor         time.Duration
	// DeadLettersWindow is how long after a dead-lettering the alert fires.
	DeadLettersWindow time.Duration
	// ActorDeadLettersMin is how many messages of one actor must be
	// dead-lettered within ActorDeadLettersWindow for
	// DramatiqActorDeadLettersHigh to fire.
	ActorDeadLettersMin    int
	ActorDeadLettersWindow time.Duration

	// ActorErrorRatio is the share of an actor's processed messages that
	// raised (retried attempts included) above which DramatiqActorErrorRatioHigh
	// fires, once the actor processes at least ActorErrorMinRate messages a
	// second (so that one failure of a rarely used actor is not a page).
	ActorErrorRatio   float64
	ActorErrorMinRate float64
	ActorErrorFor     time.Duration

	// RabbitMQ only (docs/dramatiq-rabbitmq-layout.md). QueueNoConsumersFor
	// is how long a queue may hold ready messages with no consumer on it.
	RabbitMQDownFor     time.Duration
	QueueNoConsumersFor time.Duration
	// DelayRedeliveriesWindow must be a little longer than RabbitMQ's
	// consumer_timeout (30 min by default): a worker holding a delayed
	// message past it gets its .DQ backlog redelivered once per timeout
	// (plus the worker's restart), in bursts, not as a steady rate. The
	// alert needs redeliveries in each of two consecutive windows, so one
	// burst (a worker restart) never fires and repeating bursts do.
	DelayRedeliveriesWindow time.Duration
	DelayRedeliveriesFor    time.Duration
	LayoutProblemsFor       time.Duration
	// DelayedUnclaimedAge is how long the oldest delayed message may wait
	// in a queue's .DQ list, claimed by no worker, before
	// DramatiqDelayedMessagesUnclaimed fires. A live worker claims them
	// within about a second.
	DelayedUnclaimedAge time.Duration
	DelayedUnclaimedFor time.Duration
	// DelayedOverdueFor is how long messages held past their eta (plus the
	// exporter's 1-minute grace) may stay held before
	// DramatiqDelayedMessagesOverdue fires.
	DelayedOverdueFor time.Duration

	// The queue latency objective: a queue is within it while its oldest
	// ready message is at most QueueLatencyObjectiveAge old, for
	// QueueLatencyObjectiveTarget (0–1) of the time. The burn-rate alerts
	// (SRE workbook, multi-window) fire when the error budget burns
	// QueueLatencyBurnFast times too fast over 1h and 5m, or
	// QueueLatencyBurnSlow times over 6h and 30m.
	QueueLatencyObjectiveAge    time.Duration
	QueueLatencyObjectiveTarget float64
	QueueLatencyBurnFast        float64
	QueueLatencyBurnSlow        float64

	DatabaseConnectionsRatio float64
	DatabaseConnectionsFor   time.Duration
	DatabaseTransactionAge   time.Duration
	DatabaseTransactionFor   time.Duration
	DatabaseBlockedFor       time.Duration

	// DashboardTags are the tags of every dashboard; the dashboards link to
	// each other through the first one.
	DashboardTags []string
	// DashboardUIDs are the dashboards' fixed uids (the Overview's queue
	// table links to the Queue dashboard by its uid).
	DashboardUIDs DashboardUIDs
}

// DashboardUIDs holds the uid of each dashboard.
type DashboardUIDs struct {
	Overview, Queue, Database, Actors string
}

// DefaultConfig is the configuration of the committed files.
func DefaultConfig() Config {
	return Config{
		Selector:        `job="dramatiq"`,
		WorkersSelector: `job="dramatiq-workers"`,
		RunbookURL:      "https://github.com/dramatiq-exporter/dramatiq_exporter/blob/main/alerts/RUNBOOK.md",
		ForScale:        1,

		ExporterDownFor:     5 * time.Minute,
		CollectorFailingFor: 10 * time.Minute,
		QueuesDroppedFor:    15 * time.Minute,
		RedisDownFor:        2 * time.Minute,
		DatabaseDownFor:     2 * time.Minute,

		NoAliveProcessesFor:     5 * time.Minute,
		QueueNotConsumedFor:     10 * time.Minute,
		QueueLatencyThreshold:   10 * time.Minute,
		QueueLatencyFor:         5 * time.Minute,
		BacklogGrowthWindow:     30 * time.Minute,
		BacklogGrowthMin:        100,
		BacklogGrowthFor:        15 * time.Minute,
		OrphanedFor:             15 * time.Minute,
		HeldMessageThreshold:    30 * time.Minute,
		HeldMessageFor:          5 * time.Minute,
		WorkersDyingWindow:      15 * time.Minute,
		WorkersDyingMinIncrease: 2,
		WorkersDyingFor:         15 * time.Minute,
		DeadLettersWindow:       15 * time.Minute,
		ActorDeadLettersMin:     10,
		ActorDeadLettersWindow:  15 * time.Minute,
		ActorErrorRatio:         0.25,
		ActorErrorMinRate:       1.0 / 60,
		ActorErrorFor:           15 * time.Minute,

		RabbitMQDownFor:         2 * time.Minute,
		QueueNoConsumersFor:     10 * time.Minute,
		DelayRedeliveriesWindow: 35 * time.Minute,
		DelayRedeliveriesFor:    5 * time.Minute,
		LayoutProblemsFor:       15 * time.Minute,
		DelayedUnclaimedAge:     10 * time.Minute,
		DelayedUnclaimedFor:     5 * time.Minute,
		DelayedOverdueFor:       10 * time.Minute,

		QueueLatencyObjectiveAge:    5 * time.Minute,
		QueueLatencyObjectiveTarget: 0.99,
		QueueLatencyBurnFast:        14.4,
		QueueLatencyBurnSlow:        6,

		DatabaseConnectionsRatio: 0.8,
		DatabaseConnectionsFor:   5 * time.Minute,
		DatabaseTransactionAge:   5 * time.Minute,
		DatabaseTransactionFor:   2 * time.Minute,
		DatabaseBlockedFor:       5 * time.Minute,

		DashboardTags: []string{"dramatiq", "dramatiq-exporter"},
		DashboardUIDs: DashboardUIDs{
			Overview: "dramatiq-overview", Queue: "dramatiq-queue",
			Database: "dramatiq-database", Actors: "dramatiq-actors",
		},
	}
}

// Validate rejects a configuration that would produce broken rules.
func (c Config) Validate() error {
	if strings.TrimSpace(c.Selector) == "" {
		return fmt.Errorf("empty selector: every rule needs a job selector")
	}
	if strings.ContainsAny(c.Selector, "{}") {
		return fmt.Errorf("selector %q: give the matchers without braces, e.g. job=\"dramatiq\"", c.Selector)
	}
	if strings.TrimSpace(c.WorkersSelector) == "" || strings.ContainsAny(c.WorkersSelector, "{}") {
		return fmt.Errorf("workers selector %q: give the matchers of the workers' scrape job without braces, e.g. job=\"dramatiq-workers\"", c.WorkersSelector)
	}
	if c.ForScale <= 0 || math.IsInf(c.ForScale, 0) || math.IsNaN(c.ForScale) {
		return fmt.Errorf("for-scale %v: must be a positive number", c.ForScale)
	}
	if t := c.QueueLatencyObjectiveTarget; !(t > 0 && t < 1) {
		return fmt.Errorf("queue latency objective target %v: must be between 0 and 1, exclusive", t)
	}
	if !(c.QueueLatencyBurnFast > 0) || !(c.QueueLatencyBurnSlow > 0) {
		return fmt.Errorf("queue latency burn rates %v and %v: must be positive", c.QueueLatencyBurnFast, c.QueueLatencyBurnSlow)
	}
	if c.RunbookURL == "" {
		return fmt.Errorf("empty runbook URL")
	}
	if len(c.DashboardTags) == 0 || slices.Contains(c.DashboardTags, "") {
		return fmt.Errorf("dashboard tags %q: need at least one, none empty", c.DashboardTags)
	}
	u := c.DashboardUIDs
	if slices.Contains([]string{u.Overview, u.Queue, u.Database, u.Actors}, "") {
		return fmt.Errorf("dashboard uids %+v: every dashboard needs one", u)
	}
	return nil
}

// forDuration applies ForScale, rounded to whole seconds but never to zero,
// because a scaled `for:` of 0 would change what the test observes.
func (c Config) forDuration(d time.Duration) time.Duration {
	if d == 0 {
		return 0
	}
	s := time.Duration(float64(d) * c.ForScale).Round(time.Second)
	if s < time.Second {
		s = time.Second
	}
	return s
}

// promDuration formats d the way Prometheus writes durations (1h30m, 5m, 90s
// becomes 1m30s).
func promDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	units := []struct {
		u time.Duration
		s string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	for _, u := range units {
		if n := d / u.u; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.s)
			d -= n * u.u
		}
	}
	return b.String()
}
