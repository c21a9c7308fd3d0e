package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The backlog by actor is off by default and set by flag, environment or
// file key, with the exact limit bounded by the reader's per-read budget.
func TestBacklogByActorSettings(t *testing.T) {
	c, err := load(t, nil)
	if err != nil || c.BacklogByActor || c.BacklogExactLimit != DefaultBacklogExactLimit {
		t.Fatalf("defaults: %v %v %d", err, c.BacklogByActor, c.BacklogExactLimit)
	}
	c, err = load(t, nil, "--dramatiq.backlog-by-actor", "--dramatiq.backlog-by-actor-exact-limit=50")
	if err != nil || !c.BacklogByActor || c.BacklogExactLimit != 50 {
		t.Fatalf("flags: %v %+v", err, c)
	}
	c, err = load(t, map[string]string{"DRAMATIQ_BACKLOG_BY_ACTOR": "true"})
	if err != nil || !c.BacklogByActor {
		t.Fatalf("env: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yml")
	if err := os.WriteFile(file, []byte("dramatiq:\n  backlog_by_actor: true\n  backlog_by_actor_exact_limit: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = load(t, nil, "--config.file", file)
	if err != nil || !c.BacklogByActor || c.BacklogExactLimit != 7 {
		t.Fatalf("file: %v %+v", err, c)
	}
	for _, bad := range []string{"0", "-1", "20001"} {
		_, err := load(t, nil, "--dramatiq.backlog-by-actor-exact-limit="+bad)
		if err == nil || !strings.Contains(err.Error(), "backlog-by-actor-exact-limit") {
			t.Errorf("limit %s: %v", bad, err)
		}
	}
}

// A module refuses the keys: /probe never reads the backlog by actor, and
// a key accepted but ignored would mislead.
func TestBacklogByActorNotAModuleKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yml")
	if err := os.WriteFile(file, []byte("modules: {m: {dramatiq: {backlog_by_actor: true}}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := load(t, nil, "--config.file", file)
	if err == nil || !strings.Contains(err.Error(), "modules.m: dramatiq.backlog_by_actor") {
		t.Errorf("got %v", err)
	}
}
