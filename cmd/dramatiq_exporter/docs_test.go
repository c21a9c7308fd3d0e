package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"

	"github.com/dramatiq-exporter/dramatiq_exporter/collector"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/docgen"
	"github.com/dramatiq-exporter/dramatiq_exporter/internal/repo"
	"github.com/dramatiq-exporter/dramatiq_exporter/probe"
)

var updateDocs = flag.Bool("update", false, "rewrite the generated parts of docs/metrics.md and docs/flags.md (make docs)")

// TestDocsAreGenerated fails when the metrics or flag reference in docs/
// no longer matches the code; `make docs` rewrites them.
func TestDocsAreGenerated(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []struct{ file, name, body string }{
		{"docs/metrics.md", "metrics", docgen.Metrics(metricGroups(t))},
		{"docs/flags.md", "flags", docgen.Flags(flagGroups(t))},
	} {
		path := filepath.Join(root, filepath.FromSlash(part.file))
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := docgen.Replace(string(old), part.name, part.body)
		if err != nil {
			t.Fatalf("%s: %v", part.file, err)
		}
		if doc == string(old) {
			continue
		}
		if *updateDocs {
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("rewrote %s", part.file)
			continue
		}
		t.Errorf("%s is stale: the code's %s changed; run `make docs` and commit the result", part.file, part.name)
	}
}

// docsCLIs are the command lines whose collectors the reference covers:
// every source configured, so that no collector stays out for lack of one.
// A second broker adds its own line when its flag exists.
func docsCLIs(t *testing.T) [][]string {
	base := []string{"--database.url=postgres://docs@127.0.0.1:1/docs"}
	lines := [][]string{base}
	if hasFlag(newCLI(io.Discard, io.Discard).app.Model(), "broker") {
		lines = append(lines, append(slices.Clone(base), "--broker=rabbitmq", "--rabbitmq.url=http://127.0.0.1:1"))
	}
	return lines
}

func hasFlag(m *kingpin.ApplicationModel, name string) bool {
	for _, f := range m.Flags {
		if f.Name == name {
			return true
		}
	}
	return false
}

// describe builds the exporter that args configure, with only the
// collectors in on enabled, and returns what it describes. Nothing
// connects: the sources are lazy.
func describe(t *testing.T, args []string, on map[string]bool) []docgen.Family {
	t.Helper()
	c := newCLI(io.Discard, io.Discard)
	if _, err := c.app.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	cfg, err := c.flags.Load()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	sources, cleanup, err := buildSources(ctx, cfg, logger, false)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	e, err := collector.NewExporter(collector.ExporterOptions{Enabled: on}, sources)
	if err != nil {
		t.Fatal(err)
	}
	return families(t, e.Bind(ctx))
}

func families(t *testing.T, c prometheus.Collector) []docgen.Family {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var out []docgen.Family
	for d := range ch {
		f, err := docgen.FromDesc(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	docgen.SortFamilies(out)
	return out
}

// metricGroups lists the families of the exporter itself, then of each
// collector (what it adds to the exporter with it alone enabled, over
// every command line of docsCLIs), then of /probe.
func metricGroups(t *testing.T) []docgen.Group {
	none := map[string]bool{}
	for _, col := range collector.List() {
		none[col.Name] = false
	}
	self := describe(t, nil, none)
	self = append(self, families(t, versioncollector.NewCollector(name))...)
	docgen.SortFamilies(self)
	seen := map[string]bool{}
	for _, f := range self {
		seen[f.Name] = true
	}
	groups := []docgen.Group{{
		Title:    "The exporter itself",
		Intro:    "On every scrape, whichever collectors run; plus the usual `go_*` and `process_*` families on `/metrics` (not on `/probe`).",
		Families: self,
	}}
	for _, col := range collector.List() {
		on := map[string]bool{}
		for k := range none {
			on[k] = k == col.Name
		}
		var fams []docgen.Family
		for _, args := range docsCLIs(t) {
			for _, f := range describe(t, args, on) {
				if !seen[f.Name] {
					seen[f.Name] = true
					fams = append(fams, f)
				}
			}
		}
		docgen.SortFamilies(fams)
		state := "off"
		if col.DefaultEnabled {
			state = "on"
		}
		groups = append(groups, docgen.Group{
			Title:    fmt.Sprintf("Collector `%s` (%s by default)", col.Name, state),
			Intro:    col.Help,
			Families: fams,
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := probe.New(ctx, probe.Options{Logger: slog.New(slog.DiscardHandler)})
	var pf []docgen.Family
	for _, f := range families(t, p) {
		if !seen[f.Name] {
			pf = append(pf, f)
		}
	}
	groups = append(groups, docgen.Group{
		Title:    "`/probe`",
		Intro:    "On the exporter's own `/metrics`: the state of the probed targets ([probe.md](probe.md)).",
		Families: pf,
	})
	return groups
}

// flagGroups lists the visible flags of the server, then of each command
// that has its own.
func flagGroups(t *testing.T) []docgen.FlagGroup {
	c := newCLI(io.Discard, io.Discard)
	m := c.app.Model()
	conv := func(fs []*kingpin.FlagModel) []docgen.Flag {
		var out []docgen.Flag
		for _, f := range fs {
			if f.Hidden || f.Name == "help" {
				continue
			}
			_, cumulative := f.Value.(interface{ IsCumulative() bool })
			if cumulative {
				cumulative = f.Value.(interface{ IsCumulative() bool }).IsCumulative()
			}
			out = append(out, docgen.Flag{
				Name: f.Name, Help: f.Help, Envar: f.Envar, Key: c.flags.FileKey(f.Name),
				Default: strings.Join(f.Default, ","), PlaceHolder: f.PlaceHolder,
				Bool: f.IsBoolFlag(), Repeatable: cumulative,
			})
		}
		return out
	}
	groups := []docgen.FlagGroup{{Title: "Server (`dramatiq_exporter`, `serve`) and every command", Flags: conv(m.Flags)}}
	for _, cmd := range m.Commands {
		if fs := conv(cmd.Flags); len(fs) > 0 {
			groups = append(groups, docgen.FlagGroup{Title: fmt.Sprintf("`%s` only", cmd.Name), Flags: fs})
		}
	}
	return groups
}
