// Package repo finds the repository's root, for the generator and tests
// that read or build the project's own files.
package repo

import (
	"errors"
	"os"
	"path/filepath"
)

// Root is the directory holding go.mod, found upwards from the working
// directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
