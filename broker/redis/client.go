package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/resp"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/urlsafe"
)

func init() {
	// go-redis logs dial failures on its own, to stderr, on every scrape
	// while Redis is down; the collector already reports them once, through
	// the exporter's logger.
	goredis.SetLogger(silentLogger{})
}

type silentLogger struct{}

func (silentLogger) Printf(context.Context, string, ...any) {}

// ClientOptions configure the Redis connection.
type ClientOptions struct {
	// URL is redis://, rediss:// (TLS) or unix://. It may carry a password.
	// With Sentinel, only its scheme, user, password and database are used:
	// Sentinel names the host.
	URL string
	// Password, when set, replaces the URL's password (from a file or the
	// environment, so it does not show in `ps`).
	Password string
	// Timeout bounds dialing, reads and writes when a call's context has no
	// earlier deadline.
	Timeout time.Duration
	// Sentinel, when set, finds the server through Redis Sentinel.
	Sentinel *SentinelOptions
	// TLS applies to rediss:// URLs (and, with Sentinel, to the sentinels
	// too, as go-redis does).
	TLS TLSOptions
	// NetDial, when set, makes every TCP connection instead of a plain
	// dial of the address (TLS then runs over it). /probe pins a target
	// to the addresses its allow-list check admitted; a TLS server is
	// still verified against the URL's host name.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// SentinelOptions select Sentinel mode.
type SentinelOptions struct {
	Addrs    []string
	Master   string
	Password string
	// Replica reads a replica that Sentinel lists, falling back to the
	// master when none is up; it keeps the exporter's load off the master.
	Replica bool
}

// NewClient builds a Redis client for reading the broker. It does not
// connect: the exporter must start while Redis is down and report it.
func NewClient(o ClientOptions) (*goredis.Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	u, err := urlsafe.Check(o.URL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL: %v", err)
	}
	opt, err := goredis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL: %s", sanitize(err, u))
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	// Every connection, to Redis and to the sentinels, goes through
	// resp.Dialer: go-redis parses what the server sends without bounds
	// of its own (internal/resp).
	dialer := plainDialer(o.Timeout)
	if opt.TLSConfig != nil {
		// rediss://...?skip_verify=true keeps meaning what it meant before
		// the TLS flags existed.
		if opt.TLSConfig.InsecureSkipVerify {
			o.TLS.InsecureSkipVerify = true
		}
		if err := CheckTLSFiles(o.TLS); err != nil {
			return nil, err
		}
		td := newTLSDialer(o.TLS, o.Timeout)
		td.netDial = o.NetDial
		dialer = td.dial
		opt.TLSConfig = nil
	} else if o.TLS != (TLSOptions{}) && opt.Network != "unix" {
		return nil, errors.New("TLS settings need a rediss:// URL")
	} else if o.NetDial != nil {
		dialer = o.NetDial
	}
	dialer = resp.Dialer(dialer, resp.Default)
	opt.Dialer = dialer
	if o.Sentinel == nil {
		clientDefaults(opt, o.Timeout)
		return goredis.NewClient(opt), nil
	}
	if opt.Network == "unix" {
		return nil, errors.New("a Sentinel setup needs a redis:// or rediss:// URL, not unix://")
	}
	fo := &goredis.FailoverOptions{
		MasterName:       o.Sentinel.Master,
		SentinelAddrs:    o.Sentinel.Addrs,
		SentinelPassword: o.Sentinel.Password,
		ReplicaOnly:      o.Sentinel.Replica,
		Username:         opt.Username,
		Password:         opt.Password,
		DB:               opt.DB,
		Dialer:           dialer,
	}
	clientDefaults(opt, o.Timeout)
	var check *masterCheck
	if !fo.ReplicaOnly {
		// Any replica will do for ReplicaOnly; go-redis picks one per dial.
		check = newMasterCheck(fo, o.Timeout)
		fo.Dialer = check.dialer(fo.Dialer)
	}
	fo.MaxRetries, fo.DialerRetries = opt.MaxRetries, opt.DialerRetries
	fo.DialTimeout, fo.ReadTimeout, fo.WriteTimeout = opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout
	fo.ContextTimeoutEnabled = opt.ContextTimeoutEnabled
	fo.PoolSize, fo.PoolTimeout, fo.MinIdleConns = opt.PoolSize, opt.PoolTimeout, opt.MinIdleConns
	fo.ClientName = opt.ClientName
	client := goredis.NewFailoverClient(fo)
	if check != nil {
		client.AddHook(check)
	}
	return client, nil
}

// plainDialer dials TCP or a unix socket as go-redis's own dialer does.
func plainDialer(timeout time.Duration) resp.DialFunc {
	d := &net.Dialer{
		Timeout:         timeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	return d.DialContext
}

// clientDefaults sets what the exporter needs of every client.
func clientDefaults(opt *goredis.Options, timeout time.Duration) {
	// Retrying inside one scrape only spends the deadline; the next scrape
	// is the retry. MaxRetries 0 would mean "default 3", and the dialer
	// has retries of its own (docs/clients.md).
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.DialTimeout = timeout
	opt.ReadTimeout = timeout
	opt.WriteTimeout = timeout
	opt.ContextTimeoutEnabled = true
	opt.PoolSize = 4
	opt.PoolTimeout = timeout
	opt.MinIdleConns = 0
	opt.ClientName = "dramatiq_exporter"
}

// sanitize keeps a secret-bearing URL out of an error's text. Check has
// made sure the password is whole, in the user info or the password query
// parameter of a unix:// URL; go-redis names a query's unknown options, so
// with a query password nothing of its error is kept.
func sanitize(err error, u *url.URL) string {
	if u.Query().Has("password") {
		return "go-redis cannot use it (" + urlsafe.ErrNotShown.Error() + ")"
	}
	s := err.Error()
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}

// RedactURL returns the URL with its password masked, for logs: the user
// part, and the password query parameter unix:// URLs may carry. A URL
// that does not parse cleanly is not shown at all.
func RedactURL(raw string) string {
	u, err := urlsafe.Check(raw)
	if err != nil {
		return "<invalid URL, not shown>"
	}
	return urlsafe.Redacted(u)
}
