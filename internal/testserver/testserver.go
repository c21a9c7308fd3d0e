// Package testserver starts real, throwaway servers (redis-server, PostgreSQL)
// on free loopback ports for tests. Each server belongs to the test that
// started it and is stopped by its own pid when the test ends.
package testserver

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// LookPath finds a binary a test needs. Outside CI a missing binary skips the
// test with a message naming it; in CI (CI=true) it fails, because CI must
// never skip a test it could run.
func LookPath(t testing.TB, name string, dirs ...string) string {
	t.Helper()
	for _, d := range dirs {
		p := d + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found (CI=%s): run `make deps` first", name, os.Getenv("CI"))
	}
	t.Skipf("%s not found; install it (make deps) to run this test", name)
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Get fetches u and returns the status code and the body; a failed
// request fails the test.
func Get(t testing.TB, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// LogBuffer collects a child process's output, written from the process's
// copying goroutines while the test reads it.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
