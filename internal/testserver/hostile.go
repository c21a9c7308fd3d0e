package testserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Answer writes a fake server's reply to one command. A hostile answer may
// write without end: a write fails once the client hangs up, and the error
// ends the connection.
type Answer func(w io.Writer, cmd []string) error

// Hostile is a fake RESP server on a loopback port, for tests that need a
// Redis or a Sentinel that breaks the protocol's promises. It answers the
// connection handshake go-redis sends (HELLO, AUTH, CLIENT ..., SELECT,
// PING) as Redis 7 does, and every other command with its Answer. Heal
// turns it into a plain proxy to a real server, so that a test can check
// that the client recovers on the same address.
type Hostile struct {
	Addr string

	l      net.Listener
	mu     sync.Mutex
	answer Answer
	proxy  string // when set, new connections are forwarded there
	conns  map[net.Conn]bool
	served int
	wg     sync.WaitGroup
}

// StartHostile listens on a free loopback port and answers with a until
// the test ends.
func StartHostile(t testing.TB, a Answer) *Hostile {
	t.Helper()
	return startHostile(t, "tcp", "127.0.0.1:0", a)
}

// StartHostileUnix is StartHostile on a unix socket at path; Addr is the
// path.
func StartHostileUnix(t testing.TB, path string, a Answer) *Hostile {
	t.Helper()
	return startHostile(t, "unix", path, a)
}

func startHostile(t testing.TB, network, addr string, a Answer) *Hostile {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &Hostile{Addr: l.Addr().String(), l: l, answer: a, conns: map[net.Conn]bool{}}
	h.wg.Add(1)
	go h.accept()
	t.Cleanup(h.Close)
	return h
}

// URL is a redis:// URL of the server, database 0.
func (h *Hostile) URL() string { return "redis://" + h.Addr + "/0" }

// Set replaces the answer for the commands that come next.
func (h *Hostile) Set(a Answer) {
	h.mu.Lock()
	h.answer = a
	h.mu.Unlock()
}

// Heal forwards every new connection to addr (a real server) and closes
// the connections open now.
func (h *Hostile) Heal(addr string) {
	h.mu.Lock()
	h.proxy = addr
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
}

// Answered counts the commands given the Answer so far.
func (h *Hostile) Answered() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.served
}

// Close stops listening, closes every connection and waits for them.
func (h *Hostile) Close() {
	h.l.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *Hostile) accept() {
	defer h.wg.Done()
	for {
		c, err := h.l.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns[c] = true
		proxy := h.proxy
		h.mu.Unlock()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer func() {
				h.mu.Lock()
				delete(h.conns, c)
				h.mu.Unlock()
				c.Close()
			}()
			if proxy != "" {
				h.forward(c, proxy)
				return
			}
			h.serve(c)
		}()
	}
}

func (h *Hostile) forward(c net.Conn, addr string) {
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	h.mu.Lock()
	h.conns[up] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, up)
		h.mu.Unlock()
		up.Close()
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.Close()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}

func (h *Hostile) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		cmd, err := readCommand(r)
		if err != nil {
			return
		}
		if reply, ok := handshake(cmd); ok {
			if _, err := io.WriteString(c, reply); err != nil {
				return
			}
			continue
		}
		h.mu.Lock()
		a := h.answer
		h.served++
		h.mu.Unlock()
		w := bufio.NewWriterSize(c, 64<<10)
		if err := a(w, cmd); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// helloReply is Redis 7.0's answer to HELLO 3.
const helloReply = "%7\r\n+server\r\n+redis\r\n+version\r\n+7.0.15\r\n+proto\r\n:3\r\n+id\r\n:7\r\n+mode\r\n+standalone\r\n+role\r\n+master\r\n+modules\r\n*0\r\n"

// handshake answers the commands a client sends on connecting.
func handshake(cmd []string) (string, bool) {
	switch strings.ToUpper(cmd[0]) {
	case "HELLO":
		return helloReply, true
	case "AUTH", "SELECT", "CLIENT", "READONLY":
		return "+OK\r\n", true
	case "PING":
		return "+PONG\r\n", true
	}
	return "", false
}

// readCommand reads one command as clients send it: an array of bulk
// strings. The client is ours, so sizes are trusted within reason.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 4 || line[0] != '*' {
		return nil, fmt.Errorf("not a command: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 || n > 1<<16 {
		return nil, fmt.Errorf("bad command length %q", line)
	}
	cmd := make([]string, n)
	for i := range cmd {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if len(line) < 4 || line[0] != '$' {
			return nil, fmt.Errorf("not a bulk string: %q", line)
		}
		size, err := strconv.Atoi(strings.TrimSpace(line[1:]))
		if err != nil || size < 0 || size > 64<<20 {
			return nil, fmt.Errorf("bad bulk length %q", line)
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		cmd[i] = string(b[:size])
	}
	return cmd, nil
}

// Reply answers every command with s, then waits for the next command:
// a reply cut short (a length header and no body) holds the client until
// it gives up.
func Reply(s string) Answer {
	return func(w io.Writer, _ []string) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// Stream answers with prefix, then unit n times (forever when n < 0), as
// fast as the client reads.
func Stream(prefix, unit string, n int) Answer {
	return func(w io.Writer, _ []string) error {
		block := strings.Repeat(unit, max(1, (32<<10)/max(1, len(unit))))
		per := len(block) / len(unit)
		if _, err := io.WriteString(w, prefix); err != nil {
			return err
		}
		for left := n; n < 0 || left > 0; {
			chunk := block
			if n >= 0 && left < per {
				chunk = block[:left*len(unit)]
			}
			if _, err := io.WriteString(w, chunk); err != nil {
				return err
			}
			left -= per
		}
		return nil
	}
}

// SentinelAnswer makes a fake Sentinel: master answers SENTINEL
// get-master-addr-by-name; the other questions go-redis asks (the other
// sentinels, the replicas, its +switch-master subscription) get the
// answers of a Sentinel that knows nothing more.
func SentinelAnswer(master Answer) Answer {
	return func(w io.Writer, cmd []string) error {
		switch strings.ToUpper(cmd[0]) {
		case "SENTINEL":
			if len(cmd) > 1 && strings.EqualFold(cmd[1], "get-master-addr-by-name") {
				return master(w, cmd)
			}
			_, err := io.WriteString(w, "*0\r\n")
			return err
		case "SUBSCRIBE":
			for i, ch := range cmd[1:] {
				if _, err := fmt.Fprintf(w, ">3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:%d\r\n", len(ch), ch, i+1); err != nil {
					return err
				}
			}
			return nil
		}
		_, err := io.WriteString(w, "-ERR unknown command\r\n")
		return err
	}
}

// MasterAddr is a Sentinel's answer naming host and port.
func MasterAddr(host, port string) Answer {
	return Reply(fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(host), host, len(port), port))
}
