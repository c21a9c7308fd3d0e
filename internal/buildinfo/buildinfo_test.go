package buildinfo

import (
	"runtime/debug"
	"testing"

	"github.com/prometheus/common/version"
)

func TestFromBuild(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	placeholders := "revision=$Format:%H$\nepoch=$Format:%ct$\n"
	cases := []struct {
		name    string
		bi      *debug.BuildInfo
		archive string
		want    Info
	}{
		{"go install @tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, placeholders,
			Info{Version: "1.2.3"}},
		{"go install @pseudo-version", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.4-0.20240102030405-abcdef012345"}}, placeholders,
			Info{Version: "1.2.4-0.20240102030405-abcdef012345", Revision: "abcdef012345", Date: "20240102-03:04:05"}},
		{"go build in a clean clone", &debug.BuildInfo{
			Main: debug.Module{Version: "v0.0.0-20240102030405-0123456789ab"},
			Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
				{Key: "vcs.time", Value: "2024-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "false"},
			},
		}, placeholders, Info{Version: "0.0.0-20240102030405-0123456789ab", Revision: rev, Date: "20240102-03:04:05"}},
		{"go build in a dirty clone, -buildvcs only", &debug.BuildInfo{
			Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2024-01-02T04:04:05+01:00"}, {Key: "vcs.modified", Value: "true"},
			},
		}, placeholders, Info{Revision: rev + "-modified", Date: "20240102-03:04:05"}},
		{"go build in a git archive export", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"revision=" + rev + "\nepoch=1704164645\n", Info{Revision: rev, Date: "20240102-03:04:05"}},
		{"nothing known", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, placeholders, Info{}},
		{"no build info", nil, placeholders, Info{}},
		{"archive without a revision gives no date either", nil, "revision=\nepoch=1704164645\n", Info{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := FromBuild(c.bi, c.archive); got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestFillKeepsLdflags: what the Makefile stamped wins over anything the
// toolchain recorded; only empty variables are filled.
func TestFillKeepsLdflags(t *testing.T) {
	saved := [5]string{version.Version, version.Revision, version.BuildDate, version.Branch, version.BuildUser}
	t.Cleanup(func() {
		version.Version, version.Revision, version.BuildDate, version.Branch, version.BuildUser = saved[0], saved[1], saved[2], saved[3], saved[4]
	})
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "feed"}}}

	version.Version, version.Revision, version.BuildDate, version.Branch, version.BuildUser = "1.0.0", "abc", "20200101-00:00:00", "main", "me@host"
	fill(bi, "")
	if version.Version != "1.0.0" || version.Revision != "abc" || version.BuildDate != "20200101-00:00:00" || version.Branch != "main" || version.BuildUser != "me@host" {
		t.Errorf("ldflags values overwritten: %s", version.Print("x"))
	}

	version.Version, version.Revision, version.BuildDate, version.Branch, version.BuildUser = "", "", "", "", ""
	fill(bi, "")
	if version.Version != "9.9.9" || version.GetRevision() != "feed" || version.BuildDate != "unknown" || version.Branch != "unknown" {
		t.Errorf("empty variables not filled: %s", version.Print("x"))
	}
}
