package testserver

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/repo"
)

// RepoRoot is the directory holding go.mod, found upwards from the test's
// working directory (its package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// BuildExporter builds cmd/dramatiq_exporter into dir and returns the
// binary's path, so tests run exactly what users run. It takes no
// testing.TB so that TestMain and goroutines can call it.
func BuildExporter(dir string) (string, error) {
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "dramatiq_exporter")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/dramatiq_exporter")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dramatiq_exporter: %v\n%s", err, out)
	}
	return bin, nil
}
