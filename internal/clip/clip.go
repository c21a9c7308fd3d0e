// Package clip bounds text that peers can make long before it reaches a
// log line or an error shown to users: an error quoting a server's words,
// a host name a Sentinel gave, a panic's value. A 1 MiB host name from a
// hostile Sentinel must not be written in full on every retry.
package clip

import (
	"context"
	"fmt"
	"log/slog"
	"unicode/utf8"
)

const (
	// MaxValue bounds one logged value (and a message) in bytes. Errors
	// the exporter writes itself are far shorter.
	MaxValue = 1024
	// MaxStack bounds a logged stack trace (the "stack" attribute), which
	// holds no peer's text, only function names and addresses.
	MaxStack = 16 << 10
)

// Text returns s cut to at most n bytes on a rune boundary, with a note
// of how much was cut, or s when it fits.
func Text(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d more bytes not shown)", s[:cut], len(s)-cut)
}

// Error returns err with its text cut to MaxValue bytes; errors.Is and
// errors.As still see err. nil stays nil.
func Error(err error) error {
	if err == nil || len(err.Error()) <= MaxValue {
		return err
	}
	return clipped{err}
}

type clipped struct{ err error }

func (c clipped) Error() string { return Text(c.err.Error(), MaxValue) }
func (c clipped) Unwrap() error { return c.err }

// NewHandler returns h with every attribute value, and the message, cut
// to MaxValue bytes (MaxStack for "stack"), so that whoever logs through
// it need not think of it.
func NewHandler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ slog.Handler }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Text(r.Message, MaxValue), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(attr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h handler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = attr(a)
	}
	return handler{h.Handler.WithAttrs(out)}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{h.Handler.WithGroup(Text(name, MaxValue))}
}

func attr(a slog.Attr) slog.Attr {
	limit := MaxValue
	if a.Key == "stack" {
		limit = MaxStack
	}
	a.Key = Text(a.Key, MaxValue)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if len(v.String()) > limit {
			a.Value = slog.StringValue(Text(v.String(), limit))
		} else {
			a.Value = v
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, x := range g {
			out[i] = attr(x)
		}
		a.Value = slog.GroupValue(out...)
	case slog.KindAny:
		// Kept as it is when short, so that a handler formats it as it
		// would have (a list stays a list in JSON).
		// fmt calls Error or String, and survives their panics.
		s := fmt.Sprint(v.Any())
		if len(s) > limit {
			a.Value = slog.StringValue(Text(s, limit))
		} else {
			a.Value = v
		}
	default:
		a.Value = v
	}
	return a
}
