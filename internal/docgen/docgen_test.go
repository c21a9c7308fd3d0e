package docgen

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFromDesc(t *testing.T) {
	for _, c := range []struct {
		desc *prometheus.Desc
		want Family
	}{
		{prometheus.NewDesc("a_total", `help with "quotes", {braces}, variableLabels: {x} and a \ backslash`, []string{"queue", "actor"}, nil),
			Family{Name: "a_total", Help: `help with "quotes", {braces}, variableLabels: {x} and a \ backslash`, Type: "counter", Labels: []string{"queue", "actor"}}},
		{prometheus.NewDesc("b_seconds", "plain", nil, prometheus.Labels{"version": `1.0 "x"`, "branch": ""}),
			Family{Name: "b_seconds", Help: "plain", Type: "gauge", Labels: []string{"branch", "version"}}},
		{prometheus.NewDesc("c", "", nil, nil), Family{Name: "c", Type: "gauge"}},
	} {
		got, err := FromDesc(c.desc)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != c.want.Name || got.Help != c.want.Help || got.Type != c.want.Type || !slices.Equal(got.Labels, c.want.Labels) {
			t.Errorf("FromDesc(%s) = %+v, want %+v", c.desc, got, c.want)
		}
	}
}

func TestReplace(t *testing.T) {
	doc := "intro\n" + Begin("x") + "\nold\n" + End("x") + "\nafter\n"
	got, err := Replace(doc, "x", "new | body")
	if err != nil {
		t.Fatal(err)
	}
	if want := "intro\n" + Begin("x") + "\nnew | body\n" + End("x") + "\nafter\n"; got != want {
		t.Errorf("Replace = %q, want %q", got, want)
	}
	for _, bad := range []string{"no markers", End("x") + Begin("x"), doc + doc, Begin("x")} {
		if _, err := Replace(bad, "x", "b"); !errors.Is(err, ErrNoMarkers) {
			t.Errorf("Replace(%q) err = %v, want ErrNoMarkers", bad, err)
		}
	}
}

func TestTablesEscapeCells(t *testing.T) {
	m := Metrics([]Group{{Title: "g", Families: []Family{{Name: "n", Type: "gauge", Help: "a | b <c>\nd"}}}})
	if !strings.Contains(m, "| a \\| b &lt;c> d |") {
		t.Errorf("metrics table cell not escaped:\n%s", m)
	}
	f := Flags([]FlagGroup{{Title: "g", Flags: []Flag{{Name: "x", PlaceHolder: "A|B", Help: "h", Repeatable: true}, {Name: "y", Bool: true}}}})
	if !strings.Contains(f, "| `--x=A|B` |") || !strings.Contains(f, "h Repeatable.") || !strings.Contains(f, "`--[no-]y`") {
		t.Errorf("flags table:\n%s", f)
	}
}
