package mixin

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// ChartFiles is where the Helm chart keeps its copies of the rules and
// dashboards: Helm's .Files reads only inside the chart, so the chart cannot
// point at alerts/ or dashboards/.
const ChartFiles = "charts/dramatiq-exporter/files"

// Files returns every generated file by its path relative to the repository
// root.
func (c Config) Files() (map[string][]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rules := c.RulesYAML()
	out := map[string][]byte{
		"alerts/dramatiq.rules.yml":        rules,
		"alerts/alertmanager.yml":          c.AlertmanagerYAML(),
		ChartFiles + "/dramatiq.rules.yml": rules,
	}
	for name, b := range c.Dashboards() {
		out["dashboards/"+name] = b
		out[ChartFiles+"/dashboards/"+name] = b
	}
	for rel, b := range c.MixinFiles() {
		out[rel] = b
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
