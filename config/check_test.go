package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

func parseCheck(t *testing.T, args ...string) (*Check, error) {
	t.Helper()
	app := kingpin.New("test", "")
	cmd := app.Command("check", "")
	f := AddFlags(app, nil).AddCheckFlags(cmd)
	if _, err := app.Parse(append([]string{"check"}, args...)); err != nil {
		return nil, err
	}
	return f.Load()
}

func TestCheckFlags(t *testing.T) {
	c, err := parseCheck(t)
	if err != nil {
		t.Fatal(err)
	}
	want := &Check{MinProcesses: 1, Timeout: 5 * time.Second, MaxReady: map[string]int64{}, MaxOldestAge: map[string]time.Duration{}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults = %+v", c)
	}

	c, err = parseCheck(t, "--check.min-processes=0", "--check.max-ready=100", "--check.max-ready=emails.v2=5",
		"--check.max-oldest-age=10m", "--check.max-oldest-age=reports=1d", "--check.no-orphans", "--check.timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	want = &Check{
		MinProcesses: 0, NoOrphans: true, Timeout: 2 * time.Second,
		MaxReady:     map[string]int64{AllQueues: 100, "emails.v2": 5},
		MaxOldestAge: map[string]time.Duration{AllQueues: 10 * time.Minute, "reports": 24 * time.Hour},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v", c)
	}
}

func TestCheckFlagErrors(t *testing.T) {
	for arg, want := range map[string]string{
		"--check.min-processes=-2":      "--check.min-processes",
		"--check.max-ready=-1":          "--check.max-ready",
		"--check.max-ready=many":        "--check.max-ready",
		"--check.max-ready=a:b=1":       "not a Dramatiq queue name",
		"--check.max-ready==4":          "not a Dramatiq queue name",
		"--check.max-oldest-age=0s":     "must be positive",
		"--check.max-oldest-age=q=soon": "--check.max-oldest-age",
		"--check.timeout=-1s":           "--check.timeout",
	} {
		_, err := parseCheck(t, arg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", arg, err, want)
		}
	}
}
