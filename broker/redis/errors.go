package redis

import (
	"context"
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// execPipe runs a pipeline and returns the error that must fail the read,
// if any. An error is never a zero: of all the replies Redis can give, only
// two are data. Nil means the key or field is absent, and WRONGTYPE means a
// key of the namespace is not what Dramatiq writes (the caller counts it
// as an anomaly and reads 0). Every other error reply fails the read:
// NOAUTH, NOPERM, LOADING, MASTERDOWN, BUSY, READONLY, OOM, CLUSTERDOWN,
// and whatever a later Redis adds, as do timeouts and broken connections.
//
// The per-command check alone is not enough: when go-redis cannot
// initialise a connection (AUTH or HELLO refused with NOAUTH or WRONGPASS
// after Redis was restarted with requirepass), Exec returns that error but
// leaves every command without an error and with a zero value.
//
// INFO is the one exception: a user denied INFO (NOPERM on INFO only) still
// gets every queue number, and the Redis memory and client gauges are then
// absent, not zero. Denying INFO is a deliberate choice of the Redis
// operator, the queue numbers do not depend on it, and failing the whole
// read for it would turn a harmless ACL into "Redis is down".
func execPipe(ctx context.Context, pipe goredis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	attached := false
	for _, c := range cmds {
		e := c.Err()
		if e == nil {
			continue
		}
		attached = true
		if c.Name() == "info" && isNoPerm(e) {
			continue
		}
		// Before Redis 6.2: the overdue count lists the set instead
		// (delayed.go).
		if c.Name() == "smismember" && isUnknownCommand(e) {
			continue
		}
		if failsRead(e) {
			return e
		}
	}
	// Exec reports the first command's error; one no command carries came
	// from the connection itself.
	if !attached {
		return err
	}
	return nil
}

// failsRead tells a reply that is data (nil, WRONGTYPE) from one that is not.
func failsRead(err error) bool {
	switch {
	case err == nil, errors.Is(err, goredis.Nil):
		return false
	case isWrongType(err):
		return false
	}
	return true
}

func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

func isNoPerm(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOPERM")
}

func isUnknownCommand(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "ERR unknown command")
}
