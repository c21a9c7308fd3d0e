package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

// testPlatforms: one tar.gz and one zip. `make release` builds all six;
// linux/arm64 is the platform the Dockerfile test builds too, so the two
// share the build cache.
const testPlatforms = "linux/arm64 windows/amd64"

func makeRelease(t *testing.T, root, out string) {
	t.Helper()
	c := exec.Command("make", "--no-print-directory", "release", "RELEASE_DIR="+out, "RELEASE_PLATFORMS="+testPlatforms)
	c.Dir = root
	c.Env = append(os.Environ(), "GOFLAGS=", "GOOS=", "GOARCH=", "VERSION=", "REVISION=", "SOURCE_DATE_EPOCH=", "BUILD_DATE=")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, b)
	}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// TestReleaseReproducible runs make release twice, into two folders, and
// wants the same bytes, then checks what the artifacts hold.
func TestReleaseReproducible(t *testing.T) {
	root := testserver.RepoRoot(t)
	a, b := t.TempDir(), t.TempDir()
	makeRelease(t, root, a)
	makeRelease(t, root, b)
	first, second := readDir(t, a), readDir(t, b)
	if len(first) != len(second) {
		t.Errorf("%d files, then %d", len(first), len(second))
	}
	for n, body := range first {
		if !bytes.Equal(body, second[n]) {
			t.Errorf("%s differs between two runs", n)
		}
	}

	version := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(root, "VERSION")))))
	epoch, err := strconv.ParseInt(strings.TrimSpace(string(must(exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output()))), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(epoch, 0).UTC()
	want := []string{
		"dramatiq-exporter-" + version + ".tgz",
		"dramatiq_exporter-" + version + ".linux-arm64.sbom.cdx.json",
		"dramatiq_exporter-" + version + ".linux-arm64.tar.gz",
		"dramatiq_exporter-" + version + ".windows-amd64.sbom.cdx.json",
		"dramatiq_exporter-" + version + ".windows-amd64.zip",
		"index.yaml",
		"sha256sums.txt",
	}
	for _, n := range want {
		if first[n] == nil {
			t.Errorf("no %s; have %v", n, keys(first))
		}
	}
	if len(first) != len(want) {
		t.Errorf("files %v, want %v", keys(first), want)
	}

	// sha256sums.txt covers every other file, in sha256sum -c's format.
	var sums []string
	for _, n := range want[:len(want)-1] {
		s := sha256.Sum256(first[n])
		sums = append(sums, hex.EncodeToString(s[:])+"  "+n)
	}
	if got := string(first["sha256sums.txt"]); got != strings.Join(sums, "\n")+"\n" {
		t.Errorf("sha256sums.txt:\n%s\nwant:\n%s", got, strings.Join(sums, "\n"))
	}

	checkTarGz(t, first[want[2]], "dramatiq_exporter-"+version+".linux-arm64", mtime)
	checkZip(t, first[want[4]], "dramatiq_exporter-"+version+".windows-amd64", mtime)
	for _, n := range []string{want[1], want[3]} {
		var bom struct {
			BOMFormat, SerialNumber string
			Metadata                struct {
				Timestamp string
				Component struct{ Name, Version string }
			}
			Components []struct{ Name, Version string }
		}
		if err := json.Unmarshal(first[n], &bom); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		var found bool
		for _, c := range bom.Components {
			found = found || c.Name == "github.com/prometheus/client_golang"
		}
		if bom.BOMFormat != "CycloneDX" || bom.Metadata.Component.Version != "v"+version || !found || bom.SerialNumber != "" || bom.Metadata.Timestamp != "" {
			t.Errorf("%s: %+v", n, bom)
		}
	}
	checkChart(t, first[want[0]], first["index.yaml"], version, mtime)
}

