package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A real server with a limit of 4 connections, under idle keep-alive
// clients and concurrent requests: it never holds more than 4 open,
// serves every request, and a request waits only for busy connections.
func TestLimiterEvictsIdleConnections(t *testing.T) {
	var peak, busy atomic.Int64
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			busy.Add(1)
			<-release
			busy.Add(-1)
		}
		fmt.Fprint(w, "ok")
	})
	srv, lim := NewHTTPServer(h, HTTPOptions{HandlerTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxConnections: 4})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lim.Listener(l))
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(lim.Open()); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// 12 keep-alive connections, each used once and left idle.
	var idle []net.Conn
	for i := 0; i < 12; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("idle client %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		idle = append(idle, c)
	}

	// Concurrent one-shot requests all succeed.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				failed.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of 20 requests failed", failed.Load())
	}

	// With every slot busy, a new request waits, and is served once one
	// frees: nothing is dropped.
	for i := 0; i < 4; i++ {
		go client.Get("http://" + addr + "/slow")
	}
	deadline := time.Now().Add(10 * time.Second)
	for busy.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a fifth request was served while 4 slow ones held every slot: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the waiting request: %v", err)
	}
	close(stop)
	if p := peak.Load(); p > 4 {
		t.Errorf("%d connections open at once, limit 4", p)
	}
	// The idle connections were closed to make room: reads see EOF.
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "timeout") {
			closed++
		}
	}
	if closed < len(idle)-4 {
		t.Errorf("only %d of %d idle connections were closed", closed, len(idle))
	}
}

// Idle keep-alive connections are closed after IdleTimeout, with no limit.
func TestIdleTimeoutClosesConnections(t *testing.T) {
	srv, lim := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), HTTPOptions{
		HandlerTimeout: time.Second, IdleTimeout: 300 * time.Millisecond,
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lim.Listener(l))
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	begin := time.Now()
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("want EOF from the server closing the idle connection, got %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("closed after %s, IdleTimeout 300ms", took)
	}
}
