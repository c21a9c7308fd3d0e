// Command gen writes the Prometheus rules, the example Alertmanager
// configuration, the Grafana dashboards and the jsonnet mixin (mixin/) from
// alerts/mixin.
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

	"github.com/dramatiq-exporter/dramatiq_exporter/alerts/mixin"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/repo"
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
		r, err := repo.Root()
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err, "(pass -out)")
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
