// Command release builds the release artifacts into one folder: an archive
// per platform (the static binary, LICENSE, a short README and an example
// config), a CycloneDX SBOM per binary, the packaged Helm chart with its
// repository index, and sha256sums.txt. `make release` runs it.
//
// Everything is reproducible: the binaries come from `make build`
// (-trimpath, an empty build id, the commit's time as the build date), and
// the archives are written here rather than by tar or zip so that their
// order, times, owners and gzip headers are fixed. Two runs on one commit
// give byte-identical folders; tools/release's test checks that.
//
// The version, revision, branch and date come from the environment that
// the Makefile exports (VERSION, REVISION, BRANCH, SOURCE_DATE_EPOCH), so
// every binary is stamped exactly as `make build` would stamp it.
package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const (
	name  = "dramatiq_exporter"
	chart = "charts/dramatiq-exporter"
)

// AllPlatforms is what `make release` builds by default.
const AllPlatforms = "linux/amd64 linux/arm64 linux/arm/v7 darwin/amd64 darwin/arm64 windows/amd64"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

type platform struct{ goos, goarch, goarm string }

func parsePlatform(s string) (platform, error) {
	f := strings.Split(s, "/")
	switch {
	case len(f) == 2 && f[1] != "arm":
		return platform{f[0], f[1], ""}, nil
	case len(f) == 3 && f[1] == "arm" && regexp.MustCompile(`^v[5-7]$`).MatchString(f[2]):
		return platform{f[0], f[1], f[2][1:]}, nil
	}
	return platform{}, fmt.Errorf("platform %q: want os/arch, or os/arm/v5..v7", s)
}

// suffix names a platform in file names: linux-amd64, linux-armv7 (the
// form of Prometheus's own release archives).
func (p platform) suffix() string {
	if p.goarm != "" {
		return p.goos + "-" + p.goarch + "v" + p.goarm
	}
	return p.goos + "-" + p.goarch
}

type release struct {
	root, out, work, version, revision string
	mtime                              time.Time
	helm, cyclonedx                    string
	chartURL                           string
}

func run(args []string) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	out := fs.String("out", "dist", "folder for the artifacts (its earlier artifacts are replaced)")
	platforms := fs.String("platforms", AllPlatforms, "space-separated os/arch[/variant] list")
	chartURL := fs.String("chart-url", "", "URL the Helm index points at (default: this version's GitHub release downloads)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := &release{out: *out, version: os.Getenv("VERSION"), revision: os.Getenv("REVISION"), chartURL: *chartURL}
	if r.version == "" || r.revision == "" {
		return errors.New("VERSION and REVISION must be set (make release sets them)")
	}
	epoch, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil || epoch <= 0 {
		return fmt.Errorf("SOURCE_DATE_EPOCH %q: want the commit's unix time (make release sets it)", os.Getenv("SOURCE_DATE_EPOCH"))
	}
	r.mtime = time.Unix(epoch, 0).UTC()
	if r.chartURL == "" {
		r.chartURL = "https://github.com/dramatiq-exporter/dramatiq_exporter/releases/download/v" + r.version
	}
	if r.root, err = os.Getwd(); err != nil {
		return err
	}
	if err := r.checkChartVersion(); err != nil {
		return err
	}
	if r.helm, err = r.tool("helm"); err != nil {
		return err
	}
	if r.cyclonedx, err = r.tool("cyclonedx-gomod"); err != nil {
		return err
	}
	var ps []platform
	for _, s := range strings.Fields(*platforms) {
		p, err := parsePlatform(s)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return errors.New("no platforms")
	}
	if err := r.clean(); err != nil {
		return err
	}
	if r.work, err = os.MkdirTemp("", "dramatiq_exporter-release-"); err != nil {
		return err
	}
	defer os.RemoveAll(r.work)

	for _, p := range ps {
		if err := r.platform(p); err != nil {
			return fmt.Errorf("%s: %w", p.suffix(), err)
		}
	}
	if err := r.chart(); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return r.checksums()
}

