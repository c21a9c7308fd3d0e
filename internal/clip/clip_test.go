package clip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	if got := Text("short", 10); got != "short" {
		t.Fatalf("got %q", got)
	}
	s := strings.Repeat("é", 100) // 2 bytes each
	got := Text(s, 11)
	if !utf8.ValidString(got) || !strings.HasPrefix(got, strings.Repeat("é", 5)+"…") || !strings.Contains(got, "190 more bytes") {
		t.Fatalf("got %q", got)
	}
}

func TestErrorKeepsItsChain(t *testing.T) {
	err := fmt.Errorf("dial %s: %w", strings.Repeat("h", 1<<20), fs.ErrNotExist)
	c := Error(err)
	if len(c.Error()) > MaxValue+100 || !errors.Is(c, fs.ErrNotExist) {
		t.Fatalf("%d bytes, is=%v", len(c.Error()), errors.Is(c, fs.ErrNotExist))
	}
	short := errors.New("short")
	if Error(short) != short || Error(nil) != nil {
		t.Fatal("a short error or nil must pass unchanged")
	}
}

// Whatever logs through the handler, a 1 MiB host name in an error, a
// string, a group or a logger's attributes comes out bounded; short values
// keep their form.
func TestHandlerBoundsEveryValue(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(NewHandler(slog.NewJSONHandler(&out, nil)))
	host := strings.Repeat("h", 1<<20)
	logger.With("target", host).Error("dial failed",
		"err", fmt.Errorf("dial tcp: lookup %s: no such host", host),
		"host", host,
		slog.Group("g", "inner", host),
		"sentinels", []string{"a:1", "b:2"},
		"stack", strings.Repeat("s", 8<<10))
	line := out.String()
	if len(line) > 8*MaxValue+(8<<10) {
		t.Fatalf("log line of %d bytes", len(line))
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["sentinels"].([]any); !ok {
		t.Fatalf("a short list lost its form: %v", m["sentinels"])
	}
	if s, _ := m["stack"].(string); len(s) != 8<<10 {
		t.Fatalf("a stack under MaxStack was cut to %d bytes", len(s))
	}
	for _, k := range []string{"err", "host", "target"} {
		if s, _ := m[k].(string); len(s) > MaxValue+100 || !strings.Contains(s, "more bytes not shown") {
			t.Fatalf("%s: %d bytes", k, len(s))
		}
	}
}
