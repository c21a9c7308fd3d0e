package safe

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRecoverTurnsAPanicIntoAnError(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	done := make(chan error, 1)
	var s []int
	i := 3
	Go(logger, "the test", func() {
		_ = s[i] // a runtime panic, as a bug would give
	}, func(err error) { done <- err })
	err := <-done
	var pe *PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(logs.String(), "the test panicked") || !strings.Contains(logs.String(), "stack=") {
		t.Fatalf("log: %s", logs.String())
	}
}

// A panic's value may quote a peer: its text is bounded.
func TestPanicErrorIsBounded(t *testing.T) {
	done := make(chan error, 1)
	Go(nil, "x", func() { panic(strings.Repeat("h", 1<<20)) }, func(err error) { done <- err })
	if n := len((<-done).Error()); n > 2<<10 {
		t.Fatalf("error text of %d bytes", n)
	}
}

func TestRecoverWithoutPanicDoesNothing(t *testing.T) {
	called := false
	func() {
		defer Recover(nil, "x", func(error) { called = true })
	}()
	if called {
		t.Fatal("fail called without a panic")
	}
}
