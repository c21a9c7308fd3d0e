package broker_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Only cmd/ (which wires the chosen reader) may know a reader; the
// packages above the model import neither reader nor a broker client.
func TestNoReaderLeaksPastTheModel(t *testing.T) {
	forbidden := []string{
		"github.com/dramatiq-exporter/dramatiq_exporter/broker/redis",
		"github.com/dramatiq-exporter/dramatiq_exporter/broker/rabbitmq",
		"github.com/redis/go-redis",
	}
	checked := 0
	for _, dir := range []string{"collector", "status", "history", "probe", "server"} {
		files, err := filepath.Glob(filepath.Join("..", dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			for _, imp := range ast.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				for _, bad := range forbidden {
					if strings.HasPrefix(path, bad) {
						t.Errorf("%s imports %s: use the broker model", f, path)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d files", checked)
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "dramatiq_exporter", "main.go")); err != nil {
		t.Fatal(err)
	}
}
