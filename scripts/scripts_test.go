// Package scripts_test checks the shell scripts' failure paths, which the
// demo run by hand rarely takes.
package scripts_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// Without PostgreSQL the demo says so and exits 1 before it touches
// anything (under set -euo pipefail, a failing lookup used to end it
// silently).
func TestDemoWithoutPostgreSQL(t *testing.T) {
	for _, bin := range []string{"redis-server", "prometheus", "curl", "go"} {
		testserver.LookPath(t, bin)
	}
	root := testserver.RepoRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "demo.sh"), "--background")
	cmd.Env = append(os.Environ(), "PG_BINDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "initdb not found") || !strings.Contains(stderr.String(), "deps.sh --demo") {
		t.Fatalf("stderr does not name the missing PostgreSQL and the fix: %q", stderr.String())
	}
	if strings.Contains(stdout.String(), "starting") {
		t.Fatalf("the demo started something before failing:\n%s", stdout.String())
	}
}

// deps.sh takes only the arguments it knows: a typo must not run the full
// install.
func TestDepsRejectsUnknownArguments(t *testing.T) {
	root := testserver.RepoRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "deps.sh"), "--dmeo")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "unknown argument --dmeo") {
		t.Fatalf("deps.sh --dmeo: %v\n%s", err, out)
	}
}
