package repo

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// markdown is one tracked Markdown file, code blocks and code spans set
// apart: links inside code are examples, not links.
type markdown struct {
	name  string
	prose []string // lines outside fenced code, code spans removed
	code  []string // code spans and fenced lines, for commands
}

var codeSpan = regexp.MustCompile("`+[^`]*`+")

func readMarkdown(t *testing.T, root, name string) markdown {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	md := markdown{name: name}
	fence := ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			} else {
				md.code = append(md.code, line)
			}
			md.prose = append(md.prose, "")
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			md.prose = append(md.prose, "")
			continue
		}
		md.code = append(md.code, codeSpan.FindAllString(line, -1)...)
		md.prose = append(md.prose, codeSpan.ReplaceAllStringFunc(line, func(s string) string {
			// Keep a heading's code text: GitHub's anchor includes it.
			if strings.HasPrefix(trimmed, "#") {
				return strings.Trim(s, "`")
			}
			return ""
		}))
	}
	return md
}

var (
	heading   = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	htmlID    = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	inlineURL = regexp.MustCompile(`\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refDef    = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	linkText  = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// anchors are the fragment ids GitHub gives the file's headings: lower
// case, punctuation dropped, spaces as hyphens, -1, -2… on repeats.
func (md markdown) anchors() map[string]bool {
	out := map[string]bool{}
	for _, line := range md.prose {
		for _, m := range htmlID.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		text := linkText.ReplaceAllString(m[1], "$1")
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		id := b.String()
		for i := 1; out[id]; i++ {
			id = fmt.Sprintf("%s-%d", b.String(), i)
		}
		out[id] = true
	}
	return out
}

func (md markdown) links() []string {
	var out []string
	for _, line := range md.prose {
		for _, m := range inlineURL.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
		if m := refDef.FindStringSubmatch(line); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

func trackedMarkdown(t *testing.T) (string, []markdown) {
	root, files := tracked(t)
	var mds []markdown
	for _, f := range files {
		if strings.HasSuffix(strings.ToLower(f), ".md") {
			if _, err := os.Lstat(filepath.Join(root, f)); err == nil {
				mds = append(mds, readMarkdown(t, root, f))
			}
		}
	}
	if len(mds) < 10 {
		t.Fatalf("only %d Markdown files tracked", len(mds))
	}
	return root, mds
}

// Every relative link in a tracked Markdown file names a file or folder of
// the repository, and a #fragment into a Markdown file names one of its
// headings (or an <a id>).
func TestMarkdownLinksResolve(t *testing.T) {
	root, mds := trackedMarkdown(t)
	byName := map[string]markdown{}
	for _, md := range mds {
		byName[md.name] = md
	}
	checked := 0
	for _, md := range mds {
		for _, link := range md.links() {
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, frag, _ := strings.Cut(link, "#")
			name := md.name
			if target != "" {
				name = path.Join(path.Dir(md.name), target)
				if name == ".." || strings.HasPrefix(name, "../") || path.IsAbs(target) {
					t.Errorf("%s: link %q leaves the repository", md.name, link)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(name))); err != nil {
					t.Errorf("%s: link %q: %s does not exist", md.name, link, name)
					continue
				}
			}
			checked++
			if frag == "" || !strings.HasSuffix(strings.ToLower(name), ".md") {
				continue
			}
			doc, ok := byName[name]
			if !ok {
				doc = readMarkdown(t, root, name)
			}
			if !doc.anchors()[frag] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", md.name, link, name, frag)
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d relative links checked: is the link parser broken?", checked)
	}
}

var (
	makeCmd    = regexp.MustCompile(`(?:^|[\s(;&|` + "`" + `])make\s+([A-Za-z][\w.-]*)`)
	makeTarget = regexp.MustCompile(`^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:([^=]|$)`)
)

// Every `make X` that the Markdown files show, in code, is a target of the
// Makefile. The changelog is history: a target it names may be gone.
func TestMarkdownMakeTargetsExist(t *testing.T) {
	root, mds := trackedMarkdown(t)
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := makeTarget.FindStringSubmatch(line); m != nil {
			for _, name := range strings.Fields(m[1]) {
				targets[name] = true
			}
		}
	}
	for _, want := range []string{"build", "test", "demo"} {
		if !targets[want] {
			t.Fatalf("Makefile parse found no %q target: %v", want, targets)
		}
	}
	found := 0
	for _, md := range mds {
		if md.name == "CHANGELOG.md" {
			continue
		}
		for _, code := range md.code {
			for _, m := range makeCmd.FindAllStringSubmatch(code, -1) {
				found++
				if !targets[m[1]] {
					t.Errorf("%s: `make %s` is not a Makefile target", md.name, m[1])
				}
			}
		}
	}
	if found < 5 {
		t.Errorf("only %d make commands found in the Markdown files", found)
	}
}

// Every page in docs/ is linked from the index, docs/README.md, so none is
// found only by chance.
func TestDocsIndexListsEveryPage(t *testing.T) {
	_, mds := trackedMarkdown(t)
	var index markdown
	for _, md := range mds {
		if md.name == "docs/README.md" {
			index = md
		}
	}
	if index.name == "" {
		t.Fatal("docs/README.md is not tracked")
	}
	linked := map[string]bool{}
	for _, l := range index.links() {
		target, _, _ := strings.Cut(l, "#")
		linked[path.Join("docs", target)] = true
	}
	for _, md := range mds {
		if path.Dir(md.name) == "docs" && md.name != "docs/README.md" && !linked[md.name] {
			t.Errorf("%s is not linked from docs/README.md: add it to the index", md.name)
		}
	}
}
