package redis

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// masterCheck makes a Sentinel client follow the sentinels when they change
// their mind without a failover. go-redis asks the sentinels for the master
// only when it dials, and drops its connections to an old master only on a
// +switch-master message; a sentinel reconfigured by hand (SENTINEL REMOVE
// and MONITOR, after it named a wrong server that still answered) sends
// none, so the pooled connections kept reading the wrong server for good.
//
// So, before a command and at most every masterCheckEvery, the sentinels are
// asked again. When they name another address than before, the pooled
// connections to the old one are marked stale: go-redis's health check on
// taking a connection from the pool then discards them, its next dial asks
// the sentinels, and it drops whatever else it still holds to the old
// address. No command fails on the way.
type masterCheck struct {
	name  string
	addrs []string
	opts  goredis.Options // for the sentinels; Addr set per call
	every time.Duration

	running atomic.Bool
	mu      sync.Mutex
	last    time.Time
	master  string // host:port the sentinels named at the latest check
	conns   map[*trackedConn]struct{}
}

// masterCheckEvery bounds how often the sentinels are asked: about once per
// scrape, whatever the number of commands in it.
const masterCheckEvery = time.Second

// newMasterCheck takes the failover options before their Dialer is wrapped:
// the check's own connections to the sentinels need no tracking.
func newMasterCheck(fo *goredis.FailoverOptions, timeout time.Duration) *masterCheck {
	return &masterCheck{
		name: fo.MasterName, addrs: fo.SentinelAddrs, every: masterCheckEvery, conns: map[*trackedConn]struct{}{},
		opts: goredis.Options{
			Username: fo.SentinelUsername, Password: fo.SentinelPassword,
			Dialer: fo.Dialer, TLSConfig: fo.TLSConfig,
			MaxRetries: -1, DialerRetries: 1, PoolSize: 1, ContextTimeoutEnabled: true,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
		},
	}
}

// dialer wraps the dialer go-redis uses for the master (and the sentinels)
// so that each connection remembers the address it was dialled for.
func (m *masterCheck) dialer(base func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	if base == nil {
		d := &net.Dialer{Timeout: m.opts.DialTimeout, KeepAlive: 30 * time.Second}
		base = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := base(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		t := &trackedConn{Conn: c, addr: addr, owner: m}
		m.mu.Lock()
		m.conns[t] = struct{}{}
		m.mu.Unlock()
		return t, nil
	}
}

// check asks the sentinels, in order, until one answers, within a quarter
// of what is left of ctx: a slow sentinel costs the scrape a little time,
// never its deadline. Failures change nothing.
func (m *masterCheck) check(ctx context.Context) {
	if !m.running.CompareAndSwap(false, true) {
		return
	}
	defer m.running.Store(false)
	// Attempts are throttled, not only answers: sentinels that are down or
	// hung cost at most one try a second.
	m.mu.Lock()
	due := time.Since(m.last) >= m.every
	if due {
		m.last = time.Now()
	}
	m.mu.Unlock()
	if !due {
		return
	}
	budget := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(d)/4)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	// A connection per check, closed at once: the exporter cannot tell when
	// go-redis's client is closed, and a kept one would outlive it.
	for _, addr := range m.addrs {
		o := m.opts
		o.Addr = addr
		s := goredis.NewSentinelClient(&o)
		v, err := s.GetMasterAddrByName(ctx, m.name).Result()
		_ = s.Close()
		if err != nil || len(v) != 2 {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		m.named(net.JoinHostPort(v[0], v[1]))
		return
	}
}

// named records the sentinels' answer and marks the connections to the
// master they named before stale.
func (m *masterCheck) named(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.master
	m.master = addr
	if old == "" || old == addr {
		return
	}
	for c := range m.conns {
		if c.addr == old {
			c.stale.Store(true)
		}
	}
}

// Hooks: the check runs before each command or pipeline, before go-redis
// takes a connection from its pool.
func (m *masterCheck) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (m *masterCheck) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		m.check(ctx)
		return next(ctx, cmd)
	}
}

func (m *masterCheck) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		m.check(ctx)
		return next(ctx, cmds)
	}
}

// trackedConn is a connection that knows the address it was dialled for.
// go-redis checks a pooled connection's health through syscall.Conn before
// handing it out; a stale one reports an error there and is discarded.
type trackedConn struct {
	net.Conn
	addr  string
	owner *masterCheck
	stale atomic.Bool
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.owner.mu.Lock()
		delete(c.owner.conns, c)
		c.owner.mu.Unlock()
	})
	return c.Conn.Close()
}

// SyscallConn fails go-redis's health check for a stale connection, and
// otherwise hands it the wrapped connection's, so that a plain TCP
// connection that the server closed is still noticed before use.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if c.stale.Load() {
		return staleProbe{}, nil
	}
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return freshProbe{}, nil
}

var errStaleMaster = errors.New("the sentinels now name another master")

// staleProbe fails the health check.
type staleProbe struct{}

func (staleProbe) Control(func(fd uintptr)) error    { return errStaleMaster }
func (staleProbe) Read(func(fd uintptr) bool) error  { return errStaleMaster }
func (staleProbe) Write(func(fd uintptr) bool) error { return errStaleMaster }

// freshProbe passes it without a socket peek, as a connection without
// syscall.Conn (TLS) does.
type freshProbe struct{}

func (freshProbe) Control(func(fd uintptr)) error    { return nil }
func (freshProbe) Read(func(fd uintptr) bool) error  { return nil }
func (freshProbe) Write(func(fd uintptr) bool) error { return nil }
