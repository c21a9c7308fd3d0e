package buildinfo_test

// The three ways a user gets a binary, each built for real with the go
// command and make, and asked for its version: make build in a clone, go
// install …@vX through a module proxy, and a source archive without .git.
// The builds use -trimpath and CGO_ENABLED=0 like make build, so they share
// the Go build cache: after the first, each costs about a link.

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

const module = "github.com/dramatiq-exporter/dramatiq_exporter"

// commitTime is the time of the throwaway repository's one commit.
var commitTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func fileVersion(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildEnv makes builds independent of the caller's GOFLAGS (this machine
// sets -buildvcs=false) and of any VERSION or REVISION in the environment.
var buildEnv = []string{"GOFLAGS=", "GOOS=", "GOARCH=", "CGO_ENABLED=0", "VERSION=", "REVISION=", "BRANCH=", "SOURCE_DATE_EPOCH=", "BUILD_DATE="}

// reported is what a binary says about itself: --version's first lines and
// the labels of dramatiq_exporter_build_info.
type reported struct {
	version, branch, revision, date string
	buildInfo                       map[string]string
}

var versionLineRE = regexp.MustCompile(`dramatiq_exporter, version (\S*) \(branch: (\S*), revision: (\S*)\)\n\s*build user:.*\n\s*build date:\s*(\S*)`)

func ask(t *testing.T, bin string) reported {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	m := versionLineRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("--version:\n%s", out)
	}
	r := reported{version: m[1], branch: m[2], revision: m[3], date: m[4], buildInfo: map[string]string{}}

	// The exporter serves /metrics with Redis down (dramatiq_redis_up 0):
	// point it at a closed loopback port.
	port := testserver.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := exec.Command(bin, "--web.listen-address="+addr)
	c.Env = append(os.Environ(), "REDIS_URL=redis://127.0.0.1:"+strconv.Itoa(testserver.FreePort(t))+"/0")
	var logs testserver.LogBuffer
	c.Stdout, c.Stderr = &logs, &logs
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Process.Kill(); c.Wait() }()
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never served /metrics:\n%s", bin, logs.String())
		}
	}
	line := regexp.MustCompile(`(?m)^dramatiq_exporter_build_info\{(.*)\} 1$`).FindStringSubmatch(body)
	if line == nil {
		t.Fatalf("no dramatiq_exporter_build_info in /metrics")
	}
	for _, kv := range regexp.MustCompile(`(\w+)="([^"]*)"`).FindAllStringSubmatch(line[1], -1) {
		r.buildInfo[kv[1]] = kv[2]
	}
	return r
}

func (r reported) check(t *testing.T, version, revision, date string) {
	t.Helper()
	if r.version != version || r.revision != revision || r.date != date {
		t.Errorf("--version: version %q revision %q date %q; want %q %q %q", r.version, r.revision, r.date, version, revision, date)
	}
	if r.buildInfo["version"] != version || r.buildInfo["revision"] != revision {
		t.Errorf("build_info %v: want version %q revision %q", r.buildInfo, version, revision)
	}
}

func TestMakeBuildInClone(t *testing.T) {
	root := testserver.RepoRoot(t)
	bin := filepath.Join(t.TempDir(), "dramatiq_exporter")
	run(t, root, buildEnv, "make", "--no-print-directory", "build", "BIN="+bin)
	rev := strings.TrimSpace(run(t, root, nil, "git", "rev-parse", "HEAD"))
	epoch, _ := strconv.ParseInt(strings.TrimSpace(run(t, root, nil, "git", "log", "-1", "--format=%ct")), 10, 64)
	r := ask(t, bin)
	r.check(t, fileVersion(t, root), rev, time.Unix(epoch, 0).UTC().Format("20060102-15:04:05"))
	if r.branch == "" || r.branch == "unknown" {
		t.Errorf("branch %q", r.branch)
	}
}

