// Package safe turns a panic in one of the exporter's goroutines into the
// failure of what that goroutine was doing (a collector's read, a probed
// target, a discovery pass), logged once, instead of the end of the
// process: a panic that reaches the top of a goroutine kills the whole
// exporter, and client_golang's or net/http's recovery covers only their
// own goroutines.
package safe

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/clip"
)

// PanicError is a recovered panic, as an error.
type PanicError struct {
	Value any
	Stack []byte
}

// Error gives the panic's value, cut to clip.MaxValue bytes: it may quote
// a peer's data, and it reaches status pages and `check`'s output.
func (e *PanicError) Error() string {
	return "panic: " + clip.Text(fmt.Sprint(e.Value), clip.MaxValue)
}

// Recover must be deferred directly: `defer safe.Recover(logger, what,
// fail)`. On a panic it logs one line naming what panicked, with the
// stack, and calls fail (when not nil) with a *PanicError.
func Recover(logger *slog.Logger, what string, fail func(error)) {
	p := recover()
	if p == nil {
		return
	}
	err := &PanicError{Value: p, Stack: debug.Stack()}
	if logger != nil {
		logger.Error(what+" panicked", "panic", clip.Text(fmt.Sprint(p), clip.MaxValue), "stack", string(err.Stack))
	}
	if fail != nil {
		fail(err)
	}
}

// Go runs f in a new goroutine under Recover.
func Go(logger *slog.Logger, what string, f func(), fail func(error)) {
	go func() {
		defer Recover(logger, what, fail)
		f()
	}()
}
