package config

// Flags of the `check` subcommand. They live apart from config.go because
// only `check` has them; every other setting (Redis, database, collectors,
// environment) is shared with the server through AddFlags. They share the
// config file, whose check: section the server ignores.

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"

	"github.com/dramatiq-exporter/dramatiq_exporter/status"
)

// DefaultCheckTimeout bounds a whole `check` run.
const DefaultCheckTimeout = 5 * time.Second

// AllQueues keys a check threshold that applies to every queue.
const AllQueues = status.AllQueues

// Check is the validated configuration of `check`. What the thresholds
// mean, and their defaults, are the status package's.
type Check struct {
	MinProcesses int
	// MaxReady and MaxOldestAge map a queue name, or AllQueues, to a limit.
	MaxReady     map[string]int64
	MaxOldestAge map[string]time.Duration
	NoOrphans    bool
	Timeout      time.Duration
}

// CheckFlags are the parsed check flags.
type CheckFlags struct {
	minProcesses *int
	maxReady     *[]string
	maxOldestAge *[]string
	noOrphans    *bool
	timeout      *time.Duration
}

// AddCheckFlags declares the check thresholds on the check subcommand. The
// config file sets them under check:, below the flags, as for every other
// setting.
func (fl *Flags) AddCheckFlags(cmd *kingpin.CmdClause) *CheckFlags {
	cf := &CheckFlags{}
	c, b := fl.bind(cmd, "check.min-processes", "Unhealthy when fewer Dramatiq processes (workers or producers) have sent a heartbeat within --dramatiq.heartbeat-timeout. On RabbitMQ (no heartbeats): when the best-served queue has fewer consumers, i.e. fewer worker processes consume any one queue.", "")
	cf.minProcesses = intFlag(c, "check.min-processes", status.DefaultMinProcesses)
	b.fromFile = func(f *fileConfig) error {
		if f.Check.MinProcesses != nil {
			*cf.minProcesses = *f.Check.MinProcesses
		}
		return nil
	}

	c, b = fl.bind(cmd, "check.max-ready", "Unhealthy when a queue has more ready messages: N for every queue, or QUEUE=N for one. Repeatable.", "")
	cf.maxReady = c.PlaceHolder("[QUEUE=]N").Strings()
	b.fromFile = func(f *fileConfig) error {
		if len(f.Check.MaxReady) > 0 {
			*cf.maxReady = f.Check.MaxReady
		}
		return nil
	}

	c, b = fl.bind(cmd, "check.max-oldest-age", "Unhealthy when the oldest ready message of a queue is older: DURATION for every queue, or QUEUE=DURATION for one. Repeatable.", "")
	cf.maxOldestAge = c.PlaceHolder("[QUEUE=]DURATION").Strings()
	b.fromFile = func(f *fileConfig) error {
		if len(f.Check.MaxOldestAge) > 0 {
			*cf.maxOldestAge = f.Check.MaxOldestAge
		}
		return nil
	}

	c, b = fl.bind(cmd, "check.no-orphans", "Unhealthy when any message is held by a process whose heartbeat stopped (orphaned).", "")
	cf.noOrphans = c.Bool()
	b.fromFile = func(f *fileConfig) error {
		if f.Check.NoOrphans != nil {
			*cf.noOrphans = *f.Check.NoOrphans
		}
		return nil
	}

	c, b = fl.bind(cmd, "check.timeout", "The check answers within this time, even when Redis or the database hangs.", "")
	cf.timeout = goDurationFlag(c, "check.timeout", DefaultCheckTimeout)
	// The file's value goes through the flag's own parser (Go durations).
	timeout := c.Model().Value
	b.fromFile = func(f *fileConfig) error { return setValue(timeout, f.Check.Timeout) }
	return cf
}

// Load validates the check flags; errors name the flag at fault.
func (f *CheckFlags) Load() (*Check, error) {
	c := &Check{
		MinProcesses: *f.minProcesses,
		NoOrphans:    *f.noOrphans,
		Timeout:      *f.timeout,
		MaxReady:     map[string]int64{},
		MaxOldestAge: map[string]time.Duration{},
	}
	if c.MinProcesses < 0 {
		return nil, fmt.Errorf("--check.min-processes: must be 0 or more, not %d", c.MinProcesses)
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("--check.timeout: must be positive, not %s", c.Timeout)
	}
	for _, raw := range *f.maxReady {
		q, v, err := perQueue(raw)
		if err == nil {
			var n int64
			n, err = strconv.ParseInt(v, 10, 64)
			if err == nil && n < 0 {
				err = fmt.Errorf("must be 0 or more")
			}
			c.MaxReady[q] = n
		}
		if err != nil {
			return nil, fmt.Errorf("--check.max-ready %q: want N or QUEUE=N: %v", raw, err)
		}
	}
	for _, raw := range *f.maxOldestAge {
		q, v, err := perQueue(raw)
		if err == nil {
			var d model.Duration
			d, err = model.ParseDuration(v)
			if err == nil && d <= 0 {
				err = fmt.Errorf("must be positive")
			}
			c.MaxOldestAge[q] = time.Duration(d)
		}
		if err != nil {
			return nil, fmt.Errorf("--check.max-oldest-age %q: want DURATION or QUEUE=DURATION: %v", raw, err)
		}
	}
	return c, nil
}

// Thresholds are the status model's thresholds of this check.
func (c *Check) Thresholds() status.Thresholds {
	t := status.Thresholds{
		MinProcesses: c.MinProcesses, MaxReady: c.MaxReady, NoOrphans: c.NoOrphans,
		MaxOldestAge: make(map[string]status.Duration, len(c.MaxOldestAge)),
	}
	for q, d := range c.MaxOldestAge {
		t.MaxOldestAge[q] = status.Duration(d)
	}
	return t
}

// perQueue splits "QUEUE=V" (or "V", for every queue).
func perQueue(raw string) (queue, value string, err error) {
	queue, value, found := strings.Cut(strings.TrimSpace(raw), "=")
	if !found {
		return AllQueues, queue, nil
	}
	if len(queue) > MaxNameBytes {
		return "", "", fmt.Errorf("a queue name is %d bytes long, more than %d", len(queue), MaxNameBytes)
	}
	if !queueName.MatchString(queue) {
		return "", "", fmt.Errorf("%q is not a Dramatiq queue name", queue)
	}
	return queue, value, nil
}
