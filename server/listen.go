package server

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/exporter-toolkit/web"
)

// HTTPOptions bound what a client can hold of the server.
type HTTPOptions struct {
	// HandlerTimeout is the longest a handler runs (the scrape timeout);
	// the write deadline leaves it that long plus WriteSlack to send.
	HandlerTimeout time.Duration
	// IdleTimeout closes keep-alive connections left idle.
	IdleTimeout time.Duration
	// MaxConnections bounds the open connections (0: no limit).
	MaxConnections int
}

// Request and write deadlines that need no setting: a scrape is a header
// and no body, and a reply of a few megabytes leaves in well under WriteSlack
// on any network Prometheus scrapes over.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteSlack        = 30 * time.Second
)

// NewHTTPServer returns a server whose every connection has a deadline, and
// a Limiter for its listeners that enforces o.MaxConnections.
func NewHTTPServer(h http.Handler, o HTTPOptions) (*http.Server, *Limiter) {
	lim := &Limiter{max: o.MaxConnections, idle: map[net.Conn]time.Time{}, freed: make(chan struct{})}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      addSaturating(o.HandlerTimeout, WriteSlack),
		IdleTimeout:       o.IdleTimeout,
		ConnState:         lim.connState,
	}
	return srv, lim
}

func addSaturating(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Limiter bounds the open connections of a server. Unlike
// netutil.LimitListener, it closes an idle keep-alive connection to make
// room for a new one, so clients that open connections and leave them
// idle cannot lock out a scrape; a new connection waits only while every
// open one is busy with a request (and those end by their deadlines).
type Limiter struct {
	max int

	mu   sync.Mutex
	open int
	// idle holds the connections between requests, by the time they went
	// idle, keyed as the server knows them (a *tls.Conn under TLS).
	idle map[net.Conn]time.Time
	// freed is closed (and replaced) when a connection closes, waking
	// every waiting Accept.
	freed chan struct{}
}

// Listener wraps l so that it accepts no more than the limit.
func (lim *Limiter) Listener(l net.Listener) net.Listener {
	if lim.max <= 0 {
		return l
	}
	return &limitListener{Listener: l, lim: lim, done: make(chan struct{})}
}

func (lim *Limiter) connState(c net.Conn, s http.ConnState) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if s == http.StateIdle {
		lim.idle[c] = time.Now()
	} else {
		delete(lim.idle, c)
	}
}

// acquire takes a slot for a connection just accepted, closing the oldest
// idle connection if none is free, or waiting for one to close.
func (lim *Limiter) acquire(done <-chan struct{}) bool {
	for {
		lim.mu.Lock()
		if lim.open < lim.max {
			lim.open++
			lim.mu.Unlock()
			return true
		}
		var oldest net.Conn
		var at time.Time
		for c, t := range lim.idle {
			if oldest == nil || t.Before(at) {
				oldest, at = c, t
			}
		}
		if oldest != nil {
			delete(lim.idle, oldest)
		}
		freed := lim.freed
		lim.mu.Unlock()
		if oldest != nil {
			// Its Close releases its slot; the loop then takes it. A request
			// racing onto it fails, and clients retry an idempotent GET on a
			// fresh connection, as they do after IdleTimeout.
			oldest.Close()
			continue
		}
		select {
		case <-freed:
		case <-done:
			return false
		}
	}
}

func (lim *Limiter) release() {
	lim.mu.Lock()
	lim.open--
	close(lim.freed)
	lim.freed = make(chan struct{})
	lim.mu.Unlock()
}

// Open is the number of connections held open now.
func (lim *Limiter) Open() int {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	return lim.open
}

type limitListener struct {
	net.Listener
	lim       *Limiter
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	// Accept first: only a pending connection justifies closing an idle
	// one. The kernel's backlog holds the rest.
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.lim.acquire(l.done) {
		c.Close()
		return nil, net.ErrClosed
	}
	return &limitConn{Conn: c, release: l.lim.release}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Listen opens the listeners exporter-toolkit's flags ask for (TCP
// addresses, vsock:// ones, or systemd's sockets), as web.ListenAndServe
// would; serve them with web.ServeMultiple so that --web.config.file (TLS,
// basic auth) still applies. Errors name the flag at fault.
func Listen(flags *web.FlagConfig) ([]net.Listener, error) {
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		ls, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("--web.systemd-socket: %w", err)
		}
		if len(ls) == 0 {
			return nil, errors.New("--web.systemd-socket: no socket activation file descriptors found")
		}
		return ls, nil
	}
	if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
		return nil, errors.New("--web.listen-address: no address to listen on")
	}
	var out []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, l := range out {
			l.Close()
		}
		return nil, err
	}
	for _, addr := range *flags.WebListenAddresses {
		var l net.Listener
		var err error
		if addr == "" {
			// net.Listen would pick a random port on every interface.
			return fail(errors.New("--web.listen-address: empty; use :PORT for every interface"))
		}
		if strings.HasPrefix(addr, "vsock://") {
			var port uint32
			if port, err = vsockPort(addr); err == nil {
				l, err = vsock.Listen(port, nil)
			}
		} else {
			l, err = net.Listen("tcp", addr)
		}
		if err != nil {
			return fail(fmt.Errorf("--web.listen-address %s: %w", addr, err))
		}
		out = append(out, l)
	}
	return out, nil
}

func vsockPort(addr string) (uint32, error) {
	_, port, err := net.SplitHostPort(strings.TrimPrefix(addr, "vsock://"))
	if err != nil {
		return 0, err
	}
	var p uint32
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil {
		return 0, fmt.Errorf("invalid vsock port %q", port)
	}
	return p, nil
}

// CheckWebConfig refuses a --web.config.file that exporter-toolkit would
// reject at the first connection, or that is no regular file (reading a
// FIFO with no writer blocks forever).
func CheckWebConfig(path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--web.config.file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("--web.config.file: %s is not a regular file", path)
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	return nil
}
