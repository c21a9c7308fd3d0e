package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/config"
)

// A panic while building a target, closing one or sweeping idle ones runs
// in the prober's own goroutines, where nothing else would catch it: it
// fails that target (a 500), and the process and the other targets live.
func TestPanicsAreOneTargetsFailure(t *testing.T) {
	var builds, closes atomic.Int32
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, Options{
		Allow: allowList(t, "10.0.0.1:*"), Modules: map[string]*config.Module{"default": module("default", "x")},
		IdleTimeout: 100 * time.Millisecond, MaxTargets: 4, Logger: testLogger(),
		Build: func(_ context.Context, _ *config.Module, target string, _ DialFunc) (*Target, error) {
			if builds.Add(1) == 1 {
				panic("a bug while building " + target)
			}
			return &Target{Handler: ok, Close: func() { closes.Add(1); panic("a bug while closing") }}, nil
		},
	})
	probe := func(target string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/probe?"+url.Values{"target": {target}}.Encode(), nil)
		p.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := probe("redis://10.0.0.1:6379/0"); code != http.StatusInternalServerError {
		t.Fatalf("probe whose build panicked: %d, want 500", code)
	}
	// The failed build is forgotten: the same target is built again.
	for _, target := range []string{"redis://10.0.0.1:6379/0", "redis://10.0.0.1:6380/0"} {
		if code := probe(target); code != http.StatusOK {
			t.Fatalf("%s: %d", target, code)
		}
	}
	// The janitor evicts both as idle; their Close panics.
	deadline := time.Now().Add(10 * time.Second)
	for closes.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d closes", closes.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := probe("redis://10.0.0.1:6381/0"); code != http.StatusOK {
		t.Fatalf("after the panics: %d", code)
	}
}
