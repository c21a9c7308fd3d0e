package resp

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// DialFunc is go-redis's dialer signature.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer wraps every connection dial makes with Wrap.
func Dialer(dial DialFunc, l Limits) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c, l), nil
	}
}

// Wrap returns c with every byte read from it checked by a Validator.
// The first read that breaks the framing or a bound returns the valid
// bytes before it with an error, and closes c: the command fails, and
// go-redis drops the connection from its pool, so the next command
// dials afresh. Writes pass through.
func Wrap(c net.Conn, l Limits) net.Conn {
	w := &conn{Conn: c, v: NewValidator(l)}
	if _, ok := c.(syscall.Conn); ok {
		// go-redis checks a pooled connection before reuse by peeking at
		// its socket (MSG_PEEK, nothing consumed): keep that working for
		// plain TCP and unix sockets. TLS connections have no such method
		// and are not checked, with or without this wrapper.
		return sysConn{w}
	}
	return w
}

type conn struct {
	net.Conn
	v   *Validator
	err error // set once; reads come from go-redis's one reader at a time
}

func (c *conn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if k, verr := c.v.Feed(p[:n]); verr != nil {
			c.err = fmt.Errorf("from %s: %w", c.Conn.RemoteAddr(), verr)
			c.Conn.Close()
			return k, c.err
		}
	}
	return n, err
}

type sysConn struct{ *conn }

func (c sysConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}