// checkChartVersion refuses a release whose chart does not carry VERSION:
// the chart's version and appVersion follow the exporter's.
func (r *release) checkChartVersion() error {
	b, err := os.ReadFile(filepath.Join(r.root, chart, "Chart.yaml"))
	if err != nil {
		return err
	}
	var c struct {
		Version    string `yaml:"version"`
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return err
	}
	if c.Version != r.version || c.AppVersion != r.version {
		return fmt.Errorf("%s/Chart.yaml has version %q and appVersion %q; both must be VERSION %q", chart, c.Version, c.AppVersion, r.version)
	}
	return nil
}

// tool finds a binary that scripts/tools.sh built (make release builds
// the two it needs first).
func (r *release) tool(want string) (string, error) {
	out, err := exec.Command("bash", filepath.Join(r.root, "scripts", "tools.sh"), "--list").Output()
	if err != nil {
		return "", fmt.Errorf("scripts/tools.sh --list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) == 4 && f[0] == want {
			if _, err := os.Stat(f[3]); err != nil {
				return "", fmt.Errorf("%s is not built: run scripts/tools.sh %s", want, want)
			}
			return f[3], nil
		}
	}
	return "", fmt.Errorf("%s is not pinned in scripts/tools.sh", want)
}

// clean removes what an earlier run left in the output folder, and nothing
// else: the folder may be one the user named.
func (r *release) clean() error {
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(r.out)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, name+"-") || strings.HasPrefix(n, "dramatiq-exporter-") || n == "sha256sums.txt" || n == "index.yaml" {
			if err := os.Remove(filepath.Join(r.out, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *release) platform(p platform) error {
	exe := name
	if p.goos == "windows" {
		exe += ".exe"
	}
	bin := filepath.Join(r.work, p.suffix(), exe)
	mk := exec.Command("make", "--no-print-directory", "build", "BIN="+bin)
	mk.Dir = r.root
	// BUILD_USER: the same on every machine, so anyone can rebuild the
	// release bit for bit.
	mk.Env = append(os.Environ(), "GOOS="+p.goos, "GOARCH="+p.goarch, "GOARM="+p.goarm, "BUILD_USER=release")
	mk.Stdout, mk.Stderr = os.Stderr, os.Stderr
	fmt.Fprintf(os.Stderr, "release: building %s\n", p.suffix())
	if err := mk.Run(); err != nil {
		return fmt.Errorf("make build: %w", err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	files, err := r.archiveFiles(exe, binary)
	if err != nil {
		return err
	}
	base := name + "-" + r.version + "." + p.suffix()
	var archive []byte
	if p.goos == "windows" {
		archive, err = r.zipFiles(base, files)
		base += ".zip"
	} else {
		archive, err = r.tarGz(base, files)
		base += ".tar.gz"
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.out, base), archive, 0o644); err != nil {
		return err
	}
	return r.sbom(bin, name+"-"+r.version+"."+p.suffix()+".sbom.cdx.json")
}

type file struct {
	name string
	mode int64
	body []byte
}

func (r *release) archiveFiles(exe string, binary []byte) ([]file, error) {
	license, err := os.ReadFile(filepath.Join(r.root, "LICENSE"))
	if err != nil {
		return nil, err
	}
	example, err := os.ReadFile(filepath.Join(r.root, "config", "example.yml"))
	if err != nil {
		return nil, err
	}
	files := []file{
		{exe, 0o755, binary},
		{"LICENSE", 0o644, license},
		{"README.md", 0o644, []byte(r.readme(exe))},
		{name + ".yml", 0o644, example},
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}

func (r *release) readme(exe string) string {
	return fmt.Sprintf(`# dramatiq_exporter %[1]s

A Prometheus exporter for Dramatiq's Redis broker: queues, workers, dead
letters and orphaned messages, plus the application's PostgreSQL.

Built from revision %[2]s.

Serve http://localhost:10191/metrics (and a status page on /):

    ./%[3]s --config.file=%[4]s.yml

%[4]s.yml is an example config; every key is also a flag (--help).
"./%[3]s check" looks at the broker once, for scripts.
The documentation, the Helm chart, alerts and dashboards:
https://github.com/dramatiq-exporter/dramatiq_exporter/tree/v%[1]s
`, r.version, r.revision, exe, name)
}

// tarGz writes files under dir/ with fixed times, root ownership without
// names, and a gzip header without a name or time.
func (r *release) tarGz(dir string, files []file) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	hdr := func(name string, mode int64, size int64, typ byte) *tar.Header {
		return &tar.Header{Typeflag: typ, Name: name, Mode: mode, Size: size, ModTime: r.mtime, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(dir+"/", 0o755, 0, tar.TypeDir)); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := tw.WriteHeader(hdr(dir+"/"+f.name, f.mode, int64(len(f.body)), tar.TypeReg)); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (r *release) zipFiles(dir string, files []file) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	d := &zip.FileHeader{Name: dir + "/", Modified: r.mtime}
	d.SetMode(0o755 | os.ModeDir)
	if _, err := zw.CreateHeader(d); err != nil {
		return nil, err
	}
	for _, f := range files {
		h := &zip.FileHeader{Name: dir + "/" + f.name, Method: zip.Deflate, Modified: r.mtime}
		h.SetMode(os.FileMode(f.mode))
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sbom lists the modules linked into one binary, read from the binary
// itself, so it is exactly what ships. No serial number and no timestamp:
// both would differ between two runs on the same commit.
func (r *release) sbom(bin, out string) error {
	c := exec.Command(r.cyclonedx, "bin", "-json", "-noserial", "-notimestamp",
		"-version", "v"+r.version, "-output", filepath.Join(r.out, out), bin)
	c.Dir = r.root
	c.Env = append(os.Environ(), "GOFLAGS=")
	if b, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("cyclonedx-gomod: %v\n%s", err, b)
	}
	return nil
}

// chart packages the Helm chart and writes the repository index. helm
// stamps the tar entries and the index with the current time; both are
// rewritten to the commit's time.
func (r *release) chart() error {
	dir := filepath.Join(r.work, "chart")
	helmEnv := append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(r.work, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(r.work, "helm-config"), "HELM_DATA_HOME="+filepath.Join(r.work, "helm-data"))
	c := exec.Command(r.helm, "package", filepath.Join(r.root, chart), "--destination", dir)
	c.Env = helmEnv
	if b, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("helm package: %v\n%s", err, b)
	}
	pkg := "dramatiq-exporter-" + r.version + ".tgz"
	b, err := os.ReadFile(filepath.Join(dir, pkg))
	if err != nil {
		return err
	}
	if b, err = r.retime(b); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.out, pkg), b, 0o644); err != nil {
		return err
	}
	// The index is built from the final .tgz (its digest is the file's).
	idx := filepath.Join(r.work, "index")
	if err := os.MkdirAll(idx, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(idx, pkg), b, 0o644); err != nil {
		return err
	}
	c = exec.Command(r.helm, "repo", "index", idx, "--url", r.chartURL)
	c.Env = helmEnv
	if b, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("helm repo index: %v\n%s", err, b)
	}
	index, err := os.ReadFile(filepath.Join(idx, "index.yaml"))
	if err != nil {
		return err
	}
	stamp := r.mtime.Format(time.RFC3339Nano)
	re := regexp.MustCompile(`(?m)^(\s*(?:created|generated): )"?[0-9][0-9T:.+Z-]*"?$`)
	if n := len(re.FindAll(index, -1)); n != 2 {
		return fmt.Errorf("helm repo index wrote %d created/generated times, want 2:\n%s", n, index)
	}
	index = re.ReplaceAll(index, []byte("${1}"+stamp))
	return os.WriteFile(filepath.Join(r.out, "index.yaml"), index, 0o644)
}

// retime rewrites a .tgz with every entry's times set to the commit's, in
// the same order, with the same contents and gzip header fields.
func (r *release) retime(tgz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	// helm's loader does not read these, but keep helm's marks.
	zw.Extra, zw.Comment = zr.Extra, zr.Comment
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		h.ModTime, h.AccessTime, h.ChangeTime = r.mtime, time.Time{}, time.Time{}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checksums writes sha256sums.txt in sha256sum's format (check it with
// sha256sum -c sha256sums.txt), over every artifact of this release.
func (r *release) checksums() error {
	entries, err := os.ReadDir(r.out)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, e := range entries { // ReadDir sorts by name
		n := e.Name()
		if !e.Type().IsRegular() || n == "sha256sums.txt" ||
			!(strings.HasPrefix(n, name+"-") || strings.HasPrefix(n, "dramatiq-exporter-") || n == "index.yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.out, n))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(w, "%s  %s\n", hex.EncodeToString(sum[:]), n)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.out, "sha256sums.txt"), buf.Bytes(), 0o644)
}
