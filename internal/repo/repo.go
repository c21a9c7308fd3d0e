// Package repo finds the repository's root, for the generator and tests
// that read or build the project's own files.
package repo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
)

// modulePath is the exporter's module. Nested modules (test/kube, which
// keeps the Kubernetes API types out of the exporter's go.mod) have their
// own go.mod below the root, so the first go.mod found is not enough.
const modulePath = "github.com/dramatiq-exporter/dramatiq_exporter"

// Root is the directory holding the exporter's go.mod, found upwards from
// the working directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isRoot(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the go.mod of " + modulePath + " is not above the working directory")
		}
		dir = parent
	}
}

func isRoot(gomod []byte) bool {
	for _, line := range bytes.Split(gomod, []byte("\n")) {
		if f := bytes.Fields(line); len(f) == 2 && string(f[0]) == "module" {
			return string(f[1]) == modulePath
		}
	}
	return false
}
