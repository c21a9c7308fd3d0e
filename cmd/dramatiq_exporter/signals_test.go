package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// serving is the binary started by startServing; exited is closed once
// the process has ended and cmd.ProcessState is set.
type serving struct {
	base   string
	cmd    *exec.Cmd
	logs   *testserver.LogBuffer
	exited chan struct{}
}

// startServing starts the binary on a free port with args and waits for
// /-/ready.
func startServing(t *testing.T, args ...string) *serving {
	t.Helper()
	port := testserver.FreePort(t)
	cmd := exec.Command(binary, append([]string{"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)
	logs := &testserver.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return &serving{base: base, cmd: cmd, logs: logs, exited: exited}
			}
		}
		select {
		case <-exited:
			t.Fatalf("exporter exited at start: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("exporter did not start: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitExit waits (boundedly) for the process to end and returns its exit
// code, or -1 with the signal's number when a signal ended it.
func (s *serving) waitExit(t *testing.T, within time.Duration) (code int, signaled syscall.Signal) {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(within):
		t.Fatalf("the exporter did not exit within %s", within)
	}
	ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

// SIGHUP, which systemd units copied from Prometheus's send on reload,
// once killed the exporter (exit 129). It is now logged and ignored: the
// process keeps serving, and a SIGTERM still stops it cleanly.
func TestSIGHUPIsIgnored(t *testing.T) {
	r := testserver.StartRedis(t)
	s := startServing(t, "--redis.url", r.URL())
	base, cmd, logs := s.base, s.cmd, s.logs
	for range 3 {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if code, body := testserver.Get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "dramatiq_redis_up 1") {
			t.Fatalf("after SIGHUP: %d %.200s\n%s", code, body, logs.String())
		}
	}
	if n := strings.Count(logs.String(), "SIGHUP ignored"); n != 3 {
		t.Errorf("%d log lines say SIGHUP was ignored, want 3:\n%s", n, logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, sig := s.waitExit(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d (signal %v) after SIGTERM, want 0:\n%s", code, sig, logs.String())
	}
}

// A scrape running when SIGTERM arrives gets its answer before the process
// exits: Redis is frozen (SIGSTOP), so the scrape waits for its deadline
// (8.5 s from the header) and then answers with dramatiq_redis_up 0; the
// exporter exits 0 right after, within its grace period (12 s with the
// default --scrape.timeout). Before, the exporter gave running requests
// 5 s and this scrape got no answer.
func TestSIGTERMLetsARunningScrapeAnswer(t *testing.T) {
	r := testserver.StartRedis(t)
	s := startServing(t, "--redis.url", r.URL())
	base, cmd, logs := s.base, s.cmd, s.logs
	if code, body := testserver.Get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "dramatiq_redis_up 1") {
		t.Fatalf("before: %d %.200s", code, body)
	}
	r.Freeze()
	t.Cleanup(r.Thaw)

	type result struct {
		code int
		body string
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "9")
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			done <- result{err: err, at: time.Now()}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{code: resp.StatusCode, body: string(b), err: err, at: time.Now()}
	}()
	// Let the scrape reach the frozen Redis, then stop the exporter.
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("the running scrape got no answer: %v\n%s", res.err, logs.String())
	}
	if res.code != 200 || !strings.Contains(res.body, "dramatiq_redis_up 0") {
		t.Errorf("the running scrape: %d %.300s", res.code, res.body)
	}
	code, sig := s.waitExit(t, 30*time.Second)
	if code != 0 {
		t.Errorf("exit %d (signal %v) after SIGTERM, want 0:\n%s", code, sig, logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown log line:\n%s", logs.String())
	}
	// New connections are refused once the shutdown began.
	if _, err := http.Get(base + "/-/healthy"); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after exit, GET /-/healthy: %v, want connection refused", err)
	}
}
