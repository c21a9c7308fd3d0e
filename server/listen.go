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

// Request deadlines that need no setting. No route reads a request body,
// so a request is its headers: they arrive in one packet from any client
// that means to be served, over TLS within one handshake more.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 5 * time.Second
	// WriteSlack is added to HandlerTimeout for the longest an answer may
	// take to leave (each piece of it has only WriteStall).
	WriteSlack = 30 * time.Second
)

// NewHTTPServer returns a server whose every connection has a deadline, and
// a Limiter for its listeners that enforces o.MaxConnections. The handler
// runs behind the guard against slow clients (WriteStall, request bodies).
func NewHTTPServer(h http.Handler, o HTTPOptions) (*http.Server, *Limiter) {
	lim := &Limiter{max: o.MaxConnections, waiting: map[*limitConn]waitingSince{}, freed: make(chan struct{})}
	writeTimeout := addSaturating(o.HandlerTimeout, WriteSlack)
	srv := &http.Server{
		Handler:           guard(h, writeTimeout),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      writeTimeout,
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

// Limiter bounds the open connections of a server. Only a connection that
// a request runs on is sure of its slot: at the limit, a new connection
// takes the slot of the one that has waited longest without a request,
// either idle between keep-alive requests or new and not done sending its
// first request's headers (a TLS handshake included) after FreshGrace. So neither clients
// that leave connections idle nor ones that trickle their headers can lock
// out a scrape; a new connection waits only while every open one is busy
// with a request (and those end by their deadlines).
type Limiter struct {
	max int

	mu   sync.Mutex
	open int
	// waiting holds the open connections no request runs on, by when they
	// were accepted or went idle.
	waiting map[*limitConn]waitingSince
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

type waitingSince struct {
	at time.Time
	// fresh: accepted, its first request not in yet.
	fresh bool
}

// FreshGrace is how long a new connection has to send its first request's
// headers before a newer one may take its slot: a burst of real clients,
// each sending as soon as it connects (a TLS handshake first, over a long
// path), must not evict each other.
const FreshGrace = time.Second

// connState follows the server's view of each connection: c is a
// *limitConn, or a *tls.Conn over one.
func (lim *Limiter) connState(c net.Conn, s http.ConnState) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lc.closed {
		return
	}
	switch s {
	case http.StateIdle:
		lim.waiting[lc] = waitingSince{at: time.Now()}
	case http.StateNew:
		// Counted as waiting since Accept.
	default:
		// Active: a request's headers are in, and it runs.
		delete(lim.waiting, lc)
	}
}

// acquire takes a slot for a connection just accepted, closing the
// connection that waited longest without a request if none is free, or
// waiting for one to close.
func (lim *Limiter) acquire(done <-chan struct{}) bool {
	for {
		lim.mu.Lock()
		if lim.open < lim.max {
			lim.open++
			lim.mu.Unlock()
			return true
		}
		var oldest *limitConn
		var at time.Time
		now := time.Now()
		// When every waiting connection is new and within FreshGrace, the
		// first of them to outgrow it.
		var wake time.Time
		for c, w := range lim.waiting {
			if w.fresh && now.Sub(w.at) < FreshGrace {
				if wake.IsZero() || w.at.Add(FreshGrace).Before(wake) {
					wake = w.at.Add(FreshGrace)
				}
				continue
			}
			if oldest == nil || w.at.Before(at) {
				oldest, at = c, w.at
			}
		}
		if oldest != nil {
			delete(lim.waiting, oldest)
		}
		freed := lim.freed
		lim.mu.Unlock()
		if oldest != nil {
			// Its Close releases its slot; the loop then takes it. A request
			// racing onto an idle one fails, and clients retry an idempotent
			// GET on a fresh connection, as they do after IdleTimeout. The
			// connection itself is closed, under any TLS: a TLS close would
			// first try to send an alert.
			oldest.Close()
			continue
		}
		if !wakeOrClose(freed, wake, done) {
			return false
		}
	}
}

// wakeOrClose waits for freed, or until wake (if set); false when done.
func wakeOrClose(freed <-chan struct{}, wake time.Time, done <-chan struct{}) bool {
	var grown <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(time.Until(wake))
		defer t.Stop()
		grown = t.C
	}
	select {
	case <-freed:
	case <-grown:
	case <-done:
		return false
	}
	return true
}

func (lim *Limiter) add(c *limitConn) {
	lim.mu.Lock()
	lim.waiting[c] = waitingSince{at: time.Now(), fresh: true}
	lim.mu.Unlock()
}

func (lim *Limiter) release(c *limitConn) {
	lim.mu.Lock()
	c.closed = true
	delete(lim.waiting, c)
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
	// Accept first: only a pending connection justifies closing a waiting
	// one. The kernel's backlog holds the rest.
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.lim.acquire(l.done) {
		c.Close()
		return nil, net.ErrClosed
	}
	lc := &limitConn{Conn: c, lim: l.lim}
	l.lim.add(lc)
	return lc, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	lim    *Limiter
	once   sync.Once
	closed bool // under lim.mu
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c) })
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
