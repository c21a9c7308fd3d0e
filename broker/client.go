package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func init() {
	// go-redis logs dial failures on its own, to stderr, on every scrape
	// while Redis is down; the collector already reports them once, through
	// the exporter's logger.
	redis.SetLogger(silentLogger{})
}

type silentLogger struct{}

func (silentLogger) Printf(context.Context, string, ...any) {}

// ClientOptions configure the Redis connection.
type ClientOptions struct {
	// URL is redis://, rediss:// (TLS) or unix://. It may carry a password.
	URL string
	// Password, when set, replaces the URL's password (from a file or the
	// environment, so it does not show in `ps`).
	Password string
	// Timeout bounds dialing, reads and writes when a call's context has no
	// earlier deadline.
	Timeout time.Duration
}

// NewClient builds a Redis client for reading the broker. It does not
// connect: the exporter must start while Redis is down and report it.
func NewClient(o ClientOptions) (*redis.Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if _, err := url.Parse(o.URL); err != nil {
		// url.Error repeats the whole URL, password included: keep only why.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("invalid Redis URL: %v", err)
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL: %v", sanitize(err, o.URL))
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	// Retrying inside one scrape only spends the deadline; the next scrape
	// is the retry. MaxRetries 0 would mean "default 3", and the dialer
	// has retries of its own (docs/clients.md).
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.DialTimeout = o.Timeout
	opt.ReadTimeout = o.Timeout
	opt.WriteTimeout = o.Timeout
	opt.ContextTimeoutEnabled = true
	opt.PoolSize = 4
	opt.PoolTimeout = o.Timeout
	opt.MinIdleConns = 0
	opt.ClientName = "dramatiq_exporter"
	return redis.NewClient(opt), nil
}

// sanitize keeps a secret-bearing URL out of an error's text.
func sanitize(err error, raw string) string {
	s := err.Error()
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}

// RedactURL returns the URL with its password masked, for logs: the user
// part, and the password query parameter unix:// URLs may carry.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid URL>"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
