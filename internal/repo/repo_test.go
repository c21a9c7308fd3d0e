package repo

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// maxSize bounds a tracked file; documentation images are exempt.
const maxSize = 1 << 20

var docImage = map[string]bool{".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".svg": true, ".webp": true}

// outside are references to documents that are not in the repository. Split
// so that this file does not match itself.
var outside = []string{"../" + "shared", "/work/" + "shared", "pitfalls" + ".md", "house-style" + ".md"}

func tracked(t *testing.T) (string, []string) {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	if len(files) < 50 {
		t.Fatalf("git ls-files lists only %d files", len(files))
	}
	return root, files
}

// executable tells whether b starts like an ELF, Mach-O or PE program.
func executable(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF"
	case len(b) >= 4 && isMachO(binary.BigEndian.Uint32(b)):
		return "Mach-O"
	case len(b) >= 0x40 && bytes.HasPrefix(b, []byte("MZ")):
		off := binary.LittleEndian.Uint32(b[0x3c:])
		if int64(off)+4 <= int64(len(b)) && bytes.Equal(b[off:off+4], []byte("PE\x00\x00")) {
			return "PE"
		}
	}
	return ""
}

func isMachO(magic uint32) bool {
	switch magic {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe, 0xcafebabe:
		return true
	}
	return false
}

// Nothing tracked is a build output: no executable program, and no file
// over 1 MB but documentation images.
func TestNoBinariesOrLargeFiles(t *testing.T) {
	root, files := tracked(t)
	for _, f := range files {
		fi, err := os.Lstat(filepath.Join(root, f))
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or a symlink
		}
		if fi.Size() > maxSize && !(strings.HasPrefix(f, "docs/") && docImage[strings.ToLower(path.Ext(f))]) {
			t.Errorf("%s is %d bytes; tracked files stay under %d (documentation images under docs/ excepted)", f, fi.Size(), maxSize)
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if kind := executable(b); kind != "" {
			t.Errorf("%s is an %s executable: build outputs go to .build/, not into git", f, kind)
		}
	}
}

// The repository stands on its own: nothing refers to documents kept
// outside it.
func TestNoReferencesOutside(t *testing.T) {
	root, files := tracked(t)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		for _, ref := range outside {
			if i := bytes.Index(b, []byte(ref)); i >= 0 {
				line := 1 + bytes.Count(b[:i], []byte("\n"))
				t.Errorf("%s:%d refers to %q, outside the repository; point to docs/ instead", f, line, ref)
			}
		}
	}
}

func TestExecutableDetection(t *testing.T) {
	pe := make([]byte, 0x80)
	copy(pe, "MZ")
	binary.LittleEndian.PutUint32(pe[0x3c:], 0x40)
	copy(pe[0x40:], "PE\x00\x00")
	self, err := os.Executable() // the test binary is an ELF or Mach-O program
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{bin, true}, {pe, true}, {[]byte("\xcf\xfa\xed\xfe rest"), true},
		{[]byte("MZ is a text file that starts like a PE program"), false},
		{[]byte("package repo\n"), false}, {nil, false},
	} {
		if got := executable(c.b) != ""; got != c.want {
			t.Errorf("executable(%q…) = %v, want %v", c.b[:min(len(c.b), 8)], got, c.want)
		}
	}
}
