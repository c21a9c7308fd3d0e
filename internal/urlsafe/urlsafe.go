// Package urlsafe checks URLs that may carry a password (the Redis and the
// database URL) without ever repeating them. A password with an unescaped
// URL delimiter (# / ? @ and the like) moves the rest of the URL into the
// host, the path or the fragment, where it is no longer masked: so when a
// URL does not parse cleanly into user info, no part of it is shown.
package urlsafe

import (
	"errors"
	"net/url"
	"strings"
)

// Hint tells how to pass a password with special characters.
const Hint = "percent-encode any of : / ? # [ ] @ ! $ & ' ( ) * + , ; = % and space in the user name or password (# as %23, / as %2F, ? as %3F, @ as %40, % as %25)"

// ErrNotShown is wrapped by every error of Check.
var ErrNotShown = errors.New("not shown: it may hold a password")

// Check parses raw as a URL whose password, if any, sits in the user info.
// Its errors say what is wrong in general terms and contain no character
// of raw.
func Check(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's errors quote the URL or the bad part of it.
		return nil, fail("cannot be parsed as a URL")
	}
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	// The authority ends at the first / ? or #; an @ after a non-empty
	// authority means the user info was cut short by one of those
	// characters in the password. (unix:///run/redis@6379.sock has an empty
	// authority and a legitimate @.)
	end := strings.IndexAny(rest, "/?#")
	if end > 0 && strings.Contains(rest[end:], "@") {
		return nil, fail("has an @ after the host, so its password is not where it belongs")
	}
	// go-redis takes the last @ of the authority as the end of the user
	// info, pgx (which parses multi-host URLs itself) the first: a password
	// with an @ would put its tail into pgx's host name.
	if end < 0 {
		end = len(rest)
	}
	if strings.Count(rest[:end], "@") > 1 {
		return nil, fail("has more than one @ before the host")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fail("has a #, which ends a URL's address")
	}
	return u, nil
}

func fail(why string) error {
	return &checkError{why: why}
}

type checkError struct{ why string }

func (e *checkError) Error() string {
	return e.why + " (" + ErrNotShown.Error() + "); " + Hint
}

func (e *checkError) Unwrap() error { return ErrNotShown }

// Redacted returns the URL for a log line: the password in the user info,
// and a password query parameter, masked. Use it only on a URL that Check
// accepted.
func Redacted(u *url.URL) string {
	c := *u
	if q := c.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		c.RawQuery = q.Encode()
	}
	return c.Redacted()
}
