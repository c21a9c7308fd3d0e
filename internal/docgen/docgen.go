// Package docgen writes the generated parts of docs/: the metrics
// reference from the exporter's own descriptors and the flag reference
// from its kingpin model. The hand-written prose around them stays; only
// the text between a pair of markers is replaced:
//
//	<!-- BEGIN GENERATED: NAME (make docs) -->
//	…
//	<!-- END GENERATED: NAME -->
//
// The inputs are built by cmd/dramatiq_exporter's docs test, which holds
// the command line and the wiring; `make docs` runs it with -update.
package docgen

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Family is one metric family as the reference lists it.
type Family struct {
	Name, Help, Type string
	Labels           []string
}

// Group is the families one part of the exporter adds (a collector, the
// exporter itself, /probe).
type Group struct {
	Title, Intro string
	Families     []Family
}

// FromDesc reads a descriptor. client_golang exposes a Desc's parts only
// through String, whose format (quoted name and help, then the variable
// labels) it has kept since 1.0; a change fails the docs test rather than
// writing a wrong reference.
//
// The type is not part of a descriptor: it is given when a sample is made.
// The reference takes it from the name, the convention promlint enforces
// on every family in the collector and probe tests (a counter ends in
// _total, nothing else does); the exporter has no histogram or summary.
func FromDesc(d *prometheus.Desc) (Family, error) {
	s := d.String()
	bad := func(what string) (Family, error) {
		return Family{}, fmt.Errorf("docgen: cannot read the %s of %s", what, s)
	}
	rest, ok := strings.CutPrefix(s, "Desc{fqName: ")
	if !ok {
		return bad("name")
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return bad("name")
	}
	var f Family
	f.Name, _ = strconv.Unquote(q)
	if rest, ok = strings.CutPrefix(rest[len(q):], ", help: "); !ok {
		return bad("help")
	}
	if q, err = strconv.QuotedPrefix(rest); err != nil {
		return bad("help")
	}
	f.Help, _ = strconv.Unquote(q)
	// Constant labels (build_info's) are listed by name only: their values
	// depend on the build.
	rest = rest[len(q):]
	if j := strings.Index(rest, "constLabels: {"); j >= 0 {
		cl := rest[j+len("constLabels: {"):]
		for !strings.HasPrefix(cl, "}") {
			name, after, ok := strings.Cut(cl, "=")
			if !ok {
				return bad("constant labels")
			}
			v, err := strconv.QuotedPrefix(after)
			if err != nil {
				return bad("constant labels")
			}
			f.Labels = append(f.Labels, name)
			cl = strings.TrimPrefix(after[len(v):], ",")
		}
	}
	i := strings.LastIndex(rest, "variableLabels: {")
	if i < 0 || !strings.HasSuffix(rest, "}}") {
		return bad("labels")
	}
	if l := rest[i+len("variableLabels: {") : len(rest)-2]; l != "" {
		f.Labels = append(f.Labels, strings.Split(l, ",")...)
	}
	f.Type = "gauge"
	if strings.HasSuffix(f.Name, "_total") {
		f.Type = "counter"
	}
	return f, nil
}

// SortFamilies orders families by name.
func SortFamilies(fs []Family) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
}

// Metrics renders the metrics reference.
func Metrics(groups []Group) string {
	var b strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&b, "### %s\n\n", g.Title)
		if g.Intro != "" {
			b.WriteString(g.Intro + "\n\n")
		}
		b.WriteString("| metric | type | labels | help |\n|---|---|---|---|\n")
		for _, f := range g.Families {
			labels := ""
			if len(f.Labels) > 0 {
				labels = "`" + strings.Join(f.Labels, "`, `") + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Name, f.Type, labels, cell(f.Help))
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Flag is one flag as the reference lists it.
type Flag struct {
	Name, Help, Envar, Key, Default, PlaceHolder string
	Bool, Repeatable                             bool
}

// FlagGroup is the flags of the server or of one subcommand.
type FlagGroup struct {
	Title string
	Flags []Flag
}

// Flags renders the flag reference.
func Flags(groups []FlagGroup) string {
	var b strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&b, "### %s\n\n", g.Title)
		b.WriteString("| flag | environment | config-file key | default | meaning |\n|---|---|---|---|---|\n")
		for _, f := range g.Flags {
			name := "--" + f.Name
			switch {
			case f.Bool:
				name = "--[no-]" + f.Name
			case f.PlaceHolder != "":
				name += "=" + f.PlaceHolder
			}
			help := f.Help
			if f.Repeatable && !strings.Contains(strings.ToLower(help), "repeatable") {
				help += " Repeatable."
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", name, code(f.Envar), code(f.Key), code(f.Default), cell(help))
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	// A bare <…> would be read as HTML and vanish.
	s = strings.ReplaceAll(s, "<", "&lt;")
	return s
}

// ErrNoMarkers is returned by Replace when the document lacks the pair.
var ErrNoMarkers = errors.New("docgen: markers not found")

// Begin and End are the marker lines of the part NAME.
func Begin(name string) string { return "<!-- BEGIN GENERATED: " + name + " (make docs) -->" }
func End(name string) string   { return "<!-- END GENERATED: " + name + " -->" }

// Replace puts body between the markers of part name in doc.
func Replace(doc, name, body string) (string, error) {
	begin, end := Begin(name), End(name)
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i || strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 {
		return "", fmt.Errorf("%w: %q … %q, once each and in that order", ErrNoMarkers, begin, end)
	}
	return doc[:i+len(begin)] + "\n" + body + "\n" + doc[j:], nil
}
