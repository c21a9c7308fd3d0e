// Package buildinfo fills in the version, revision and build date that
// --version and dramatiq_exporter_build_info report, for binaries built
// without the Makefile's -ldflags: `go install <module>/cmd/dramatiq_exporter@vX`,
// a plain `go build` in a clone, and a plain `go build` in a source archive
// made by `git archive` (GitHub's "Source code" downloads).
package buildinfo

import (
	_ "embed"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/version"
)

// archive is archive.txt: in a clone it holds git's placeholders; `git
// archive` replaces them with the commit's hash and time, because
// .gitattributes marks the file export-subst. The Go command turns
// export-subst off for module zips (go.dev/issue/27153), so a module
// download keeps the placeholders and the module version speaks instead.
//
//go:embed archive.txt
var archive string

// dateLayout is the form of the Makefile's BuildDate.
const dateLayout = "20060102-15:04:05"

// Fill sets each of prometheus/common/version's variables that -ldflags
// left empty from what the Go toolchain recorded in the binary, or from
// archive.txt. It runs once at start-up, before anything reads them.
func Fill() {
	bi, _ := debug.ReadBuildInfo()
	fill(bi, archive)
}

// Info is what a build knows about itself, in prometheus/common/version's
// terms; empty when unknown.
type Info struct {
	Version, Revision, Date string
}

func fill(bi *debug.BuildInfo, archive string) {
	got := FromBuild(bi, archive)
	if version.Version == "" {
		version.Version = orUnknown(got.Version)
	}
	if version.Revision == "" && got.Revision != "" {
		version.Revision = got.Revision
	}
	if version.BuildDate == "" {
		version.BuildDate = orUnknown(got.Date)
	}
	if version.Branch == "" {
		version.Branch = "unknown"
	}
	if version.BuildUser == "" {
		version.BuildUser = "unknown"
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// FromBuild reads the version from the main module's version (a tag or a
// pseudo-version, which `go install …@vX` records and, since Go 1.24, `go
// build` in a clone derives from git), and the revision and date from the
// VCS settings of a build in a clone, else from a pseudo-version, else from
// a `git archive` export's archive.txt.
func FromBuild(bi *debug.BuildInfo, archive string) Info {
	var in Info
	var modified bool
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			// Prometheus projects report 1.2.3, not v1.2.3: the VERSION file's form.
			in.Version = strings.TrimPrefix(v, "v")
			in.Revision, in.Date = fromPseudo(v)
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.time":
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					in.Date = t.UTC().Format(dateLayout)
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if in.Revision == "" {
		in.Revision, in.Date = fromArchive(archive)
	}
	// prometheus/common/version marks a dirty tree the same way.
	if modified && in.Revision != "" {
		in.Revision += "-modified"
	}
	return in
}

// pseudoRE matches the tail of a pseudo-version (go.dev/ref/mod#pseudo-versions):
// a UTC timestamp and a 12-digit revision prefix, then maybe +dirty or
// +incompatible.
var pseudoRE = regexp.MustCompile(`[-.](\d{14})-([0-9a-f]{12})(\+[0-9A-Za-z.-]+)?$`)

func fromPseudo(v string) (revision, date string) {
	m := pseudoRE.FindStringSubmatch(v)
	if m == nil {
		return "", ""
	}
	t, err := time.Parse("20060102150405", m[1])
	if err != nil {
		return "", ""
	}
	return m[2], t.Format(dateLayout)
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// fromArchive reads archive.txt once git has filled it in; placeholders
// (a clone, a module zip) give nothing.
func fromArchive(s string) (revision, date string) {
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "revision":
			if hexRE.MatchString(v) {
				revision = v
			}
		case "epoch":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
				date = time.Unix(n, 0).UTC().Format(dateLayout)
			}
		}
	}
	if revision == "" {
		return "", ""
	}
	return revision, date
}
