package testserver

import (
	"fmt"
	"os"
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

// RunWithExporter is a package's TestMain for tests that run the binary:
// it builds the exporter once into a temporary directory, stores its path
// in *binary, runs the tests and removes the directory. It never returns.
func RunWithExporter(m *testing.M, binary *string) {
	dir, err := os.MkdirTemp("", "dramatiq_exporter-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *binary, err = BuildExporter(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
