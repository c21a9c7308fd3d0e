// Command gen writes the Prometheus rules, the example Alertmanager
// configuration and the Grafana dashboards from alerts/mixin.
//
//	go run ./alerts/gen                 # rewrite the committed files
//	go run ./alerts/gen -out /tmp/x -for-scale 0.01 -selector 'job="dx"'
//
// The committed files must be regenerated with the defaults; the flags are for
// copies, such as a rule file with short `for:` durations for a live test.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
)

func main() { os.Exit(run()) }

func run() int {
	cfg := mixin.DefaultConfig()
	out := flag.String("out", "", "root directory to write alerts/ and dashboards/ into (default: the repository root)")
	flag.StringVar(&cfg.Selector, "selector", cfg.Selector, "matchers added to every rule's series selectors")
	flag.Float64Var(&cfg.ForScale, "for-scale", cfg.ForScale, "multiply every alert's for: duration by this factor")
	flag.StringVar(&cfg.RunbookURL, "runbook-url", cfg.RunbookURL, "address of RUNBOOK.md")
	flag.Parse()

	root := *out
	if root == "" {
		r, err := repoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			return 1
		}
		root = r
	}
	paths, err := cfg.Write(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		return 1
	}
	for _, p := range paths {
		fmt.Println(p)
	}
	return 0
}

// repoRoot walks up from the working directory to go.mod.
func repoRoot() (string, error) {
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
			return "", fmt.Errorf("no go.mod above the working directory; pass -out")
		}
		dir = parent
	}
}
