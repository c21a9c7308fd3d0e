package redis

import (
	"math"
	"time"
)

// The one place where a time read from Redis is accepted or rejected: the
// score of a dead letter (ms since the epoch, the nacking worker's clock)
// and a body's message_timestamp (ms, the producer's clock). Both are
// floats a writer can set to anything: NaN, ±Inf, 1e300, a negative value,
// or a year past 9999 that time.Time cannot marshal to JSON. A value
// outside [1970-01-01, 9999-12-31T23:59:59.999Z] is rejected, not clamped:
// a clamped time would be a made-up value that alerts compare against.
// The caller then leaves the time absent and counts AnomalyInvalidTime.
const (
	minMillis = 0
	// 9999-12-31T23:59:59.999Z.
	maxMillis = 253402300799999
)

// millisTime converts ms since the epoch to a time, or reports it invalid.
func millisTime(ms float64) (time.Time, bool) {
	if math.IsNaN(ms) || ms < minMillis || ms > maxMillis {
		// NaN fails every comparison, and ±Inf is caught by the bounds.
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)).UTC(), true
}
