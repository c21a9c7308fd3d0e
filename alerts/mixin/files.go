package mixin

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Files returns every generated file by its path relative to the repository
// root.
func (c Config) Files() (map[string][]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	out := map[string][]byte{
		"alerts/dramatiq.rules.yml": c.RulesYAML(),
		"alerts/alertmanager.yml":   c.AlertmanagerYAML(),
	}
	for name, b := range c.Dashboards() {
		out["dashboards/"+name] = b
	}
	return out, nil
}

// Write writes the generated files under root and returns their paths,
// sorted.
func (c Config) Write(root string) ([]string, error) {
	files, err := c.Files()
	if err != nil {
		return nil, err
	}
	var paths []string
	for rel, b := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", rel, err)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, nil
}
