package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dramatiq-exporter/dramatiq_exporter/internal/testserver"
)

const urlDelimiters = ":/?#[]@!$&'()*+,;=% "

// digitRun starts the passwords that could read as a port ("…:<digits>#…").
// It is long so that it cannot turn up by chance inside a number of the
// output (a duration such as 0.008202435 once held "2024").
const digitRun = "73190248561357"

// delimiterPasswords puts each URL delimiter in a password, once after
// digits (so "<digits>#..." could read as a port) and once after letters,
// plus one with all of them.
func delimiterPasswords() []string {
	out := []string{digitRun + "#Winter-PW-10"}
	for _, d := range strings.Split(urlDelimiters, "") {
		out = append(out, "Alpha"+d+"Bravo-Charlie-7", digitRun+d+"Winter-PW-10")
	}
	return append(out, "Xray"+urlDelimiters+"Yankee-Zulu")
}

// pieces are what a partial leak would show: the password split at every
// delimiter, pieces of four characters or more.
func pieces(pw string) []string {
	out := []string{pw}
	for _, p := range strings.FieldsFunc(pw, func(r rune) bool { return strings.ContainsRune(urlDelimiters, r) }) {
		if len(p) >= 4 {
			out = append(out, p)
		}
	}
	return out
}

func assertNoPiece(t *testing.T, pw, where, text string) {
	t.Helper()
	for _, p := range pieces(pw) {
		if strings.Contains(text, p) {
			t.Errorf("password %q: %s contains %q:\n%.2000s", pw, where, p, text)
		}
	}
}

// A Redis or database URL with a password holding any URL delimiter,
// unescaped, is refused at start (exit 2) with no part of it on stdout or
// stderr, and the message tells how to pass it; percent-encoded, or given
// through REDIS_PASSWORD or a password file, the same password works and
// appears nowhere: not in the logs, the metrics, the page or the API.
func TestPasswordsWithURLDelimiters(t *testing.T) {
	r := testserver.StartRedis(t)
	for i, pw := range delimiterPasswords() {
		user := fmt.Sprintf("exporter%d", i)
		res, err := r.Admin.Do(context.Background(), "ACL", "SETUSER", user, "reset", "on", ">"+pw, "~*", "+@all").Result()
		if err != nil || res != "OK" {
			t.Fatalf("ACL SETUSER: %v %v", res, err)
		}
		raw := fmt.Sprintf("redis://%s:%s@%s/0", user, pw, r.Addr)
		for _, env := range [][]string{
			{"REDIS_URL=" + raw},
			{"REDIS_URL=" + r.URL(), "DATABASE_URL=postgres://app:" + pw + "@127.0.0.1:1/app"},
		} {
			res := runCheck(t, env, "--check.min-processes=0", "--log.level=debug")
			assertNoPiece(t, pw, "check output", res.stdout+res.stderr)
			// These move the rest of the URL out of the user info: refused.
			if strings.ContainsAny(pw, "/?#@") && res.code != 2 {
				t.Errorf("%s: exit %d, want 2: %s %s", env[len(env)-1][:12], res.code, res.stdout, res.stderr)
			}
			if res.code == 2 && !strings.Contains(res.stderr, "percent-encode") {
				t.Errorf("the error does not say how to escape: %s", res.stderr)
			}
		}
		// Escaped, it logs in.
		escaped := (&url.URL{Scheme: "redis", User: url.UserPassword(user, pw), Host: r.Addr, Path: "/0"}).String()
		res2 := runCheck(t, []string{"REDIS_URL=" + escaped}, "--check.min-processes=0", "--log.level=debug")
		if res2.code != 0 {
			t.Errorf("password %q percent-encoded: check exit %d: %s %s", pw, res2.code, res2.stdout, res2.stderr)
		}
		assertNoPiece(t, pw, "check output", res2.stdout+res2.stderr)
	}

	// The full server, with the all-delimiters password three ways, and a
	// database URL built the same way.
	pw := "Xray" + urlDelimiters + "Yankee-Zulu"
	dbPW := "Dbpw" + urlDelimiters + "Quebec-Romeo"
	if _, err := r.Admin.Do(context.Background(), "ACL", "SETUSER", "exp", "reset", "on", ">"+pw, "~*", "+@all").Result(); err != nil {
		t.Fatal(err)
	}
	b := r.NewBroker(t, "dramatiq")
	b.Enqueue("emails", 2, time.Now())
	pg := testserver.StartPostgres(t)
	pg.CreateDatabase(t, "app")
	dbURL := pg.CreateRole(t, "exporter", dbPW, "app", "pg_monitor")

	pwFile := filepath.Join(t.TempDir(), "redis pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The server refuses the unescaped URL at start, quietly.
	stdout, stderr, code := runBinary(t, nil, "--web.listen-address=127.0.0.1:0", "--log.level=debug",
		"--redis.url=redis://default:"+digitRun+"#Winter-PW-10@"+r.Addr+"/0")
	if code != 2 {
		t.Errorf("serve with an unescaped #: exit %d", code)
	}
	assertNoPiece(t, digitRun+"#Winter-PW-10", "serve output", stdout+stderr)

	for name, env := range map[string][]string{
		"escaped URL":    {"REDIS_URL=" + (&url.URL{Scheme: "redis", User: url.UserPassword("exp", pw), Host: r.Addr, Path: "/0"}).String()},
		"REDIS_PASSWORD": {"REDIS_URL=redis://exp@" + r.Addr + "/0", "REDIS_PASSWORD=" + pw},
		"password file":  {"REDIS_URL=redis://exp@" + r.Addr + "/0", "REDIS_PASSWORD_FILE=" + pwFile},
	} {
		t.Run(name, func(t *testing.T) {
			base, logs := startExporter(t, append(env, "DATABASE_URL="+dbURL), "--log.level=debug")
			_, metrics := testserver.Get(t, base+"/metrics")
			if !strings.Contains(metrics, "dramatiq_redis_up 1") || !strings.Contains(metrics, "dramatiq_database_up 1") {
				t.Fatalf("not logged in: %s\n%s", metrics, logs.String())
			}
			_, page := testserver.Get(t, base+"/")
			_, api := testserver.Get(t, base+"/api/v1/status")
			for where, text := range map[string]string{"logs": logs.String(), "metrics": metrics, "page": page, "API": api} {
				assertNoPiece(t, pw, where, text)
				assertNoPiece(t, dbPW, where, text)
			}
		})
	}
}