// sourceTree copies the module's files (tracked, and new ones not ignored;
// no nested module such as test/kube, no symlink) into a new git
// repository with one commit at commitTime, and returns its directory and
// the commit's hash.
func sourceTree(t *testing.T) (dir, rev string) {
	t.Helper()
	root := testserver.RepoRoot(t)
	dir = t.TempDir()
	files := strings.Split(strings.TrimSpace(run(t, root, nil, "git", "ls-files", "-z", "-co", "--exclude-standard")), "\x00")
	nested := map[string]bool{}
	for _, f := range files {
		if filepath.Base(f) == "go.mod" && f != "go.mod" {
			nested[filepath.Dir(f)] = true
		}
	}
	copied := 0
next:
	for _, f := range files {
		for d := filepath.Dir(f); d != "."; d = filepath.Dir(d) {
			if nested[d] {
				continue next
			}
		}
		st, err := os.Lstat(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		} else if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		copied++
	}
	if copied < 50 {
		t.Fatalf("only %d files copied", copied)
	}
	date := commitTime.Format(time.RFC3339)
	env := []string{"GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1"}
	run(t, dir, env, "git", "init", "-q")
	run(t, dir, env, "git", "add", "-A")
	run(t, dir, env, "git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "test")
	return dir, strings.TrimSpace(run(t, dir, env, "git", "rev-parse", "HEAD"))
}

// TestSourceArchive: `git archive` (what GitHub serves as "Source code")
// has no .git; make build and a plain go build there still report the
// commit, from archive.txt that git filled in.
func TestSourceArchive(t *testing.T) {
	repoDir, rev := sourceTree(t)
	c := exec.Command("git", "archive", "--format=tar", "HEAD")
	c.Dir = repoDir
	archive, err := c.Output()
	if err != nil {
		t.Fatal(err)
	}
	export := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(export, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(export, ".git")); err == nil {
		t.Fatal("the export has a .git")
	}
	version := fileVersion(t, export)
	date := commitTime.Format("20060102-15:04:05")

	made := filepath.Join(t.TempDir(), "made")
	run(t, export, buildEnv, "make", "--no-print-directory", "build", "BIN="+made)
	ask(t, made).check(t, version, rev, date)

	// go build alone knows no VERSION file; the revision and date still
	// come from the embedded archive.txt.
	plain := filepath.Join(t.TempDir(), "plain")
	run(t, export, buildEnv, "go", "build", "-trimpath", "-o", plain, "./cmd/dramatiq_exporter")
	ask(t, plain).check(t, "unknown", rev, date)
}

// TestGoBuildInClone: a plain go build in a clone (no Makefile) reports
// what the toolchain stamps from git: the commit, its time, and a
// pseudo-version naming it.
func TestGoBuildInClone(t *testing.T) {
	dir, rev := sourceTree(t)
	bin := filepath.Join(t.TempDir(), "dramatiq_exporter")
	run(t, dir, buildEnv, "go", "build", "-buildvcs=true", "-trimpath", "-o", bin, "./cmd/dramatiq_exporter")
	r := ask(t, bin)
	version := "0.0.0-" + commitTime.Format("20060102150405") + "-" + rev[:12]
	r.check(t, version, rev, commitTime.Format("20060102-15:04:05"))
}

// TestGoInstallFromProxy serves the module as a tagged release from a
// file:// module proxy (the layout proxy.golang.org serves) and installs
// it with go install …@vX, as a user would; the dependencies come from the
// local module cache, so nothing reaches the network.
func TestGoInstallFromProxy(t *testing.T) {
	src, _ := sourceTree(t)
	version := fileVersion(t, src)
	tag := "v" + version
	proxy := t.TempDir()
	at := filepath.Join(proxy, filepath.FromSlash(module), "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]any{"Version": tag, "Time": commitTime})
	for name, b := range map[string][]byte{"list": []byte(tag + "\n"), tag + ".info": info, tag + ".mod": gomod} {
		if err := os.WriteFile(filepath.Join(at, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeModuleZip(t, src, filepath.Join(at, tag+".zip"), module+"@"+tag+"/")

	cache := strings.TrimSpace(run(t, src, nil, "go", "env", "GOMODCACHE"))
	gobin := t.TempDir()
	env := append(buildEnv,
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(filepath.Join(cache, "cache", "download")),
		"GOSUMDB=off", "GONOSUMDB="+module, "GOPRIVATE=",
		// A module cache of its own, so the fake release never lands in
		// the real one; -modcacherw lets t.TempDir remove it.
		"GOMODCACHE="+t.TempDir(), "GOFLAGS=-modcacherw -trimpath", "GOBIN="+gobin)
	run(t, t.TempDir(), env, "go", "install", module+"/cmd/dramatiq_exporter@"+tag)
	r := ask(t, filepath.Join(gobin, "dramatiq_exporter"))
	// A tagged module zip carries no VCS data (go.dev/issue/27153 keeps
	// export-subst out of it too): the tag names the commit.
	r.check(t, version, "unknown", "unknown")
}

// writeModuleZip writes a module zip as the Go command expects one: every
// file under prefix, no .git, no nested module.
func writeModuleZip(t *testing.T, src, dst, prefix string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		w, err := zw.Create(prefix + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = os.WriteFile(dst, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}