func checkTarGz(t *testing.T, b []byte, dir string, mtime time.Time) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q time %v: want neither", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(mtime) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: time %v uid %d gid %d %q %q; want the commit's time %v, 0/0, no names", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname, mtime)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == dir+"/dramatiq_exporter" {
			if h.Mode != 0o755 {
				t.Errorf("binary mode %o", h.Mode)
			}
			f, err := elf.NewFile(bytes.NewReader(body))
			if err != nil || f.Machine != elf.EM_AARCH64 {
				t.Errorf("the linux-arm64 binary: %v %v", err, f)
			}
		}
	}
	wantNames := []string{dir + "/", dir + "/LICENSE", dir + "/README.md", dir + "/dramatiq_exporter", dir + "/dramatiq_exporter.yml"}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("entries %v, want %v", names, wantNames)
	}
}

func checkZip(t *testing.T, b []byte, dir string, mtime time.Time) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if !f.Modified.Equal(mtime) {
			t.Errorf("%s: time %v, want %v", f.Name, f.Modified, mtime)
		}
		if f.Name == dir+"/dramatiq_exporter.exe" {
			rc, _ := f.Open()
			body, _ := io.ReadAll(rc)
			p, err := pe.NewFile(bytes.NewReader(body))
			if err != nil || p.Machine != pe.IMAGE_FILE_MACHINE_AMD64 {
				t.Errorf("the windows-amd64 binary: %v", err)
			}
		}
	}
	wantNames := []string{dir + "/", dir + "/LICENSE", dir + "/README.md", dir + "/dramatiq_exporter.exe", dir + "/dramatiq_exporter.yml"}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("entries %v, want %v", names, wantNames)
	}
}

func checkChart(t *testing.T, tgz, index []byte, version string, mtime time.Time) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var chartYAML []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("chart %s: time %v, want %v", h.Name, h.ModTime, mtime)
		}
		if h.Name == "dramatiq-exporter/Chart.yaml" {
			chartYAML, _ = io.ReadAll(tr)
		}
	}
	var c struct {
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(chartYAML, &c); err != nil || c.Version != version || c.AppVersion != version {
		t.Errorf("packaged Chart.yaml: %v %+v, want %s", err, c, version)
	}
	var idx struct {
		Generated time.Time
		Entries   map[string][]struct {
			Version, Digest string
			Created         time.Time
			URLs            []string
		}
	}
	if err := yaml.Unmarshal(index, &idx); err != nil {
		t.Fatal(err)
	}
	e := idx.Entries["dramatiq-exporter"]
	sum := sha256.Sum256(tgz)
	if len(e) != 1 || e[0].Version != version || e[0].Digest != hex.EncodeToString(sum[:]) || !e[0].Created.Equal(mtime) || !idx.Generated.Equal(mtime) ||
		len(e[0].URLs) != 1 || !strings.HasSuffix(e[0].URLs[0], "/v"+version+"/dramatiq-exporter-"+version+".tgz") {
		t.Errorf("index.yaml:\n%s", index)
	}
}

// TestChartFollowsVERSION: the chart's version and appVersion are the
// exporter's VERSION; bump them together.
func TestChartFollowsVERSION(t *testing.T) {
	root := testserver.RepoRoot(t)
	version := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(root, "VERSION")))))
	var c struct {
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(must(os.ReadFile(filepath.Join(root, chart, "Chart.yaml"))), &c); err != nil {
		t.Fatal(err)
	}
	if c.Version != version || c.AppVersion != version {
		t.Errorf("%s/Chart.yaml: version %q, appVersion %q; VERSION is %q", chart, c.Version, c.AppVersion, version)
	}
	r := &release{root: root, version: version}
	if err := r.checkChartVersion(); err != nil {
		t.Error(err)
	}
	r.version = version + "-other"
	if err := r.checkChartVersion(); err == nil {
		t.Error("make release would package a chart whose version is not VERSION")
	}
}

func TestParsePlatform(t *testing.T) {
	for in, want := range map[string]string{"linux/amd64": "linux-amd64", "linux/arm/v7": "linux-armv7", "darwin/arm64": "darwin-arm64"} {
		p, err := parsePlatform(in)
		if err != nil || p.suffix() != want {
			t.Errorf("%s: %v %q", in, err, p.suffix())
		}
	}
	for _, bad := range []string{"linux", "linux/arm", "linux/arm/v8", "linux/amd64/v3/x"} {
		if _, err := parsePlatform(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
