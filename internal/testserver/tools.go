package testserver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/repo"
)

// A PinnedTool is one binary that scripts/tools.sh builds from its Go module.
type PinnedTool struct {
	Name          string // promtool, prometheus, alertmanager, amtool
	ModuleVersion string // the Go module version, v0.316.0
	Version       string // what the binary reports, 3.16.0
	Path          string
}

var (
	pinsOnce sync.Once
	pins     map[string]PinnedTool
	pinsErr  error
)

// PinnedTools reads the pins from scripts/tools.sh itself (--list), so the
// versions are written down in one place.
func PinnedTools() (map[string]PinnedTool, error) {
	pinsOnce.Do(func() {
		root, err := repo.Root()
		if err != nil {
			pinsErr = err
			return
		}
		out, err := exec.Command("bash", filepath.Join(root, "scripts", "tools.sh"), "--list").Output()
		if err != nil {
			pinsErr = fmt.Errorf("scripts/tools.sh --list: %w", err)
			return
		}
		pins = map[string]PinnedTool{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// The path comes last and may hold spaces (a checkout under
			// "/tmp/with space/"), so only the first three fields split.
			f := strings.SplitN(strings.TrimSpace(line), " ", 4)
			if len(f) != 4 || f[3] == "" {
				pinsErr = fmt.Errorf("scripts/tools.sh --list: bad line %q", line)
				return
			}
			pins[f[0]] = PinnedTool{Name: f[0], ModuleVersion: f[1], Version: f[2], Path: f[3]}
		}
	})
	return pins, pinsErr
}

// Tool returns the binary scripts/tools.sh built for name. A missing binary
// fails the test (it never skips): `make test` builds every tool first.
func Tool(t testing.TB, name string) PinnedTool {
	t.Helper()
	all, err := PinnedTools()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := all[name]
	if !ok {
		t.Fatalf("%s is not pinned in scripts/tools.sh", name)
	}
	if st, err := os.Stat(p.Path); err != nil || st.IsDir() {
		t.Fatalf("%s %s not built (%s): run scripts/tools.sh (make test does)", name, p.Version, p.Path)
	}
	return p
}

// A PromRelease is one Prometheus server with the promtool, Alertmanager and
// amtool of the same era. The tests run every rule, route and end-to-end
// check against each release in PromReleases.
type PromRelease struct {
	Name         string // for subtest names: "prometheus-2.42.0_alertmanager-0.25.0"
	Prometheus   string // binary paths
	Promtool     string
	Alertmanager string
	Amtool       string
	// PromVersion and AMVersion are what the binaries report about themselves.
	PromVersion string
	AMVersion   string
}

// Major is the Prometheus major version, "2" or "3".
func (r PromRelease) Major() string { return strings.SplitN(r.PromVersion, ".", 2)[0] }

var versionRE = regexp.MustCompile(`version (\d+\.\d+\.\d+)`)

// BinaryVersion runs `bin --version` and returns the x.y.z it reports.
func BinaryVersion(t testing.TB, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s --version reports no version:\n%s", bin, out)
	}
	return string(m[1])
}

// PromReleases returns Debian's packaged Prometheus 2 / Alertmanager 0.25
// (what `make deps` installs) and the Prometheus 3 / current Alertmanager
// that scripts/tools.sh builds. Every binary must be present: nothing skips.
func PromReleases(t testing.TB) []PromRelease {
	t.Helper()
	debAM := "/usr/bin/prometheus-alertmanager" // Debian's name for the server
	if _, err := os.Stat(debAM); err != nil {
		debAM = LookPath(t, "alertmanager", "/usr/bin")
	}
	deb := PromRelease{
		Prometheus:   LookPath(t, "prometheus", "/usr/bin"),
		Promtool:     LookPath(t, "promtool", "/usr/bin"),
		Alertmanager: debAM,
		Amtool:       LookPath(t, "amtool", "/usr/bin"),
	}
	cur := PromRelease{
		Prometheus:   Tool(t, "prometheus").Path,
		Promtool:     Tool(t, "promtool").Path,
		Alertmanager: Tool(t, "alertmanager").Path,
		Amtool:       Tool(t, "amtool").Path,
	}
	out := []PromRelease{deb, cur}
	for i := range out {
		r := &out[i]
		r.PromVersion = BinaryVersion(t, r.Prometheus)
		r.AMVersion = BinaryVersion(t, r.Alertmanager)
		r.Name = "prometheus-" + r.PromVersion + "_alertmanager-" + r.AMVersion
	}
	if pin := Tool(t, "prometheus").Version; out[1].PromVersion != pin {
		t.Fatalf("%s reports version %s, scripts/tools.sh pins %s", out[1].Prometheus, out[1].PromVersion, pin)
	}
	return out
}
